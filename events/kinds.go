package events

import (
	"fmt"
	"slices"
)

// Record kinds are not a list compiled into the device agent. A kind is
// any valid subject token ([ValidKind]) and the channel of a record is the
// channel token of its subject (fs.org.<unit>.<channel>.<kind>.<id>): a
// tenant adds a kind by publishing records of it, and every agent stores
// them in that channel's table and lists them without a release. The
// subject is the whole catalogue an agent needs.
//
// What devices may write is not decided here: ingest's writable rights
// (config rights.writable) name the kinds devices may create, change and
// delete. [Kinds] is the compliance app's own catalogue, the default of
// those rights and what seeds and benchmarks use.
//
// A reader may still accept fewer kinds than that ([KindSet]: the agent's
// kinds setting, or a build from before kinds were open that had a fixed
// list). A change of a kind its reader does not accept is not dropped: it
// fails with [ErrUnknownKind], and the device keeps it parked until a
// reader that accepts the kind starts (see package projections).

// catalogue is the compliance app's record kinds by channel, after its
// initial sync (seeds): org units, entities/locations, events, actions,
// findings, obligations, settings, role permissions, user assignments,
// documents.
var catalogue = map[Channel][]string{
	ChannelEvents:    {"event", "action", "finding", "obligation", "risk"},
	ChannelAdmin:     {"org_unit", "entity", "location", "setting", "role_permission", "user_assignment"},
	ChannelDocuments: {"document"},
}

// Kinds returns the compliance app's record kinds of channel ch. It is a
// default (ingest's writable rights, seeds, benchmarks), not a limit: any
// kind passing [ValidKind] may be published and synced.
func Kinds(ch Channel) []string { return slices.Clone(catalogue[ch]) }

// ValidKind returns nil if kind is a well-formed record kind (a subject
// token, see [ValidToken]) and an error wrapping [ErrMissingField] or
// [ErrInvalidField] otherwise. Any channel may carry any valid kind.
func ValidKind(kind string) error {
	if kind == "" {
		return fieldErr("kind", ErrMissingField, "record kind missing")
	}
	if err := ValidToken(kind); err != nil {
		return fieldErr("kind", ErrInvalidField, err.Error())
	}
	return nil
}

// KindSet is the record kinds a reader accepts, by channel. A nil set, and
// any channel a set does not list, accepts every kind; a listed channel
// accepts the kinds listed.
type KindSet map[Channel][]string

// DefaultKindSet returns [Kinds] of every channel as a set: what a build
// with a fixed list of kinds accepted.
func DefaultKindSet() KindSet {
	s := KindSet{}
	for _, ch := range Channels {
		s[ch] = Kinds(ch)
	}
	return s
}

// Accepts reports whether s accepts kind on channel ch.
func (s KindSet) Accepts(ch Channel, kind string) bool {
	kinds, listed := s[ch]
	return !listed || slices.Contains(kinds, kind)
}

// Check returns nil if s accepts kind on channel ch and an error wrapping
// [ErrUnknownKind] otherwise.
func (s KindSet) Check(ch Channel, kind string) error {
	if s.Accepts(ch, kind) {
		return nil
	}
	return fieldErr("kind", ErrUnknownKind, fmt.Sprintf("kind %q is not among the %s kinds this reader accepts", kind, ch))
}

// Validate returns nil if every channel of s is known and every kind valid.
func (s KindSet) Validate() error {
	for ch, kinds := range s {
		if !ch.Valid() {
			return fmt.Errorf("%w: kinds of unknown channel %q", ErrInvalidField, ch)
		}
		for _, k := range kinds {
			if err := ValidKind(k); err != nil {
				return fmt.Errorf("kinds of %s: %w", ch, err)
			}
		}
	}
	return nil
}
