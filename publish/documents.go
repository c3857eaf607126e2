package publish

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsjs"
)

// DocumentSubject is the NATS request subject of the document publish
// API ([Service.ServeDocuments]).
const DocumentSubject = events.DocumentAPISubject

// DefaultMaxDocumentSize is the broker's default [Service.MaxDocumentSize]
// (1 GiB).
const DefaultMaxDocumentSize int64 = 1 << 30

// NameField is the body key of a document's display name
// ([DocumentRequest.Name]).
const NameField = "name"

// DocumentRequest publishes one version of a document record (channel
// documents, kind [events.DocumentKind]): its metadata, and its content
// either streamed to [Service.PublishDocument] or already put into the
// unit's bucket by the client and named by Object.
type DocumentRequest struct {
	// EventID is the change's dedupe key; generated if empty.
	EventID  string `json:"event_id,omitempty"`
	OrgUnit  string `json:"org_unit"`
	RecordID string `json:"record_id"`
	// Name is the document's display name (body key [NameField]), required.
	Name string `json:"name"`
	// ContentType is the content's media type (default
	// application/octet-stream).
	ContentType string `json:"content_type,omitempty"`
	// Body is extra metadata; it may not hold [NameField] or
	// [events.ContentField].
	Body map[string]any `json:"body,omitempty"`
	// ExpectedVersion, when set, is the version this one is based on (0:
	// the document must not exist); a mismatch answers code conflict.
	ExpectedVersion *uint64 `json:"expected_version,omitempty"`
	// Object names content the client put into the unit's bucket itself
	// (one of the record's objects, [events.DocumentObjectName]). Empty
	// with no content: a metadata-only update that keeps the content.
	Object string `json:"object,omitempty"`
}

// Content is a document's content as a [Response] names it: the JSON form
// of [events.Content], with the keys of the record body's content map.
type Content struct {
	Object   string `json:"object"`
	NUID     string `json:"nuid"`
	Size     int64  `json:"size"`
	Chunks   int64  `json:"chunks"`
	Digest   string `json:"digest"`
	Type     string `json:"type,omitempty"`
	Previous string `json:"previous,omitempty"`
}

// Events returns c as an [events.Content].
func (c Content) Events() events.Content {
	return events.Content{Object: c.Object, NUID: c.NUID, Size: c.Size, Chunks: c.Chunks, Digest: c.Digest, Type: c.Type, Previous: c.Previous}
}

func contentJSON(c *events.Content) *Content {
	if c == nil {
		return nil
	}
	return &Content{Object: c.Object, NUID: c.NUID, Size: c.Size, Chunks: c.Chunks, Digest: c.Digest, Type: c.Type, Previous: c.Previous}
}

const defaultMediaType = "application/octet-stream"

// docState is a document record as its stream holds it: its version and
// the content its latest change names (nil: none, or deleted).
type docState struct {
	version uint64
	content *events.Content
}

func isDocument(channel, kind string) bool {
	return channel == string(events.ChannelDocuments) && kind == events.DocumentKind
}

func hasKey(m map[string]any, k string) bool {
	_, ok := m[k]
	return ok
}

func documentAddress(unit, id string) events.Address {
	return events.Address{OrgUnit: unit, Channel: events.ChannelDocuments, Kind: events.DocumentKind, RecordID: id}
}

// current reads a document's version and content.
func (s *Service) current(ctx context.Context, a events.Address) (docState, error) {
	v, e, err := s.pub.Latest(ctx, a)
	if err != nil || e == nil || e.Op == events.OpDelete || len(e.Body) == 0 {
		return docState{version: v}, err
	}
	var body map[string]any
	if err := msgpack.Unmarshal(e.Body, &body); err != nil {
		return docState{version: v}, fmt.Errorf("publish: document %s: body: %w", a.RecordID, err)
	}
	c, err := events.ParseContent(a.RecordID, body)
	if errors.Is(err, events.ErrNoContent) {
		return docState{version: v}, nil
	}
	if err != nil {
		s.log.Warn("document names bad content; treating it as none", "org_unit", a.OrgUnit, "record_id", a.RecordID, "err", err)
		return docState{version: v}, nil
	}
	return docState{version: v, content: &c}, nil
}

