package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/metrics"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/store"
)

// Meta keys the agent keeps in the store.
const (
	metaInitialDone   = "initial_sync_completed_at"
	metaLastCompleted = "last_sync_completed_at"
)

// ErrSyncPending is returned by [Agent.RequestSync] when a sync of that
// scope is already queued.
var ErrSyncPending = errors.New("agent: a sync is already queued")

// ErrAuthRefused: the broker refuses the device's credentials, so no sync
// runs until it takes them ([Status.AuthError] says how it refused).
var ErrAuthRefused = errors.New("agent: the broker refuses the device's credentials")

// Agent is a running device agent. Create it with [Open], run it with
// [Agent.Run], release it with [Agent.Close].
type Agent struct {
	cfg     Config
	log     *slog.Logger
	db      *store.DB
	metrics *metrics.Agent

	requests chan Scope
	wake     chan struct{} // a local write was queued
	catchUp  chan struct{} // the connection came up, or results were missed
	merge    chan struct{}
	changed  notifier     // see [Agent.StatusChanged]
	outcomes outcomeLog   // see [Agent.Outcomes]
	catchUps atomic.Int64 // catch-ups autosync completed (tests)

	syncMu    sync.Mutex // one sync at a time (loop and Sync Now)
	refresh   atomic.Bool
	mu        sync.Mutex
	client    *natsjs.Client
	syncer    *Syncer
	running   Scope
	started   time.Time
	completed time.Time
	next      Due
	reminder  *Due
	failed    Scope
	retryAt   time.Time // when the failed sync is retried
	retry     *syncRetry
	lastErr   error
	report    *Report
	planner   *Planner
	touched   time.Time
	wiped     *store.WipeReport
	revoked   *Revocation                  // see [Agent.revokedNow]
	revokedCh chan struct{}                // the broker said the credentials were revoked
	grant     atomic.Pointer[events.Grant] // see assignments.go
	unassign  chan struct{}                // the grant changed the units
	connected chan struct{}                // the connection came up: ask for the grant
	refused   chan struct{}                // the broker refused the credentials

	docKick     chan struct{}                    // a document was queued, or the connection came up
	docsChanged chan struct{}                    // a sync or an Apply changed the live documents
	docProgress atomic.Pointer[DocumentProgress] // the download in progress
	// Test hooks: beforeFetch runs before each download, onDocProgress
	// after each durable progress record of one.
	beforeFetch   func(store.DocFile)
	onDocProgress func(bytes int64)
}

