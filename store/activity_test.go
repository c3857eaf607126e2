package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/store"
)

// TestDB_LogActivity_Bounded: the activity log keeps the newest entries
// and never grows past its bound (1,000 entries plus one trim period of
// 100), however many are logged.
func TestDB_LogActivity_Bounded(t *testing.T) {
	ctx := context.Background()
	db := mustOpenDB(t)
	const n = 1250
	for i := range n {
		a := store.Activity{Kind: "upload", Started: time.Now(), Finished: time.Now(), Outcome: fmt.Sprintf("ok %d", i)}
		if err := db.LogActivity(ctx, a, map[string]any{"i": i}); err != nil {
			t.Fatal(err)
		}
	}
	all, err := db.Activities(ctx, 10*n)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) < 1000 || len(all) > 1100 {
		t.Fatalf("%d activity entries after %d logged, want between 1,000 and 1,100", len(all), n)
	}
	if all[0].Outcome != fmt.Sprintf("ok %d", n-1) {
		t.Fatalf("newest entry %q, want the last logged", all[0].Outcome)
	}
}
