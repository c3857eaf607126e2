package agent

import (
	"context"
	"log/slog"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/projections"
	"github.com/fieldsync/fieldsync/store"
)

// Changes this build cannot read (a newer envelope schema, a kind outside
// the kinds setting) are parked in the store while syncing, and the
// checkpoint moves on. When a build (or a kinds / max_schema_version
// setting) that reads them starts, they are applied before anything else:
// at [Open], and before the first sync of a [Syncer] that has not done it
// yet. Applied parked changes go live at once, also in refresh mode: they
// were downloaded long ago, and only now can be read.

// applyParked applies what reader reads of the parked changes and logs
// the outcome.
func applyParked(ctx context.Context, db *store.DB, reader projections.Reader, log *slog.Logger) (store.UnparkReport, error) {
	rep, err := db.ApplyParked(ctx, reader)
	if err != nil {
		return rep, err
	}
	if rep.Applied > 0 || rep.Rejected > 0 {
		log.Info("parked changes applied", "applied", rep.Applied, "bad", rep.Rejected, "still_parked", rep.Left)
	} else if rep.Left > 0 {
		log.Debug("parked changes wait for a newer agent", "parked", rep.Left)
	}
	return rep, nil
}

// applyParked runs [applyParked] once in the Syncer's life.
func (s *Syncer) applyParked(ctx context.Context) error {
	if s.unparked.Load() {
		return nil
	}
	if _, err := applyParked(ctx, s.db, s.cfg.Reader(), s.log); err != nil {
		return err
	}
	s.unparked.Store(true)
	return nil
}

// logParked reports the changes of a batch that were parked.
func logParked(log *slog.Logger, unit string, ch events.Channel, parked []projections.Parked, r *Report) {
	r.Parked += len(parked)
	for _, p := range parked {
		log.Info("change parked for a newer agent", "unit", unitName(unit), "channel", ch, "seq", p.Seq, "subject", p.Subject, "reason", p.Code, "err", p.Err)
	}
}
