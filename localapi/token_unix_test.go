//go:build !windows

package localapi_test

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/fieldsync/fieldsync/localapi"
)

func TestEnsureToken_Readers(t *testing.T) {
	g, err := user.LookupGroupId(strconv.Itoa(os.Getgid()))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), localapi.TokenFileName)
	if _, err := localapi.EnsureToken(path, g.Name); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o640 || fi.Sys().(*syscall.Stat_t).Gid != uint32(os.Getgid()) {
		t.Fatalf("token file with reader group %s: mode %v (%v), want 0640 owned by the group", g.Name, fi.Mode().Perm(), err)
	}
	_, err = localapi.EnsureToken(filepath.Join(t.TempDir(), "t"), "no-such-group-fieldsync")
	if err == nil || !strings.Contains(err.Error(), "token reader group") {
		t.Fatalf("unknown reader group: %v, want a clear error", err)
	}
	if _, err := localapi.EnsureToken(filepath.Join(t.TempDir(), "t"), g.Name, g.Name); err == nil {
		t.Fatal("two reader groups: no error")
	}
}
