package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/strictjson"
	"github.com/fieldsync/fieldsync/natsauth"
)

// Assignments: a device bound to a user (natsauth.User.Person) carries the
// org units that user's assignments in the Admin data name. When they
// change, the broker re-issues the device's user JWT for the new units
// (natsauth.Authority.SetDeviceAccess), pushes the grant to the device,
// which stores it and answers, and then applies the tenant account: a
// withdrawn unit revokes the device's older JWTs, so the server
// disconnects it and it reconnects with the new permissions. Last, the
// device's consumers on withdrawn units are deleted. A device offline at
// that moment fetches its grant when it comes back ([events.Grant], with
// its status identity if its old JWT was revoked meanwhile).

// grantPushTimeout bounds waiting for a device to store a pushed grant.
const grantPushTimeout = 3 * time.Second

// reconcileLoop reconciles the devices of users whose access changed,
// whenever apply marks some, until ctx ends.
func (ac *accessControl) reconcileLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-ac.kick:
		}
		ac.mu.Lock()
		users := ac.dirty
		ac.dirty = map[string]bool{}
		var devices []natsauth.User
		for _, d := range ac.devices {
			if users[d.Person] && !d.Revoked() {
				devices = append(devices, d)
			}
		}
		ac.mu.Unlock()
		for _, d := range devices {
			if _, err := ac.reconcile(ctx, d, d.Person, nil); err != nil && ctx.Err() == nil {
				ac.log.Error("access control: device access not updated", "device", d.ID, "user", d.Person, "err", err)
			}
		}
	}
}

// reconcile gives device d the units of person (its own units when it is
// bound to nobody) and returns its grant. answer, if set, is told the
// grant before anything disconnects the device (the reply to its
// request).
func (ac *accessControl) reconcile(ctx context.Context, d natsauth.User, person string, answer func(events.Grant)) (events.Grant, error) {
	units := d.OrgUnits
	if person != "" {
		units = ac.unitsOf(person)
	}
	u, changed, err := ac.auth.SetDeviceAccess(d.ID, person, units)
	if err != nil {
		return events.Grant{}, err
	}
	ac.mu.Lock()
	ac.devices[u.ID] = u
	ac.mu.Unlock()
	g := grantOf(u)
	if answer != nil {
		answer(g)
	}
	if !changed {
		return g, nil
	}
	withdrawn := slices.DeleteFunc(slices.Clone(d.OrgUnits), func(x string) bool { return slices.Contains(u.OrgUnits, x) })
	ac.log.Info("device access changed", "device", u.ID, "user", u.Person, "org_units", u.OrgUnits, "withdrawn", withdrawn)
	ac.push(u.ID, g)
	var errs []error
	if err := ac.pushAccount(ctx); err != nil {
		errs = append(errs, err)
	}
	for _, unit := range withdrawn {
		errs = append(errs, ac.client.DeleteDeviceConsumers(ctx, u.ID, unit))
	}
	if ac.onReconciled != nil {
		ac.onReconciled(u)
	}
	return g, errors.Join(errs...)
}

// push sends g to its device and waits for it to be stored; a device that
// is offline fetches it when it connects.
func (ac *accessControl) push(device string, g events.Grant) {
	subj, err := events.AccessGrantSubject(device)
	if err != nil {
		return
	}
	data, _ := json.Marshal(g)
	msg, err := ac.nc.Request(subj, data, grantPushTimeout)
	if err != nil || string(msg.Data) != events.GrantAck {
		ac.log.Info("device did not take its new grant now; it fetches it when it connects", "device", device, "err", err)
	}
}

func grantOf(u natsauth.User) events.Grant {
	if u.Revoked() {
		return events.Grant{Device: u.ID, Revoked: true}
	}
	return events.Grant{Device: u.ID, User: u.Person, OrgUnits: slices.Sorted(slices.Values(u.OrgUnits)), JWT: u.JWT}
}

// serve answers a device's grant request or sign-in (the subject names the
// device; the broker's permissions let only that device publish there).
func (ac *accessControl) serve(m *nats.Msg) {
	device, verb, err := events.ParseAccessSubject(m.Subject)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := ac.reload(); err != nil {
		ac.respond(m, events.Grant{Device: device, Error: err.Error()})
		return
	}
	d, ok := ac.device(device)
	switch {
	case !ok:
		ac.respond(m, events.Grant{Device: device, Error: "device not registered"})
	case verb == "get" && d.Revoked():
		ac.log.Info("revoked device told so", "device", device)
		ac.respond(m, grantOf(d))
	case verb == "get":
		answered := false
		_, err := ac.reconcile(ctx, d, d.Person, func(g events.Grant) { answered = true; ac.respond(m, g) })
		if err != nil && !answered {
			ac.respond(m, events.Grant{Device: device, Error: err.Error()})
		} else if err != nil {
			ac.log.Error("access control: device access not fully applied", "device", device, "err", err)
		}
	case verb == "signin":
		ac.signIn(ctx, d, m)
	}
}

// signIn answers a sign-in request: see [accessControl.checkSignIn].
func (ac *accessControl) signIn(ctx context.Context, d natsauth.User, m *nats.Msg) {
	answered := false
	r := ac.checkSignIn(ctx, d, m.Data, func(g events.Grant) {
		answered = true
		ac.respond(m, events.SignInReply{Grant: &g})
	})
	if !answered {
		ac.respond(m, r)
	}
}

// checkSignIn checks a user against the Admin data (known, not disabled,
// assigned to one of the device's units when the device's units were
// fixed) and binds the device to that user; answer is told the grant
// before the change is applied.
func (ac *accessControl) checkSignIn(ctx context.Context, d natsauth.User, data []byte, answer func(events.Grant)) events.SignInReply {
	var req events.SignIn
	if err := strictjson.Decode(bytes.NewReader(data), &req, strictjson.Options{}); err != nil || events.ValidToken(req.User) != nil {
		return events.SignInReply{Kind: events.AuthLoginFailed, Message: "sign-in request without a valid user"}
	}
	if d.Revoked() {
		return events.SignInReply{Kind: events.AuthLoginFailed, Message: "this device is revoked"}
	}
	ac.mu.Lock()
	err := ac.dir.Known(req.User)
	ac.mu.Unlock()
	if err != nil {
		return events.SignInReply{Kind: events.AuthLoginFailed, Message: err.Error()}
	}
	units := ac.unitsOf(req.User)
	if len(units) == 0 {
		return events.SignInReply{Kind: events.AuthLoginFailed, Message: req.User + " is assigned to no org unit this server carries"}
	}
	if d.Person == "" && !slices.ContainsFunc(units, func(u string) bool { return slices.Contains(d.OrgUnits, u) }) {
		return events.SignInReply{Kind: events.AuthLoginFailed, Message: req.User + " is not assigned to this device's org units"}
	}
	g, err := ac.reconcile(ctx, d, req.User, answer)
	if err != nil {
		ac.log.Error("access control: sign-in not fully applied", "device", d.ID, "user", req.User, "err", err)
		return events.SignInReply{Kind: events.AuthLoginFailed, Message: "sign-in not recorded: " + err.Error()}
	}
	ac.log.Info("user signed in", "device", d.ID, "user", req.User, "org_units", g.OrgUnits)
	return events.SignInReply{Grant: &g}
}

func (ac *accessControl) respond(m *nats.Msg, v any) {
	data, _ := json.Marshal(v)
	if err := m.Respond(data); err != nil {
		ac.log.Warn("access control: answer not sent", "subject", m.Subject, "err", err)
	}
}
