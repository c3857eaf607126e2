package store

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/projections"
)

// Non-blocking sync ("refresh mode"): a sync downloads into staging while
// the live view stays as it was; [DB.ApplyStaged] makes everything staged
// live in one small transaction by raising applied_gen, whatever the
// number of changes; [DB.MergeApplied] then folds the applied rows into
// the channel tables in the background, in short transactions.

const (
	metaStagingGen     = "staging_gen"
	metaAppliedGen     = "applied_gen"
	metaStagingTouched = "staging_touched_at"
	metaStagingReady   = "staging_ready_at"
	metaLastApplied    = "last_applied_at"
)

// Staging describes the staged, not yet applied, download.
type Staging struct {
	Gen int64 `json:"gen"`
	// Changes counts staged record changes waiting for Apply.
	Changes int `json:"changes"`
	// Touched is the last time the download made progress.
	Touched time.Time `json:"touched"`
	// Ready is when the download completed: updates available since then.
	Ready *time.Time `json:"ready,omitempty"`
	// LastApplied is when updates were last applied.
	LastApplied *time.Time `json:"last_applied,omitempty"`
	// Merging counts applied changes not yet folded into the channel tables.
	Merging int `json:"merging"`
}

// StagingState returns the staging's state.
func (db *DB) StagingState(ctx context.Context) (Staging, error) {
	var s Staging
	gen, applied, err := db.gens(ctx, db.reader)
	if err != nil {
		return s, err
	}
	s.Gen = gen
	if err := db.reader.QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE gen > ?), count(*) FILTER (WHERE gen <= ?) FROM staged`,
		applied, applied).Scan(&s.Changes, &s.Merging); err != nil {
		return s, fmt.Errorf("store: staging: %w", err)
	}
	s.Touched = db.metaTime(ctx, metaStagingTouched)
	if t := db.metaTime(ctx, metaStagingReady); !t.IsZero() {
		s.Ready = &t
	}
	if t := db.metaTime(ctx, metaLastApplied); !t.IsZero() {
		s.LastApplied = &t
	}
	return s, nil
}

func (db *DB) metaTime(ctx context.Context, key string) time.Time {
	v, _ := db.Meta(ctx, key)
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

func (db *DB) gens(ctx context.Context, q queryer) (staging, applied int64, err error) {
	err = q.QueryRowContext(ctx, `SELECT coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?), 0),
		coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?), 0)`, metaStagingGen, metaAppliedGen).Scan(&staging, &applied)
	if err != nil {
		err = fmt.Errorf("store: generations: %w", err)
	}
	return staging, applied, err
}

// hasStaging reports whether a download is staged (rows or positions).
func hasStaging(ctx context.Context, tx *sql.Tx, applied int64) (bool, error) {
	var n int
	err := tx.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM (SELECT 1 FROM staged WHERE gen > ? LIMIT 1)) +
		(SELECT count(*) FROM (SELECT 1 FROM staged_checkpoints LIMIT 1))`, applied).Scan(&n)
	return n > 0, err
}

// BeginStaging prepares a non-blocking download at now. Applied changes
// still being merged are merged first. A staged download that completed,
// or that was interrupted less than window ago, is continued (its
// position is kept); an interrupted one older than window is discarded
// and the download starts again from the last applied checkpoints. It
// reports whether an earlier staging was resumed or discarded.
func (db *DB) BeginStaging(ctx context.Context, window time.Duration, now time.Time) (resumed, discarded bool, err error) {
	if _, err := db.MergeApplied(ctx, 5000); err != nil {
		return false, false, err
	}
	err = db.tx(ctx, func(tx *sql.Tx) error {
		gen, applied, err := db.gens(ctx, tx)
		if err != nil {
			return err
		}
		has, err := hasStaging(ctx, tx, applied)
		if err != nil {
			return err
		}
		ready, touched := db.metaTimeTx(ctx, tx, metaStagingReady), db.metaTimeTx(ctx, tx, metaStagingTouched)
		switch {
		case has && (!ready.IsZero() || now.Sub(touched) <= window):
			resumed = true
			return setMeta(ctx, tx, metaStagingTouched, now.UnixMilli())
		case has:
			discarded = true
			if err := discardStaging(ctx, tx, applied); err != nil {
				return err
			}
		}
		if gen <= applied {
			if err := setMeta(ctx, tx, metaStagingGen, applied+1); err != nil {
				return err
			}
		}
		return setMeta(ctx, tx, metaStagingTouched, now.UnixMilli())
	})
	return resumed, discarded, err
}

