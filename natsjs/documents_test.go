package natsjs_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsjs"
)

func mustRandom(tb testing.TB, n int) []byte {
	tb.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return b
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "SHA-256=" + base64.URLEncoding.EncodeToString(sum[:])
}

// TestClient_ReadContent puts content as the server side and reads it as
// a device with its own credentials: whole, resumed after a chunk, and
// refused on another unit's bucket.
func TestClient_ReadContent(t *testing.T) {
	b := fstest.MustStartBroker(t, "north", "south")
	ctx := testCtx(t)
	data := mustRandom(t, 5*128<<10+77)
	pub := b.Client.Publisher()
	c, err := pub.PutContent(ctx, "north", "d1", "application/pdf", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if c.Size != int64(len(data)) || c.Chunks != 6 || c.Digest != digestOf(data) || c.Type != "application/pdf" {
		t.Fatalf("content %+v: want size %d in 6 chunks, digest %s", c, len(data), digestOf(data))
	}
	if err := c.Validate("d1"); err != nil {
		t.Fatal(err)
	}
	dev := b.ConnectDevice(t, "dev1", "north")
	var got []byte
	var seqs []uint64
	err = dev.ReadContent(ctx, natsjs.ContentRead{Device: "dev1", Unit: "north", Content: c}, func(d []byte, seq uint64) error {
		got, seqs = append(got, d...), append(seqs, seq)
		return nil
	})
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes (want %d identical), err %v", len(got), len(data), err)
	}
	// Resume after the second chunk, with the consumer an interrupted
	// download left behind (another start): only the rest comes.
	stream, _ := events.DocumentStream("north")
	chunks, _ := events.DocumentChunkSubject("north", c.NUID)
	if _, err := mustJS(t, b).CreateConsumer(ctx, stream, jetstream.ConsumerConfig{Name: "fsdoc_dev1", FilterSubject: chunks,
		AckPolicy: jetstream.AckNonePolicy, MemoryStorage: true}); err != nil {
		t.Fatal(err)
	}
	var rest []byte
	err = dev.ReadContent(ctx, natsjs.ContentRead{Device: "dev1", Unit: "north", Content: c, AfterSeq: seqs[1], Done: 2},
		func(d []byte, _ uint64) error { rest = append(rest, d...); return nil })
	if err != nil || !bytes.Equal(rest, data[2*128<<10:]) {
		t.Fatalf("resumed read %d bytes (want %d), err %v", len(rest), len(data)-2*128<<10, err)
	}
	// A consumer left with the same start, which delivered chunks already
	// (a download killed before its first progress record): a new read
	// still gets every chunk.
	left, err := mustJS(t, b).CreateConsumer(ctx, stream, jetstream.ConsumerConfig{Name: "fsdoc_dev1", FilterSubject: chunks,
		AckPolicy: jetstream.AckNonePolicy, DeliverPolicy: jetstream.DeliverAllPolicy, MemoryStorage: true, Replicas: 1, InactiveThreshold: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := left.Fetch(2)
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() { // delivered: the consumer moved past them
	}
	var again []byte
	err = dev.ReadContent(ctx, natsjs.ContentRead{Device: "dev1", Unit: "north", Content: c}, func(d []byte, _ uint64) error {
		again = append(again, d...)
		return nil
	})
	if err != nil || !bytes.Equal(again, data) {
		t.Fatalf("read after a used consumer was left: %d bytes (want %d), err %v", len(again), len(data), err)
	}
	// The same object in a unit the device does not carry: denied.
	sc, err := pub.PutContent(ctx, "south", "d1", "", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	denyCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err = dev.ReadContent(denyCtx, natsjs.ContentRead{Device: "dev1", Unit: "south", Content: sc}, func([]byte, uint64) error { return nil })
	if err == nil {
		t.Fatal("device read another unit's content")
	}
	// Deleted content is gone, not an empty read.
	if err := pub.DeleteContent(ctx, "north", c.Object); err != nil {
		t.Fatal(err)
	}
	err = dev.ReadContent(ctx, natsjs.ContentRead{Device: "dev1", Unit: "north", Content: c}, func([]byte, uint64) error { return nil })
	if !errors.Is(err, natsjs.ErrContentGone) {
		t.Fatalf("read of deleted content: %v, want ErrContentGone", err)
	}
	if _, err := pub.ContentInfo(ctx, "north", c.Object); !errors.Is(err, natsjs.ErrContentGone) {
		t.Fatalf("info of deleted content: %v, want ErrContentGone", err)
	}
	if _, err := pub.PutContent(ctx, "nowhere", "d1", "", bytes.NewReader(data)); !errors.Is(err, natsjs.ErrUnknownUnit) {
		t.Fatalf("put into unknown unit: %v, want ErrUnknownUnit", err)
	}
}
