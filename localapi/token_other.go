//go:build !windows

package localapi

import (
	"fmt"
	"os"
)

// restrictFile makes path readable and writable by its owner only.
func restrictFile(path string) error {
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("localapi: token: %w", err)
	}
	return nil
}
