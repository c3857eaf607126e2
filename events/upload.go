package events

import (
	"fmt"
	"strings"
)

// UploadSubject returns the subject a device publishes its change to
// address a on: fs.up.<device>.<unit>.<channel>.<kind>.<id>. Devices write
// org unit data only; tenant-wide admin data is the server side's.
func UploadSubject(device string, a Address) (string, error) {
	if err := ValidToken(device); err != nil {
		return "", fmt.Errorf("%w: device: %v", ErrBadSubject, err)
	}
	if a.OrgUnit == "" {
		return "", fmt.Errorf("%w: devices cannot write tenant-wide data", ErrBadSubject)
	}
	if err := a.Validate(); err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadSubject, err)
	}
	return strings.Join([]string{subjectRoot, uploadToken, device, a.OrgUnit, string(a.Channel), a.Kind, a.RecordID}, "."), nil
}

// ParseUploadSubject returns the device and record address of an upload
// subject, or an error wrapping [ErrBadSubject]. It reads both the subject
// a device publishes on and the per-device subject FS_UPLOADS stores it
// under ([StoredUploadSubject]); the latter carries no address (the zero
// [Address]): the envelope and its [AddressHeader] name the record.
func ParseUploadSubject(subject string) (string, Address, error) {
	t := strings.Split(subject, ".")
	if (len(t) != 7 && len(t) != 3) || t[0] != subjectRoot || t[1] != uploadToken {
		return "", Address{}, fmt.Errorf("%w: %q: want fs.up.<device>.<unit>.<channel>.<kind>.<id>", ErrBadSubject, subject)
	}
	if err := ValidToken(t[2]); err != nil {
		return "", Address{}, fmt.Errorf("%w: %q: device: %v", ErrBadSubject, subject, err)
	}
	if len(t) == 3 {
		return t[2], Address{}, nil
	}
	a := Address{OrgUnit: t[3], Channel: Channel(t[4]), Kind: t[5], RecordID: t[6]}
	if err := a.Validate(); err != nil {
		return "", Address{}, fmt.Errorf("%w: %q: %v", ErrBadSubject, subject, err)
	}
	return t[2], a, nil
}

// StoredUploadSubject is the subject FS_UPLOADS stores device's uploads
// under: fs.up.<device>. The stream's subject transform
// ([UploadSubjectTransform]) maps every upload subject of a device to it,
// so that the stream's per-subject limit is a per-device limit on uploads
// waiting for ingest (the README's quotas).
func StoredUploadSubject(device string) (string, error) {
	if err := ValidToken(device); err != nil {
		return "", fmt.Errorf("%w: device: %v", ErrBadSubject, err)
	}
	return subjectRoot + "." + uploadToken + "." + device, nil
}

// UploadSubjectTransform returns the source and destination of FS_UPLOADS'
// subject transform: fs.up.<device>.<unit>.<channel>.<kind>.<id> is stored
// as fs.up.<device> ([StoredUploadSubject]).
func UploadSubjectTransform() (src, dest string) {
	return subjectRoot + "." + uploadToken + ".*.*.*.*.*", subjectRoot + "." + uploadToken + ".{{wildcard(1)}}"
}

// AddressHeader is the header an upload names its record in
// (<unit>.<channel>.<kind>.<id>, [Address.Key]): its stored subject no
// longer does, and ingest hands the uploads of one record to one worker
// by it before decoding them. Ingest rejects an upload whose header and
// envelope disagree.
const AddressHeader = "Fs-Address"

// Key is the address as <unit>.<channel>.<kind>.<id>, the value of
// [AddressHeader].
func (a Address) Key() string {
	return strings.Join([]string{a.OrgUnit, string(a.Channel), a.Kind, a.RecordID}, ".")
}

// ResultSubject returns the subject ingest publishes the result of a
// device's mutation on: fs.res.<device>.<mutationID>.
func ResultSubject(device, mutationID string) (string, error) {
	for _, tok := range []string{device, mutationID} {
		if err := ValidToken(tok); err != nil {
			return "", err
		}
	}
	return subjectRoot + "." + resultToken + "." + device + "." + mutationID, nil
}

// MutationEventID is the event id (and org stream dedupe id) of the change
// a device mutation becomes: "mut" + the device id's length + "-" + device
// + "-" + mutation. The length prefix keeps ids of different (device,
// mutation) pairs apart even when both contain dashes. The result can be
// longer than a token allows for very long ids; callers check.
func MutationEventID(device, mutation string) string {
	return fmt.Sprintf("mut%d-%s-%s", len(device), device, mutation)
}
