//go:build !windows

package localapi

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
)

// restrictFile makes path readable and writable by its owner only, or also
// readable by the one group in readers.
func restrictFile(path string, readers []string) error {
	switch len(readers) {
	case 0:
		if err := os.Chmod(path, 0o600); err != nil {
			return fmt.Errorf("localapi: token: %w", err)
		}
		return nil
	case 1:
	default:
		return fmt.Errorf("localapi: token readers %q: want at most one group on this system", readers)
	}
	g, err := user.LookupGroup(readers[0])
	if err != nil {
		return fmt.Errorf("localapi: token reader group: %w", err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return fmt.Errorf("localapi: token reader group %s: gid %q", g.Name, g.Gid)
	}
	if err := os.Chown(path, -1, gid); err != nil {
		return fmt.Errorf("localapi: token: give group %s read access: %w", g.Name, err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		return fmt.Errorf("localapi: token: %w", err)
	}
	return nil
}
