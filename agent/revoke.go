package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"time"

	"github.com/fieldsync/fieldsync/store"
)

// metaRevoked holds the [Revocation] of a device the server revoked, as
// JSON: it survives the wipe and restarts, until other credentials are
// configured.
const metaRevoked = "revoked"

// maxUnsentListed bounds the unsent writes a revocation lists by name
// (all are counted).
const maxUnsentListed = 100

// Revocation is what the agent reports once the broker told it that its
// credentials were revoked (token_rejected): the local org data was wiped,
// and these local writes had not been confirmed by the server and are lost.
type Revocation struct {
	At time.Time `json:"at"`
	// UnsentWrites counts the local writes the server had not confirmed
	// (queued, sent, or waiting as sync errors); Unsent lists the queued ones
	// by record, up to 100.
	UnsentWrites int               `json:"unsent_writes"`
	UnsentStates map[string]int    `json:"unsent_states,omitempty"`
	Unsent       []UnsentWrite     `json:"unsent,omitempty"`
	Wiped        *store.WipeReport `json:"wiped,omitempty"`
	// Credentials is the SHA-256 of the revoked credentials file: other
	// credentials lift the revocation (at the next start).
	Credentials string `json:"credentials_sha256"`
}

// UnsentWrite names one local write lost to a revocation.
type UnsentWrite struct {
	MutationID string `json:"mutation_id"`
	OrgUnit    string `json:"org_unit"`
	Channel    string `json:"channel"`
	Kind       string `json:"kind"`
	RecordID   string `json:"id"`
	Op         string `json:"op"`
}

func credentialsHash(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// loadRevocation reads a revocation recorded by an earlier run. With the
// same credentials file the device stays revoked (and any org data left
// by a wipe an interrupted run did not finish is wiped); other credentials
// lift it.
func (a *Agent) loadRevocation(ctx context.Context) error {
	v, err := a.db.Meta(ctx, metaRevoked)
	if err != nil || v == "" {
		return err
	}
	var r Revocation
	if err := json.Unmarshal([]byte(v), &r); err != nil {
		return err
	}
	if h := credentialsHash(a.cfg.Credentials); h != r.Credentials {
		a.log.Warn("device was revoked; new credentials configured, syncing again", "revoked_at", r.At)
		return a.db.SetMeta(ctx, metaRevoked, "")
	}
	if _, err := a.db.WipeRevoked(ctx, metaRevoked); err != nil {
		return err
	}
	a.removeDocuments()
	a.log.Error("device revoked by the server: not connecting until other credentials are configured", "revoked_at", r.At, "credentials", a.cfg.Credentials)
	a.revoked = &r
	return nil
}

// revokedNow handles the broker's "user authentication revoked": it stops
// the connection for good (no reconnect with the revoked credentials),
// reports the writes the server never confirmed, in the log and the
// status, and then wipes the device's org data ([store.DB.WipeRevoked]).
func (a *Agent) revokedNow(ctx context.Context) {
	ctx = context.WithoutCancel(ctx)
	a.mu.Lock()
	if a.revoked != nil {
		a.mu.Unlock()
		return
	}
	r := &Revocation{At: time.Now().UTC(), Credentials: credentialsHash(a.cfg.Credentials)}
	a.revoked = r
	client := a.client
	a.mu.Unlock()
	a.statusChanged()
	client.Close() // a running sync fails at once; nothing reconnects
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	defer a.statusChanged()
	rep := *r // a.revoked is replaced, never changed: Status reads it
	if err := a.recordUnsent(ctx, &rep); err != nil {
		a.log.Error("revoked: listing unsent writes", "err", err)
	}
	a.log.Error("device revoked by the server: local writes the server never confirmed are lost",
		"unsent_writes", rep.UnsentWrites, "states", rep.UnsentStates, "writes", rep.Unsent)
	a.setRevocation(ctx, rep)
	w, err := a.db.WipeRevoked(ctx, metaRevoked)
	if err != nil {
		a.log.Error("revoked: wiping local data failed", "err", err)
		return
	}
	a.removeDocuments()
	rep.Wiped = &w
	a.setRevocation(ctx, rep)
	a.mu.Lock()
	a.wiped, a.completed = &w, time.Time{}
	a.mu.Unlock()
	a.log.Warn("device revoked: local data wiped", "records", w.Records, "unsent_writes", w.Unsent)
	a.logActivity(ctx, "revoked", "", r.At, nil, map[string]any{"records": w.Records, "unsent_writes": w.Unsent})
}

// setRevocation publishes r to the status and records it in the store.
func (a *Agent) setRevocation(ctx context.Context, r Revocation) {
	a.mu.Lock()
	a.revoked = &r
	a.mu.Unlock()
	a.statusChanged()
	b, _ := json.Marshal(r)
	if err := a.db.SetMeta(ctx, metaRevoked, string(b)); err != nil {
		a.log.Error("revoked: recording the revocation", "err", err)
	}
}

func (a *Agent) recordUnsent(ctx context.Context, r *Revocation) error {
	counts, err := a.db.OutboxCounts(ctx)
	if err != nil {
		return err
	}
	r.UnsentStates = map[string]int{}
	for state, n := range counts {
		if n > 0 {
			r.UnsentStates[state] = n
			r.UnsentWrites += n
		}
	}
	queued, err := a.db.Queued(ctx, maxUnsentListed)
	if err != nil {
		return err
	}
	for _, m := range queued {
		r.Unsent = append(r.Unsent, UnsentWrite{MutationID: m.MutationID, OrgUnit: m.Addr.OrgUnit, Channel: string(m.Addr.Channel),
			Kind: m.Addr.Kind, RecordID: m.Addr.RecordID, Op: string(m.Op)})
	}
	return nil
}

// removeDocuments removes every document file (their rows went with the
// wipe).
func (a *Agent) removeDocuments() {
	if err := os.RemoveAll(filepath.Join(a.cfg.DataDir, "documents")); err != nil {
		a.log.Error("revoked: removing document files failed", "err", err)
	}
}
