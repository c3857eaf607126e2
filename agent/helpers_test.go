package agent

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"sort"
	"testing"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/store"
)

// serverModel tracks what the server holds: the latest version and body of
// every live record, built from what the test published.
type serverModel map[events.Address]modelRecord

type modelRecord struct {
	version uint64
	body    []byte
}

func (m serverModel) publish(tb testing.TB, b *fstest.Broker, e *events.Envelope) {
	tb.Helper()
	v := b.MustPublish(tb, e)
	if e.Op == events.OpDelete {
		delete(m, e.Address())
		return
	}
	m[e.Address()] = modelRecord{version: v, body: e.Body}
}

// populate publishes n records per (unit, channel) plus tenant admin data,
// then updates about a third and deletes about a tenth of them.
func (m serverModel) populate(tb testing.TB, b *fstest.Broker, units []string, n int, rng *rand.Rand) {
	tb.Helper()
	var addrs []events.Address
	for _, unit := range append([]string{""}, units...) {
		for _, ch := range events.Channels {
			if unit == "" && ch != events.ChannelAdmin {
				continue
			}
			kinds := events.Kinds(ch)
			for i := 0; i < n; i++ {
				a := events.Address{OrgUnit: unit, Channel: ch, Kind: kinds[i%len(kinds)], RecordID: fmt.Sprintf("r%04d", i)}
				m.publish(tb, b, fstest.Change(tb, unit, ch, a.Kind, a.RecordID, map[string]any{"title": a.RecordID, "rev": 1}))
				addrs = append(addrs, a)
			}
		}
	}
	for i, a := range addrs {
		switch rng.Intn(10) {
		case 0:
			m.publish(tb, b, fstest.Change(tb, a.OrgUnit, a.Channel, a.Kind, a.RecordID, nil))
		case 1, 2, 3:
			m.publish(tb, b, fstest.Change(tb, a.OrgUnit, a.Channel, a.Kind, a.RecordID, map[string]any{"title": a.RecordID, "rev": 2, "i": i}))
		}
	}
}

// requireSameState fails unless the device store holds exactly the model's
// records, compared record by record (version and body).
func requireSameState(tb testing.TB, db *store.DB, m serverModel) {
	tb.Helper()
	got := map[events.Address]modelRecord{}
	for _, ch := range events.Channels {
		recs, err := db.Records(context.Background(), store.Query{Channel: ch, Unit: store.AnyUnit, Limit: 10000})
		if err != nil {
			tb.Fatal(err)
		}
		for _, r := range recs {
			got[events.Address{OrgUnit: r.OrgUnit, Channel: ch, Kind: r.Kind, RecordID: r.RecordID}] = modelRecord{version: r.Version, body: r.RawBody}
		}
	}
	var diffs []string
	for a, want := range m {
		g, ok := got[a]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("missing %v", a))
		case g.version != want.version || !bytes.Equal(g.body, want.body):
			diffs = append(diffs, fmt.Sprintf("%v: version %d want %d", a, g.version, want.version))
		}
	}
	for a := range got {
		if _, ok := m[a]; !ok {
			diffs = append(diffs, fmt.Sprintf("extra %v", a))
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		tb.Fatalf("device differs from server in %d records (server %d, device %d): %v", len(diffs), len(m), len(got), diffs[:min(10, len(diffs))])
	}
}

func mustOpenDB(tb testing.TB) *store.DB {
	tb.Helper()
	db, err := store.Open(context.Background(), tb.TempDir()+"/device.db", store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// testConfig is a device in blocking mode (changes apply as they
// download); refreshConfig one in refresh mode (staged until Apply).
func testConfig(device string, units ...string) Config {
	off := false
	return Config{DeviceID: device, OrgUnits: units, BatchSize: 50, RefreshMode: &off}.WithDefaults()
}

func refreshConfig(device string, units ...string) Config {
	on := true
	return Config{DeviceID: device, OrgUnits: units, BatchSize: 50, RefreshMode: &on}.WithDefaults()
}

func mustCheckpoints(tb testing.TB, s *Syncer) []store.Checkpoint {
	tb.Helper()
	cps, err := s.db.Checkpoints(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	if len(cps) == 0 {
		tb.Fatal("no checkpoints")
	}
	return cps
}

// deviceClient connects to b as cfg's device with its own credentials
// (carrying cfg.OrgUnits) and inbox prefix, as the agent does: device code
// under test has a device's permissions, not the server side's.
func deviceClient(tb testing.TB, b *fstest.Broker, cfg Config) *natsjs.Client {
	tb.Helper()
	return b.ConnectDevice(tb, cfg.DeviceID, cfg.OrgUnits...)
}