// PublishDocument publishes one version of a document: it stores content
// in the unit's bucket (unless content is nil: then r.Object names
// content the client put there, or, empty, the current content is kept),
// and appends the record {name, …r.Body, content} based on the version it
// read, so that of two concurrent publishes one wins and the other gets
// code conflict. The new content names the current one as its Previous;
// the object before that is deleted, so a document keeps at most two. A
// refused request leaves no new object behind (the one r.Object names
// included). It is answered as [Service.Publish] is, with
// [Response.Content] set.
func (s *Service) PublishDocument(ctx context.Context, r DocumentRequest, content io.Reader) Response {
	resp := s.publishDocument(ctx, r, content)
	s.answered(resp)
	return resp
}

func (s *Service) publishDocument(ctx context.Context, r DocumentRequest, content io.Reader) Response {
	if r.EventID == "" {
		r.EventID = nuid.Next()
	}
	a := documentAddress(r.OrgUnit, r.RecordID)
	if err := a.Validate(); err != nil {
		return Response{EventID: r.EventID, Error: invalid(err)}
	}
	cur, err := s.current(ctx, a)
	if err != nil {
		return Response{EventID: r.EventID, Error: s.failure(r.EventID, err)}
	}
	var named string // an object of the request's, deleted if it is refused
	if content == nil {
		named = r.Object
	}
	refuse := func(e *Error) Response {
		s.dropObject(ctx, r.OrgUnit, r.RecordID, named, cur)
		return Response{EventID: r.EventID, Error: e}
	}
	if e := checkDocument(r, content, cur); e != nil {
		return refuse(e)
	}
	next, fresh, e := s.nextContent(ctx, r, content, cur)
	if fresh {
		named = next.Object
	}
	if e != nil {
		return refuse(e)
	}
	body := maps.Clone(r.Body)
	if body == nil {
		body = map[string]any{}
	}
	body[NameField] = r.Name
	if next != nil {
		body[events.ContentField] = next.Map()
	}
	resp := s.publish(ctx, Request{EventID: r.EventID, OrgUnit: r.OrgUnit, Channel: string(events.ChannelDocuments),
		Kind: events.DocumentKind, RecordID: r.RecordID, Body: body, ExpectedVersion: &cur.version})
	switch {
	case resp.Error != nil:
		return refuse(resp.Error)
	case resp.Duplicate:
		return s.duplicateDocument(ctx, a, resp, named, cur)
	}
	if fresh && cur.content != nil && cur.content.Previous != "" && cur.content.Previous != next.Object {
		s.deleteObject(ctx, r.OrgUnit, cur.content.Previous)
	}
	resp.Content = contentJSON(next)
	return resp
}

// checkDocument checks what can be checked of r before any content is
// stored.
func checkDocument(r DocumentRequest, content io.Reader, cur docState) *Error {
	switch {
	case r.Name == "":
		return &Error{Code: CodeInvalid, Message: "a document needs a name"}
	case hasKey(r.Body, NameField) || hasKey(r.Body, events.ContentField):
		return &Error{Code: CodeInvalid, Message: fmt.Sprintf("body keys %q and %q are set by the document publish API", NameField, events.ContentField)}
	case content != nil && r.Object != "":
		return &Error{Code: CodeInvalid, Message: "content and object both given"}
	case r.ExpectedVersion != nil && *r.ExpectedVersion != cur.version:
		v := cur.version
		return &Error{Code: CodeConflict, Message: fmt.Sprintf("document %s is at version %d, not %d", r.RecordID, v, *r.ExpectedVersion), CurrentVersion: &v}
	}
	return nil
}

