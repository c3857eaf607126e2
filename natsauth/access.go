package natsauth

import (
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/fieldsync/fieldsync/events"
)

// StatusPermissions returns what a device's status identity may do: ask
// for the device's grant ([events.AccessRequestSubject]) and receive the
// answer on the device's inbox prefix. It reads no data and publishes
// nothing else, so it stays valid when the device is revoked (the device
// learns that it was) or its user JWT is replaced while it is offline (it
// fetches the new one).
func StatusPermissions(device string) (jwt.Permissions, error) {
	inbox, err := events.DeviceInboxPrefix(device)
	if err != nil {
		return jwt.Permissions{}, err
	}
	get, _ := events.AccessRequestSubject(device)
	return jwt.Permissions{Pub: jwt.Permission{Allow: []string{get}}, Sub: jwt.Permission{Allow: []string{inbox + ".>"}}}, nil
}

// statusIdentity issues device's status identity: its .creds contents and
// public key.
func (a *Authority) statusIdentity(device string) ([]byte, string, error) {
	perms, err := StatusPermissions(device)
	if err != nil {
		return nil, "", err
	}
	return a.signUser("status "+device, perms, 0, map[string]string{"kind": "device-status"})
}

// Device returns the registry entry of device ([ErrNotFound] if never
// issued).
func (a *Authority) Device(device string) (User, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, err := a.loadRegistry()
	if err != nil {
		return User{}, err
	}
	i := r.index(KindDevice, device)
	if i < 0 {
		return User{}, fmt.Errorf("%w: device %s", ErrNotFound, device)
	}
	return r.Users[i], nil
}

// SetDeviceAccess gives device (not revoked) the org units units and
// binds it to person (unchanged when person is ""): it re-issues the
// device's user JWT for the key the device holds, with [DevicePermissions]
// for units, and records it. Every earlier JWT of the device is revoked in
// the tenant account (push it with [Authority.PushAccount]): the broker
// denies the old permissions although the device may still hold them, and
// disconnects a device connected with them, which then reconnects with
// the new JWT it was given. changed is false, and nothing
// is written, when the device already had exactly that.
func (a *Authority) SetDeviceAccess(device, person string, units []string) (u User, changed bool, err error) {
	units = slices.Sorted(slices.Values(units))
	if err := validUnits(units); err != nil {
		return User{}, false, err
	}
	perms, err := DevicePermissions(device, units)
	if err != nil {
		return User{}, false, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	r, err := a.loadRegistry()
	if err != nil {
		return User{}, false, err
	}
	i := r.index(KindDevice, device)
	if i < 0 || r.Users[i].Revoked() {
		return User{}, false, fmt.Errorf("%w: device %s (or revoked)", ErrNotFound, device)
	}
	u = r.Users[i]
	if person == "" {
		person = u.Person
	}
	if slices.Equal(slices.Sorted(slices.Values(u.OrgUnits)), units) && person == u.Person {
		return u, false, nil
	}
	j, iat, err := a.reissue(u, perms)
	if err != nil {
		return User{}, false, err
	}
	if err := a.revokeBefore(u.PublicKey, iat); err != nil {
		return User{}, false, err
	}
	u.JWT, u.OrgUnits, u.Person, u.IssuedAt = j, units, person, time.Unix(iat, 0).UTC()
	r.Users[i] = u
	return u, true, a.saveRegistry(r)
}

// reissue signs a new user JWT for u's key with perms, issued in a later
// second than u's current one (revocations count whole seconds).
func (a *Authority) reissue(u User, perms jwt.Permissions) (string, int64, error) {
	old, expires := u.IssuedAt.Unix(), int64(0)
	if c, err := jwt.DecodeUserClaims(u.JWT); u.JWT != "" && err == nil {
		old, expires = max(old, c.IssuedAt), c.Expires
	}
	if wait := time.Unix(old+1, 0).Sub(time.Now()); wait > 0 {
		time.Sleep(wait) // at most a second: the previous JWT is from this second
	}
	uc := jwt.NewUserClaims(u.PublicKey)
	uc.Name, uc.Permissions = string(u.Kind)+" "+u.ID, perms
	uc.Tags.Add("kind:" + string(u.Kind))
	uc.Expires = expires
	j, err := uc.Encode(a.tenant)
	if err != nil {
		return "", 0, fmt.Errorf("natsauth: sign user %s: %w", u.ID, err)
	}
	c, err := jwt.DecodeUserClaims(j)
	if err != nil {
		return "", 0, fmt.Errorf("natsauth: %w", err)
	}
	return j, c.IssuedAt, nil
}

// revokeBefore revokes every JWT of pub issued before the second iat.
// Callers hold a.mu.
func (a *Authority) revokeBefore(pub string, iat int64) error {
	return a.updateRevocations(func(r jwt.RevocationList) { r.Revoke(pub, time.Unix(iat-1, 0)) })
}

// ParseStatusCreds returns the status identity of a device's credentials
// file contents (the second JWT and seed, see [Authority.AddDevice]), or
// ok false when the file holds none (credentials issued before status
// identities, or not a device's).
func ParseStatusCreds(creds []byte) (userJWT string, kp nkeys.KeyPair, ok bool) {
	blocks := decoratedBlocks(creds)
	if len(blocks) < 4 {
		return "", nil, false
	}
	kp, err := nkeys.FromSeed([]byte(blocks[3]))
	if err != nil {
		return "", nil, false
	}
	return blocks[2], kp, true
}
