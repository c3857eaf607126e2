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
	di, err := os.Stat(filepath.Dir(path))
	if err != nil || di.Mode().Perm() != 0o710 || di.Sys().(*syscall.Stat_t).Gid != uint32(os.Getgid()) {
		t.Fatalf("token folder with reader group %s: mode %v (%v), want 0710 for the group to reach the file", g.Name, di.Mode().Perm(), err)
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

func TestEnsureToken_Concurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), localapi.TokenFileName)
	toks := make(chan string, 8)
	for range 8 {
		go func() {
			tok, err := localapi.EnsureToken(path)
			if err != nil {
				t.Error(err)
			}
			toks <- tok
		}()
	}
	file, first := "", ""
	for range 8 {
		tok := <-toks
		if first == "" {
			first = tok
		}
		if tok != first {
			t.Fatalf("concurrent EnsureToken returned %q and %q", first, tok)
		}
	}
	if file, _ = localapi.ReadToken(path); file != first {
		t.Fatalf("file holds %q, callers got %q", file, first)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".api-token-*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

func TestEnsureToken_Untrusted(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, localapi.TokenFileName)
	if err := os.WriteFile(path, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tok, err := localapi.EnsureToken(path)
	if err != nil || len(tok) != 64 {
		t.Fatalf("EnsureToken over an empty file = %q, %v; want a new token", tok, err)
	}
	_, err = localapi.EnsureToken(filepath.Join(t.TempDir(), "t"), "no-such-group-fieldsync")
	if left, _ := filepath.Glob(filepath.Join(dir, ".api-token-*")); err == nil || len(left) != 0 {
		t.Fatalf("failed EnsureToken: %v, left %v", err, left)
	}
	if os.Geteuid() != 0 {
		t.Log("not root: cannot plant a file owned by another user")
		return
	}
	if err := os.Chown(path, 4242, -1); err != nil {
		t.Fatal(err)
	}
	again, err := localapi.EnsureToken(path)
	fi, _ := os.Stat(path)
	if err != nil || again == tok || fi.Sys().(*syscall.Stat_t).Uid != uint32(os.Geteuid()) {
		t.Fatalf("token file planted by uid 4242: EnsureToken = %q, %v (was %q); want a new token in a file of ours", again, err, tok)
	}
}