func (db *DB) metaTimeTx(ctx context.Context, tx *sql.Tx, key string) time.Time {
	var v string
	if tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&v) != nil {
		return time.Time{}
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

func setMeta(ctx context.Context, tx *sql.Tx, key string, v int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
		key, strconv.FormatInt(v, 10))
	return err
}

func discardStaging(ctx context.Context, tx *sql.Tx, applied int64) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM staged WHERE gen > ?`, applied); err != nil {
		return fmt.Errorf("store: discard staging: %w", err)
	}
	for _, q := range []string{`DELETE FROM staged_checkpoints`, `DELETE FROM meta WHERE key = '` + metaStagingReady + `'`} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("store: discard staging: %w", err)
		}
	}
	return nil
}

// StagingCheckpoint returns the download position of (unit, ch) for a
// staged download: the staged position if any, else the live checkpoint.
func (db *DB) StagingCheckpoint(ctx context.Context, unit string, ch events.Channel) (Checkpoint, error) {
	cp, ok, err := readCheckpointFrom(ctx, db.reader, "staged_checkpoints", unit, ch)
	if err != nil || ok {
		return cp, err
	}
	return readCheckpoint(ctx, db.reader, unit, ch)
}

// stage writes a batch into staging and advances the staged position.
func (db *DB) stage(ctx context.Context, b Batch) (int, error) {
	n := 0
	err := db.tx(ctx, func(tx *sql.Tx) error {
		cp, ok, err := readCheckpointFrom(ctx, tx, "staged_checkpoints", b.Unit, b.Channel)
		if err == nil && !ok {
			cp, err = readCheckpoint(ctx, tx, b.Unit, b.Channel)
		}
		if err != nil {
			return err
		}
		gen, _, err := db.gens(ctx, tx)
		if err != nil {
			return err
		}
		changes, rejects := b.split(cp.LastSeq)
		if err := stageChanges(ctx, tx, gen, changes); err != nil {
			return err
		}
		if err := keepParked(ctx, tx, &b, cp.LastSeq, changes); err != nil {
			return err
		}
		if err := insertRejects(ctx, tx, b.Unit, b.Channel, rejects); err != nil {
			return err
		}
		n = len(changes)
		if err := setMeta(ctx, tx, metaStagingTouched, time.Now().UnixMilli()); err != nil {
			return err
		}
		return advanceIn(ctx, tx, "staged_checkpoints", b, cp, len(changes), len(rejects))
	})
	return n, err
}

// stageChanges stages changes of one channel; a change the live channel
// table already holds (same or newer version, e.g. the device's own write
// accepted meanwhile) is not staged again.
func stageChanges(ctx context.Context, tx *sql.Tx, gen int64, changes []projections.Change) error {
	if len(changes) == 0 {
		return nil
	}
	t := table(changes[0].Addr.Channel)
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO staged (channel, org_unit, kind, record_id, gen, version, event_id, origin, updated_at, deleted, body)
		SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM `+t+` r WHERE r.org_unit = ? AND r.kind = ?
		AND r.record_id = ? AND r.version >= ?)
		ON CONFLICT (channel, org_unit, kind, record_id) DO UPDATE SET gen = excluded.gen,
		version = excluded.version, event_id = excluded.event_id, origin = excluded.origin, updated_at = excluded.updated_at,
		deleted = excluded.deleted, body = excluded.body WHERE excluded.version > staged.version`)
	if err != nil {
		return fmt.Errorf("store: prepare staging: %w", err)
	}
	defer stmt.Close()
	for _, c := range changes {
		a := c.Addr
		if _, err := stmt.ExecContext(ctx, string(a.Channel), a.OrgUnit, a.Kind, a.RecordID, gen, int64(c.Seq), c.EventID,
			c.OriginID, c.UpdatedAt, c.Deleted, c.Body, a.OrgUnit, a.Kind, a.RecordID, int64(c.Seq)); err != nil {
			return fmt.Errorf("store: stage seq %d: %w", c.Seq, err)
		}
	}
	return nil
}