// nextContent returns the content the new version names, and whether it
// is new (stored by this request, or named by it): content put now, the
// object r names, or (neither) the current content, Previous unchanged.
func (s *Service) nextContent(ctx context.Context, r DocumentRequest, content io.Reader, cur docState) (*events.Content, bool, *Error) {
	var c events.Content
	var err error
	switch {
	case content != nil:
		c, err = s.pub.PutContent(ctx, r.OrgUnit, r.RecordID, mediaType(r.ContentType), s.limit(fullChunks(content)))
		if err != nil {
			return nil, false, s.failure(r.EventID, err)
		}
	case r.Object == "" || (cur.content != nil && r.Object == cur.content.Object):
		return cur.content, false, nil
	case cur.content != nil && r.Object == cur.content.Previous:
		return nil, false, &Error{Code: CodeInvalid, Message: fmt.Sprintf("object %q is the document's previous content", r.Object)}
	case !events.ObjectOf(r.Object, r.RecordID):
		return nil, false, &Error{Code: CodeInvalid, Message: fmt.Sprintf("object %q is not one of document %s's", r.Object, r.RecordID)}
	default:
		c, err = s.pub.ContentInfo(ctx, r.OrgUnit, r.Object)
		if errors.Is(err, natsjs.ErrContentGone) {
			return nil, false, &Error{Code: CodeInvalid, Message: err.Error()}
		}
		if err != nil {
			return nil, false, s.failure(r.EventID, err)
		}
		if c.Type == "" {
			c.Type = mediaType(r.ContentType)
		}
	}
	if max := s.MaxDocumentSize; max > 0 && c.Size > max {
		return &c, true, &Error{Code: CodeTooLarge, Message: fmt.Sprintf("document content is %d bytes, limit %d", c.Size, max)}
	}
	if cur.content != nil {
		c.Previous = cur.content.Object
	}
	return &c, true, nil
}

// duplicateDocument answers a retried event id: the record holds what the
// first request published; an object this one stored is dropped unless
// the record names it.
func (s *Service) duplicateDocument(ctx context.Context, a events.Address, resp Response, named string, before docState) Response {
	now, err := s.current(ctx, a)
	if err != nil {
		s.log.Warn("document duplicate: reading the stored version", "record_id", a.RecordID, "err", err)
		return resp
	}
	if now.content == nil || now.content.Object != named {
		s.dropObject(ctx, a.OrgUnit, a.RecordID, named, before)
	}
	resp.Content = contentJSON(now.content)
	return resp
}

// dropObject deletes object, one a refused request stored or named, if it
// is one of record id's and not the content the document names now.
func (s *Service) dropObject(ctx context.Context, unit, id, object string, cur docState) {
	if object == "" || !events.ObjectOf(object, id) {
		return
	}
	if c := cur.content; c != nil && (object == c.Object || object == c.Previous) {
		return
	}
	s.deleteObject(ctx, unit, object)
}

// deleteObject deletes object from unit's bucket, even when ctx is
// already cancelled (a client gone must not leave an orphan behind).
func (s *Service) deleteObject(ctx context.Context, unit, object string) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := s.pub.DeleteContent(dctx, unit, object); err != nil {
		s.log.Warn("document content left behind", "org_unit", unit, "object", object, "err", err)
	}
}

// deleteDocument publishes the delete of a document record, then deletes
// the content objects its last version named. Without an expected
// version from the caller, the delete is based on the version read
// (retried if another version lands in between), so the objects deleted
// are those of the version deleted.
func (s *Service) deleteDocument(ctx context.Context, r Request) Response {
	if r.EventID == "" {
		r.EventID = nuid.Next()
	}
	a := documentAddress(r.OrgUnit, r.RecordID)
	for attempt := 0; ; attempt++ {
		cur, err := s.current(ctx, a)
		if err != nil {
			return s.publish(ctx, r) // its own error (unit, address), or a delete without cleanup
		}
		req := r
		if req.ExpectedVersion == nil {
			req.ExpectedVersion = &cur.version
		}
		resp := s.publish(ctx, req)
		if resp.Error != nil && resp.Error.Code == CodeConflict && r.ExpectedVersion == nil && attempt < 3 {
			continue
		}
		if resp.Error == nil && !resp.Duplicate && cur.content != nil {
			s.deleteObject(ctx, r.OrgUnit, cur.content.Object)
			if cur.content.Previous != "" {
				s.deleteObject(ctx, r.OrgUnit, cur.content.Previous)
			}
		}
		return resp
	}
}

