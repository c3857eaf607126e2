package natsjs

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsserver"
)

// noMetadata is a real message whose metadata cannot be read, as for a
// message that did not come from a JetStream consumer.
type noMetadata struct{ jetstream.Msg }

var errNoReply = errors.New("message has no JetStream reply subject")

func (noMetadata) Metadata() (*jetstream.MsgMetadata, error) { return nil, errNoReply }

// realMessages publishes envs on a stream of a real embedded server and
// returns them as an ordered consumer delivers them.
func realMessages(t *testing.T, envs ...*events.Envelope) []jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	// A user and password rather than operator mode: this package's own
	// tests cannot import natsauth (it imports natsjs).
	srv, err := natsserver.Start(ctx, natsserver.Config{Port: -1, StoreDir: t.TempDir(), Users: map[string]string{"test": "secret"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(context.Background()) })
	if _, err := nats.Connect(srv.ClientURL()); err == nil {
		t.Fatal("connected without credentials")
	}
	nc, err := srv.Connect("test", nats.UserInfo("test", "secret"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	for i, e := range envs {
		data, err := events.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: fmt.Sprintf("t.%d", i), Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := js.OrderedConsumer(ctx, "T", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(len(envs), jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for m := range batch.Messages() {
		out = append(out, m)
	}
	if len(out) != len(envs) {
		t.Fatalf("fetched %d messages, want %d (%v)", len(out), len(envs), batch.Error())
	}
	return out
}

func deviceChange(mutation string) *events.Envelope {
	return &events.Envelope{EventID: "ev-" + mutation, OrgUnit: "north", Channel: events.ChannelEvents, Kind: "event", RecordID: "r1",
		Op: events.OpUpsert, Body: []byte{0x80}, SchemaVersion: events.SchemaVersion, Timestamp: time.Now(),
		Origin: events.Origin{DeviceID: "tab1", MutationID: mutation}}
}

func feed(msgs ...jetstream.Msg) <-chan jetstream.Msg {
	ch := make(chan jetstream.Msg, len(msgs))
	for _, m := range msgs {
		ch <- m
	}
	close(ch)
	return ch
}

// TestMutationSeq: the scan behind [Publisher.FindMutation] finds the
// mutation's sequence, and a matching message without metadata is an
// error, not a nil dereference or a silent miss.
func TestMutationSeq(t *testing.T) {
	msgs := realMessages(t, deviceChange("m1"), deviceChange("m2"), deviceChange("m3"))
	if seq, err := mutationSeq(feed(msgs...), "tab1", "m2"); err != nil || seq != 2 {
		t.Fatalf("mutationSeq(m2) = %d, %v, want 2", seq, err)
	}
	if seq, err := mutationSeq(feed(msgs...), "tab1", "m9"); err != nil || seq != 0 {
		t.Fatalf("mutationSeq(m9) = %d, %v, want 0", seq, err)
	}
	// An unreadable position elsewhere does not matter; on the match it does.
	if seq, err := mutationSeq(feed(noMetadata{msgs[0]}, msgs[1], msgs[2]), "tab1", "m2"); err != nil || seq != 2 {
		t.Fatalf("mutationSeq(m2) with another message lacking metadata = %d, %v, want 2", seq, err)
	}
	rest := feed(msgs[0], noMetadata{msgs[1]}, msgs[2])
	seq, err := mutationSeq(rest, "tab1", "m2")
	if !errors.Is(err, errNoReply) || seq != 0 {
		t.Fatalf("mutationSeq(m2) on a message lacking metadata = %d, %v, want 0 and the metadata error", seq, err)
	}
	if len(rest) != 0 {
		t.Fatalf("%d messages left unread after the error", len(rest))
	}
}

// TestUnitErr: a missing stream is ErrUnknownUnit however the client or
// the server reports it.
func TestUnitErr(t *testing.T) {
	for _, err := range []error{
		jetstream.ErrStreamNotFound,
		fmt.Errorf("lookup: %w", jetstream.ErrStreamNotFound),
		&jetstream.APIError{Code: 404, ErrorCode: jetstream.JSErrCodeStreamNotFound, Description: "stream not found"},
	} {
		if got := unitErr("north", err); !errors.Is(got, ErrUnknownUnit) {
			t.Errorf("unitErr(%v) = %v, want ErrUnknownUnit", err, got)
		}
	}
	other := errors.New("timeout")
	if got := unitErr("north", other); errors.Is(got, ErrUnknownUnit) || !errors.Is(got, other) {
		t.Errorf("unitErr(%v) = %v, want it wrapped, not ErrUnknownUnit", other, got)
	}
}
