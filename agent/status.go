package agent

import (
	"context"
	"errors"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/store"
)

// Sync states reported in [Status.State].
const (
	StateNotStarted = "not_started"
	StateInProgress = "in_progress"
	StateUpToDate   = "up_to_date"
	// StateUpdatesAvailable: a non-blocking sync finished downloading; the
	// user applies the updates (POST /v1/apply).
	StateUpdatesAvailable = "updates_available"
	StateFailed           = "failed"
	// StateAuthError: the broker refused the device's credentials;
	// AuthError says how (login_failed, password_expired, token_rejected).
	StateAuthError = "authentication_error"
	// StateIncompatible: agent and server protocol versions do not fit;
	// nothing syncs until one side is upgraded (LastError says which).
	StateIncompatible = "incompatible_server"
	// StateRevoked: the broker said the device's credentials were revoked
	// (AuthError token_rejected); its org data was wiped and it does not
	// connect until other credentials are configured (Revoked says what
	// was lost).
	StateRevoked = "revoked"
)

// Status is what the agent reports about itself (GET /v1/status).
type Status struct {
	DeviceID string   `json:"device_id"`
	User     string   `json:"user,omitempty"`
	OrgUnits []string `json:"org_units"`
	State    string   `json:"state"`
	// OnlineOnly is true until a full sync has completed: local data is not
	// complete and the app must not work offline on it.
	OnlineOnly bool `json:"online_only"`
	Connected  bool `json:"connected"`
	// Broker is the broker node the agent is connected to.
	Broker            string     `json:"broker,omitempty"`
	Scope             Scope      `json:"scope,omitempty"`
	LastSyncStarted   *time.Time `json:"last_sync_started,omitempty"`
	LastSyncCompleted *time.Time `json:"last_sync_completed,omitempty"`
	NextSync          *time.Time `json:"next_sync,omitempty"`
	// Next is the next automatic sync (scope, time, reason); Reminder is set
	// between its reminder and its start.
	Next     *Due `json:"next,omitempty"`
	Reminder *Due `json:"reminder,omitempty"`
	// Wiped is set when this start removed the device's data because the
	// agent had not been used for retention_days.
	Wiped *store.WipeReport `json:"wiped,omitempty"`
	// AuthError is set while the broker refuses the device\'s credentials.
	AuthError string `json:"auth_error,omitempty"`
	// Revoked is set once the broker revoked the device's credentials.
	Revoked *Revocation `json:"revoked,omitempty"`
	// RefreshMode is the non-blocking sync setting; Blocking is set while a
	// blocking sync runs (the app should wait for it).
	RefreshMode bool `json:"refresh_mode"`
	Blocking    bool `json:"blocking,omitempty"`
	// UpdatesAvailableSince and AgeBand (green, orange, red) describe
	// downloaded updates waiting for Apply; StagedChanges counts them.
	UpdatesAvailableSince *time.Time        `json:"updates_available_since,omitempty"`
	AgeBand               string            `json:"age_band,omitempty"`
	StagedChanges         int               `json:"staged_changes"`
	LastApplied           *time.Time        `json:"last_applied,omitempty"`
	LastError             string            `json:"last_error,omitempty"`
	Progress              []ChannelProgress `json:"progress"`
	Channels              []ChannelStatus   `json:"channels"`
	// SyncErrors counts local writes the server refused or found in
	// conflict, waiting for the user (GET /v1/conflicts).
	SyncErrors int `json:"sync_errors"`
	// PendingWrites counts local writes not yet confirmed (queued + sent).
	PendingWrites int `json:"pending_writes"`
	// BadMessages counts incoming changes the device could not apply, and
	// stored records left out of listings as unreadable.
	BadMessages int `json:"bad_messages"`
	// ParkedChanges counts incoming changes kept for a newer agent (a newer
	// envelope schema, a kind outside the kinds setting); they are applied
	// when one starts.
	ParkedChanges   int `json:"parked_changes"`
	ProtocolVersion int `json:"protocol_version"`
	// Documents sums up the document content on the device and the
	// download in progress.
	Documents *DocumentSummary `json:"documents"`
}

// ChannelStatus is the local state of one channel.
type ChannelStatus struct {
	Channel events.Channel     `json:"channel"`
	Records int                `json:"records"`
	Units   []store.Checkpoint `json:"checkpoints"`
}

