package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/fieldsync/fieldsync/broker"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/publish"
)

// benchDoc is one published document: its record id, the object holding
// its content and the content's size.
type benchDoc struct {
	id     string
	object string
	size   int64
}

// docSet is the benchmark's documents: the large one (a slice of one) and
// the small ones.
type docSet struct {
	large []benchDoc
	small []benchDoc
}

func (s *docSet) largeBytes() int64 { return totalBytes(s.large) }
func (s *docSet) smallBytes() int64 { return totalBytes(s.small) }

func totalBytes(docs []benchDoc) int64 {
	var n int64
	for _, d := range docs {
		n += d.size
	}
	return n
}

// publishDocuments publishes the large document and o.small small ones,
// random content, through the document publish API as `broker-embed
// publish --file` does (tool credentials over TCP: the client puts the
// content, the service publishes the record), eight at a time.
func publishDocuments(ctx context.Context, b *broker.Broker, o documentsOpts) (*docSet, error) {
	nc, err := roleConn(b, natsauth.RoleTool, "fsbench-publish")
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	pc := publish.NewClient(nc)
	set := &docSet{large: []benchDoc{{id: "doc-large", size: int64(o.largeMB) * 1e6}}, small: make([]benchDoc, o.small)}
	for i := range set.small {
		set.small[i] = benchDoc{id: fmt.Sprintf("doc-s%05d", i), size: int64(o.smallKB) * 1e3}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, docs := range [][]benchDoc{set.large, set.small} {
		for i := range docs {
			g.Go(func() error { return publishDocument(gctx, pc, &docs[i], uint64(i)) })
		}
	}
	return set, g.Wait()
}

// publishDocument publishes d with d.size random bytes (seeded by seed)
// and records its object.
func publishDocument(ctx context.Context, pc *publish.Client, d *benchDoc, seed uint64) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	content := io.LimitReader(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(d.size)}), d.size)
	resp, err := pc.PublishDocument(ctx, publish.DocumentRequest{OrgUnit: benchUnit, RecordID: d.id, Name: d.id + ".bin",
		ContentType: "application/octet-stream"}, content)
	if err != nil {
		return fmt.Errorf("publish %s: %w", d.id, err)
	}
	if resp.Content == nil || resp.Content.Size != d.size {
		return fmt.Errorf("publish %s: the answer names content %+v, want %d bytes", d.id, resp.Content, d.size)
	}
	d.object = resp.Content.Object
	return nil
}

// rawObjectGets reads docs' objects one after another the strongest known
// way over the agent's transport: nats.go's jetstream ObjectStore.Get
// (which checks the digest at the end) on a TCP client connection. With
// toDir empty each object is copied to io.Discard (the transport's bound:
// no disk). With toDir set each lands as a durable file there, the
// strongest known way to do the agent's step: Get, io.Copy to a new file
// (what ObjectStore.GetFile does), fsync, close and rename into place;
// the files are removed after the timing. It connects as the broker
// identity: of the roles, only it may both direct-get an object's info and
// create the ordered consumer Get reads the chunks through (a device may
// create only its own named consumer).
// It returns the time the gets took, connection and bucket lookup
// excluded.
func rawObjectGets(ctx context.Context, b *broker.Broker, docs []benchDoc, toDir string) (time.Duration, error) {
	nc, err := roleConn(b, natsauth.RoleBroker, "fsbench-raw-get")
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, err
	}
	bucket, _ := events.DocumentBucket(benchUnit)
	obs, err := js.ObjectStore(ctx, bucket)
	if err != nil {
		return 0, err
	}
	if toDir != "" {
		if err := os.MkdirAll(toDir, 0o700); err != nil {
			return 0, err
		}
		defer os.RemoveAll(toDir)
	}
	start := time.Now()
	for _, d := range docs {
		if err := getObject(ctx, obs, d, toDir); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

// getObject reads d's object to the end (the digest verified) and checks
// its size: to io.Discard, or with toDir set to a durable file there
// (written, synced, closed, renamed).
func getObject(ctx context.Context, obs jetstream.ObjectStore, d benchDoc, toDir string) error {
	r, err := obs.Get(ctx, d.object)
	if err != nil {
		return fmt.Errorf("get %s: %w", d.object, err)
	}
	defer r.Close()
	var w io.Writer = io.Discard
	var f *os.File
	if toDir != "" {
		if f, err = os.Create(filepath.Join(toDir, d.id+".part")); err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	n, err := io.Copy(w, r)
	if err != nil {
		return fmt.Errorf("read %s: %w", d.object, err)
	}
	if n != d.size {
		return fmt.Errorf("read %s: %d bytes, want %d", d.object, n, d.size)
	}
	if f == nil {
		return nil
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), filepath.Join(toDir, d.id))
}

// roleConn connects over TCP with role's component credentials.
func roleConn(b *broker.Broker, role natsauth.Role, name string) (*nats.Conn, error) {
	userJWT, seed, err := b.Authority().Component(role)
	if err != nil {
		return nil, err
	}
	return nats.Connect(b.ClientURL(), nats.Name(name), nats.UserJWTAndSeed(userJWT, seed))
}
