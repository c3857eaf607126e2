package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsjs"
)

// Service turns requests into published changes.
type Service struct {
	pub *natsjs.Publisher
	log *slog.Logger
	now func() time.Time
	// OnResponse, if set, is told of every answer (metrics).
	OnResponse func(Response)
	// MaxDocumentSize bounds a document's content in bytes
	// ([Service.PublishDocument]; 0: no bound). The broker sets
	// [DefaultMaxDocumentSize] unless configured.
	MaxDocumentSize int64
}

// NewService returns a service publishing through pub.
func NewService(pub *natsjs.Publisher, log *slog.Logger) *Service {
	if log == nil {
		log = slog.Default()
	}
	return &Service{pub: pub, log: log, now: time.Now}
}

// Publish validates and appends one change. A document record's content
// is the document API's ([Service.PublishDocument]): a body on channel
// documents with a [events.ContentField] key is refused (code invalid),
// and deleting a document also deletes its content objects once the
// delete is published.
func (s *Service) Publish(ctx context.Context, r Request) Response {
	var resp Response
	switch {
	case r.Channel == string(events.ChannelDocuments) && hasKey(r.Body, events.ContentField):
		resp = Response{EventID: r.EventID, Error: &Error{Code: CodeInvalid, Message: "content is set by the document publish API"}}
	case isDocument(r.Channel, r.Kind) && r.Op == string(events.OpDelete):
		resp = s.deleteDocument(ctx, r)
	case isDocument(r.Channel, r.Kind):
		resp = s.publishDocumentRecord(ctx, r)
	default:
		resp = s.publish(ctx, r)
	}
	s.answered(resp)
	return resp
}

// publishDocumentRecord publishes a plain upsert of a document record
// unless the document has content: replacing its body would leave the
// content in the bucket with nothing naming it, so that goes through
// [Service.PublishDocument] (which keeps or replaces the content).
func (s *Service) publishDocumentRecord(ctx context.Context, r Request) Response {
	cur, err := s.current(ctx, documentAddress(r.OrgUnit, r.RecordID))
	switch {
	case errors.Is(err, natsjs.ErrUnknownUnit) || errors.Is(err, events.ErrInvalidField) || errors.Is(err, events.ErrMissingField):
		return s.publish(ctx, r) // answered there, with its usual code
	case err != nil:
		return Response{EventID: r.EventID, Error: &Error{Code: CodeInternal, Message: err.Error()}}
	case cur.content != nil:
		return Response{EventID: r.EventID, Error: &Error{Code: CodeInvalid, Message: fmt.Sprintf(
			"document %s has content: change it through the document API (PUT /v1/documents/%s/%s, publish --file), which keeps or replaces the content", r.RecordID, r.OrgUnit, r.RecordID)}}
	}
	return s.publish(ctx, r)
}

func (s *Service) answered(resp Response) {
	if s.OnResponse != nil {
		s.OnResponse(resp)
	}
}

func (s *Service) publish(ctx context.Context, r Request) Response {
	e, err := s.envelope(r)
	if err != nil {
		return Response{Error: invalid(err)}
	}
	ack, err := s.pub.Publish(ctx, e, natsjs.PublishOptions{ExpectedVersion: r.ExpectedVersion})
	var conflict *natsjs.ConflictError
	switch {
	case err == nil:
		return Response{EventID: e.EventID, Stream: ack.Stream, Version: ack.Version, Duplicate: ack.Duplicate}
	case errors.As(err, &conflict):
		cur := conflict.Current
		return Response{EventID: e.EventID, Error: &Error{Code: CodeConflict, Message: err.Error(), CurrentVersion: &cur}}
	case errors.Is(err, natsjs.ErrUnknownUnit):
		return Response{EventID: e.EventID, Error: &Error{Code: CodeUnknownUnit, Message: err.Error()}}
	case errors.Is(err, events.ErrInvalidField), errors.Is(err, events.ErrMissingField), errors.Is(err, events.ErrTooLarge):
		return Response{EventID: e.EventID, Error: invalid(err)}
	}
	s.log.Error("publish failed", "event_id", e.EventID, "err", err)
	return Response{EventID: e.EventID, Error: &Error{Code: CodeInternal, Message: err.Error()}}
}

