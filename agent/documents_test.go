package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/store"
)

func mustRandomBytes(tb testing.TB, n int) []byte {
	tb.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return b
}

// publishDocument stores data as new content of document id and publishes
// its record (name, content) as the server side does; it returns the
// record's version and content.
func publishDocument(tb testing.TB, b *fstest.Broker, unit, id, name string, data []byte) (uint64, events.Content) {
	tb.Helper()
	c, err := b.Client.Publisher().PutContent(context.Background(), unit, id, "application/pdf", bytes.NewReader(data))
	if err != nil {
		tb.Fatal(err)
	}
	return publishDocumentRecord(tb, b, unit, id, name, c), c
}

func publishDocumentRecord(tb testing.TB, b *fstest.Broker, unit, id, name string, c events.Content) uint64 {
	tb.Helper()
	return b.MustPublish(tb, fstest.Change(tb, unit, events.ChannelDocuments, events.DocumentKind, id,
		map[string]any{"name": name, "section": "procedures", events.ContentField: c.Map()}))
}

// docAgentConfig is a device of unit in blocking mode (refresh: staged
// until Apply) with its own credentials and data folder.
func docAgentConfig(t *testing.T, b *fstest.Broker, refresh bool, unit string) Config {
	cfg := testConfig("tab1", unit)
	if refresh {
		cfg = refreshConfig("tab1", unit)
	}
	cfg.BrokerURL, cfg.DataDir = b.URL(), t.TempDir()
	cfg.Credentials = b.DeviceCreds(t, cfg.DeviceID, cfg.OrgUnits...)
	cfg.DocumentsReserve = -1
	return cfg
}

// syncDocuments runs a documents sync and waits for it to complete.
func syncDocuments(t *testing.T, a *Agent) {
	t.Helper()
	completed := func() time.Time {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.completed
	}
	before := completed()
	_ = a.RequestSync(ScopeDocuments) // already queued: that one will do
	fstest.Eventually(t, 30*time.Second, func() bool { return completed().After(before) }, "documents sync")
}

// waitDocument waits until document id is in state and returns it.
func waitDocument(t *testing.T, a *Agent, id string, state DocumentState) Document {
	t.Helper()
	var d Document
	fstest.Eventually(t, 60*time.Second, func() bool {
		var err error
		d, err = a.findDocument(context.Background(), "", id)
		return err == nil && d.State == state
	}, "document %s %s (last: %+v)", id, state, &d)
	return d
}

