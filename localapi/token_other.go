//go:build !windows

package localapi

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// secureDir creates dir if needed and lets only its owner in (0700), or
// also lets the reader group traverse it to the token (0710).
func secureDir(dir string, readers []string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("localapi: token folder: %w", err)
	}
	return restrict(dir, readers, 0o700, 0o710)
}

// restrictFile makes path readable and writable by its owner only (0600),
// or also readable by the one reader group (0640).
func restrictFile(path string, readers []string) error {
	return restrict(path, readers, 0o600, 0o640)
}

func restrict(path string, readers []string, own, shared os.FileMode) error {
	if len(readers) > 1 {
		return fmt.Errorf("localapi: token readers %q: want at most one group on this system", readers)
	}
	mode := own
	if len(readers) == 1 {
		gid, err := groupID(readers[0])
		if err != nil {
			return err
		}
		if err := os.Chown(path, -1, gid); err != nil {
			return fmt.Errorf("localapi: token: give group %s access to %s: %w", readers[0], path, err)
		}
		mode = shared
	}
	if err := os.Chmod(path, mode); err != nil {
		return fmt.Errorf("localapi: token: %w", err)
	}
	return nil
}

func groupID(name string) (int, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("localapi: token reader group: %w", err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("localapi: token reader group %s: gid %q", g.Name, g.Gid)
	}
	return gid, nil
}

// checkOwner refuses a token file that belongs to another user.
func checkOwner(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("localapi: token: %w", err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%w: %s belongs to uid %d", errForeignOwner, path, st.Uid)
	}
	return nil
}
