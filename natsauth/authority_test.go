package natsauth_test

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"github.com/nats-io/jwt/v2"

	"github.com/fieldsync/fieldsync/natsauth"
)

func mustOpen(t *testing.T, dir string) *natsauth.Authority {
	t.Helper()
	a, err := natsauth.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestOpen_CreatesAndReuses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "auth")
	if _, err := natsauth.OpenExisting(dir); !errors.Is(err, natsauth.ErrNoAuthority) {
		t.Fatalf("OpenExisting on nothing: %v", err)
	}
	a := mustOpen(t, dir)
	if runtime.GOOS != "windows" {
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
			t.Fatalf("dir mode %v (%v), want 0700", fi.Mode().Perm(), err)
		}
		for _, f := range []string{"operator.nk", "system.nk", "tenant.nk", "operator.jwt", "system.jwt", "tenant.jwt"} {
			if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("%s: mode %v (%v), want 0600", f, fi.Mode().Perm(), err)
			}
		}
	}
	op, err := jwt.DecodeOperatorClaims(a.OperatorJWT())
	if err != nil || op.SystemAccount != a.SystemAccount() {
		t.Fatalf("operator JWT %+v (%v): system account %s", op, err, a.SystemAccount())
	}
	ten, err := jwt.DecodeAccountClaims(a.TenantJWT())
	if err != nil || ten.Issuer != op.Subject || ten.Limits.DiskStorage != jwt.NoLimit {
		t.Fatalf("tenant JWT %+v (%v): want signed by the operator, JetStream on", ten, err)
	}
	b := mustOpen(t, dir)
	if b.TenantAccount() != a.TenantAccount() || b.SystemAccount() != a.SystemAccount() || b.OperatorJWT() != a.OperatorJWT() {
		t.Fatal("reopening made new keys")
	}
	if len(b.Accounts()) != 2 {
		t.Fatalf("accounts %v, want system and tenant", b.Accounts())
	}
}

func TestAuthority_AddRevoke(t *testing.T) {
	dir := t.TempDir()
	a := mustOpen(t, dir)
	creds, u, err := a.AddDevice("tab1", []string{"north"})
	if err != nil {
		t.Fatal(err)
	}
	uj, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(uj)
	if err != nil || uc.Subject != u.PublicKey || uc.Issuer != a.TenantAccount() {
		t.Fatalf("user JWT %+v (%v)", uc, err)
	}
	if !slices.Contains(uc.Permissions.Pub.Allow, "fs.up.tab1.>") || !slices.Contains(uc.Permissions.Sub.Allow, "fs.res.tab1.>") ||
		slices.Contains(uc.Permissions.Pub.Allow, ">") {
		t.Fatalf("device permissions %+v", uc.Permissions)
	}
	if _, _, err := a.AddDevice("tab1", []string{"north"}); !errors.Is(err, natsauth.ErrExists) {
		t.Fatalf("second add: %v", err)
	}
	for _, bad := range [][]string{{"no.rth"}, {"north", "north"}} {
		if _, _, err := a.AddDevice("tab2", bad); err == nil {
			t.Fatalf("units %v accepted", bad)
		}
	}
	if _, _, err := a.AddDevice("ta.b", []string{"north"}); err == nil {
		t.Fatal("dotted device id accepted")
	}
	if _, err := a.Revoke(natsauth.KindDevice, "tab1"); err != nil {
		t.Fatal(err)
	}
	// Across a reopen: the registry and the account's revocation.
	b := mustOpen(t, dir)
	users, err := b.Users()
	if err != nil || len(users) != 1 || !users[0].Revoked() || users[0].PublicKey != u.PublicKey {
		t.Fatalf("users after reopen: %+v %v", users, err)
	}
	ten, err := jwt.DecodeAccountClaims(b.TenantJWT())
	if err != nil || !ten.IsClaimRevoked(uc) {
		t.Fatalf("tenant JWT does not revoke tab1: %+v %v", ten.Revocations, err)
	}
	// Revoked: may be issued again, with a new key that is not revoked.
	creds2, u2, err := b.AddDevice("tab1", []string{"north", "south"})
	if err != nil || u2.PublicKey == u.PublicKey {
		t.Fatalf("re-add after revoke: %+v %v", u2, err)
	}
	uj2, _ := jwt.ParseDecoratedJWT(creds2)
	uc2, _ := jwt.DecodeUserClaims(uj2)
	if ten.IsClaimRevoked(uc2) {
		t.Fatal("the new key is revoked")
	}
	if _, err := b.Revoke(natsauth.KindIntegration, "tab1"); !errors.Is(err, natsauth.ErrNotFound) {
		t.Fatalf("revoking an integration that is a device: %v", err)
	}
}
