package store

import (
	"context"
	"fmt"
)

// WipeRevoked is [DB.Wipe] for a device the server revoked: it also
// clears the activity log (its entries name the device's syncs, errors
// and counts) and the rows of downloaded documents (the caller removes
// their files), so only device settings and the meta keys keep lists are
// left.
func (db *DB) WipeRevoked(ctx context.Context, keep ...string) (WipeReport, error) {
	r, err := db.Wipe(ctx, keep...)
	if err != nil {
		return r, err
	}
	if _, err := db.writer.ExecContext(ctx, `DELETE FROM activity; DELETE FROM doc_files`); err != nil {
		return r, fmt.Errorf("store: wipe activity: %w", err)
	}
	return r, nil
}
