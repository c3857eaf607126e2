package store

import (
	"context"
	"fmt"

	"github.com/fieldsync/fieldsync/events"
)

// The live view of a channel has up to three layers, top first:
//
//  1. pending: the device's own unconfirmed writes;
//  2. staged rows already applied but not yet merged (gen <= applied_gen);
//  3. the channel table.
//
// A record is read from the topmost layer that has it; a delete in a
// layer hides the record. Layers that are empty cost nothing: reads then
// go straight to the channel table.
type layers struct {
	pending bool
	staged  bool
	applied int64
}

func layersOf(ctx context.Context, q queryer, ch events.Channel) (layers, error) {
	var l layers
	err := q.QueryRowContext(ctx, `SELECT
		coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?), 0),
		EXISTS (SELECT 1 FROM pending WHERE channel = ?)`, metaAppliedGen, string(ch)).Scan(&l.applied, &l.pending)
	if err != nil {
		return l, fmt.Errorf("store: view layers: %w", err)
	}
	err = q.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM staged WHERE channel = ? AND gen <= ?)`, string(ch), l.applied).Scan(&l.staged)
	if err != nil {
		return l, fmt.Errorf("store: view layers: %w", err)
	}
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
		if l.pending {
			st, stArgs = append(st, shadowedBy("pending", "x")), append(stArgs, c)
		}
		arms = append(arms, `SELECT org_unit, kind, record_id, version, event_id, origin, updated_at, body, 0 FROM staged x`+where(st))
		out = append(out, stArgs...)
	}
	if l.pending {
		arms = append(arms, `SELECT org_unit, kind, record_id, coalesce((SELECT version FROM `+t+` r WHERE r.org_unit = p.org_unit
			AND r.kind = p.kind AND r.record_id = p.record_id), 0), mutation_id, 'local', updated_at, body, 1 FROM pending p`+
			where(append(append([]string{}, conds...), "channel = ?", "deleted = 0")))
		out = append(append(out, args...), c)
	}
	return arms, out
}
