package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/store"
)

// Assignments. The server side decides the device's org units from its
// user's assignments in the Admin data and hands them out as an
// [events.Grant], with a user JWT re-issued for those units. The agent
// asks for its grant each time it connects, takes the grants the server
// pushes, and stores the latest (a device setting: wipes keep it). The
// grant's units replace the config's org_units from then on: a unit added
// is synced from scratch (initial sync) at once, a unit withdrawn is
// removed from the device ([store.DB.Unassign]) and its queued writes
// become sync errors. When the broker refuses the device's user JWT, the
// agent asks with its status identity (the second identity of its
// credentials file), and learns either a newer JWT (it reconnects with
// it) or that it was revoked (it wipes, see revoke.go).

// metaGrant holds the device's latest grant, as JSON.
const metaGrant = store.SettingPrefix + "grant"

// grantTimeout bounds asking the server for the grant; statusTimeout the
// same with the status identity, after a refusal (the agent falls back to
// the refusal's own kind after it).
const (
	grantTimeout  = 10 * time.Second
	statusTimeout = 3 * time.Second
)

// OrgUnits returns the org units the device carries now: its grant's
// when the server gave one, else the config's.
func (a *Agent) OrgUnits() []string {
	if g := a.grant.Load(); g != nil {
		return slices.Clone(g.OrgUnits)
	}
	return slices.Clone(a.cfg.OrgUnits)
}

// User returns the person signed in on the device: the grant's user when
// the server bound the device to one, else the config's.
func (a *Agent) User() string {
	if g := a.grant.Load(); g != nil && g.User != "" {
		return g.User
	}
	return a.cfg.User
}

// grantJWT is the user JWT the server re-issued ("" none: the credentials
// file's).
func (a *Agent) grantJWT() string {
	if g := a.grant.Load(); g != nil {
		return g.JWT
	}
	return ""
}

// loadGrant reads the stored grant (Open).
func (a *Agent) loadGrant(ctx context.Context) error {
	v, err := a.db.Meta(ctx, metaGrant)
	if err != nil || v == "" {
		return err
	}
	g, err := events.ParseGrant([]byte(v))
	if err != nil {
		return fmt.Errorf("agent: stored grant: %w", err)
	}
	if g.Device == a.cfg.DeviceID && credentialsHash(a.cfg.Credentials) == a.grantCreds(ctx) {
		a.grant.Store(&g)
	}
	return nil
}

// grantCreds is the credentials file hash the stored grant belongs to:
// other credentials (a device issued again) start from the config.
func (a *Agent) grantCreds(ctx context.Context) string {
	v, _ := a.db.Meta(ctx, metaGrant+"_credentials")
	return v
}

// takeGrant stores g and applies it: a revoked device wipes; changed units
// start their sync or removal. It returns once g is stored.
func (a *Agent) takeGrant(ctx context.Context, g events.Grant) error {
	if g.Device != a.cfg.DeviceID {
		return fmt.Errorf("agent: grant for device %q", g.Device)
	}
	if g.Revoked {
		kick(a.revokedCh)
		return nil
	}
	old := a.grant.Load()
	if old != nil && old.JWT == g.JWT && old.User == g.User && slices.Equal(old.OrgUnits, g.OrgUnits) {
		return nil
	}
	b, _ := json.Marshal(g)
	if err := a.db.SetMeta(ctx, metaGrant+"_credentials", credentialsHash(a.cfg.Credentials)); err != nil {
		return err
	}
	if err := a.db.SetMeta(ctx, metaGrant, string(b)); err != nil {
		return err
	}
	before := a.OrgUnits()
	a.grant.Store(&g)
	added := slices.DeleteFunc(slices.Clone(g.OrgUnits), func(u string) bool { return slices.Contains(before, u) })
	a.log.Info("device access from the server", "user", g.User, "org_units", g.OrgUnits, "added", added,
		"withdrawn", slices.DeleteFunc(before, func(u string) bool { return slices.Contains(g.OrgUnits, u) }))
	kick(a.unassign)
	if len(added) > 0 {
		_ = a.RequestSync(ScopeFull) // the new units' initial sync; one queued already is fine
	}
	a.statusChanged()
	return nil
}

// fetchGrant asks for the grant on the device's connection and takes it.
func (a *Agent) fetchGrant(ctx context.Context, c *natsjs.Client) {
	ctx, cancel := context.WithTimeout(ctx, grantTimeout)
	defer cancel()
	g, err := c.Grant(ctx, a.cfg.DeviceID)
	if errors.Is(err, natsjs.ErrNoGrant) {
		return // a server without access control: the config's units
	}
	if err == nil {
		err = a.takeGrant(ctx, g)
	}
	if err != nil && ctx.Err() == nil {
		a.log.Warn("device access not read from the server", "err", err)
	}
}

// accessWatch asks for the grant each time the connection comes up, and
// asks with the status identity each time the broker refuses the
// credentials, until ctx ends. A refusal by a device without a status
// identity that the broker called a revocation wipes it.
func (a *Agent) accessWatch(ctx context.Context, c *natsjs.Client) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.connected:
			a.fetchGrant(ctx, c)
		case <-a.refused:
			if a.askAsStatus(ctx, c) || c.AuthError() != natsjs.AuthTokenRejected {
				continue
			}
			// Without a status identity, the server's "user authentication
			// revoked" is a revocation unless the device reconnects at once
			// (with a JWT the server re-issued and just handed over).
			if !reconnects(ctx, c, revokedGrace) {
				kick(a.revokedCh)
			}
		}
	}
}

