package store

import (
	"log/slog"
	"sync"

	"github.com/fieldsync/fieldsync/events"
)

// maxUnreadableKept bounds how many distinct unreadable records are
// remembered (and logged once each); beyond it they are still skipped and
// counted, but logged every time.
const maxUnreadableKept = 10000

// unreadable remembers the records a listing skipped because their stored
// body cannot be served: bodies that an older build stored before bodies
// were validated where they enter (see [events.ValidateBody]).
type unreadable struct {
	log  *slog.Logger
	mu   sync.Mutex
	seen map[unreadableKey]struct{}
}

// unreadableKey is one version of one record: a newer version of the
// record is a new finding.
type unreadableKey struct {
	ch                   events.Channel
	unit, kind, id, from string
}

// skip logs r (once per record version) and remembers it.
func (u *unreadable) skip(r Record, err error) {
	k := unreadableKey{ch: r.Channel, unit: r.OrgUnit, kind: r.Kind, id: r.RecordID, from: r.EventID}
	u.mu.Lock()
	_, known := u.seen[k]
	if !known && len(u.seen) < maxUnreadableKept {
		if u.seen == nil {
			u.seen = map[unreadableKey]struct{}{}
		}
		u.seen[k] = struct{}{}
	}
	u.mu.Unlock()
	if !known {
		u.log.Warn("store: unreadable record skipped", "channel", r.Channel, "org_unit", r.OrgUnit, "kind", r.Kind,
			"id", r.RecordID, "event_id", r.EventID, "version", r.Version, "pending", r.Pending, "err", err)
	}
}

func (u *unreadable) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.seen)
}

// UnreadableRecords returns how many distinct records (one per version)
// [DB.Records] has skipped since the database was opened because their
// stored body is not a valid record body. Each is logged once, with its
// address, when first skipped.
func (db *DB) UnreadableRecords() int { return db.unreadable.count() }
