package events

import "fmt"

// kindsByChannel lists the record kinds each channel carries. They follow
// the compliance app's initial sync (seeds): org units, entities/locations,
// events, actions, findings, obligations, settings, role permissions, user
// assignments, documents.
var kindsByChannel = map[Channel][]string{
	ChannelEvents:    {"event", "action", "finding", "obligation", "risk"},
	ChannelAdmin:     {"org_unit", "entity", "location", "setting", "role_permission", "user_assignment"},
	ChannelDocuments: {"document"},
}

// Kinds returns the record kinds channel ch carries.
func Kinds(ch Channel) []string { return append([]string(nil), kindsByChannel[ch]...) }

// ValidKind returns nil if kind is a record kind of channel ch and an error
// wrapping [ErrUnknownKind] otherwise.
func ValidKind(ch Channel, kind string) error {
	for _, k := range kindsByChannel[ch] {
		if k == kind {
			return nil
		}
	}
	return &FieldError{Field: "kind", Reason: fmt.Sprintf("kind %q is not carried by channel %q", kind, ch), Err: ErrUnknownKind}
}