// revokedGrace is how long a device without a status identity waits for a
// reconnect before it takes "user authentication revoked" as final.
const revokedGrace = time.Second

// reconnects reports whether c is connected within d.
func reconnects(ctx context.Context, c *natsjs.Client, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if c.Connected() {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return c.Connected()
}

// askAsStatus runs when the broker refuses the device's user JWT: with
// the status identity it asks why. A newer JWT is stored and the
// connection retried at once; a revocation wipes.
// It reports whether the server answered.
func (a *Agent) askAsStatus(ctx context.Context, c *natsjs.Client) bool {
	creds, err := os.ReadFile(a.cfg.Credentials)
	if err != nil {
		return false
	}
	userJWT, kp, ok := natsauth.ParseStatusCreds(creds)
	if !ok {
		return false
	}
	defer kp.Wipe()
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	g, err := natsjs.GrantAs(ctx, a.cfg.BrokerURL, a.cfg.CA, a.cfg.DeviceID, userJWT, kp)
	if err != nil {
		a.log.Warn("status identity: the server did not say why it refuses the device", "err", err)
		return false
	}
	before := a.grantJWT()
	if err := a.takeGrant(ctx, g); err != nil {
		a.log.Warn("status identity: grant not stored", "err", err)
		return true
	}
	if !g.Revoked && g.JWT != before {
		a.log.Info("the server re-issued the device's access while it was away; reconnecting with it", "org_units", g.OrgUnits)
		_ = c.ForceReconnect()
	}
	return true
}

// unassigner removes from the device the org units it no longer carries,
// whenever a grant changes them (and once at start, for a removal a crash
// interrupted), between syncs. It returns with ctx.
func (a *Agent) unassigner(ctx context.Context) {
	for {
		if err := a.removeUnassigned(ctx); err != nil && ctx.Err() == nil {
			a.log.Error("removing a withdrawn org unit failed; retried at the next change", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-a.unassign:
		}
	}
}

// removeUnassigned removes every unit that has local data but is not
// carried any more.
func (a *Agent) removeUnassigned(ctx context.Context) error {
	held, err := a.db.HeldUnits(ctx)
	if err != nil {
		return err
	}
	units := a.OrgUnits()
	for _, u := range held {
		if u == "" || slices.Contains(units, u) {
			continue
		}
		if err := a.removeUnit(ctx, u); err != nil {
			return err
		}
	}
	return nil
}

func (a *Agent) removeUnit(ctx context.Context, unit string) error {
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	msg := fmt.Sprintf("org unit %s is no longer assigned to this device: the write was not sent", unit)
	r, err := a.db.Unassign(ctx, unit, msg, a.now())
	if err != nil {
		return err
	}
	a.outcomes.add(r.Failed)
	if err := os.RemoveAll(store.DocumentDir(a.cfg.DataDir, unit)); err != nil {
		a.log.Warn("org unit withdrawn: removing its documents", "org_unit", unit, "err", err)
	}
	a.log.Warn("org unit withdrawn by the server: its data was removed from the device", "org_unit", unit,
		"records", r.Records, "queued_writes_failed", len(r.Failed))
	a.logActivity(ctx, "unassigned", "", a.now(), nil, map[string]any{"org_unit": unit, "records": r.Records, "failed_writes": len(r.Failed)})
	a.statusChanged()
	return nil
}

// ErrSignInRefused: the server refused the user ([SignInError] says why).
var ErrSignInRefused = errors.New("agent: sign-in refused")

// SignInError is the server's refusal of a sign-in.
type SignInError struct {
	Kind    string // events.AuthLoginFailed
	Message string
}

func (e *SignInError) Error() string { return "agent: sign-in refused (" + e.Kind + "): " + e.Message }

// Unwrap makes [errors.Is] match [ErrSignInRefused].
func (e *SignInError) Unwrap() error { return ErrSignInRefused }

// checkSignIn asks the server whether user may sign in and takes the
// grant it answers with.
func (a *Agent) checkSignIn(ctx context.Context, user string) error {
	if err := events.ValidToken(user); err != nil {
		return &SignInError{Kind: events.AuthLoginFailed, Message: "user: " + err.Error()}
	}
	a.mu.Lock()
	c := a.client
	a.mu.Unlock()
	if c == nil || !c.Connected() {
		if g := a.grant.Load(); g != nil && g.User != "" && g.User != user {
			return fmt.Errorf("%w: signing in another user than %s needs the server", ErrOffline, g.User)
		}
		return nil // the user signed in before (checked then), or the server checks no users
	}
	ctx, cancel := context.WithTimeout(ctx, grantTimeout)
	defer cancel()
	r, err := c.SignIn(ctx, a.cfg.DeviceID, user)
	switch {
	case errors.Is(err, natsjs.ErrNoGrant):
		return nil // a server without access control checks no user
	case err != nil:
		return err
	case r.Kind != "":
		return &SignInError{Kind: r.Kind, Message: r.Message}
	case r.Grant == nil:
		return fmt.Errorf("agent: sign-in: the server answered without the device's access")
	}
	return a.takeGrant(ctx, *r.Grant)
}