// failure maps an error of the stream or bucket to the answer's [Error].
func (s *Service) failure(eventID string, err error) *Error {
	var conflict *natsjs.ConflictError
	switch {
	case errors.As(err, &conflict):
		cur := conflict.Current
		return &Error{Code: CodeConflict, Message: err.Error(), CurrentVersion: &cur}
	case errors.Is(err, natsjs.ErrUnknownUnit):
		return &Error{Code: CodeUnknownUnit, Message: err.Error()}
	case errors.Is(err, events.ErrInvalidField), errors.Is(err, events.ErrMissingField), errors.Is(err, events.ErrTooLarge), isMaxBytes(err):
		return invalid(err)
	}
	s.log.Error("document publish failed", "event_id", eventID, "err", err)
	return &Error{Code: CodeInternal, Message: err.Error()}
}

func isMaxBytes(err error) bool {
	var tooBig *http.MaxBytesError
	return errors.As(err, &tooBig)
}

func mediaType(t string) string {
	if t == "" {
		return defaultMediaType
	}
	return t
}

// ServeDocuments answers document requests on [DocumentSubject] in queue
// group "fieldsync-publish" until the returned subscription is drained.
// A request is one JSON [DocumentRequest] (at most [MaxRequestSize]
// bytes) whose Object names content the client already put into the
// unit's bucket ([Client.PublishDocument]); a refused request's object is
// deleted.
func (s *Service) ServeDocuments(nc *nats.Conn) (*nats.Subscription, error) {
	return s.serve(nc, DocumentSubject, 30*time.Second, func(ctx context.Context, data []byte) Response {
		var r DocumentRequest
		if err := decodeDocumentRequest(bytes.NewReader(data), &r); err != nil {
			return Response{Error: invalid(err)}
		}
		return s.PublishDocument(ctx, r, nil)
	})
}

// decodeDocumentRequest decodes one JSON [DocumentRequest] strictly, as
// [decodeRequest] does.
func decodeDocumentRequest(r io.Reader, req *DocumentRequest) error {
	if err := decodeStrict(r, req, true); err != nil {
		return fmt.Errorf("request: %w", err)
	}
	req.Body = normalise(req.Body).(map[string]any)
	return nil
}

// ErrDocumentTooLarge: the content is over [Service.MaxDocumentSize]. It
// wraps [events.ErrTooLarge], so the answer's code is too_large.
var ErrDocumentTooLarge = fmt.Errorf("%w: document content", events.ErrTooLarge)

// limit bounds r to [Service.MaxDocumentSize] bytes.
func (s *Service) limit(r io.Reader) io.Reader {
	if s.MaxDocumentSize <= 0 {
		return r
	}
	return &limitReader{r: r, left: s.MaxDocumentSize, max: s.MaxDocumentSize}
}

type limitReader struct {
	r         io.Reader
	left, max int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	if int64(n) > l.left {
		return 0, fmt.Errorf("%w: over %d bytes", ErrDocumentTooLarge, l.max)
	}
	l.left -= int64(n)
	return n, err
}

// fullChunks makes every Read of r fill its buffer unless r ends: the
// object store makes one chunk of each Read, and a network body read
// in small pieces would otherwise be stored as thousands of tiny chunks.
func fullChunks(r io.Reader) io.Reader { return fullReader{r} }

type fullReader struct{ r io.Reader }

func (f fullReader) Read(p []byte) (int, error) {
	n, err := io.ReadFull(f.r, p)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = nil // the next Read returns io.EOF
	}
	return n, err
}
