package events

import (
	"fmt"
	"strings"
)

// Subject prefixes and stream names. Build subjects with the functions of
// this file, never by hand.
const (
	subjectRoot    = "fs"
	orgToken       = "org"
	tenantToken    = "tenant"
	uploadToken    = "up"
	resultToken    = "res"
	streamOrgPfx   = "FS_ORG_"
	TenantStream   = "FS_TENANT"
	UploadStream   = "FS_UPLOADS"
	ResultStream   = "FS_RESULTS"
	maxTokenLength = 128
)

// ValidToken reports whether s may be used as one subject token (org unit,
// kind, record id, device id, mutation id): 1–128 characters of ASCII
// letters, digits, '_' and '-', starting with a letter or digit. Dots,
// wildcards, spaces and control characters are refused, so an id can never
// widen a subject or a permission.
func ValidToken(s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty token", ErrBadSubject)
	}
	if len(s) > maxTokenLength {
		return fmt.Errorf("%w: token of %d characters, limit %d", ErrBadSubject, len(s), maxTokenLength)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || (i > 0 && (c == '_' || c == '-'))
		if !ok {
			return fmt.Errorf("%w: token %q: character %q at %d not allowed", ErrBadSubject, s, c, i)
		}
	}
	return nil
}

// Address names one record: where it lives and what it is.
type Address struct {
	OrgUnit  string // empty for tenant-wide admin data
	Channel  Channel
	Kind     string
	RecordID string
}

// Validate checks the address's channel and tokens. Any channel may carry
// any well-formed kind (see [ValidKind]).
func (a Address) Validate() error {
	if !a.Channel.Valid() {
		return fieldErr("ch", ErrInvalidField, fmt.Sprintf("unknown channel %q", a.Channel))
	}
	if a.OrgUnit == "" && a.Channel != ChannelAdmin {
		return fieldErr("org", ErrMissingField, "only admin data may be tenant-wide")
	}
	if a.OrgUnit != "" {
		if err := ValidToken(a.OrgUnit); err != nil {
			return fieldErr("org", ErrInvalidField, err.Error())
		}
	}
	if err := ValidKind(a.Kind); err != nil {
		return err
	}
	if err := ValidToken(a.RecordID); err != nil {
		return fieldErr("rid", ErrInvalidField, err.Error())
	}
	return nil
}

// Subject returns the subject changes to this record are published on.
func (a Address) Subject() (string, error) {
	if err := a.Validate(); err != nil {
		return "", err
	}
	if a.OrgUnit == "" {
		return strings.Join([]string{subjectRoot, tenantToken, string(ChannelAdmin), a.Kind, a.RecordID}, "."), nil
	}
	return strings.Join([]string{subjectRoot, orgToken, a.OrgUnit, string(a.Channel), a.Kind, a.RecordID}, "."), nil
}

// ParseSubject parses a change subject into the address it names. It
// returns an error wrapping [ErrBadSubject] for anything that is not a
// well-formed fieldsync change subject.
func ParseSubject(subject string) (Address, error) {
	t := strings.Split(subject, ".")
	bad := func(why string) (Address, error) {
		return Address{}, fmt.Errorf("%w: %q: %s", ErrBadSubject, subject, why)
	}
	if len(t) < 2 || t[0] != subjectRoot {
		return bad("not a fieldsync subject")
	}
	var a Address
	switch {
	case t[1] == orgToken && len(t) == 6:
		a = Address{OrgUnit: t[2], Channel: Channel(t[3]), Kind: t[4], RecordID: t[5]}
	case t[1] == tenantToken && len(t) == 5:
		a = Address{Channel: Channel(t[2]), Kind: t[3], RecordID: t[4]}
		if a.Channel != ChannelAdmin {
			return bad("tenant subjects carry admin data only")
		}
	default:
		return bad("want fs.org.<unit>.<channel>.<kind>.<id> or fs.tenant.admin.<kind>.<id>")
	}
	if err := a.Validate(); err != nil {
		return bad(err.Error())
	}
	return a, nil
}

// OrgStream returns the name of the stream holding org unit unit's changes;
// an empty unit names the tenant-wide stream.
func OrgStream(unit string) (string, error) {
	if unit == "" {
		return TenantStream, nil
	}
	if err := ValidToken(unit); err != nil {
		return "", err
	}
	return streamOrgPfx + unit, nil
}

// OrgSubjects returns the subject filter covering all of a unit's changes
// (the tenant-wide admin subjects for an empty unit).
func OrgSubjects(unit string) (string, error) {
	if unit == "" {
		return subjectRoot + "." + tenantToken + ".>", nil
	}
	if err := ValidToken(unit); err != nil {
		return "", err
	}
	return subjectRoot + "." + orgToken + "." + unit + ".>", nil
}

// AllOrgSubjects returns the filter of every org unit's changes (not the
// tenant-wide ones, see [OrgSubjects]).
func AllOrgSubjects() string { return subjectRoot + "." + orgToken + ".>" }

// ChannelFilter returns the subject filter of one channel of one unit (the
// tenant-wide admin subjects for an empty unit).
func ChannelFilter(unit string, ch Channel) (string, error) {
	if !ch.Valid() {
		return "", fmt.Errorf("%w: unknown channel %q", ErrBadSubject, ch)
	}
	if unit == "" {
		if ch != ChannelAdmin {
			return "", fmt.Errorf("%w: tenant-wide data has only the admin channel", ErrBadSubject)
		}
		return subjectRoot + "." + tenantToken + ".admin.>", nil
	}
	if err := ValidToken(unit); err != nil {
		return "", err
	}
	return subjectRoot + "." + orgToken + "." + unit + "." + string(ch) + ".>", nil
}

// UploadSubjects returns the subject filter of all device uploads, and
// DeviceUploadSubjects those of one device (what its credentials may publish).
func UploadSubjects() string { return subjectRoot + "." + uploadToken + ".>" }

// DeviceUploadSubjects returns the upload subjects device may publish on.
func DeviceUploadSubjects(device string) (string, error) {
	if err := ValidToken(device); err != nil {
		return "", err
	}
	return subjectRoot + "." + uploadToken + "." + device + ".>", nil
}

// ResultSubjects returns the filter of all ingest results.
func ResultSubjects() string { return subjectRoot + "." + resultToken + ".>" }

// DeviceResultSubjects returns the ingest result subjects of one device.
func DeviceResultSubjects(device string) (string, error) {
	if err := ValidToken(device); err != nil {
		return "", err
	}
	return subjectRoot + "." + resultToken + "." + device + ".>", nil
}

// KindSubjects returns the filter of every record of kind in channel ch of
// unit ("" the tenant-wide admin data): fs.org.<unit>.<ch>.<kind>.* or
// fs.tenant.admin.<kind>.*.
func KindSubjects(unit string, ch Channel, kind string) (string, error) {
	a := Address{OrgUnit: unit, Channel: ch, Kind: kind, RecordID: "x"}
	s, err := a.Subject()
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(s, ".x") + ".*", nil
}
