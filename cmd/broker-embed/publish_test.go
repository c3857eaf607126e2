package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	natsd "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/publish"
)

var documentRe = regexp.MustCompile(`^published (\S+) to (\S+): version (\d+), size (\d+), digest (\S+)\n$`)

// TestPublishCmd_File: --file publishes a document through the document
// API as the tool identity: the printed size and digest are the file's,
// the record names the content with the file's name and the media type
// of its extension, and --file on another channel or kind is refused.
func TestPublishCmd_File(t *testing.T) {
	b := startBroker(t)
	data := make([]byte, 300<<10)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "site plan.pdf")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "publish", "--url", b.ClientURL(), "--data-dir", dataDir(b), "--org", "north", "--channel", "documents",
		"--kind", "document", "--id", "d1", "--file", path, "--body", `{"folder":"plans"}`)
	if err != nil {
		t.Fatalf("publish --file: %v\n%s", err, out)
	}
	m := documentRe.FindStringSubmatch(out)
	sum := sha256.Sum256(data)
	if m == nil || m[2] != "FS_ORG_north" || m[4] != strconv.Itoa(len(data)) || m[5] != "SHA-256="+base64.URLEncoding.EncodeToString(sum[:]) {
		t.Fatalf("output %q, want version, size %d and the file's SHA-256", out, len(data))
	}
	ctx := context.Background()
	js, err := jetstream.New(b.Client().Conn())
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, "FS_ORG_north")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s.GetLastMsgForSubject(ctx, "fs.org.north.documents.document.d1")
	if err != nil {
		t.Fatal(err)
	}
	e, err := events.Decode(raw.Data)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	if err := msgpack.Unmarshal(e.Body, &body); err != nil {
		t.Fatal(err)
	}
	c, err := events.ParseContent("d1", body)
	if err != nil || body["name"] != "site plan.pdf" || body["folder"] != "plans" || c.Type != "application/pdf" || c.Digest != m[5] {
		t.Fatalf("stored body %v (%v)", body, err)
	}
	if info, err := b.Client().Publisher().ContentInfo(ctx, "north", c.Object); err != nil || info.Size != int64(len(data)) {
		t.Fatalf("object %s: %+v %v", c.Object, info, err)
	}
	_, err = run(t, "publish", "--url", b.ClientURL(), "--data-dir", dataDir(b), "--org", "north", "--channel", "events",
		"--kind", "event", "--id", "e1", "--file", path)
	if !errors.Is(err, errFileNotDocument) {
		t.Fatalf("--file on an event: %v, want errFileNotDocument", err)
	}
}

// TestPublishCmd_Timeout: a publish API that does not answer (a cluster
// node cut off from the majority) makes publish fail after --timeout,
// naming the event id to retry with, instead of waiting for ever.
func TestPublishCmd_Timeout(t *testing.T) {
	srv, err := natsd.NewServer(&natsd.Options{Host: "127.0.0.1", Port: -1, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	defer srv.Shutdown()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Subscribe(publish.Subject, func(*nats.Msg) {}); err != nil { // takes requests, never answers
		t.Fatal(err)
	}
	nc.Flush()
	start := time.Now()
	_, err = run(t, "publish", "--org", "north", "--channel", "events", "--kind", "event", "--id", "t-1", "--event-id", "ev-timeout-1",
		"--timeout", "700ms", "--url", srv.ClientURL(), "--data-dir", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "--event-id ev-timeout-1") || time.Since(start) > 10*time.Second {
		t.Fatalf("publish to an API that does not answer: %v after %s", err, time.Since(start))
	}
}
