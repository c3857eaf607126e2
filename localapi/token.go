package localapi

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// TokenFileName is the name of the local API token file in the agent's
// data folder.
const TokenFileName = "api-token"

// ErrNoToken is returned by [ReadToken] when there is no token file: the
// agent has not run yet, or the path is wrong.
var ErrNoToken = errors.New("localapi: no API token file")

// errForeignOwner: a token file owned by another account is not trusted
// (it could have been planted, or be re-readable by its owner).
var errForeignOwner = errors.New("localapi: token file owned by another account")

// EnsureToken returns the token stored at path, creating a new random one
// first if the file is missing, empty or owned by another account. The
// folder and the file are first restricted to the user running the agent
// (mode 0700/0600; on Windows a protected ACL for that user, SYSTEM and
// Administrators, which new files inherit) and to readers: on Windows
// accounts or SIDs with read access, elsewhere at most one group, which
// may traverse the folder and read the file (0710/0640).
func EnsureToken(path string, readers ...string) (string, error) {
	if err := secureDir(filepath.Dir(path), readers); err != nil {
		return "", err
	}
	tok, err := ReadToken(path)
	if err == nil {
		if err = checkOwner(path); err == nil {
			return tok, restrictFile(path, readers)
		}
	}
	if !errors.Is(err, errForeignOwner) && !errors.Is(err, ErrNoToken) {
		return "", err
	}
	// A missing file is created (another process may be creating it too:
	// the first wins); an empty or foreign one is replaced atomically.
	return createToken(path, readers, !errors.Is(err, fs.ErrNotExist))
}

// createToken writes a new token to a temporary file, then renames it over
// path (replace) or links it to path, where another process's token, if it
// got there first, wins.
func createToken(path string, readers []string, replace bool) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("localapi: token: %w", err)
	}
	tok := hex.EncodeToString(b)
	f, err := os.CreateTemp(filepath.Dir(path), ".api-token-*")
	if err != nil {
		return "", fmt.Errorf("localapi: token: %w", err)
	}
	defer os.Remove(f.Name())
	err = restrictFile(f.Name(), readers)
	if err == nil {
		_, err = f.WriteString(tok + "\n")
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("localapi: token: %w", err)
	}
	if replace {
		if err := os.Rename(f.Name(), path); err != nil {
			return "", fmt.Errorf("localapi: token: %w", err)
		}
		return tok, nil
	}
	if err := os.Link(f.Name(), path); errors.Is(err, fs.ErrExist) {
		return ReadToken(path)
	} else if err != nil {
		return "", fmt.Errorf("localapi: token: %w", err)
	}
	return tok, nil
}

// TokenPath is the token file of an agent whose data folder is dataDir.
func TokenPath(dataDir string) string { return filepath.Join(dataDir, TokenFileName) }

// ReadToken reads the token file at path.
func ReadToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%w: %s: %w", ErrNoToken, path, fs.ErrNotExist)
	}
	if err != nil {
		return "", fmt.Errorf("localapi: token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%w: %s is empty", ErrNoToken, path)
	}
	return tok, nil
}
