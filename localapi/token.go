package localapi

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
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

// EnsureToken returns the token stored at path, creating a new random one
// first if the file is missing or empty. The file is readable only by the
// user running the agent (mode 0600; on Windows an ACL for that user,
// SYSTEM and Administrators) and by readers: on Windows accounts or SIDs,
// elsewhere at most one group (mode 0640).
func EnsureToken(path string, readers ...string) (string, error) {
	if tok, err := ReadToken(path); err == nil {
		return tok, restrictFile(path, readers)
	} else if !errors.Is(err, ErrNoToken) {
		return "", err
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("localapi: token: %w", err)
	}
	tok := hex.EncodeToString(b)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("localapi: token: %w", err)
	}
	tmp := path + ".tmp"
	os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("localapi: token: %w", err)
	}
	if err := restrictFile(tmp, readers); err != nil {
		f.Close()
		return "", err
	}
	_, err = f.WriteString(tok + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return "", fmt.Errorf("localapi: token: %w", err)
	}
	return tok, nil
}

// TokenPath is the token file of an agent whose data folder is dataDir.
func TokenPath(dataDir string) string { return filepath.Join(dataDir, TokenFileName) }

// ReadToken reads the token file at path.
func ReadToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("%w: %s", ErrNoToken, path)
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
