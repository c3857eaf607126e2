package agent

import (
	"fmt"

	"github.com/fieldsync/fieldsync/events"
)

// Scope is what one sync covers: every channel (full) or one of them, as in
// the compliance app's Full / Events / Admin / Documents syncs.
type Scope string

// The sync scopes.
const (
	ScopeFull      Scope = "full"
	ScopeEvents    Scope = "events"
	ScopeAdmin     Scope = "admin"
	ScopeDocuments Scope = "documents"
)

// ParseScope returns the scope named s ("" is full).
func ParseScope(s string) (Scope, error) {
	switch Scope(s) {
	case "", ScopeFull:
		return ScopeFull, nil
	case ScopeEvents, ScopeAdmin, ScopeDocuments:
		return Scope(s), nil
	}
	return "", fmt.Errorf("agent: unknown sync scope %q (want full, events, admin or documents)", s)
}

// Channels returns the channels the scope syncs, in sync order (admin
// first: permissions and settings frame the rest).
func (s Scope) Channels() []events.Channel {
	switch s {
	case ScopeEvents, ScopeAdmin, ScopeDocuments:
		return []events.Channel{events.Channel(s)}
	}
	return []events.Channel{events.ChannelAdmin, events.ChannelEvents, events.ChannelDocuments}
}
