package agent

import (
	"context"
	"time"

	"github.com/fieldsync/fieldsync/store"
)

// Conflicts returns the sync errors of local writes.
func (a *Agent) Conflicts(ctx context.Context) ([]store.Conflict, error) { return a.db.Conflicts(ctx) }

// Resolve settles a sync error: store.ResolveUndo, ResolveUndelete or
// ResolveRetry. Undelete and Retry queue a new write, sent by autosync.
func (a *Agent) Resolve(ctx context.Context, mutationID, action string) (*store.Mutation, error) {
	m, err := a.db.Resolve(ctx, mutationID, action, newMutationID(), time.Now())
	if err == nil && m != nil {
		kick(a.wake)
	}
	return m, err
}
