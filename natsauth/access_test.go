package natsauth_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/nats-io/jwt/v2"

	"github.com/fieldsync/fieldsync/natsauth"
)

// TestAuthority_SetDeviceAccess: re-issuing a device for other units keeps
// its key, gives a JWT with the new units' permissions, issued later than
// the old one, and revokes every older JWT of the key; the same units
// again change nothing; a revoked device is not re-issued.
func TestAuthority_SetDeviceAccess(t *testing.T) {
	a := mustOpen(t, t.TempDir())
	creds, u, err := a.AddDevice("tab1", []string{"north"}, natsauth.ForPerson("alice"))
	if err != nil {
		t.Fatal(err)
	}
	if u.Person != "alice" || u.JWT == "" || u.StatusKey == "" {
		t.Fatalf("added %+v: want person, JWT and status key recorded", u)
	}
	statusJWT, kp, ok := natsauth.ParseStatusCreds(creds)
	if !ok {
		t.Fatal("no status identity in the credentials")
	}
	if pub, _ := kp.PublicKey(); pub != u.StatusKey {
		t.Fatalf("status seed %s, registry %s", pub, u.StatusKey)
	}
	if sc, err := jwt.DecodeUserClaims(statusJWT); err != nil || len(sc.Pub.Allow) != 1 || sc.Pub.Allow[0] != "fs.acc.tab1.get" {
		t.Fatalf("status identity permissions %+v (%v), want only fs.acc.tab1.get", sc.Pub, err)
	}
	old, _ := jwt.DecodeUserClaims(u.JWT)
	u2, changed, err := a.SetDeviceAccess("tab1", "", []string{"south", "north"})
	if err != nil || !changed {
		t.Fatalf("re-issue: changed %v, %v", changed, err)
	}
	c, err := jwt.DecodeUserClaims(u2.JWT)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != u.PublicKey || c.IssuedAt <= old.IssuedAt || !slices.Equal(u2.OrgUnits, []string{"north", "south"}) || u2.Person != "alice" {
		t.Fatalf("re-issued %+v (iat %d, old %d): want the same key, later, north+south, alice", u2, c.IssuedAt, old.IssuedAt)
	}
	if !slices.Contains(c.Pub.Allow, "$JS.API.STREAM.INFO.FS_ORG_south") {
		t.Fatalf("re-issued JWT lacks south: %v", c.Pub.Allow)
	}
	ac, err := jwt.DecodeAccountClaims(a.TenantJWT())
	if err != nil {
		t.Fatal(err)
	}
	if !ac.IsClaimRevoked(old) || ac.IsClaimRevoked(c) {
		t.Fatalf("revocations %v: want the old JWT revoked and the new one valid", ac.Revocations)
	}
	if _, changed, err := a.SetDeviceAccess("tab1", "alice", []string{"north", "south"}); err != nil || changed {
		t.Fatalf("same access again: changed %v, %v", changed, err)
	}
	if _, err := a.Revoke(natsauth.KindDevice, "tab1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.SetDeviceAccess("tab1", "", []string{"north"}); !errors.Is(err, natsauth.ErrNotFound) {
		t.Fatalf("re-issuing a revoked device: %v, want ErrNotFound", err)
	}
	if _, _, err := a.SetDeviceAccess("nobody", "", []string{"north"}); !errors.Is(err, natsauth.ErrNotFound) {
		t.Fatalf("re-issuing an unknown device: %v", err)
	}
	if _, _, ok := natsauth.ParseStatusCreds([]byte("not creds")); ok {
		t.Fatal("status identity parsed out of garbage")
	}
}
