package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fieldsync/fieldsync/access"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/natsjs"
)

// accessControl follows the Admin data's user assignments, role
// permissions and users into an [access.Directory] and applies it: it
// re-issues a device's permissions when its user's assignments change
// (assignments.go), answers devices' grant and sign-in requests, and
// decides ingest's role checks ([ingest.Authorizer]). It runs only with
// authentication on.
type accessControl struct {
	auth        *natsauth.Authority
	client      *natsjs.Client
	nc          *nats.Conn
	units       []string // the org units the broker serves
	pushAccount func(context.Context) error
	log         *slog.Logger

	mu      sync.Mutex
	dir     access.Directory
	devices map[string]natsauth.User // the registry's devices, by id
	dirty   map[string]bool          // users whose devices need reconciling
	kick    chan struct{}

	sub    *nats.Subscription
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// onReconciled, if set, is told each device whose grant changed (tests).
	onReconciled func(natsauth.User)
}

// accessFollowTimeout bounds catching up with the Admin data at start.
const accessFollowTimeout = 30 * time.Second

// startAccess starts access control on the broker's connection and
// returns once the Admin data is read.
func (b *Broker) startAccess(ctx context.Context) error {
	if b.auth == nil {
		return nil
	}
	ac := &accessControl{auth: b.auth, client: b.client, nc: b.nc, units: b.cfg.OrgUnits, pushAccount: b.pushAccount, log: b.log,
		devices: map[string]natsauth.User{}, dirty: map[string]bool{}, kick: make(chan struct{}, 1)}
	if err := ac.reload(); err != nil {
		return err
	}
	if err := ac.open(ctx); err != nil {
		ac.close()
		return err
	}
	b.access = ac
	return nil
}

// open follows each stream's Admin records, waits until they are read and
// starts serving and reconciling.
func (ac *accessControl) open(ctx context.Context) error {
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ac.cancel = cancel
	caught := make(chan string, len(ac.units)+1)
	for _, unit := range append([]string{""}, ac.units...) {
		filters, err := accessFilters(unit)
		if err != nil {
			return err
		}
		ac.wg.Add(1)
		go func() {
			defer ac.wg.Done()
			err := ac.client.Follow(rctx, unit, filters, ac.apply, func() { caught <- unit },
				func(err error) { ac.log.Warn("access control: admin record skipped", "err", err) })
			if err != nil {
				ac.log.Error("access control: following admin data stopped", "unit", unit, "err", err)
			}
		}()
	}
	wait := time.NewTimer(accessFollowTimeout)
	defer wait.Stop()
	for range len(ac.units) + 1 {
		select {
		case <-caught:
		case <-wait.C:
			return errors.New("broker: access control: the admin data was not read within 30 s")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	var err error
	if ac.sub, err = ac.nc.QueueSubscribe(events.AccessServiceSubjects(), "fieldsync-access", ac.serve); err != nil {
		return fmt.Errorf("broker: access requests: %w", err)
	}
	ac.markAll()
	ac.wg.Add(1)
	go func() { defer ac.wg.Done(); ac.reconcileLoop(rctx) }()
	return nil
}

// accessFilters are the subjects of unit's stream the directory reads.
func accessFilters(unit string) ([]string, error) {
	kinds := []string{access.KindAssignment, access.KindRolePermission}
	if unit == "" {
		kinds = []string{access.KindRolePermission, access.KindUser}
	}
	var out []string
	for _, k := range kinds {
		f, err := events.KindSubjects(unit, events.ChannelAdmin, k)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

func (ac *accessControl) close() {
	if ac.sub != nil {
		ac.sub.Unsubscribe()
	}
	if ac.cancel != nil {
		ac.cancel()
	}
	ac.wg.Wait()
}

// apply takes one Admin change into the directory and marks the users it
// touched for reconciling.
func (ac *accessControl) apply(e *events.Envelope) {
	ac.mu.Lock()
	users, err := ac.dir.Apply(e)
	for _, u := range users {
		ac.dirty[u] = true
	}
	ac.mu.Unlock()
	if err != nil {
		ac.log.Warn("access control: admin record not usable", "err", err)
	}
	if len(users) > 0 {
		ac.poke()
	}
}

func (ac *accessControl) poke() {
	select {
	case ac.kick <- struct{}{}:
	default:
	}
}

func (ac *accessControl) markAll() {
	ac.mu.Lock()
	for _, d := range ac.devices {
		if d.Person != "" {
			ac.dirty[d.Person] = true
		}
	}
	ac.mu.Unlock()
	ac.poke()
}

// reload reads the registry's devices (devices are added by the CLI in
// another process too).
func (ac *accessControl) reload() error {
	users, err := ac.auth.Users()
	if err != nil {
		return err
	}
	ac.mu.Lock()
	defer ac.mu.Unlock()
	for _, u := range users {
		if u.Kind == natsauth.KindDevice {
			ac.devices[u.ID] = u
		}
	}
	return nil
}

// device returns the registry entry of id, reading the registry again
// when it is not known yet.
func (ac *accessControl) device(id string) (natsauth.User, bool) {
	ac.mu.Lock()
	d, ok := ac.devices[id]
	ac.mu.Unlock()
	if ok {
		return d, true
	}
	if err := ac.reload(); err != nil {
		ac.log.Warn("access control: reading the registry", "err", err)
		return natsauth.User{}, false
	}
	ac.mu.Lock()
	defer ac.mu.Unlock()
	d, ok = ac.devices[id]
	return d, ok
}

// MayWrite implements [ingest.Authorizer]: a device may write only in its
// current org units, and, when it is bound to a user, only the kinds that
// user's roles there allow.
func (ac *accessControl) MayWrite(device string, a events.Address) error {
	d, ok := ac.device(device)
	switch {
	case !ok:
		return fmt.Errorf("device %s is not registered", device)
	case d.Revoked():
		return fmt.Errorf("device %s is revoked", device)
	case a.OrgUnit != "" && !slices.Contains(d.OrgUnits, a.OrgUnit):
		return fmt.Errorf("org unit %s is not assigned to device %s", a.OrgUnit, device)
	case d.Person == "":
		return nil
	}
	ac.mu.Lock()
	defer ac.mu.Unlock()
	return ac.dir.MayWrite(d.Person, a.OrgUnit, a.Kind)
}

// unitsOf returns the org units person's assignments give, among those
// the broker serves.
func (ac *accessControl) unitsOf(person string) []string {
	ac.mu.Lock()
	defer ac.mu.Unlock()
	var out []string
	for _, u := range ac.dir.Units(person) {
		if slices.Contains(ac.units, u) {
			out = append(out, u)
		}
	}
	return out
}
