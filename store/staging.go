package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/projections"
)

// Non-blocking sync ("refresh mode"): a sync downloads into staging while
// the live view stays as it was. Staged rows and staged positions belong
// to a generation; with applied = applied_gen and ready = ready_gen:
//
//   - gen <= applied: applied, part of the live view, waiting to be merged
//     into the channel tables;
//   - applied < gen <= ready: completed downloads waiting for Apply;
//   - gen above both (staging_gen): the download still running, or one
//     that was interrupted.
//
// [DB.ApplyStaged] makes the last completed download live in one small
// transaction by raising applied_gen to ready_gen, whatever the number of
// changes; a download running meanwhile stays in its own generation and
// waits for its own Apply. [DB.MergeApplied] then folds the applied rows
// into the channel tables in the background, in short transactions.

const (
	metaStagingGen     = "staging_gen"
	metaAppliedGen     = "applied_gen"
	metaReadyGen       = "ready_gen"
	metaStagingTouched = "staging_touched_at"
	metaStagingReady   = "staging_ready_at"
	metaLastApplied    = "last_applied_at"
)

// ErrNotStaging: a batch was to be staged, but no staged download is open
// ([DB.BeginStaging] was not called, or the download was completed).
var ErrNotStaging = errors.New("store: no staged download is open")

// Staging describes the staged, not yet applied, downloads.
type Staging struct {
	// Gen is the generation the running (or next) download stages into.
	Gen int64 `json:"gen"`
	// Changes counts the records the last completed download changes:
	// what Apply makes live.
	Changes int `json:"changes"`
	// Downloading counts changes staged by a download not yet completed
	// (running or interrupted); they wait for their own Apply.
	Downloading int `json:"downloading"`
	// Touched is the last time the download made progress.
	Touched time.Time `json:"touched"`
	// Ready is when a completed download became available: updates
	// available since then.
	Ready *time.Time `json:"ready,omitempty"`
	// LastApplied is when updates were last applied.
	LastApplied *time.Time `json:"last_applied,omitempty"`
	// Merging counts applied changes not yet folded into the channel tables.
	Merging int `json:"merging"`
}

// gens are the staging generations (see the comment at the top).
type gens struct{ staging, applied, ready int64 }

// complete is the highest generation that holds no running download.
func (g gens) complete() int64 { return max(g.applied, g.ready) }

// readyWaits reports whether a completed download waits for Apply.
func (g gens) readyWaits() bool { return g.ready > g.applied }

func readGens(ctx context.Context, q queryer) (gens, error) {
	var g gens
	err := q.QueryRowContext(ctx, `SELECT coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?), 0),
		coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?), 0),
		coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?), 0)`,
		metaStagingGen, metaAppliedGen, metaReadyGen).Scan(&g.staging, &g.applied, &g.ready)
	if err != nil {
		err = fmt.Errorf("store: generations: %w", err)
	}
	return g, err
}

// inChannels restricts a query on staged to the known channels, so that
// the staged_gen index (channel, gen) serves a range of generations.
var inChannels = func() string {
	var q []string
	for _, ch := range events.Channels {
		q = append(q, "'"+string(ch)+"'")
	}
	return "channel IN (" + strings.Join(q, ", ") + ")"
}()

