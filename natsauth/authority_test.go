package natsauth_test

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
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

// TestAuthority_IntegrationByToken: an integration's token finds it until
// it is revoked; the registry keeps only the token's hash; issuing it
// again gives a new token and the old one stays refused.
func TestAuthority_IntegrationByToken(t *testing.T) {
	dir := t.TempDir()
	a := mustOpen(t, dir)
	_, token, u, err := a.AddIntegration("crm", []string{"north"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(token, "fsi_") || len(token) < 40 || u.TokenHash == "" {
		t.Fatalf("token %q, hash %q", token, u.TokenHash)
	}
	reg, err := os.ReadFile(filepath.Join(dir, "users.json"))
	if err != nil || strings.Contains(string(reg), token) || !strings.Contains(string(reg), u.TokenHash) {
		t.Fatalf("registry holds the token or not its hash (%v):\n%s", err, reg)
	}
	got, err := mustOpen(t, dir).IntegrationByToken(token)
	if err != nil || got.ID != "crm" || strings.Join(got.OrgUnits, ",") != "north" {
		t.Fatalf("by token: %+v %v", got, err)
	}
	for _, bad := range []string{"", "fsi_", token + "x", strings.TrimPrefix(token, "fsi_"), u.TokenHash} {
		if _, err := a.IntegrationByToken(bad); !errors.Is(err, natsauth.ErrBadToken) {
			t.Errorf("token %q: %v, want ErrBadToken", bad, err)
		}
	}
	if _, _, err := a.AddDevice("tab1", []string{"north"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Revoke(natsauth.KindIntegration, "crm"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.IntegrationByToken(token); !errors.Is(err, natsauth.ErrBadToken) {
		t.Fatalf("revoked integration's token: %v", err)
	}
	_, token2, _, err := a.AddIntegration("crm", []string{"north"})
	if err != nil || token2 == token {
		t.Fatalf("re-add: %v (same token: %v)", err, token2 == token)
	}
	if _, err := a.IntegrationByToken(token); !errors.Is(err, natsauth.ErrBadToken) {
		t.Fatalf("old token after re-add: %v", err)
	}
	if got, err := a.IntegrationByToken(token2); err != nil || got.ID != "crm" {
		t.Fatalf("new token: %+v %v", got, err)
	}
}
