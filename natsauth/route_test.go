package natsauth_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/fieldsync/fieldsync/natsauth"
)

func TestEnsureRouteSecret(t *testing.T) {
	dir := t.TempDir()
	if _, err := natsauth.RouteSecret(dir); !errors.Is(err, natsauth.ErrNoRouteSecret) {
		t.Fatalf("no secret yet: %v, want ErrNoRouteSecret", err)
	}
	created, err := natsauth.EnsureRouteSecret(dir)
	if err != nil || !created {
		t.Fatalf("first EnsureRouteSecret: created %v, %v", created, err)
	}
	s1, err := natsauth.RouteSecret(dir)
	if err != nil || len(s1) < 40 {
		t.Fatalf("secret %q: %v", s1, err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "route.secret")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("route.secret mode %v, want 0600", fi.Mode().Perm())
	}
	if created, err := natsauth.EnsureRouteSecret(dir); err != nil || created {
		t.Fatalf("second EnsureRouteSecret: created %v, %v; want the first kept", created, err)
	}
	if s2, _ := natsauth.RouteSecret(dir); s2 != s1 {
		t.Fatal("the secret changed")
	}
	other := t.TempDir()
	natsauth.EnsureRouteSecret(other)
	if s3, _ := natsauth.RouteSecret(other); s3 == s1 {
		t.Fatal("two clusters got the same secret")
	}
}
