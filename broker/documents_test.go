package broker_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/broker"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/publish"
)

// docHTTP sends one request to /v1/documents/<path> with token and
// returns the status and the decoded answer.
func docHTTP(t *testing.T, b *broker.Broker, method, path, token string, body io.Reader, header map[string]string) (int, publish.Response) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), method, b.HTTPURL()+"/v1/documents/"+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r publish.Response
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("%s %s: decode answer: %v", method, path, err)
	}
	return resp.StatusCode, r
}

// docObjects lists the live objects of unit's bucket through the broker's
// own (raw) object store.
func docObjects(t *testing.T, b *broker.Broker, unit string) []string {
	t.Helper()
	js, err := jetstream.New(b.Client().Conn())
	if err != nil {
		t.Fatal(err)
	}
	bucket, _ := events.DocumentBucket(unit)
	obs, err := js.ObjectStore(ctxT(t), bucket)
	if err != nil {
		t.Fatal(err)
	}
	infos, err := obs.List(ctxT(t))
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, i := range infos {
		out = append(out, i.Name)
	}
	slices.Sort(out)
	return out
}

func sortedNames(s ...string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func randomData(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func sha256Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "SHA-256=" + base64.URLEncoding.EncodeToString(sum[:])
}

// TestBroker_HTTPDocuments: an integration PUTs a 50 MB document (streamed
// into the bucket) that a device reads back byte for byte with its own
// credentials; two more versions keep v2's and v3's objects only; a stale
// If-Match, a missing name, a foreign or unknown unit and no token are
// refused with their status; DELETE removes the record's objects; the
// bucket has the configured cap.
func TestBroker_HTTPDocuments(t *testing.T) {
	cfg := testConfig(t.TempDir(), "north", "south")
	cfg.Streams.DocumentBytes = 1 << 30
	b := openBroker(t, cfg)
	a := b.Authority()
	token := fstest.MustIntegrationToken(t, a, "crm", "north", "east")

	data := randomData(t, 50<<20)
	status, v1 := docHTTP(t, b, http.MethodPut, "north/d1?name=site+plan.pdf", token, bytes.NewReader(data),
		map[string]string{"Content-Type": "application/pdf", publish.BodyHeader: `{"folder":"plans"}`})
	if status != http.StatusOK || v1.Content == nil || v1.Content.Size != int64(len(data)) || v1.Content.Digest != sha256Digest(data) {
		t.Fatalf("PUT 50 MB: %d %+v, want 200 with digest %s", status, v1, sha256Digest(data))
	}
	dev := fstest.MustConnectDevice(t, b.ClientURL(), a, "tab1", "north")
	got, h := make([]byte, 0, len(data)), sha256.New()
	err := dev.ReadContent(ctxT(t), natsjs.ContentRead{Device: "tab1", Unit: "north", Content: v1.Content.Events()}, func(d []byte, _ uint64) error {
		got = append(got, d...)
		h.Write(d)
		return nil
	})
	if err != nil || "SHA-256="+base64.URLEncoding.EncodeToString(h.Sum(nil)) != v1.Content.Digest || !bytes.Equal(got, data) {
		t.Fatalf("device read %d bytes (err %v), want the %d put, identical", len(got), err, len(data))
	}

	versions := []publish.Response{v1}
	for i := 2; i <= 3; i++ {
		prev := versions[len(versions)-1]
		status, r := docHTTP(t, b, http.MethodPut, fmt.Sprintf("north/d1?name=v%d", i), token, bytes.NewReader(randomData(t, 1000)),
			map[string]string{"If-Match": fmt.Sprintf(`"%d"`, prev.Version)})
		if status != http.StatusOK || r.Content.Previous != prev.Content.Object || r.Content.Type != "application/octet-stream" {
			t.Fatalf("PUT v%d: %d %+v", i, status, r)
		}
		versions = append(versions, r)
	}
	want := sortedNames(versions[1].Content.Object, versions[2].Content.Object)
	if got := docObjects(t, b, "north"); !slices.Equal(got, want) {
		t.Fatalf("objects after 3 versions %v, want v2's and v3's %v", got, want)
	}

	for name, c := range map[string]struct {
		path, token string
		header      map[string]string
		status      int
	}{
		"stale If-Match": {"north/d1?name=x", token, map[string]string{"If-Match": fmt.Sprint(v1.Version)}, http.StatusConflict},
		"no name":        {"north/d1", token, nil, http.StatusBadRequest},
		"bad body":       {"north/d1?name=x&body=%7B", token, nil, http.StatusBadRequest},
		"foreign unit":   {"south/d1?name=x", token, nil, http.StatusForbidden},
		"unknown unit":   {"east/d1?name=x", token, nil, http.StatusNotFound},
		"no token":       {"north/d1?name=x", "", nil, http.StatusUnauthorized},
		"bad id":         {"north/d%2A1?name=x", token, nil, http.StatusBadRequest},
	} {
		if status, r := docHTTP(t, b, http.MethodPut, c.path, c.token, strings.NewReader("content"), c.header); status != c.status {
			t.Errorf("%s: %d %+v, want %d", name, status, r, c.status)
		}
	}
	if got := docObjects(t, b, "north"); !slices.Equal(got, want) {
		t.Fatalf("objects after refused PUTs %v, want still %v", got, want)
	}
	if status, r := docHTTP(t, b, http.MethodDelete, "north/d1", token, nil, nil); status != http.StatusOK || r.Version <= versions[2].Version {
		t.Fatalf("DELETE: %d %+v", status, r)
	}
	if got := docObjects(t, b, "north"); len(got) != 0 {
		t.Fatalf("objects after DELETE %v, want none", got)
	}
	js, _ := jetstream.New(b.Client().Conn())
	s, err := js.Stream(ctxT(t), "OBJ_FS_DOCS_north")
	if err != nil || s.CachedInfo().Config.MaxBytes != 1<<30 {
		t.Fatalf("document bucket stream: %v, want max bytes %d from streams.document_bytes", err, 1<<30)
	}
}

// TestBroker_HTTPDocuments_TooLarge: content over max_document_size is
// refused with 413, whether its length is declared or not, and leaves no
// object.
func TestBroker_HTTPDocuments_TooLarge(t *testing.T) {
	cfg := testConfig(t.TempDir(), "north")
	cfg.MaxDocumentSize = 1000
	b := openBroker(t, cfg)
	token := fstest.MustIntegrationToken(t, b.Authority(), "crm", "north")
	data := randomData(t, 2000)
	if status, r := docHTTP(t, b, http.MethodPut, "north/d1?name=x", token, bytes.NewReader(data), nil); status != http.StatusRequestEntityTooLarge {
		t.Fatalf("declared length over the limit: %d %+v, want 413", status, r)
	}
	chunked := io.MultiReader(bytes.NewReader(data)) // no length: read until the limit
	if status, r := docHTTP(t, b, http.MethodPut, "north/d1?name=x", token, chunked, nil); status != http.StatusRequestEntityTooLarge {
		t.Fatalf("streamed over the limit: %d %+v, want 413", status, r)
	}
	if status, r := docHTTP(t, b, http.MethodPut, "north/d1?name=x", token, bytes.NewReader(data[:1000]), nil); status != http.StatusOK {
		t.Fatalf("at the limit: %d %+v, want 200", status, r)
	}
	if got := docObjects(t, b, "north"); len(got) != 1 {
		t.Fatalf("objects %v, want only the accepted one", got)
	}
}

// TestBroker_DocumentAPI_Tool: over NATS, the tool identity puts content
// and the broker's document API (as the publish identity, with its
// units' purge) publishes the record, keeps two objects per document,
// cleans up after a conflict and deletes the objects with the document.
func TestBroker_DocumentAPI_Tool(t *testing.T) {
	b := openBroker(t, testConfig(t.TempDir(), "north"))
	ctx := ctxT(t)
	nc, err := nats.Connect(b.ClientURL(), fstest.ToolCreds(t, b.Authority()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	c := publish.NewClient(nc)
	var versions []publish.Response
	for i := range 3 {
		r, err := c.PublishDocument(ctx, publish.DocumentRequest{OrgUnit: "north", RecordID: "d1", Name: fmt.Sprintf("v%d", i+1)},
			bytes.NewReader(randomData(t, 200<<10)))
		if err != nil {
			t.Fatalf("version %d: %v", i+1, err)
		}
		versions = append(versions, r)
	}
	want := sortedNames(versions[1].Content.Object, versions[2].Content.Object)
	if got := docObjects(t, b, "north"); !slices.Equal(got, want) {
		t.Fatalf("objects %v, want v2's and v3's %v", got, want)
	}
	stale := publish.DocumentRequest{OrgUnit: "north", RecordID: "d1", Name: "late", ExpectedVersion: &versions[0].Version}
	if _, err := c.PublishDocument(ctx, stale, bytes.NewReader(randomData(t, 1000))); !errors.Is(err, publish.ErrConflict) {
		t.Fatalf("stale: %v, want conflict", err)
	}
	if got := docObjects(t, b, "north"); !slices.Equal(got, want) {
		t.Fatalf("objects after the conflict %v, want still %v", got, want)
	}
	if _, err := c.Publish(ctx, publish.Request{OrgUnit: "north", Channel: "documents", Kind: "document", RecordID: "d1", Op: "delete"}); err != nil {
		t.Fatal(err)
	}
	if got := docObjects(t, b, "north"); len(got) != 0 {
		t.Fatalf("objects after delete %v, want none", got)
	}
}
