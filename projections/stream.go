package projections

import "github.com/fieldsync/fieldsync/events"

// Stream names one (unit, channel) pair, the unit of checkpointing.
type Stream struct {
	Unit    string
	Channel events.Channel
}
