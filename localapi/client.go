package localapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/store"
)

// Client calls a running agent's local API.
type Client struct {
	BaseURL string // e.g. http://127.0.0.1:7480
	Token   string // the local API token (see [ReadToken])
	HTTP    *http.Client
}

// NewClient returns a client for the API at addr (host:port or URL) that
// authenticates with token.
func NewClient(addr, token string) *Client {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return &Client{BaseURL: strings.TrimRight(addr, "/"), Token: token, HTTP: http.DefaultClient}
}

// APIError is an error response of the API.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("agent API: %s (%d): %s", e.Code, e.Status, e.Message)
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("agent API not reachable at %s: %w", c.BaseURL, err)
	}
	defer drainClose(resp.Body)
	if resp.StatusCode >= 300 {
		var eb ErrorBody
		json.NewDecoder(resp.Body).Decode(&eb)
		return &APIError{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// drainClose reads what is left of a response body (the newline after a
// JSON value, at most 64 KiB) before closing it, so the connection goes
// back to the pool instead of being closed: a decoder stops at the end of
// the value, and an unread body costs a new TCP connection per request.
func drainClose(body io.ReadCloser) {
	io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	body.Close()
}

// Status returns the agent's status.
func (c *Client) Status(ctx context.Context) (agent.Status, error) {
	var st agent.Status
	return st, c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
}

// Records returns local records matching q.
func (c *Client) Records(ctx context.Context, q store.Query) ([]store.Record, error) {
	p, err := c.RecordsPage(ctx, q)
	return p.Records, err
}

// RecordsPage returns one page of the local records matching q and, when
// the page is full, the cursor of the next: set q.After to
// [ParseCursor] of [RecordsPage.Next] to continue.
func (c *Client) RecordsPage(ctx context.Context, q store.Query) (RecordsPage, error) {
	v := url.Values{"channel": {string(q.Channel)}}
	for name, val := range map[string]string{"kind": q.Kind, "id": q.RecordID} {
		if val != "" {
			v.Set(name, val)
		}
	}
	if q.Unit != store.AnyUnit {
		v.Set("org_unit", q.Unit)
	}
	if q.After != nil {
		v.Set("after", CursorOf(*q.After))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Offset > 0 {
		v.Set("offset", strconv.Itoa(q.Offset))
	}
	var out RecordsPage
	return out, c.do(ctx, http.MethodGet, "/v1/records?"+v.Encode(), nil, &out)
}

// Sync queues a sync of scope.
func (c *Client) Sync(ctx context.Context, scope agent.Scope) error {
	var out map[string]any
	return c.do(ctx, http.MethodPost, "/v1/sync", SyncRequest{Scope: string(scope)}, &out)
}

// Write makes a local change.
func (c *Client) Write(ctx context.Context, r agent.WriteRequest) (WriteResponse, error) {
	var out WriteResponse
	return out, c.do(ctx, http.MethodPost, "/v1/records", r, &out)
}

// Conflicts lists the sync errors of local writes.
func (c *Client) Conflicts(ctx context.Context) ([]store.Conflict, error) {
	var out struct {
		Conflicts []store.Conflict `json:"conflicts"`
	}
	return out.Conflicts, c.do(ctx, http.MethodGet, "/v1/conflicts", nil, &out)
}

// Resolve settles a sync error with "undo", "undelete" or "retry".
func (c *Client) Resolve(ctx context.Context, id, action string) error {
	var out map[string]any
	return c.do(ctx, http.MethodPost, "/v1/conflicts/"+url.PathEscape(id)+"/"+url.PathEscape(action), nil, &out)
}

// Apply makes the downloaded updates live.
func (c *Client) Apply(ctx context.Context) (agent.ApplyReport, error) {
	var out agent.ApplyReport
	return out, c.do(ctx, http.MethodPost, "/v1/apply", nil, &out)
}

// SyncNow clears local data and reloads it after uploading pending writes.
func (c *Client) SyncNow(ctx context.Context) (agent.Report, error) {
	var out agent.Report
	return out, c.do(ctx, http.MethodPost, "/v1/sync", SyncRequest{Scope: string(agent.ScopeFull), Reset: true}, &out)
}

// Documents lists the documents matching q ("" all) with the state of
// their content.
func (c *Client) Documents(ctx context.Context, q string) (agent.DocumentList, error) {
	var out agent.DocumentList
	path := "/v1/documents"
	if q != "" {
		path += "?" + url.Values{"q": {q}}.Encode()
	}
	return out, c.do(ctx, http.MethodGet, path, nil, &out)
}

// DownloadDocument queues the download of document id (unit "" when the
// id is in one unit only) and returns it.
func (c *Client) DownloadDocument(ctx context.Context, unit, id string) (agent.Document, error) {
	var out struct {
		Document agent.Document `json:"document"`
	}
	path := "/v1/documents/" + url.PathEscape(id) + "/download"
	if unit != "" {
		path += "?" + url.Values{"org": {unit}}.Encode()
	}
	return out.Document, c.do(ctx, http.MethodPost, path, nil, &out)
}

// DownloadAllDocuments queues every document not on the device and
// returns how many.
func (c *Client) DownloadAllDocuments(ctx context.Context) (int, error) {
	var out struct {
		Queued int `json:"queued"`
	}
	return out.Queued, c.do(ctx, http.MethodPost, "/v1/documents/download-all", nil, &out)
}
