package events

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// Document content is not carried in change messages. A document record
// (channel documents, kind [DocumentKind]) carries its metadata; its
// content lives in the org unit's JetStream object store, bucket
// [DocumentBucket] (stream OBJ_FS_DOCS_<unit>), and the record's body names
// it under [ContentField] (see [Content]). One bucket per org unit, like one
// stream per org unit: a device's permissions name its units' buckets, so
// the broker itself keeps a device to its own units' content.
//
// Object store subjects (nats.go's layout):
//
//	$O.FS_DOCS_<unit>.C.<nuid>         the chunks of one object (128 KiB each)
//	$O.FS_DOCS_<unit>.M.<base64 name>  one object's info
const (
	// DocumentKind is the kind of document records.
	DocumentKind = "document"
	// ContentField is the body key of a document record's [Content]. Only
	// the document publish API sets it.
	ContentField = "content"
	// DocumentAPISubject is the NATS request subject of the document
	// publish API: the metadata step after a client put the content into
	// the bucket itself.
	DocumentAPISubject = subjectRoot + "." + apiToken + ".document"
	docBucketPfx       = "FS_DOCS_"
	objStreamPfx       = "OBJ_"
	objSubjectRoot     = "$O"
)

// ErrBadContent: a document body's content field is not a [Content].
var ErrBadContent = fmt.Errorf("%w: document content", ErrInvalidField)

// DocumentBucket returns the name of the object store bucket holding org
// unit unit's document content.
func DocumentBucket(unit string) (string, error) {
	if err := ValidToken(unit); err != nil {
		return "", err
	}
	return docBucketPfx + unit, nil
}

// DocumentStream returns the name of the stream behind unit's bucket.
func DocumentStream(unit string) (string, error) {
	b, err := DocumentBucket(unit)
	if err != nil {
		return "", err
	}
	return objStreamPfx + b, nil
}

// DocumentChunkSubjects returns the filter of every chunk in unit's bucket
// (what a device's content consumer may filter on).
func DocumentChunkSubjects(unit string) (string, error) {
	b, err := DocumentBucket(unit)
	if err != nil {
		return "", err
	}
	return objSubjectRoot + "." + b + ".C.>", nil
}

// DocumentChunkSubject returns the subject of the chunks of the object
// whose nuid is nuid in unit's bucket.
func DocumentChunkSubject(unit, nuid string) (string, error) {
	b, err := DocumentBucket(unit)
	if err != nil {
		return "", err
	}
	if err := ValidToken(nuid); err != nil {
		return "", fmt.Errorf("%w: object nuid: %v", ErrBadContent, err)
	}
	return objSubjectRoot + "." + b + ".C." + nuid, nil
}

// DocumentObjectSubjects returns the filter of every subject of unit's
// bucket, chunks and infos (what the server side writes).
func DocumentObjectSubjects(unit string) (string, error) {
	b, err := DocumentBucket(unit)
	if err != nil {
		return "", err
	}
	return objSubjectRoot + "." + b + ".>", nil
}

// DocumentObjectName returns the object name of one upload of record
// recordID's content: "<recordID>/<upload>". Every upload has its own
// name, so a new version never overwrites the content devices are
// downloading; the previous one is kept until the version after (see
// [Content.Previous]).
func DocumentObjectName(recordID, upload string) (string, error) {
	if err := ValidToken(recordID); err != nil {
		return "", err
	}
	if err := ValidToken(upload); err != nil {
		return "", err
	}
	return recordID + "/" + upload, nil
}

// ObjectOf reports whether object is one of recordID's content objects.
func ObjectOf(object, recordID string) bool {
	up, ok := strings.CutPrefix(object, recordID+"/")
	return ok && ValidToken(up) == nil
}

