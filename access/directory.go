package access

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/events"
)

// Record kinds of the Admin channel the directory reads.
const (
	// KindAssignment: in an org unit's stream, body {user, role,
	// disabled}: user works in that unit with role.
	KindAssignment = "user_assignment"
	// KindRolePermission: tenant-wide or in a unit's stream, body {role,
	// allow}: what role may do (in that unit only, when in a unit's
	// stream). allow lists "<kind>:write", "<kind>:*", "*:write" or "*".
	KindRolePermission = "role_permission"
	// KindUser: tenant-wide, body {disabled}: a disabled user may not sign
	// in and carries no units.
	KindUser = "user"
)

// Sentinel errors of [Directory] answers; test with [errors.Is].
var (
	// ErrUnknownUser: no assignment names the user.
	ErrUnknownUser = errors.New("access: unknown user")
	// ErrNotAssigned: the user has no assignment in that org unit.
	ErrNotAssigned = errors.New("access: user not assigned to the org unit")
	// ErrDisabled: the user is disabled.
	ErrDisabled = errors.New("access: user disabled")
	// ErrRoleDenied: the user's roles in the unit may not write that kind.
	ErrRoleDenied = errors.New("access: role may not write this kind")
	// ErrBadRecord: an Admin record the directory reads has a body it
	// cannot use; the record is ignored (its earlier version too).
	ErrBadRecord = errors.New("access: unusable admin record")
)

type assignment struct {
	User     string `msgpack:"user"`
	Role     string `msgpack:"role"`
	Disabled bool   `msgpack:"disabled"`
}

type rolePermission struct {
	Role  string   `msgpack:"role"`
	Allow []string `msgpack:"allow"`
}

type user struct {
	Disabled bool `msgpack:"disabled"`
}

// key is a record of a unit ("" tenant-wide).
type key struct{ unit, id string }

// Directory is the access state of one tenant. The zero value is empty and
// ready; it is not safe for concurrent use (its owner locks).
type Directory struct {
	assignments map[key]assignment
	// byUser indexes assignments by user, so that a check reads only that
	// user's assignments (a tenant holds thousands).
	byUser map[string]map[key]struct{}
	roles  map[key]rolePermission
	users  map[string]user
}

// Reads reports whether the directory reads changes of address a (apply
// only those; others are ignored anyway).
func Reads(a events.Address) bool {
	if a.Channel != events.ChannelAdmin {
		return false
	}
	switch a.Kind {
	case KindAssignment:
		return a.OrgUnit != ""
	case KindRolePermission:
		return true
	case KindUser:
		return a.OrgUnit == ""
	}
	return false
}

// Apply applies one change of the Admin data and returns the users whose
// access may have changed (every user for a role permission change). A
// change of a record the directory does not read is ignored; a record
// with a body it cannot use is removed and reported with [ErrBadRecord].
func (d *Directory) Apply(e *events.Envelope) ([]string, error) {
	a := e.Address()
	if !Reads(a) {
		return nil, nil
	}
	k := key{a.OrgUnit, a.RecordID}
	switch a.Kind {
	case KindAssignment:
		before := d.assignments[k].User
		var v assignment
		err := decode(e, &v, func() error { return need("user", v.User) })
		set := err == nil && e.Op == events.OpUpsert
		setOrDelete(&d.assignments, k, v, set)
		d.index(before, v.User, k, set)
		return compactUsers(before, v.User), err
	case KindRolePermission:
		var v rolePermission
		err := decode(e, &v, func() error { return need("role", v.Role) })
		setOrDelete(&d.roles, k, v, err == nil && e.Op == events.OpUpsert)
		return d.allUsers(), err
	default: // KindUser
		var v user
		err := decode(e, &v, func() error { return nil })
		setOrDelete(&d.users, a.RecordID, v, err == nil && e.Op == events.OpUpsert)
		return []string{a.RecordID}, err
	}
}

// index moves assignment k from user before's set to user after's (when
// set), dropping a user left with none.
func (d *Directory) index(before, after string, k key, set bool) {
	if ks := d.byUser[before]; ks != nil {
		delete(ks, k)
		if len(ks) == 0 {
			delete(d.byUser, before)
		}
	}
	if !set {
		return
	}
	if d.byUser == nil {
		d.byUser = map[string]map[key]struct{}{}
	}
	if d.byUser[after] == nil {
		d.byUser[after] = map[key]struct{}{}
	}
	d.byUser[after][k] = struct{}{}
}

