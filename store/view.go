package store

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/fieldsync/fieldsync/events"
)

// The live view of a channel has up to three layers, top first:
//
//  1. pending: the device's own unconfirmed writes;
//  2. staged rows already applied but not yet merged (gen <= applied_gen;
//     of a record staged in several applied generations, the newest);
//  3. the channel table.
//
// A record is read from the topmost layer that has it; a delete in a
// layer hides the record. Layers that are empty cost nothing: reads then
// go straight to the channel table.
type layers struct {
	pending bool
	staged  bool
	// multi: applied rows of more than one generation wait to be merged,
	// so a record may have several.
	multi   bool
	applied int64
}

func layersOf(ctx context.Context, q queryer, ch events.Channel) (layers, error) {
	var l layers
	var lo, hi sql.NullInt64
	err := q.QueryRowContext(ctx, `SELECT a.gen, EXISTS (SELECT 1 FROM pending WHERE channel = ?2),
		(SELECT min(gen) FROM staged WHERE channel = ?2 AND gen <= a.gen), (SELECT max(gen) FROM staged WHERE channel = ?2 AND gen <= a.gen)
		FROM (SELECT coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?1), 0) AS gen) a`,
		metaAppliedGen, string(ch)).Scan(&l.applied, &l.pending, &lo, &hi)
	if err != nil {
		return l, fmt.Errorf("store: view layers: %w", err)
	}
	l.staged, l.multi = lo.Valid, lo.Valid && lo.Int64 != hi.Int64
	return l, nil
}

func shadowedBy(layer, alias string) string {
	if layer == "pending" {
		return `NOT EXISTS (SELECT 1 FROM pending p WHERE p.channel = ? AND p.org_unit = ` + alias + `.org_unit AND p.kind = ` +
			alias + `.kind AND p.record_id = ` + alias + `.record_id)`
	}
	return `NOT EXISTS (SELECT 1 FROM staged s WHERE s.channel = ? AND s.gen <= ? AND s.org_unit = ` + alias + `.org_unit AND s.kind = ` +
		alias + `.kind AND s.record_id = ` + alias + `.record_id)`
}

// newestApplied keeps, of the applied staged rows x of a record, the one
// of the newest generation.
const newestApplied = `NOT EXISTS (SELECT 1 FROM staged y WHERE y.channel = x.channel AND y.org_unit = x.org_unit
	AND y.kind = x.kind AND y.record_id = x.record_id AND y.gen > x.gen AND y.gen <= ?)`

// viewVersion is an SQL expression for the server version of the record
// (alias.org_unit, alias.kind, alias.record_id) of channel ch as the live
// view shows it under the pending layer: the newest applied staged row
// (0 if that is a delete), else the channel table's row, else 0. applied
// is an SQL expression for the applied generation ("" when no applied
// staged rows wait); the expression's arguments are then the channel and
// applied's.
func viewVersion(ch events.Channel, alias, applied string) string {
	key := `org_unit = ` + alias + `.org_unit AND kind = ` + alias + `.kind AND record_id = ` + alias + `.record_id`
	inTable := `(SELECT version FROM ` + table(ch) + ` WHERE ` + key + `)`
	if applied == "" {
		return `coalesce(` + inTable + `, 0)`
	}
	return `coalesce((SELECT CASE WHEN deleted THEN 0 ELSE version END FROM staged WHERE channel = ? AND ` + key +
		` AND gen <= ` + applied + ` ORDER BY gen DESC LIMIT 1), ` + inTable + `, 0)`
}

// liveArms returns the SELECTs whose UNION ALL is the live view of ch
// filtered by conds (each arm yields the record columns and a pending
// flag), and their arguments in order.
func liveArms(ch events.Channel, conds []string, args []any, l layers) ([]string, []any) {
	t, c := table(ch), string(ch)
	var arms []string
	var out []any
	base, baseArgs := append([]string{}, conds...), append([]any{}, args...)
	if l.pending {
		base, baseArgs = append(base, shadowedBy("pending", "r")), append(baseArgs, c)
	}
	if l.staged {
		base, baseArgs = append(base, shadowedBy("staged", "r")), append(baseArgs, c, l.applied)
	}
	arms = append(arms, `SELECT org_unit, kind, record_id, version, event_id, origin, updated_at, body, 0 FROM `+t+` r`+where(base))
	out = append(out, baseArgs...)
	if l.staged {
		st := append(append([]string{}, conds...), "channel = ?", "gen <= ?", "deleted = 0")
		stArgs := append(append([]any{}, args...), c, l.applied)
		if l.multi {
			st, stArgs = append(st, newestApplied), append(stArgs, l.applied)
		}
		if l.pending {
			st, stArgs = append(st, shadowedBy("pending", "x")), append(stArgs, c)
		}
		arms = append(arms, `SELECT org_unit, kind, record_id, version, event_id, origin, updated_at, body, 0 FROM staged x`+where(st))
		out = append(out, stArgs...)
	}
	if l.pending {
		applied := ""
		if l.staged {
			applied, out = "?", append(out, c, l.applied)
		}
		arms = append(arms, `SELECT org_unit, kind, record_id, `+viewVersion(ch, "p", applied)+`, mutation_id, 'local', updated_at, body, 1 FROM pending p`+
			where(append(append([]string{}, conds...), "channel = ?", "deleted = 0")))
		out = append(append(out, args...), c)
	}
	return arms, out
}