// StagingState returns the staging's state.
func (db *DB) StagingState(ctx context.Context) (Staging, error) {
	var s Staging
	tx, err := db.reader.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return s, fmt.Errorf("store: staging: %w", err)
	}
	defer tx.Rollback()
	g, err := readGens(ctx, tx)
	if err != nil {
		return s, err
	}
	s.Gen = g.staging
	if s.Changes, err = countReady(ctx, tx, g); err != nil {
		return s, err
	}
	if err := tx.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM staged WHERE `+inChannels+` AND gen > ?),
		(SELECT count(*) FROM staged WHERE `+inChannels+` AND gen <= ?)`, g.complete(), g.applied).Scan(&s.Downloading, &s.Merging); err != nil {
		return s, fmt.Errorf("store: staging: %w", err)
	}
	s.Touched = metaTimeIn(ctx, tx, metaStagingTouched)
	if t := metaTimeIn(ctx, tx, metaStagingReady); !t.IsZero() && g.readyWaits() {
		s.Ready = &t
	}
	if t := metaTimeIn(ctx, tx, metaLastApplied); !t.IsZero() {
		s.LastApplied = &t
	}
	return s, nil
}

// countReady counts the records the completed downloads waiting for Apply
// change (a record staged by two of them counts once).
func countReady(ctx context.Context, q queryer, g gens) (int, error) {
	if !g.readyWaits() {
		return 0, nil
	}
	var n int
	var older bool
	err := q.QueryRowContext(ctx, `SELECT count(*), EXISTS (SELECT 1 FROM staged WHERE `+inChannels+` AND gen > ? AND gen < ?)
		FROM staged WHERE `+inChannels+` AND gen > ? AND gen <= ?`, g.applied, g.ready, g.applied, g.ready).Scan(&n, &older)
	if err == nil && older {
		err = q.QueryRowContext(ctx, `SELECT count(*) FROM (SELECT DISTINCT channel, org_unit, kind, record_id FROM staged
			WHERE `+inChannels+` AND gen > ? AND gen <= ?)`, g.applied, g.ready).Scan(&n)
	}
	if err != nil {
		return 0, fmt.Errorf("store: count staged changes: %w", err)
	}
	return n, nil
}

func metaTimeIn(ctx context.Context, q queryer, key string) time.Time {
	var v string
	if q.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&v) != nil {
		return time.Time{}
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// incomplete reports whether a download that has not completed left rows
// or positions in staging.
func incomplete(ctx context.Context, tx *sql.Tx, g gens) (bool, error) {
	var n int
	err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM staged WHERE `+inChannels+` AND gen > ?) OR
		EXISTS (SELECT 1 FROM staged_checkpoints WHERE gen > ?)`, g.complete(), g.complete()).Scan(&n)
	return n > 0, err
}

// BeginStaging prepares a non-blocking download at now. Applied changes
// still being merged are merged first. A download interrupted less than
// window ago is continued (its rows and position are kept); one
// interrupted longer ago is discarded, and the download starts again from
// the last completed download's position, or the last applied one. A
// completed download waiting for Apply is kept as it is: the new download
// continues from its position in the next generation. It reports whether
// an interrupted download was resumed or discarded.
func (db *DB) BeginStaging(ctx context.Context, window time.Duration, now time.Time) (resumed, discarded bool, err error) {
	if _, err := db.MergeApplied(ctx, 5000); err != nil {
		return false, false, err
	}
	err = db.tx(ctx, func(tx *sql.Tx) error {
		g, err := readGens(ctx, tx)
		if err != nil {
			return err
		}
		has, err := incomplete(ctx, tx, g)
		if err != nil {
			return err
		}
		switch touched := metaTimeIn(ctx, tx, metaStagingTouched); {
		case has && now.Sub(touched) <= window:
			resumed = true
		case has:
			discarded = true
			if err := discardAbove(ctx, tx, g.complete()); err != nil {
				return err
			}
		}
		if g.staging <= g.complete() {
			if err := setMeta(ctx, tx, metaStagingGen, g.complete()+1); err != nil {
				return err
			}
		}
		return setMeta(ctx, tx, metaStagingTouched, now.UnixMilli())
	})
	return resumed, discarded, err
}

func setMeta(ctx context.Context, tx *sql.Tx, key string, v int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
		key, strconv.FormatInt(v, 10))
	return err
}

// discardAbove drops the staged rows and positions of generations above gen.
func discardAbove(ctx context.Context, tx *sql.Tx, gen int64) error {
	for _, q := range []string{`DELETE FROM staged WHERE ` + inChannels + ` AND gen > ?`, `DELETE FROM staged_checkpoints WHERE gen > ?`} {
		if _, err := tx.ExecContext(ctx, q, gen); err != nil {
			return fmt.Errorf("store: discard staging: %w", err)
		}
	}
	return nil
}

