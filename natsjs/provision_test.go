package natsjs_test

import (
	"errors"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsjs"
)

func TestClient_Provision_Idempotent(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	ctx := testCtx(t)
	publishEvent(t, b, "north", "e1", 1)
	before := mustStreamInfo(t, b, "FS_ORG_north")

	for i := 0; i < 2; i++ {
		if err := b.Client.Provision(ctx, []string{"north"}, natsjs.StreamPolicy{}); err != nil {
			t.Fatalf("provision #%d: %v", i+2, err)
		}
	}
	after := mustStreamInfo(t, b, "FS_ORG_north")
	if !reflect.DeepEqual(before.Config, after.Config) {
		t.Fatalf("config changed by re-provisioning:\n%+v\n%+v", before.Config, after.Config)
	}
	if !before.Created.Equal(after.Created) {
		t.Fatalf("stream re-created: %v -> %v", before.Created, after.Created)
	}
	if after.State.Msgs != 1 {
		t.Fatalf("re-provisioning lost messages: %d left", after.State.Msgs)
	}
	names := mustJS(t, b).StreamNames(ctx)
	var got []string
	for n := range names.Name() {
		got = append(got, n)
	}
	if names.Err() != nil {
		t.Fatal(names.Err())
	}
	var unitStreams []string
	for _, n := range got {
		if n == "FS_TENANT" || strings.HasPrefix(n, "FS_ORG_") {
			unitStreams = append(unitStreams, n)
		}
	}
	sort.Strings(unitStreams)
	if !reflect.DeepEqual(unitStreams, []string{"FS_ORG_north", "FS_TENANT"}) {
		t.Fatalf("unit streams %v, want FS_ORG_north and FS_TENANT only", unitStreams)
	}
}

func TestClient_Provision_AppliesPolicy(t *testing.T) {
	b := fstest.MustStartBroker(t)
	ctx := testCtx(t)

	def := natsjs.DefaultStreamPolicy()
	if c := mustStreamInfo(t, b, "FS_TENANT").Config; !reflect.DeepEqual(c.Subjects, []string{"fs.tenant.>"}) ||
		c.MaxMsgsPerSubject != def.History || c.Duplicates != def.Duplicates || c.MaxConsumers != def.MaxConsumers {
		t.Fatalf("FS_TENANT config %+v does not follow the default policy %+v", c, def)
	}

	p := natsjs.StreamPolicy{History: 3, Duplicates: 45 * time.Second, MaxConsumers: 250}
	if err := b.Client.Provision(ctx, []string{"north", "south-2"}, p); err != nil {
		t.Fatal(err)
	}
	for name, subj := range map[string]string{
		"FS_TENANT":      "fs.tenant.>",
		"FS_ORG_north":   "fs.org.north.>",
		"FS_ORG_south-2": "fs.org.south-2.>",
	} {
		c := mustStreamInfo(t, b, name).Config
		if !reflect.DeepEqual(c.Subjects, []string{subj}) {
			t.Errorf("%s subjects %v, want [%s]", name, c.Subjects, subj)
		}
		if c.MaxMsgsPerSubject != 3 || c.Duplicates != 45*time.Second || c.MaxConsumers != 250 {
			t.Errorf("%s: MaxMsgsPerSubject %d Duplicates %v MaxConsumers %d, want 3 45s 250",
				name, c.MaxMsgsPerSubject, c.Duplicates, c.MaxConsumers)
		}
		if c.Retention != jetstream.LimitsPolicy || c.Discard != jetstream.DiscardOld || c.Storage != jetstream.FileStorage ||
			!c.AllowDirect || c.MaxMsgSize != int32(events.MaxMessageSize) {
			t.Errorf("%s: fixed settings wrong: %+v", name, c)
		}
	}

	// The history limit is enforced: only the last 3 versions of a record stay.
	for i := 1; i <= 5; i++ {
		publishEvent(t, b, "north", "e1", i)
	}
	if st, err := b.Client.UnitState(ctx, "north"); err != nil || st.Msgs != 3 || st.FirstSeq != 3 || st.LastSeq != 5 {
		t.Fatalf("unit state %+v (%v), want 3 msgs, seqs 3..5", st, err)
	}
}