func decode(e *events.Envelope, v any, check func() error) error {
	if e.Op == events.OpDelete {
		return nil
	}
	if err := msgpack.Unmarshal(e.Body, v); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBadRecord, e.Address(), err)
	}
	if err := check(); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBadRecord, e.Address(), err)
	}
	return nil
}

func need(field, v string) error {
	if v == "" {
		return fmt.Errorf("%s missing", field)
	}
	return nil
}

func setOrDelete[K comparable, V any](m *map[K]V, k K, v V, set bool) {
	if !set {
		delete(*m, k)
		return
	}
	if *m == nil {
		*m = map[K]V{}
	}
	(*m)[k] = v
}

func compactUsers(us ...string) []string {
	var out []string
	for _, u := range us {
		if u != "" && !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out
}

func (d *Directory) allUsers() []string {
	return slices.Sorted(maps.Keys(d.byUser))
}

// Units returns the org units user is assigned to (not disabled), sorted;
// none for a disabled user.
func (d *Directory) Units(user string) []string {
	if d.users[user].Disabled {
		return nil
	}
	var out []string
	for k := range d.byUser[user] {
		if !d.assignments[k].Disabled {
			out = append(out, k.unit)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// rolesOf returns user's roles in unit.
func (d *Directory) rolesOf(user, unit string) []string {
	var out []string
	for k := range d.byUser[user] {
		if a := d.assignments[k]; k.unit == unit && !a.Disabled && a.Role != "" {
			out = append(out, a.Role)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Known returns nil if user may sign in at all: named by an assignment
// and not disabled ([ErrUnknownUser], [ErrDisabled]).
func (d *Directory) Known(user string) error {
	if d.users[user].Disabled {
		return fmt.Errorf("%w: %s", ErrDisabled, user)
	}
	if len(d.byUser[user]) == 0 {
		return fmt.Errorf("%w: %s", ErrUnknownUser, user)
	}
	if len(d.Units(user)) == 0 {
		return fmt.Errorf("%w: %s (every assignment disabled)", ErrDisabled, user)
	}
	return nil
}

// MayWrite returns nil if user may write records of kind in unit: the
// user is assigned there and one of its roles there allows the kind. A
// tenant whose Admin data holds no role permission at all restricts no
// kind (only the assignment is checked).
func (d *Directory) MayWrite(user, unit, kind string) error {
	if err := d.Known(user); err != nil {
		return err
	}
	roles := d.rolesOf(user, unit)
	if !slices.Contains(d.Units(user), unit) {
		return fmt.Errorf("%w: %s is not assigned to %s", ErrNotAssigned, user, unit)
	}
	if len(d.roles) == 0 {
		return nil
	}
	for k, rp := range d.roles {
		if (k.unit == "" || k.unit == unit) && slices.Contains(roles, rp.Role) && allows(rp.Allow, kind) {
			return nil
		}
	}
	return fmt.Errorf("%w: role %s may not write %s records in %s", ErrRoleDenied, orNone(roles), kind, unit)
}

func allows(allow []string, kind string) bool {
	for _, a := range allow {
		k, verb, _ := strings.Cut(a, ":")
		if (k == kind || k == "*") && (verb == "write" || verb == "*" || (k == "*" && verb == "")) {
			return true
		}
	}
	return false
}

func orNone(roles []string) string {
	if len(roles) == 0 {
		return "(none)"
	}
	return strings.Join(roles, ",")
}

// Users returns every user named by an assignment, sorted.
func (d *Directory) Users() []string { return d.allUsers() }

// Clone returns an independent copy of d (a snapshot readers use without
// the owner's lock).
func (d *Directory) Clone() *Directory {
	c := &Directory{assignments: maps.Clone(d.assignments), roles: maps.Clone(d.roles), users: maps.Clone(d.users)}
	if d.byUser != nil {
		c.byUser = make(map[string]map[key]struct{}, len(d.byUser))
		for u, ks := range d.byUser {
			c.byUser[u] = maps.Clone(ks)
		}
	}
	return c
}