// StagingCheckpoint returns the download position of (unit, ch) for a
// staged download: the newest staged position if any, else the live
// checkpoint.
func (db *DB) StagingCheckpoint(ctx context.Context, unit string, ch events.Channel) (Checkpoint, error) {
	cp, ok, err := readStagedCheckpoint(ctx, db.reader, unit, ch)
	if err != nil || ok {
		return cp, err
	}
	return readCheckpoint(ctx, db.reader, unit, ch)
}

// readStagedCheckpoint reads the newest staged position of (unit, ch) and
// reports whether there is one.
func readStagedCheckpoint(ctx context.Context, q queryer, unit string, ch events.Channel) (Checkpoint, bool, error) {
	cp := Checkpoint{Unit: unit, Channel: ch}
	var last, at int64
	err := q.QueryRowContext(ctx, `SELECT last_seq, snapshot_done, applied, rejected, updated_at FROM staged_checkpoints
		WHERE org_unit = ? AND channel = ? ORDER BY gen DESC LIMIT 1`, unit, string(ch)).Scan(&last, &cp.SnapshotDone, &cp.Applied, &cp.Rejected, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return cp, false, nil
	}
	if err != nil {
		return cp, false, fmt.Errorf("store: read staged checkpoint %s/%s: %w", unit, ch, err)
	}
	cp.LastSeq, cp.UpdatedAt = uint64(last), time.UnixMilli(at)
	return cp, true, nil
}

// stage writes a batch into the running download's generation and
// advances its staged position. It fails with [ErrNotStaging] rather than
// write into a generation that is complete (or live).
func (db *DB) stage(ctx context.Context, b Batch) (int, error) {
	n := 0
	err := db.tx(ctx, func(tx *sql.Tx) error {
		g, err := readGens(ctx, tx)
		if err != nil {
			return err
		}
		if g.staging <= g.complete() {
			return ErrNotStaging
		}
		cp, ok, err := readStagedCheckpoint(ctx, tx, b.Unit, b.Channel)
		if err == nil && !ok {
			cp, err = readCheckpoint(ctx, tx, b.Unit, b.Channel)
		}
		if err != nil {
			return err
		}
		changes, rejects := b.split(cp.LastSeq)
		if err := stageChanges(ctx, tx, g.staging, changes); err != nil {
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
		return advanceStaged(ctx, tx, g.staging, b, cp, len(changes), len(rejects))
	})
	return n, err
}

func advanceStaged(ctx context.Context, tx *sql.Tx, gen int64, b Batch, cp Checkpoint, applied, rejected int) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO staged_checkpoints (org_unit, channel, gen, last_seq, snapshot_done, applied, rejected, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (org_unit, channel, gen) DO UPDATE SET last_seq = excluded.last_seq,
			snapshot_done = max(snapshot_done, excluded.snapshot_done),
			applied = excluded.applied, rejected = excluded.rejected, updated_at = excluded.updated_at`,
		b.Unit, string(b.Channel), gen, int64(max(cp.LastSeq, b.LastSeq)), b.SnapshotDone || cp.SnapshotDone,
		cp.Applied+int64(applied), cp.Rejected+int64(rejected), time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("store: advance staged checkpoint %s/%s: %w", b.Unit, b.Channel, err)
	}
	return nil
}

// stageChanges stages changes of one channel in generation gen; a change
// the live channel table already holds (same or newer version, e.g. the
// device's own write accepted meanwhile) is not staged again.
func stageChanges(ctx context.Context, tx *sql.Tx, gen int64, changes []projections.Change) error {
	if len(changes) == 0 {
		return nil
	}
	t := table(changes[0].Addr.Channel)
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO staged (channel, org_unit, kind, record_id, gen, version, event_id, origin, updated_at, deleted, body)
		SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM `+t+` r WHERE r.org_unit = ? AND r.kind = ?
		AND r.record_id = ? AND r.version >= ?)
		ON CONFLICT (channel, org_unit, kind, record_id, gen) DO UPDATE SET
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