// Open validates cfg and opens the device store.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Agent, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	a := &Agent{cfg: cfg, log: log.With("device", cfg.DeviceID), requests: make(chan Scope, 4), wake: make(chan struct{}, 1),
		catchUp: make(chan struct{}, 1), merge: make(chan struct{}, 1), revokedCh: make(chan struct{}, 1), unassign: make(chan struct{}, 1),
		connected: make(chan struct{}, 1), refused: make(chan struct{}, 1), outcomes: outcomeLog{max: outcomeLogBytes},
		docKick: make(chan struct{}, 1), docsChanged: make(chan struct{}, 1)}
	db, err := store.Open(ctx, cfg.DBPath(), store.Options{OnCommit: a.statusChanged, Log: a.log})
	if err != nil {
		return nil, err
	}
	a.db = db
	a.metrics = a.newMetrics()
	if v, _ := db.Meta(ctx, metaLastCompleted); v != "" {
		a.completed, _ = time.Parse(time.RFC3339Nano, v)
	}
	a.refresh.Store(cfg.Refresh())
	if v, _ := db.Meta(ctx, metaRefreshMode); v != "" {
		a.refresh.Store(v == "on")
	}
	if err := a.enforceRetention(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if err := a.loadGrant(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if err := a.loadRevocation(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if _, err := applyParked(ctx, db, cfg.Reader(), a.log); err != nil {
		db.Close()
		return nil, err
	}
	a.planner = NewPlanner(cfg.schedule(), loadAutoTimes(ctx, db), a.completed, time.Now())
	return a, nil
}

func (a *Agent) now() time.Time { return a.cfg.Clock() }

// Config returns the agent's effective configuration.
func (a *Agent) Config() Config { return a.cfg }

// DB is the agent's store (read-only use by the local API and tests).
func (a *Agent) DB() *store.DB { return a.db }

// Close releases the store. Call it after Run has returned.
func (a *Agent) Close() error { return a.db.Close() }

// Run connects to the broker and syncs: an initial full sync until one
// succeeds (the device is "online only" before), then a delta sync every
// SyncInterval from the last completion, plus the syncs requested with
// [Agent.RequestSync]. It returns when ctx is cancelled. When the broker
// says the device's credentials were revoked, it wipes the local data and
// stops connecting (see [Revocation]); a device revoked earlier does not
// connect with the same credentials again.
func (a *Agent) Run(ctx context.Context) error {
	a.mu.Lock()
	revoked := a.revoked != nil
	a.mu.Unlock()
	if revoked {
		<-ctx.Done()
		return nil
	}
	inbox, err := events.DeviceInboxPrefix(a.cfg.DeviceID)
	if err != nil {
		return err
	}
	client, err := natsjs.Connect(a.cfg.BrokerURL, natsjs.ConnectOptions{Name: "fieldsync-agent " + a.cfg.DeviceID,
		Credentials: a.cfg.Credentials, JWT: a.grantJWT, CA: a.cfg.CA, InboxPrefix: inbox, RetryOnFailedConnect: true,
		OnStateChange: func(up bool, err error) {
			a.log.Info("broker connection", "connected", up, "err", err)
			if up {
				kick(a.catchUp) // autosync catches up on what it missed
				kick(a.connected)
				kick(a.docKick)
				a.retryRefused()
			}
			a.statusChanged()
		}, OnAuthError: func(kind string, err error) {
			a.log.Warn("broker refused the credentials; sync stops until it takes them", "kind", kind, "err", err, "credentials", a.cfg.Credentials)
			a.statusChanged()
			if kind == natsjs.AuthTokenRejected || kind == natsjs.AuthLoginFailed {
				kick(a.refused)
			}
		}})
	if err != nil {
		return err
	}
	defer client.Close()
	grants, err := client.SubscribeGrants(a.cfg.DeviceID, func(g events.Grant) error { return a.takeGrant(ctx, g) })
	if err != nil {
		return err
	}
	defer grants.Unsubscribe()
	s := NewSyncer(a.cfg, client, a.db, a.log)
	s.orgUnits = a.OrgUnits
	s.refresh, s.metrics, s.onChange, s.onDecided = a.RefreshMode, a.metrics, a.statusChanged, a.outcomes.add
	a.mu.Lock()
	a.client, a.syncer = client, s
	a.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(6)
	go func() {
		defer wg.Done()
		a.documents(ctx, client)
	}()
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
		case <-a.revokedCh:
			a.revokedNow(ctx)
		}
	}()
	go func() {
		defer wg.Done()
		a.accessWatch(ctx, client)
	}()
	go func() {
		defer wg.Done()
		a.unassigner(ctx)
	}()
	go func() {
		defer wg.Done()
		a.autosync(ctx, s)
	}()
	go func() {
		defer wg.Done()
		a.merger(ctx)
	}()
	defer wg.Wait()
	return a.loop(ctx)
}

// retryRefused requests at once the sync that failed because the broker
// refused the credentials, now that it took them (a new credentials file).
func (a *Agent) retryRefused() {
	a.mu.Lock()
	scope, refused := a.failed, errors.Is(a.lastErr, ErrAuthRefused)
	a.mu.Unlock()
	if refused {
		_ = a.RequestSync(scope) // already queued: fine
	}
}

// RequestSync queues a sync of scope; it runs after the current one.
func (a *Agent) RequestSync(scope Scope) error {
	if _, err := ParseScope(string(scope)); err != nil {
		return err
	}
	select {
	case a.requests <- scope:
		return nil
	default:
		return fmt.Errorf("%w (%d waiting)", ErrSyncPending, len(a.requests))
	}
}