func mustReadDocument(t *testing.T, a *Agent, id string) []byte {
	t.Helper()
	f, _, err := a.OpenDocument(context.Background(), "", id)
	if err != nil {
		t.Fatalf("open %s: %v", id, err)
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func docFiles(t *testing.T, a *Agent, unit string) []string {
	t.Helper()
	entries, _ := os.ReadDir(store.DocumentDir(a.cfg.DataDir, unit))
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func TestAgent_DownloadDocument(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	data := mustRandomBytes(t, 50<<20)
	publishDocument(t, b, "north", "big", "Safety procedures.pdf", data)
	a := runAgent(t, docAgentConfig(t, b, false, "north"), nil)
	d := waitDocument(t, a, "big", DocNotDownloaded)
	if d.Size != int64(len(data)) || d.Name != "Safety procedures.pdf" || d.Openable {
		t.Fatalf("listed before download: %+v", d)
	}
	if _, _, err := a.OpenDocument(context.Background(), "", "big"); !errors.Is(err, ErrNotOpenable) {
		t.Fatalf("open before download: %v, want ErrNotOpenable", err)
	}
	if _, err := a.DownloadDocument(context.Background(), "", "big"); err != nil {
		t.Fatal(err)
	}
	d = waitDocument(t, a, "big", DocDownloaded)
	if got := mustReadDocument(t, a, "big"); !bytes.Equal(got, data) {
		t.Fatalf("downloaded %d bytes, not identical to the %d published", len(got), len(data))
	}
	if files := docFiles(t, a, "north"); len(files) != 1 {
		t.Fatalf("files on disk %v, want the one verified file", files)
	}
	list, err := a.Documents(context.Background(), "safety")
	if err != nil || len(list.Documents) != 1 || list.Space.UsedBytes != int64(len(data)) {
		t.Fatalf("search: %+v, %v (want the document, %d bytes used)", list, err, len(data))
	}
	if list, _ := a.Documents(context.Background(), "forms"); len(list.Documents) != 0 {
		t.Fatalf("search for another word listed %+v", list.Documents)
	}
	st, err := a.Status(context.Background())
	if err != nil || st.Documents.Downloaded != 1 || st.Documents.UsedBytes != int64(len(data)) {
		t.Fatalf("status documents %+v, %v", st.Documents, err)
	}
}

func TestAgent_DownloadAllDocuments(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	want := map[string][]byte{}
	for i := range 200 {
		id := fmt.Sprintf("doc%03d", i)
		want[id] = mustRandomBytes(t, 1000+i*97)
		publishDocument(t, b, "north", id, "Form "+id, want[id])
	}
	a := runAgent(t, docAgentConfig(t, b, false, "north"), nil)
	waitDocument(t, a, "doc199", DocNotDownloaded)
	n, err := a.DownloadAllDocuments(context.Background())
	if err != nil || n != 200 {
		t.Fatalf("download all queued %d, %v; want 200", n, err)
	}
	fstest.Eventually(t, 60*time.Second, func() bool {
		st, err := a.Status(context.Background())
		return err == nil && st.Documents.Downloaded == 200
	}, "200 documents downloaded")
	for id, data := range want {
		if got := mustReadDocument(t, a, id); !bytes.Equal(got, data) {
			t.Fatalf("%s: %d bytes, not the %d published", id, len(got), len(data))
		}
	}
	if n, err := a.DownloadAllDocuments(context.Background()); err != nil || n != 0 {
		t.Fatalf("second download all queued %d, %v; want 0", n, err)
	}
}

// TestAgent_Documents_UpdateAfterApply: content changed on the server
// downloads again after Apply, and not before; it is update pending (not
// openable, the old file still on disk) until verified; a corrupt update
// fails with its reason and the previous content stays usable; a deleted
// document loses its file.
func TestAgent_Documents_UpdateAfterApply(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	v1, v2 := mustRandomBytes(t, 3<<20), mustRandomBytes(t, 2<<20+5)
	publishDocument(t, b, "north", "proc", "Procedure", v1)
	gate := make(chan struct{}, 10)
	a := runAgent(t, docAgentConfig(t, b, true, "north"), func(a *Agent) {
		a.beforeFetch = func(f store.DocFile) {
			if f.HasFile() { // an update: the test lets it run
				<-gate
			}
		}
	})
	waitDocument(t, a, "proc", DocNotDownloaded)
	if _, err := a.DownloadDocument(context.Background(), "", "proc"); err != nil {
		t.Fatal(err)
	}
	waitDocument(t, a, "proc", DocDownloaded)

	publishDocument(t, b, "north", "proc", "Procedure", v2)
	syncDocuments(t, a)
	if d := waitDocument(t, a, "proc", DocDownloaded); !bytes.Equal(mustReadDocument(t, a, "proc"), v1) || d.DownloadedVersion != d.Version {
		t.Fatalf("before Apply the device must keep v1 as it is: %+v", d)
	}
	if _, err := a.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	d := waitDocument(t, a, "proc", DocUpdatePending)
	if d.Openable || d.DownloadedVersion == d.Version {
		t.Fatalf("update pending: %+v", d)
	}
	if _, _, err := a.OpenDocument(context.Background(), "", "proc"); !errors.Is(err, ErrUpdatePending) {
		t.Fatalf("open while the update is pending: %v, want ErrUpdatePending", err)
	}
	if files := docFiles(t, a, "north"); len(files) == 0 {
		t.Fatal("the previous file is gone before the update is verified")
	}
	gate <- struct{}{}
	waitDocument(t, a, "proc", DocDownloaded)
	if got := mustReadDocument(t, a, "proc"); !bytes.Equal(got, v2) {
		t.Fatal("after the update the content is not v2")
	}
	if files := docFiles(t, a, "north"); len(files) != 1 {
		t.Fatalf("files %v: the replaced file stayed", files)
	}

	// A corrupt update: the record names a digest the content does not have.
	c, err := b.Client.Publisher().PutContent(context.Background(), "north", "proc", "application/pdf", bytes.NewReader(mustRandomBytes(t, 1<<20)))
	if err != nil {
		t.Fatal(err)
	}
	c.Digest = "SHA-256=" + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	publishDocumentRecord(t, b, "north", "proc", "Procedure", c)
	syncDocuments(t, a)
	if _, err := a.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	gate <- struct{}{}
	d = waitDocument(t, a, "proc", DocFailed)
	if !d.Openable || d.Error == "" || !bytes.Equal(mustReadDocument(t, a, "proc"), v2) {
		t.Fatalf("failed update: %+v; want the reason and v2 still usable", d)
	}
	if files := docFiles(t, a, "north"); len(files) != 1 {
		t.Fatalf("files %v after a failed update: want v2's only (no part file left)", files)
	}

	b.MustPublish(t, &events.Envelope{EventID: "del-proc", OrgUnit: "north", Channel: events.ChannelDocuments, Kind: events.DocumentKind,
		RecordID: "proc", Op: events.OpDelete, SchemaVersion: events.SchemaVersion, Timestamp: time.Now().UTC()})
	syncDocuments(t, a)
	if _, err := a.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	fstest.Eventually(t, 10*time.Second, func() bool { return len(docFiles(t, a, "north")) == 0 }, "deleted document's file removed")
	if _, err := a.db.DocFile(context.Background(), "north", "proc"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted document's row: %v", err)
	}
}

func TestAgent_DownloadDocument_FreeSpaceReserve(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	publishDocument(t, b, "north", "d1", "D1", mustRandomBytes(t, 1000))
	cfg := docAgentConfig(t, b, false, "north")
	cfg.DocumentsReserve = 1 << 62 // more than any disk has free
	a := runAgent(t, cfg, nil)
	waitDocument(t, a, "d1", DocNotDownloaded)
	_, err := a.DownloadDocument(context.Background(), "", "d1")
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("download under the reserve: %v, want ErrNoSpace", err)
	}
	if _, err := a.DownloadAllDocuments(context.Background()); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("download all under the reserve: %v, want ErrNoSpace", err)
	}
	if d := waitDocument(t, a, "d1", DocNotDownloaded); d.Error != "" {
		t.Fatalf("refused download changed the document: %+v", d)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "documents")); err == nil && len(docFiles(t, a, "north")) > 0 {
		t.Fatal("refused download wrote files")
	}
}
