package agent

import (
	"bufio"
	"context"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/store"
)

// TestMain lets the test binary act as a device agent process that a test
// can kill -9 in the middle of a sync.
func TestMain(m *testing.M) {
	if os.Getenv("FS_SYNC_CHILD") == "1" {
		os.Exit(runSyncChild())
	}
	if os.Getenv("FS_DOC_CHILD") == "1" {
		os.Exit(runDocChild())
	}
	os.Exit(m.Run())
}

// runSyncChild syncs FS_DB from FS_BROKER as device tab1 with the
// credentials FS_CREDS, printing "batch N" after each
// committed batch and sleeping FS_DELAY between batches.
func runSyncChild() int {
	delay, _ := time.ParseDuration(os.Getenv("FS_DELAY"))
	ctx := context.Background()
	inbox, _ := events.DeviceInboxPrefix("tab1")
	client, err := natsjs.Connect(os.Getenv("FS_BROKER"), natsjs.ConnectOptions{Name: "crash-child", Credentials: os.Getenv("FS_CREDS"), InboxPrefix: inbox})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	db, err := store.Open(ctx, os.Getenv("FS_DB"), store.Options{})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	s := NewSyncer(testConfig("tab1", strings.Split(os.Getenv("FS_UNITS"), ",")...), client, db, nil)
	n := 0
	s.onBatch = func(string, events.Channel, int) {
		n++
		fmt.Printf("batch %d\n", n)
		time.Sleep(delay) // paces the child's batches so the parent can kill it mid-sync: not synchronisation
	}
	if _, err := s.Sync(ctx, ScopeFull); err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("done")
	return 0
}

// startSyncChild runs a child sync and kills it with SIGKILL after
// killAfter batches (0: let it finish). It reports whether it was killed.
func startSyncChild(t *testing.T, b *fstest.Broker, dbPath string, units []string, killAfter int) bool {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "FS_SYNC_CHILD=1", "FS_BROKER="+b.URL(), "FS_CREDS="+b.DeviceCreds(t, "tab1", units...), "FS_DB="+dbPath,
		"FS_UNITS="+strings.Join(units, ","), "FS_DELAY=5ms")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	killed, batches := false, 0
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "error") {
			t.Fatalf("child: %s", line)
		}
		if strings.HasPrefix(line, "batch") {
			batches++
			if killAfter > 0 && batches == killAfter {
				cmd.Process.Kill() // SIGKILL: no deferred cleanup runs
				killed = true
				break
			}
		}
	}
	err = cmd.Wait()
	if !killed && err != nil {
		t.Fatalf("child sync failed: %v", err)
	}
	return killed
}

func TestSyncer_Sync_ResumesAfterKill(t *testing.T) {
	units := []string{"north", "south"}
	b := fstest.MustStartBroker(t, units...)
	model := serverModel{}
	model.populate(t, b, units, 150, rand.New(rand.NewSource(3)))
	subjects := countSubjects(t, b, units)
	dbPath := t.TempDir() + "/device.db"

	for _, killAfter := range []int{4, 17} {
		if !startSyncChild(t, b, dbPath, units, killAfter) {
			t.Fatalf("child finished before batch %d: test data too small to kill mid-sync", killAfter)
		}
		requireNotAheadOfData(t, dbPath, model)
	}
	if startSyncChild(t, b, dbPath, units, 0) {
		t.Fatal("final run was killed")
	}
	db, err := store.Open(context.Background(), dbPath, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	requireSameState(t, db, model)
	cps, _ := db.Checkpoints(context.Background())
	for _, cp := range cps {
		key := cp.Unit + "/" + string(cp.Channel)
		if cp.Applied != int64(subjects[key]) {
			t.Errorf("%s: %d changes applied over three runs, want each of the %d records' latest change applied exactly once", key, cp.Applied, subjects[key])
		}
	}
}

// requireNotAheadOfData opens the store as a restarted agent would and
// checks that every record change at or below each checkpoint is there and
// none above it is.
func requireNotAheadOfData(t *testing.T, dbPath string, model serverModel) {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, dbPath, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	progressed := false
	for a, want := range model {
		cp, _ := db.Checkpoint(ctx, a.OrgUnit, a.Channel)
		recs, err := db.Records(ctx, store.Query{Channel: a.Channel, Unit: a.OrgUnit, Kind: a.Kind, Limit: 10000})
		if err != nil {
			t.Fatal(err)
		}
		var got *store.Record
		for i := range recs {
			if recs[i].RecordID == a.RecordID {
				got = &recs[i]
			}
		}
		if got != nil && got.Version > cp.LastSeq {
			t.Fatalf("%v: version %d applied beyond checkpoint %d", a, got.Version, cp.LastSeq)
		}
		if want.version <= cp.LastSeq {
			progressed = true
			if got == nil || got.Version != want.version {
				t.Fatalf("%v: checkpoint %d is ahead of the data (want version %d, have %+v)", a, cp.LastSeq, want.version, got)
			}
		}
	}
	if !progressed {
		t.Fatal("killed child applied nothing; the test checked nothing")
	}
}

// countSubjects returns how many distinct record subjects each (unit,
// channel) holds: what a snapshot delivers.
func countSubjects(t *testing.T, b *fstest.Broker, units []string) map[string]int {
	t.Helper()
	out := map[string]int{}
	db := mustOpenDB(t)
	s := NewSyncer(testConfig("counter", units...), deviceClient(t, b, testConfig("counter", units...)), db, nil)
	rep, err := s.Sync(context.Background(), ScopeFull)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rep.Channels {
		out[c.Unit+"/"+string(c.Channel)] = int(c.Received)
	}
	return out
}
