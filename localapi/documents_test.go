package localapi_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
)

type documentsResp struct {
	Documents []agent.Document    `json:"documents"`
	Space     agent.DocumentSpace `json:"space"`
}

// publishDoc stores data as document id's content and publishes its record.
func (e *env) publishDoc(t *testing.T, unit, id, name string, data []byte) {
	t.Helper()
	c, err := e.broker.Client.Publisher().PutContent(context.Background(), unit, id, "application/pdf", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	e.broker.MustPublish(t, fstest.Change(t, unit, events.ChannelDocuments, events.DocumentKind, id,
		map[string]any{"name": name, events.ContentField: c.Map()}))
}

func (e *env) documents(t *testing.T, query string) documentsResp {
	t.Helper()
	var out documentsResp
	if resp := e.get(t, "/v1/documents"+query, &out); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/documents%s: %d", query, resp.StatusCode)
	}
	return out
}

func (e *env) syncNow(t *testing.T, scope string) {
	t.Helper()
	since := time.Now()
	if resp := e.do(t, http.MethodPost, "/v1/sync", `{"scope":"`+scope+`"}`, nil); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /v1/sync: %d", resp.StatusCode)
	}
	e.waitUpToDate(t, &since)
}

func TestHandler_Documents(t *testing.T) {
	e := startEnv(t)
	data := bytes.Repeat([]byte("fieldsync manual "), 40000)
	e.publishDoc(t, "north", "manual", "Field manual", data)
	e.publishDoc(t, "north", "twin", "Twin north", []byte("north"))
	e.publishDoc(t, "south", "twin", "Twin south", []byte("south"))
	e.syncNow(t, "documents")

	all := e.documents(t, "")
	states := map[string]agent.DocumentState{}
	for _, d := range all.Documents {
		states[d.OrgUnit+"/"+d.ID] = d.State
	}
	if states["north/n-doc-1"] != agent.DocNoContent || states["north/manual"] != agent.DocNotDownloaded || len(all.Documents) != 4 {
		t.Fatalf("listing %v: want the metadata-only document, and the others not downloaded", states)
	}
	if got := e.documents(t, "?q=MANUAL"); len(got.Documents) != 1 || got.Documents[0].ID != "manual" {
		t.Fatalf("search: %+v", got.Documents)
	}
	e.wantError(t, http.MethodGet, "/v1/documents/manual/content", "", http.StatusConflict, "not_downloaded")
	e.wantError(t, http.MethodPost, "/v1/documents/nope/download", "", http.StatusNotFound, "not_found")
	e.wantError(t, http.MethodPost, "/v1/documents/n-doc-1/download", "", http.StatusConflict, "no_content")
	e.wantError(t, http.MethodPost, "/v1/documents/twin/download", "", http.StatusConflict, "ambiguous")

	if resp := e.do(t, http.MethodPost, "/v1/documents/manual/download", "", nil); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("download: %d, want 202", resp.StatusCode)
	}
	fstest.Eventually(t, 20*time.Second, func() bool {
		for _, d := range e.documents(t, "?q=manual").Documents {
			return d.State == agent.DocDownloaded && d.Openable
		}
		return false
	}, "manual downloaded")
	resp := e.do(t, http.MethodGet, "/v1/documents/manual/content", "", nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/pdf" {
		t.Fatalf("content: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	req, _ := http.NewRequest(http.MethodGet, e.base+"/v1/documents/manual/content", nil)
	req.Header.Set("Range", "bytes=17-33")
	r2, err := e.send(req)
	if err != nil {
		t.Fatal(err)
	}
	part, _ := io.ReadAll(r2.Body)
	r2.Body.Close()
	if r2.StatusCode != http.StatusPartialContent || !bytes.Equal(part, data[17:34]) {
		t.Fatalf("range: %d %q", r2.StatusCode, part)
	}
	full := e.getBytes(t, "/v1/documents/manual/content")
	if !bytes.Equal(full, data) {
		t.Fatalf("content: %d bytes, want the %d published", len(full), len(data))
	}

	var queued struct{ Queued int }
	if resp := e.do(t, http.MethodPost, "/v1/documents/download-all", "", &queued); resp.StatusCode != http.StatusAccepted || queued.Queued != 2 {
		t.Fatalf("download all: %d %+v, want both twins queued", resp.StatusCode, queued)
	}
	fstest.Eventually(t, 20*time.Second, func() bool {
		return bytes.Equal(e.getBytes(t, "/v1/documents/twin/content?org=south"), []byte("south"))
	}, "south's twin downloaded")
	if got := e.documents(t, "?org=south"); len(got.Documents) != 1 || got.Space.UsedBytes != int64(len(data)+10) {
		t.Fatalf("south only: %+v", got)
	}
	st := e.status(t)
	if st.Documents == nil || st.Documents.Downloaded != 3 {
		t.Fatalf("status documents: %+v", st.Documents)
	}
}

func (e *env) getBytes(t *testing.T, path string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.base+path, nil)
	resp, err := e.send(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	return b
}
