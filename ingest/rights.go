package ingest

import (
	"fmt"
	"slices"

	"github.com/fieldsync/fieldsync/events"
)

// Authorizer decides whether device may write the record at a now: the
// broker's access control (its current org units, its user's role
// permissions from the Admin data). An error says why not, and the write
// is rejected with [events.ReasonNotAllowed] and that reason.
type Authorizer interface {
	MayWrite(device string, a events.Address) error
}

// Rights says what devices may write.
type Rights struct {
	// Devices maps a device id to the org units it may write. When empty,
	// any device may write any org unit (development and demos); when set,
	// unlisted devices may write nothing.
	Devices map[string][]string
	// Writable maps a channel to the record kinds devices may create,
	// change and delete in it. Default: every kind of the events channel;
	// admin data and documents are the server side's.
	Writable map[events.Channel][]string
}

func (r Rights) withDefaults() Rights {
	if r.Writable == nil {
		r.Writable = map[events.Channel][]string{events.ChannelEvents: events.Kinds(events.ChannelEvents)}
	}
	return r
}

// Allowed returns nil if device may write a, else why not.
func (r Rights) Allowed(device string, a events.Address) error {
	r = r.withDefaults()
	if !slices.Contains(r.Writable[a.Channel], a.Kind) {
		return fmt.Errorf("devices may not write %s records of the %s channel", a.Kind, a.Channel)
	}
	if len(r.Devices) == 0 {
		return nil
	}
	units, ok := r.Devices[device]
	if !ok {
		return fmt.Errorf("device %s has no write rights", device)
	}
	if !slices.Contains(units, a.OrgUnit) {
		return fmt.Errorf("device %s may not write org unit %s", device, a.OrgUnit)
	}
	return nil
}