// Status returns the agent's current status. Record counts are kept by the
// store between writes, so reading the status while nothing changes costs
// a few small queries; [Agent.StatusChanged] says when to read it again.
func (a *Agent) Status(ctx context.Context) (Status, error) {
	st := a.runtimeStatus()
	cps, err := a.db.Checkpoints(ctx)
	if err != nil {
		return st, err
	}
	for _, ch := range events.Channels {
		cs := ChannelStatus{Channel: ch, Units: []store.Checkpoint{}}
		if cs.Records, err = a.db.LiveCount(ctx, ch); err != nil {
			return st, err
		}
		for _, cp := range cps {
			if cp.Channel == ch {
				cs.Units = append(cs.Units, cp)
			}
		}
		st.Channels = append(st.Channels, cs)
	}
	if st.BadMessages, err = a.db.CountSyncErrors(ctx); err != nil {
		return st, err
	}
	st.BadMessages += a.db.UnreadableRecords()
	if st.ParkedChanges, err = a.db.CountParked(ctx); err != nil {
		return st, err
	}
	counts, err := a.db.OutboxCounts(ctx)
	if err != nil {
		return st, err
	}
	st.SyncErrors = counts[store.StateConflict] + counts[store.StateRejected]
	st.PendingWrites = counts[store.StateQueued] + counts[store.StateSent]
	if err := a.stagingStatus(ctx, &st); err != nil {
		return st, err
	}
	if st.Documents, err = a.documentSummary(ctx); err != nil {
		return st, err
	}
	initial, err := a.db.Meta(ctx, metaInitialDone)
	st.OnlineOnly = initial == ""
	return st, err
}

func (a *Agent) stagingStatus(ctx context.Context, st *Status) error {
	sg, err := a.db.StagingState(ctx)
	if err != nil {
		return err
	}
	st.RefreshMode, st.LastApplied = a.RefreshMode(), sg.LastApplied
	if sg.Ready != nil {
		st.UpdatesAvailableSince, st.StagedChanges = sg.Ready, sg.Changes
		st.AgeBand = AgeBand(*sg.Ready, a.now())
		if st.State == StateUpToDate {
			st.State = StateUpdatesAvailable
		}
	}
	return nil
}

func (a *Agent) runtimeStatus() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := Status{DeviceID: a.cfg.DeviceID, User: a.User(), OrgUnits: a.OrgUnits(), ProtocolVersion: events.SchemaVersion,
		Progress: []ChannelProgress{}, Scope: a.running}
	st.Connected = a.client != nil && a.client.Connected()
	if st.Connected {
		st.Broker = a.client.ConnectedURL()
	}
	var tlsErr string
	if a.client != nil {
		st.AuthError = a.client.AuthError()
		if !st.Connected {
			tlsErr = a.client.TLSError()
		}
	}
	if a.revoked != nil {
		r := *a.revoked
		st.Revoked, st.AuthError = &r, natsjs.AuthTokenRejected
	}
	switch {
	case st.AuthError != "":
		st.State = StateAuthError
		if st.Revoked != nil {
			st.State = StateRevoked
		}
		if a.lastErr != nil {
			st.LastError = a.lastErr.Error()
		}
	case tlsErr != "":
		st.State, st.LastError = StateFailed, "broker TLS: "+tlsErr
	case a.running != "":
		st.State = StateInProgress
	case errors.Is(a.lastErr, events.ErrIncompatible):
		st.State, st.LastError = StateIncompatible, a.lastErr.Error()
	case a.lastErr != nil:
		st.State, st.LastError = StateFailed, a.lastErr.Error()
	case a.completed.IsZero():
		st.State = StateNotStarted
	default:
		st.State = StateUpToDate
	}
	st.LastSyncStarted, st.LastSyncCompleted, st.NextSync = timePtr(a.started), timePtr(a.completed), timePtr(a.next.At)
	if a.next.Scope != "" {
		next := a.next
		st.Next = &next
	}
	st.Reminder, st.Wiped = a.reminder, a.wiped
	if a.syncer != nil {
		st.Progress = a.syncer.Progress()
		st.Blocking = a.running != "" && !a.syncer.staging.Load()
	}
	return st
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// Records returns the local records matching q.
func (a *Agent) Records(ctx context.Context, q store.Query) ([]store.Record, error) {
	return a.db.Records(ctx, q)
}
