package publish_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/publish"
)

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "SHA-256=" + base64.URLEncoding.EncodeToString(sum[:])
}

// objects lists the live objects of unit's document bucket, read with the
// broker identity's own object store.
func objects(t *testing.T, b *fstest.Broker, unit string) []string {
	t.Helper()
	js, err := jetstream.New(b.Client.Conn())
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

func sorted(s ...string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func docAddr(id string) events.Address {
	return events.Address{OrgUnit: "north", Channel: events.ChannelDocuments, Kind: events.DocumentKind, RecordID: id}
}

// readAsDevice reads c's content as device dev1 of north, with its own
// credentials.
func readAsDevice(t *testing.T, b *fstest.Broker, c events.Content) []byte {
	t.Helper()
	dev := b.ConnectDevice(t, "dev1", "north")
	var got []byte
	err := dev.ReadContent(ctxT(t), natsjs.ContentRead{Device: "dev1", Unit: "north", Content: c}, func(d []byte, _ uint64) error {
		got = append(got, d...)
		return nil
	})
	if err != nil {
		t.Fatalf("device read of %s: %v", c.Object, err)
	}
	return got
}

func docReq(id, name string) publish.DocumentRequest {
	return publish.DocumentRequest{OrgUnit: "north", RecordID: id, Name: name, ContentType: "application/pdf"}
}

// TestService_PublishDocument: three versions of a document keep the
// objects of the last two (v1's goes), each naming the one before; the
// record holds name, metadata and content; a metadata-only update keeps
// the content; a device reads the content back.
func TestService_PublishDocument(t *testing.T) {
	b, svc := newService(t, "north")
	ctx := ctxT(t)
	var resps []publish.Response
	var datas [][]byte
	for i := range 3 {
		data := randomBytes(t, 300<<10+i)
		r := docReq("d1", "manual.pdf")
		r.Body = map[string]any{"rev": i}
		resp := svc.PublishDocument(ctx, r, bytes.NewReader(data))
		if resp.Error != nil || resp.Content == nil {
			t.Fatalf("version %d: %+v", i+1, resp)
		}
		c := resp.Content
		if c.Size != int64(len(data)) || c.Chunks != 3 || c.Digest != digestOf(data) || c.Type != "application/pdf" {
			t.Fatalf("version %d content %+v: want %d bytes in 3 chunks, digest %s", i+1, c, len(data), digestOf(data))
		}
		if i > 0 && c.Previous != resps[i-1].Content.Object {
			t.Fatalf("version %d previous %q, want %q", i+1, c.Previous, resps[i-1].Content.Object)
		}
		resps, datas = append(resps, resp), append(datas, data)
	}
	if got, want := objects(t, b, "north"), sorted(resps[1].Content.Object, resps[2].Content.Object); !slices.Equal(got, want) {
		t.Fatalf("objects %v, want those of v2 and v3 %v", got, want)
	}
	e, body := storedBody(t, b, docAddr("d1"))
	stored, err := events.ParseContent("d1", body)
	if err != nil || stored != resps[2].Content.Events() || body["name"] != "manual.pdf" || fmt.Sprint(body["rev"]) != "2" || e.Op != events.OpUpsert {
		t.Fatalf("stored body %v (%v), want name, rev 2 and v3's content %+v", body, err, resps[2].Content)
	}
	if got := readAsDevice(t, b, stored); !bytes.Equal(got, datas[2]) {
		t.Fatalf("device read %d bytes, want v3's %d", len(got), len(datas[2]))
	}

	meta := svc.PublishDocument(ctx, publish.DocumentRequest{OrgUnit: "north", RecordID: "d1", Name: "Manual (final).pdf"}, nil)
	if meta.Error != nil || meta.Content == nil || *meta.Content != *resps[2].Content || meta.Version <= resps[2].Version {
		t.Fatalf("metadata-only update %+v: want v3's content %+v kept", meta, resps[2].Content)
	}
	if _, body := storedBody(t, b, docAddr("d1")); body["name"] != "Manual (final).pdf" || body["rev"] != nil {
		t.Fatalf("after metadata-only update: body %v", body)
	}
	if got := objects(t, b, "north"); len(got) != 2 {
		t.Fatalf("metadata-only update changed the objects: %v", got)
	}
	// Without content at all, a document is only metadata.
	if r := svc.PublishDocument(ctx, docReq("d2", "note"), nil); r.Error != nil || r.Content != nil {
		t.Fatalf("document without content: %+v", r)
	}
}

// racingReader publishes another version of the document the first time
// it is read: the publish reading it then loses the race.
type racingReader struct {
	io.Reader
	race func()
}

func (r *racingReader) Read(p []byte) (int, error) {
	if r.race != nil {
		r.race()
		r.race = nil
	}
	return r.Reader.Read(p)
}

// TestService_PublishDocument_Conflict: a stale ExpectedVersion is refused
// before any content is stored, and a publish that loses a race after
// storing its content deletes it: the bucket holds only the winner's.
func TestService_PublishDocument_Conflict(t *testing.T) {
	b, svc := newService(t, "north")
	ctx := ctxT(t)
	first := svc.PublishDocument(ctx, docReq("d1", "a"), bytes.NewReader(randomBytes(t, 1000)))
	if first.Error != nil {
		t.Fatal(first.Error)
	}
	stale := docReq("d1", "a")
	stale.ExpectedVersion = u64(first.Version - 1)
	resp := svc.PublishDocument(ctx, stale, bytes.NewReader(randomBytes(t, 1000)))
	if !errors.Is(resp.Error, publish.ErrConflict) || resp.Error.CurrentVersion == nil || *resp.Error.CurrentVersion != first.Version {
		t.Fatalf("stale expected version: %+v, want conflict at %d", resp, first.Version)
	}
	var winner publish.Response
	racing := &racingReader{Reader: bytes.NewReader(randomBytes(t, 200<<10)), race: func() {
		winner = svc.PublishDocument(ctx, docReq("d1", "winner"), bytes.NewReader(randomBytes(t, 1000)))
	}}
	loser := svc.PublishDocument(ctx, docReq("d1", "loser"), racing)
	if winner.Error != nil || !errors.Is(loser.Error, publish.ErrConflict) {
		t.Fatalf("race: winner %+v, loser %+v: want the loser to conflict", winner, loser)
	}
	if got, want := objects(t, b, "north"), sorted(first.Content.Object, winner.Content.Object); !slices.Equal(got, want) {
		t.Fatalf("objects after the race %v, want only v1 and the winner's %v", got, want)
	}
	if _, body := storedBody(t, b, docAddr("d1")); body["name"] != "winner" {
		t.Fatalf("stored %v, want the winner's", body)
	}
}

// TestService_PublishDocument_Refused: invalid requests, content over the
// size limit and a retried event id leave no object of theirs behind.
func TestService_PublishDocument_Refused(t *testing.T) {
	b, svc := newService(t, "north")
	ctx := ctxT(t)
	svc.MaxDocumentSize = 4096
	ok := svc.PublishDocument(ctx, docReq("d1", "a"), bytes.NewReader(randomBytes(t, 4096)))
	if ok.Error != nil {
		t.Fatal(ok.Error)
	}
	big := svc.PublishDocument(ctx, docReq("d1", "a"), bytes.NewReader(randomBytes(t, 4097)))
	if !errors.Is(big.Error, publish.ErrTooLarge) {
		t.Fatalf("over the limit: %+v, want too_large", big)
	}
	for name, r := range map[string]publish.DocumentRequest{
		"no name":      {OrgUnit: "north", RecordID: "d1"},
		"content key":  {OrgUnit: "north", RecordID: "d1", Name: "a", Body: map[string]any{"content": "x"}},
		"name key":     {OrgUnit: "north", RecordID: "d1", Name: "a", Body: map[string]any{"name": "x"}},
		"bad id":       {OrgUnit: "north", RecordID: "d.1", Name: "a"},
		"unknown unit": {OrgUnit: "east", RecordID: "d1", Name: "a"},
	} {
		if resp := svc.PublishDocument(ctx, r, bytes.NewReader([]byte("x"))); resp.Error == nil {
			t.Errorf("%s: accepted %+v", name, resp)
		}
	}
	retry := docReq("d1", "b")
	retry.EventID = "evt-doc-1"
	one := svc.PublishDocument(ctx, retry, bytes.NewReader(randomBytes(t, 100)))
	two := svc.PublishDocument(ctx, retry, bytes.NewReader(randomBytes(t, 100)))
	if one.Error != nil || two.Error != nil || !two.Duplicate || two.Content == nil || *two.Content != *one.Content {
		t.Fatalf("retried event id: %+v then %+v, want a duplicate naming the first content", one, two)
	}
	if got, want := objects(t, b, "north"), sorted(ok.Content.Object, one.Content.Object); !slices.Equal(got, want) {
		t.Fatalf("objects %v, want only the accepted ones %v", got, want)
	}
}

// TestService_Publish_Document: a plain publish may not set a document's
// content, and deleting a document deletes its objects.
func TestService_Publish_Document(t *testing.T) {
	b, svc := newService(t, "north")
	ctx := ctxT(t)
	plain := publish.Request{OrgUnit: "north", Channel: "documents", Kind: "document", RecordID: "d1",
		Body: map[string]any{"name": "x", "content": map[string]any{"object": "d1/x"}}}
	resp := svc.Publish(ctx, plain)
	if !errors.Is(resp.Error, publish.ErrInvalid) || resp.Error.Message != "content is set by the document publish API" {
		t.Fatalf("plain publish with content: %+v", resp)
	}
	for range 2 {
		if r := svc.PublishDocument(ctx, docReq("d1", "a"), bytes.NewReader(randomBytes(t, 1000))); r.Error != nil {
			t.Fatal(r.Error)
		}
	}
	if got := objects(t, b, "north"); len(got) != 2 {
		t.Fatalf("objects %v, want 2", got)
	}
	// A plain upsert would leave the content unnamed: refused, nothing changes.
	meta := publish.Request{OrgUnit: "north", Channel: "documents", Kind: "document", RecordID: "d1", Body: map[string]any{"name": "renamed"}}
	if r := svc.Publish(ctx, meta); !errors.Is(r.Error, publish.ErrInvalid) {
		t.Fatalf("plain upsert of a document with content: %+v", r)
	}
	if got := objects(t, b, "north"); len(got) != 2 {
		t.Fatalf("objects after the refused upsert %v, want 2", got)
	}
	// A document without content takes plain upserts.
	if r := svc.Publish(ctx, publish.Request{OrgUnit: "north", Channel: "documents", Kind: "document", RecordID: "meta-only",
		Body: map[string]any{"name": "no file"}}); r.Error != nil {
		t.Fatalf("plain upsert of a document without content: %+v", r.Error)
	}
	del := svc.Publish(ctx, publish.Request{OrgUnit: "north", Channel: "documents", Kind: "document", RecordID: "d1", Op: "delete"})
	if del.Error != nil {
		t.Fatal(del.Error)
	}
	if got := objects(t, b, "north"); len(got) != 0 {
		t.Fatalf("objects after delete %v, want none", got)
	}
	if e, _ := storedBody(t, b, docAddr("d1")); e.Op != events.OpDelete {
		t.Fatalf("latest change %+v, want the delete", e)
	}
	// A new document after the delete starts again with no previous.
	again := svc.PublishDocument(ctx, docReq("d1", "a"), bytes.NewReader(randomBytes(t, 10)))
	if again.Error != nil || again.Content.Previous != "" {
		t.Fatalf("after delete: %+v", again)
	}
}

// TestClient_PublishDocument: over NATS as the tool identity, the client
// puts the content and the service publishes the record; a refused
// request's object is deleted by the service, and a request naming
// another document's object is refused without touching it.
func TestClient_PublishDocument(t *testing.T) {
	b, svc := newService(t, "north")
	ctx := ctxT(t)
	sub, err := svc.ServeDocuments(b.Client.Conn())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	tool := b.ConnectComponent(t, natsauth.RoleTool, natsjs.ConnectOptions{Name: "tool"})
	c := publish.NewClient(tool.Conn())

	data := randomBytes(t, 400<<10)
	resp, err := c.PublishDocument(ctx, docReq("d1", "plan.pdf"), bytes.NewReader(data))
	if err != nil || resp.Content == nil || resp.Content.Digest != digestOf(data) || resp.Version == 0 {
		t.Fatalf("publish over NATS: %+v %v", resp, err)
	}
	if got := readAsDevice(t, b, resp.Content.Events()); !bytes.Equal(got, data) {
		t.Fatal("device read different content")
	}
	stale := docReq("d1", "plan.pdf")
	stale.ExpectedVersion = u64(0)
	if _, err := c.PublishDocument(ctx, stale, bytes.NewReader(randomBytes(t, 1000))); !errors.Is(err, publish.ErrConflict) {
		t.Fatalf("stale publish over NATS: %v, want conflict", err)
	}
	other, err := c.PublishDocument(ctx, docReq("d2", "other"), bytes.NewReader(randomBytes(t, 1000)))
	if err != nil {
		t.Fatal(err)
	}
	steal := docReq("d1", "plan.pdf")
	steal.Object = other.Content.Object
	if _, err := c.PublishDocument(ctx, steal, nil); !errors.Is(err, publish.ErrInvalid) {
		t.Fatalf("naming another document's object: %v, want invalid", err)
	}
	if got, want := objects(t, b, "north"), sorted(resp.Content.Object, other.Content.Object); !slices.Equal(got, want) {
		t.Fatalf("objects %v, want %v (the refused one deleted, the other document's kept)", got, want)
	}
	meta, err := c.PublishDocument(ctx, publish.DocumentRequest{OrgUnit: "north", RecordID: "d1", Name: "plan v1.pdf"}, nil)
	if err != nil || *meta.Content != *resp.Content {
		t.Fatalf("metadata-only over NATS: %+v %v", meta, err)
	}
}