// Content is the content of a document as its record names it: the body's
// [ContentField] map {"object", "nuid", "size", "chunks", "digest", "type",
// "previous"}.
type Content struct {
	// Object is the object's name in the unit's bucket ([DocumentObjectName]).
	Object string
	// NUID names the object's chunk subject ([DocumentChunkSubject]).
	NUID string
	// Size in bytes and number of chunks.
	Size   int64
	Chunks int64
	// Digest is the object store's digest of the content, "SHA-256=" and
	// the URL-safe base64 of the SHA-256 sum.
	Digest string
	// Type is the content's media type.
	Type string
	// Previous is the object of the version before, kept until the next
	// version so a device that has not applied this one can still fetch
	// the content it lists ("" if none).
	Previous string
}

// Map returns c as it is stored in a record body.
func (c Content) Map() map[string]any {
	m := map[string]any{"object": c.Object, "nuid": c.NUID, "size": c.Size, "chunks": c.Chunks,
		"digest": c.Digest, "type": c.Type}
	if c.Previous != "" {
		m["previous"] = c.Previous
	}
	return m
}

// Validate checks c's fields: object name for recordID, nuid, sizes and
// a SHA-256 digest.
func (c Content) Validate(recordID string) error {
	switch {
	case !ObjectOf(c.Object, recordID):
		return fmt.Errorf("%w: object %q is not one of record %s's", ErrBadContent, c.Object, recordID)
	case ValidToken(c.NUID) != nil:
		return fmt.Errorf("%w: nuid %q", ErrBadContent, c.NUID)
	case c.Size < 0 || c.Chunks < 0 || (c.Size > 0) != (c.Chunks > 0):
		return fmt.Errorf("%w: size %d in %d chunks", ErrBadContent, c.Size, c.Chunks)
	case !strings.HasPrefix(c.Digest, "SHA-256="):
		return fmt.Errorf("%w: digest %q is not SHA-256", ErrBadContent, c.Digest)
	case c.Previous != "" && !ObjectOf(c.Previous, recordID):
		return fmt.Errorf("%w: previous object %q is not one of record %s's", ErrBadContent, c.Previous, recordID)
	}
	return nil
}

// ErrNoContent: a document body names no content (a document without a
// file, or a record of another kind).
var ErrNoContent = errors.New("events: the document has no content")

// ParseContent returns the [Content] a decoded document body names:
// [ErrNoContent] when it has no [ContentField], an error wrapping
// [ErrBadContent] when that is not a valid content map.
func ParseContent(recordID string, body map[string]any) (Content, error) {
	raw, ok := body[ContentField]
	if !ok || raw == nil {
		return Content{}, ErrNoContent
	}
	m, ok := raw.(map[string]any)
	if !ok {
		return Content{}, fmt.Errorf("%w: %T, want a map", ErrBadContent, raw)
	}
	var c Content
	var err error
	str := func(k string) string {
		s, ok := m[k].(string)
		if !ok && m[k] != nil && err == nil {
			err = fmt.Errorf("%w: %s is %T, want a string", ErrBadContent, k, m[k])
		}
		return s
	}
	num := func(k string) int64 {
		n, ok := toInt64(m[k])
		if !ok && err == nil {
			err = fmt.Errorf("%w: %s is %T, want an integer", ErrBadContent, k, m[k])
		}
		return n
	}
	c.Object, c.NUID, c.Digest, c.Type, c.Previous = str("object"), str("nuid"), str("digest"), str("type"), str("previous")
	c.Size, c.Chunks = num("size"), num("chunks")
	if err != nil {
		return Content{}, err
	}
	return c, c.Validate(recordID)
}

// toInt64 converts the integer types msgpack and JSON decoding produce.
func toInt64(v any) (int64, bool) {
	switch n := v.(type) {
	case int8:
		return int64(n), true
	case int16:
		return int64(n), true
	case int32:
		return int64(n), true
	case int64:
		return n, true
	case int:
		return int64(n), true
	case uint8:
		return int64(n), true
	case uint16:
		return int64(n), true
	case uint32:
		return int64(n), true
	case uint64:
		return int64(n), n <= math.MaxInt64
	case uint:
		return int64(n), uint64(n) <= math.MaxInt64
	case float64:
		return int64(n), n == math.Trunc(n) && math.Abs(n) < 1<<53
	}
	return 0, false
}
