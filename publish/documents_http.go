package publish

import (
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/fieldsync/fieldsync/events"
)

// BodyHeader is the request header of a document's extra metadata (a JSON
// object) over HTTP; the ?body= parameter is its alternative.
const BodyHeader = "X-Fieldsync-Body"

// DocumentsHTTP returns the handler of the document API over HTTP, to be
// registered on the patterns "PUT /v1/documents/{unit}/{id}" and
// "DELETE /v1/documents/{unit}/{id}" (it reads those path values), behind
// the authentication that puts the [Caller] in the request's context
// ([WithCaller]):
//
//   - PUT streams the request body as the document's content into the
//     unit's bucket ([Service.PublishDocument]): Content-Type is its media
//     type; ?name= its display name (required); the [BodyHeader] header or
//     ?body= extra metadata (a JSON object); If-Match or ?expected_version=
//     the version it is based on; ?event_id= the dedupe key.
//   - DELETE deletes the document and its content (If-Match,
//     ?expected_version= and ?event_id= alike).
//
// Both answer a JSON [Response]: 200, 400 invalid, 401 without a caller,
// 403 for a unit not the caller's, 404 unknown unit, 409 conflict, 413
// over [Service.MaxDocumentSize].
func (s *Service) DocumentsHTTP() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		unit, id := req.PathValue("unit"), req.PathValue("id")
		caller, ok := CallerFrom(req.Context())
		if !ok {
			writeJSON(w, http.StatusUnauthorized, Response{Error: &Error{Code: CodeUnauthorized, Message: "no authenticated caller"}})
			return
		}
		if !caller.May(unit) {
			s.log.Warn("document publish refused: org unit not the integration's", "integration", caller.Name, "org_unit", unit)
			e := &Error{Code: CodeForbidden, Message: fmt.Sprintf("integration %s may not publish to org unit %q (its units: %v)", caller.Name, unit, caller.Units)}
			writeJSON(w, http.StatusForbidden, Response{Error: e})
			return
		}
		expected, err := expectedVersion(req)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, Response{Error: invalid(err)})
			return
		}
		q := req.URL.Query()
		switch req.Method {
		case http.MethodPut:
			s.putDocument(w, req, DocumentRequest{EventID: q.Get("event_id"), OrgUnit: unit, RecordID: id,
				Name: q.Get("name"), ContentType: req.Header.Get("Content-Type"), ExpectedVersion: expected})
		case http.MethodDelete:
			resp := s.Publish(req.Context(), Request{EventID: q.Get("event_id"), OrgUnit: unit, Channel: string(events.ChannelDocuments),
				Kind: events.DocumentKind, RecordID: id, Op: string(events.OpDelete), ExpectedVersion: expected})
			writeJSON(w, httpStatus(resp.Error), resp)
		default:
			writeJSON(w, http.StatusMethodNotAllowed, Response{Error: &Error{Code: CodeInvalid, Message: "use PUT or DELETE"}})
		}
	})
}

// putDocument checks the metadata of a PUT and streams its body into
// [Service.PublishDocument].
func (s *Service) putDocument(w http.ResponseWriter, req *http.Request, r DocumentRequest) {
	bad := func(msg string) {
		writeJSON(w, http.StatusBadRequest, Response{EventID: r.EventID, Error: &Error{Code: CodeInvalid, Message: msg}})
	}
	if r.Name == "" {
		bad("?name= (the document's display name) is required")
		return
	}
	if r.ContentType != "" {
		if _, _, err := mime.ParseMediaType(r.ContentType); err != nil {
			bad(fmt.Sprintf("Content-Type %q: %v", r.ContentType, err))
			return
		}
	}
	raw := req.Header.Get(BodyHeader)
	if raw == "" {
		raw = req.URL.Query().Get("body")
	}
	if raw != "" {
		body, err := DecodeBody([]byte(raw))
		if err != nil {
			bad(BodyHeader + ": " + err.Error())
			return
		}
		r.Body = body
	}
	max := s.MaxDocumentSize
	if max > 0 && req.ContentLength > max {
		e := &Error{Code: CodeTooLarge, Message: fmt.Sprintf("document content is %d bytes, limit %d", req.ContentLength, max)}
		writeJSON(w, http.StatusRequestEntityTooLarge, Response{EventID: r.EventID, Error: e})
		return
	}
	body := req.Body
	if max > 0 {
		body = http.MaxBytesReader(w, req.Body, max)
	}
	resp := s.PublishDocument(req.Context(), r, body)
	writeJSON(w, httpStatus(resp.Error), resp)
}

// expectedVersion reads If-Match (an entity tag holding the version,
// quoted or not) or ?expected_version=; nil when neither is given.
func expectedVersion(req *http.Request) (*uint64, error) {
	raw := req.URL.Query().Get("expected_version")
	if m := req.Header.Get("If-Match"); m != "" {
		raw = strings.Trim(strings.TrimPrefix(strings.TrimSpace(m), "W/"), `"`)
	}
	if raw == "" {
		return nil, nil
	}
	v, err := strconv.ParseUint(raw, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: expected version %q: want a number", events.ErrInvalidField, raw)
	}
	return &v, nil
}
