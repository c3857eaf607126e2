package events

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Access protocol: what the server side tells a device about its own
// access, on subjects under fs.acc.<device>.
//
//   - A device asks for its [Grant] on [AccessRequestSubject] when it
//     connects; the server answers with the grant it holds now.
//   - The server pushes a new grant on [AccessGrantSubject] when the
//     device's user assignments change (the device answers "ok" once it
//     has stored the grant, see [GrantAck]).
//   - [SignInSubject] checks a user against the Admin data ([SignIn]).
const (
	accessToken = "acc"
	// GrantAck is a device's answer to a pushed grant it has stored.
	GrantAck = "ok"
)

// Grant is a device's access as the server side holds it.
type Grant struct {
	Device string `json:"device"`
	// User is the person the device is bound to ("" when the device's
	// units were given when it was added, not by assignments).
	User string `json:"user,omitempty"`
	// OrgUnits are the units the device may read and write, sorted.
	OrgUnits []string `json:"org_units"`
	// JWT is the device's current user JWT, signed for the key the device
	// already holds (it is not secret: it is useless without the seed).
	// The device connects with it from then on.
	JWT string `json:"jwt,omitempty"`
	// Revoked: the device was revoked; it must wipe its local data.
	Revoked bool `json:"revoked,omitempty"`
	// Error is set instead of the rest when the server could not answer.
	Error string `json:"error,omitempty"`
}

// SignIn is a request on [SignInSubject]: may User use the device?
type SignIn struct {
	User string `json:"user"`
}

// SignInReply answers a [SignIn]. Kind is "" when the user may sign in,
// else [AuthLoginFailed] with Message saying why (unknown user, not
// assigned to the device's units, disabled).
type SignInReply struct {
	Kind    string `json:"kind,omitempty"`
	Message string `json:"message,omitempty"`
	// Grant is the device's access after the sign-in (the signed-in user's
	// assignments decide its units).
	Grant *Grant `json:"grant,omitempty"`
}

// AuthLoginFailed is the sign-in refusal kind, as the device reports it.
const AuthLoginFailed = "login_failed"

// AccessRequestSubject is where device asks for its grant:
// fs.acc.<device>.get.
func AccessRequestSubject(device string) (string, error) { return accessSubject(device, "get") }

// AccessGrantSubject is where the server pushes device's new grant:
// fs.acc.<device>.grant.
func AccessGrantSubject(device string) (string, error) { return accessSubject(device, "grant") }

// SignInSubject is where device checks a user: fs.acc.<device>.signin.
func SignInSubject(device string) (string, error) { return accessSubject(device, "signin") }

// AccessServiceSubjects is the filter of every device's requests the
// server answers (get and signin): fs.acc.*.*.
func AccessServiceSubjects() string { return subjectRoot + "." + accessToken + ".*.*" }

// ParseAccessSubject returns the device and verb of an access subject.
func ParseAccessSubject(subject string) (device, verb string, err error) {
	parts := strings.Split(subject, ".")
	if len(parts) != 4 || parts[0] != subjectRoot || parts[1] != accessToken || ValidToken(parts[2]) != nil {
		return "", "", fmt.Errorf("%w: %q is not an access subject", ErrBadSubject, subject)
	}
	return parts[2], parts[3], nil
}

func accessSubject(device, verb string) (string, error) {
	if err := ValidToken(device); err != nil {
		return "", fmt.Errorf("%w: device: %w", ErrBadSubject, err)
	}
	return subjectRoot + "." + accessToken + "." + device + "." + verb, nil
}

// ParseGrant decodes a grant, rejecting unknown shapes.
func ParseGrant(b []byte) (Grant, error) {
	var g Grant
	if err := json.Unmarshal(b, &g); err != nil {
		return g, fmt.Errorf("events: grant: %w", err)
	}
	for _, u := range g.OrgUnits {
		if err := ValidToken(u); err != nil {
			return g, fmt.Errorf("events: grant: org unit: %w", err)
		}
	}
	return g, nil
}