func (s *Service) envelope(r Request) (*events.Envelope, error) {
	if r.EventID == "" {
		r.EventID = nuid.Next()
	}
	if r.Op == "" {
		r.Op = string(events.OpUpsert)
	}
	e := &events.Envelope{EventID: r.EventID, OrgUnit: r.OrgUnit, Channel: events.Channel(r.Channel), Kind: r.Kind,
		RecordID: r.RecordID, Op: events.Op(r.Op), SchemaVersion: events.SchemaVersion, Timestamp: s.now().UTC()}
	if r.Body != nil {
		if e.Op == events.OpDelete {
			return nil, errors.New("a delete carries no body")
		}
		b, err := msgpack.Marshal(r.Body)
		if err != nil {
			return nil, fmt.Errorf("body: %w", err)
		}
		e.Body = b
	}
	return e, e.Validate()
}

// invalid answers a request that cannot become a change: code too_large
// for a request or body over its limit, invalid otherwise.
func invalid(err error) *Error {
	var tooBig *http.MaxBytesError
	if errors.Is(err, events.ErrTooLarge) || errors.As(err, &tooBig) {
		return &Error{Code: CodeTooLarge, Message: err.Error()}
	}
	return &Error{Code: CodeInvalid, Message: err.Error()}
}

// Serve answers requests on [Subject] in queue group "fieldsync-publish"
// until the returned subscription is drained. A request is exactly one
// JSON [Request] of at most [MaxRequestSize] bytes.
func (s *Service) Serve(nc *nats.Conn) (*nats.Subscription, error) {
	return s.serve(nc, Subject, 10*time.Second, func(ctx context.Context, data []byte) Response {
		var r Request
		if err := decodeRequest(bytes.NewReader(data), &r); err != nil {
			return Response{Error: invalid(err)}
		}
		return s.Publish(ctx, r)
	})
}

// serve answers JSON requests on subject in the publish queue group: one
// of at most [MaxRequestSize] bytes, handled within timeout, answered
// with the JSON of its [Response].
func (s *Service) serve(nc *nats.Conn, subject string, timeout time.Duration, handle func(context.Context, []byte) Response) (*nats.Subscription, error) {
	return nc.QueueSubscribe(subject, "fieldsync-publish", func(m *nats.Msg) {
		var resp Response
		if len(m.Data) > MaxRequestSize {
			resp = Response{Error: &Error{Code: CodeTooLarge, Message: fmt.Sprintf("request is %d bytes, limit %d", len(m.Data), MaxRequestSize)}}
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			resp = handle(ctx, m.Data)
			cancel()
		}
		b, _ := json.Marshal(resp)
		if err := m.Respond(b); err != nil {
			s.log.Warn("publish API reply", "subject", subject, "err", err)
		}
	})
}

// ServeHTTP answers POST /v1/publish with exactly one JSON [Request] as
// the body, sent by the [Caller] the server's authentication put in the
// request's context ([WithCaller]): 401 without one, 415 unless the
// Content-Type is application/json, 413 over [MaxRequestSize] bytes, 400
// for anything else that is not a valid request (trailing data
// included), 403 for an org unit the caller may not publish to.
func (s *Service) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		writeJSON(w, http.StatusMethodNotAllowed, Response{Error: &Error{Code: CodeInvalid, Message: "use POST"}})
		return
	}
	caller, ok := CallerFrom(req.Context())
	if !ok {
		writeJSON(w, http.StatusUnauthorized, Response{Error: &Error{Code: CodeUnauthorized, Message: "no authenticated caller"}})
		return
	}
	if mt, _, err := mime.ParseMediaType(req.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeJSON(w, http.StatusUnsupportedMediaType, Response{Error: &Error{Code: CodeUnsupportedMedia,
			Message: fmt.Sprintf("Content-Type %q: want application/json", req.Header.Get("Content-Type"))}})
		return
	}
	var r Request
	if err := decodeRequest(http.MaxBytesReader(w, req.Body, MaxRequestSize), &r); err != nil {
		e := invalid(err)
		writeJSON(w, httpStatus(e), Response{Error: e})
		return
	}
	if !caller.May(r.OrgUnit) {
		s.log.Warn("publish refused: org unit not the integration's", "integration", caller.Name, "org_unit", r.OrgUnit)
		e := &Error{Code: CodeForbidden, Message: fmt.Sprintf("integration %s may not publish to org unit %q (its units: %v)", caller.Name, r.OrgUnit, caller.Units)}
		writeJSON(w, http.StatusForbidden, Response{EventID: r.EventID, Error: e})
		return
	}
	resp := s.Publish(req.Context(), r)
	writeJSON(w, httpStatus(resp.Error), resp)
}

func httpStatus(e *Error) int {
	if e == nil {
		return http.StatusOK
	}
	switch e.Code {
	case CodeInvalid:
		return http.StatusBadRequest
	case CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case CodeConflict:
		return http.StatusConflict
	case CodeUnknownUnit:
		return http.StatusNotFound
	case CodeForbidden:
		return http.StatusForbidden
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