func TestStreamConfig(t *testing.T) {
	c, err := natsjs.StreamConfig("north", natsjs.StreamPolicy{History: 2})
	if err != nil {
		t.Fatal(err)
	}
	def := natsjs.DefaultStreamPolicy()
	if c.Name != "FS_ORG_north" || !reflect.DeepEqual(c.Subjects, []string{"fs.org.north.>"}) ||
		c.MaxMsgsPerSubject != 2 || c.Duplicates != def.Duplicates || c.MaxConsumers != def.MaxConsumers ||
		c.Replicas != 1 || c.MaxBytes != -1 || c.MaxMsgs != -1 {
		t.Fatalf("config %+v", c)
	}
	c, err = natsjs.StreamConfig("", natsjs.StreamPolicy{})
	if err != nil || c.Name != "FS_TENANT" || !reflect.DeepEqual(c.Subjects, []string{"fs.tenant.>"}) {
		t.Fatalf("tenant config %+v (%v)", c, err)
	}
}

func TestStreamConfig_RejectsBadUnit(t *testing.T) {
	for _, unit := range []string{"a.b", "*", ">", "with space", "-lead", string(make([]byte, 200))} {
		if _, err := natsjs.StreamConfig(unit, natsjs.StreamPolicy{}); !errors.Is(err, events.ErrBadSubject) {
			t.Errorf("StreamConfig(%q) error = %v, want ErrBadSubject", unit, err)
		}
	}
}

func TestClient_Provision_RejectsBadUnit(t *testing.T) {
	b := fstest.MustStartBroker(t)
	ctx := testCtx(t)
	if err := b.Client.Provision(ctx, []string{"ok", "bad.unit"}, natsjs.StreamPolicy{}); !errors.Is(err, events.ErrBadSubject) {
		t.Fatalf("provision with a bad unit: %v, want ErrBadSubject", err)
	}
	if _, err := b.Client.UnitState(ctx, "bad.unit"); err == nil {
		t.Fatal("a stream exists for the bad unit")
	}
}

func TestClient_UnitState(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	ctx := testCtx(t)
	publishEvent(t, b, "north", "e1", 1)
	publishEvent(t, b, "north", "e2", 1)
	st, err := b.Client.UnitState(ctx, "north")
	if err != nil {
		t.Fatal(err)
	}
	if st.Name != "FS_ORG_north" || st.Msgs != 2 || st.FirstSeq != 1 || st.LastSeq != 2 || st.Subjects != 2 {
		t.Fatalf("state %+v", st)
	}
	if _, err := b.Client.UnitState(ctx, "nowhere"); !errors.Is(err, natsjs.ErrUnknownUnit) {
		t.Fatalf("unknown unit: %v, want ErrUnknownUnit", err)
	}
}

// TestClient_ProvisionIngest_LegacyUploads: a FS_UPLOADS an older build
// made with limits retention (nats-server cannot turn it into a work
// queue in place) is kept as it is, with its messages, and reported with
// ErrLegacyUploads; the other ingest streams are still provisioned.
func TestClient_ProvisionIngest_LegacyUploads(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	ctx := testCtx(t)
	js, err := jetstream.New(b.Client.Conn())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{events.UploadStream, events.ResultStream} {
		if err := js.DeleteStream(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: events.UploadStream, Subjects: []string{events.UploadSubjects()}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "fs.up.tab1.north.events.event.r1", []byte("old")); err != nil {
		t.Fatal(err)
	}
	err = b.Client.ProvisionIngest(ctx, natsjs.IngestPolicy{})
	if !errors.Is(err, natsjs.ErrLegacyUploads) {
		t.Fatalf("ProvisionIngest over a limits FS_UPLOADS: %v, want ErrLegacyUploads", err)
	}
	s, err := js.Stream(ctx, events.UploadStream)
	if err != nil {
		t.Fatal(err)
	}
	if info := s.CachedInfo(); info.Config.Retention != jetstream.LimitsPolicy || info.State.Msgs != 1 {
		t.Fatalf("legacy FS_UPLOADS now %v with %d messages, want limits with its 1", info.Config.Retention, info.State.Msgs)
	}
	if _, err := js.Stream(ctx, events.ResultStream); err != nil {
		t.Fatalf("FS_RESULTS not provisioned beside the legacy uploads stream: %v", err)
	}
}
