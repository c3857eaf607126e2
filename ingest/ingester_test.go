package ingest

import (
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsjs"
)

func TestIngester_Run_AcceptsNewRecordOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "north")
	results := h.watchResults("tab1")
	h.start(Options{})

	m1 := mutation(t, "tab1", "m1", "north", "r1", 0, "", map[string]any{"title": "leak"})
	h.upload(m1)
	r1 := results.wait(t, "m1")["m1"]
	wantResult(t, r1, "tab1", "m1", events.Accepted, "")

	chs := ofRecord(h.orgChanges("north"), "r1")
	if len(chs) != 1 {
		t.Fatalf("org stream holds %d changes of r1, want 1", len(chs))
	}
	got := chs[0]
	if got.Seq != r1.Version {
		t.Errorf("accepted at version %d, but the change is at stream sequence %d", r1.Version, got.Seq)
	}
	if o := got.Env.Origin; o.DeviceID != "tab1" || o.MutationID != "m1" || o.BaseVersion != 0 {
		t.Errorf("applied change has origin %+v, want device tab1 mutation m1 base 0", o)
	}
	if got.Env.Op != events.OpUpsert || !sameBody(got.Env.Body, m1.Body) {
		t.Errorf("applied change is %s with body %x, want the upload's upsert %x", got.Env.Op, got.Env.Body, m1.Body)
	}
	if rem := h.remembered("tab1", "m1"); rem == nil || rem.Status != events.Accepted || rem.Version != r1.Version {
		t.Errorf("mutation log holds %+v, want accepted at %d", rem, r1.Version)
	}

	// A change based on the current version is accepted on top of it.
	m2 := mutation(t, "tab1", "m2", "north", "r1", r1.Version, "", map[string]any{"title": "fixed"})
	h.upload(m2)
	r2 := results.wait(t, "m2")["m2"]
	wantResult(t, r2, "tab1", "m2", events.Accepted, "")
	if r2.Version <= r1.Version {
		t.Errorf("m2 accepted at version %d, not after m1's %d", r2.Version, r1.Version)
	}
	chs = ofRecord(h.orgChanges("north"), "r1")
	if len(chs) != 2 || chs[1].Seq != r2.Version || chs[1].Env.Origin.MutationID != "m2" {
		t.Fatalf("r1 history = %+v, want m1 then m2 at %d", chs, r2.Version)
	}
}

func TestIngester_Run_ConflictOnStaleBase(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "north")
	results := h.watchResults("tab1")
	h.start(Options{})

	v1 := h.b.MustPublish(t, serverChange(t, "north", "r1", map[string]any{"rev": 1}))
	latest := serverChange(t, "north", "r1", map[string]any{"rev": 2})
	v2 := h.b.MustPublish(t, latest)

	h.upload(mutation(t, "tab1", "m1", "north", "r1", v1, "", map[string]any{"rev": "device"}))
	r := results.wait(t, "m1")["m1"]
	wantResult(t, r, "tab1", "m1", events.Conflict, "")
	if r.ServerVersion != v2 || r.ServerDeleted || !sameBody(r.ServerBody, latest.Body) {
		t.Errorf("conflict = server version %d deleted %v body %x, want %d, false, %x", r.ServerVersion, r.ServerDeleted,
			r.ServerBody, v2, latest.Body)
	}
	if r.Version != 0 {
		t.Errorf("conflict carries version %d", r.Version)
	}

	// After a server delete the conflict says the record is gone.
	v3 := h.b.MustPublish(t, serverChange(t, "north", "r1", nil))
	h.upload(mutation(t, "tab1", "m2", "north", "r1", v2, "", map[string]any{"rev": "device again"}))
	r = results.wait(t, "m2")["m2"]
	wantResult(t, r, "tab1", "m2", events.Conflict, "")
	if r.ServerVersion != v3 || !r.ServerDeleted || len(r.ServerBody) != 0 {
		t.Errorf("conflict after delete = server version %d deleted %v body %x, want %d, true, none", r.ServerVersion,
			r.ServerDeleted, r.ServerBody, v3)
	}

	if dev := fromDevices(h.orgChanges("north")); len(dev) != 0 {
		t.Errorf("conflicting mutations were applied: %+v", dev)
	}
}

func TestIngester_Run_ChainedMutations(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "north")
	results := h.watchResults("tab1")
	h.start(Options{})

	// m1 creates r1; m2 and m3 build on it while all three are unconfirmed.
	h.upload(mutation(t, "tab1", "m1", "north", "r1", 0, "", map[string]any{"n": 1}))
	h.upload(mutation(t, "tab1", "m2", "north", "r1", 0, "m1", map[string]any{"n": 2}))
	h.upload(mutation(t, "tab1", "m3", "north", "r1", 0, "m2", map[string]any{"n": 3}))
	rs := results.wait(t, "m1", "m2", "m3")
	var last uint64
	for _, m := range []string{"m1", "m2", "m3"} {
		wantResult(t, rs[m], "tab1", m, events.Accepted, "")
		if rs[m].Version <= last {
			t.Errorf("%s accepted at version %d, not after %d", m, rs[m].Version, last)
		}
		last = rs[m].Version
	}
	chs := ofRecord(h.orgChanges("north"), "r1")
	if len(chs) != 3 {
		t.Fatalf("r1 has %d changes, want 3", len(chs))
	}
	for i, m := range []string{"m1", "m2", "m3"} {
		if chs[i].Env.Origin.MutationID != m || chs[i].Seq != rs[m].Version {
			t.Errorf("r1 change %d is %s at %d, want %s at %d", i, chs[i].Env.Origin.MutationID, chs[i].Seq, m, rs[m].Version)
		}
	}

	// m4 conflicts, so m5 built on it conflicts too and is not applied.
	sv := h.b.MustPublish(t, serverChange(t, "north", "r2", map[string]any{"by": "server"}))
	h.upload(mutation(t, "tab1", "m4", "north", "r2", 0, "", map[string]any{"by": "tab1"}))
	h.upload(mutation(t, "tab1", "m5", "north", "r2", 0, "m4", map[string]any{"by": "tab1 again"}))
	rs = results.wait(t, "m4", "m5")
	for _, m := range []string{"m4", "m5"} {
		wantResult(t, rs[m], "tab1", m, events.Conflict, "")
		if rs[m].ServerVersion != sv {
			t.Errorf("%s: conflict with server version %d, want %d", m, rs[m].ServerVersion, sv)
		}
	}
	if n := len(fromDevices(ofRecord(h.orgChanges("north"), "r2"))); n != 0 {
		t.Errorf("r2 holds %d device changes after conflicts, want 0", n)
	}

	// A mutation arriving before the one it builds on waits for it (one
	// record's uploads are handled in stream order, so m7 is seen first).
	h.upload(mutation(t, "tab1", "m7", "north", "r3", 0, "m6", map[string]any{"n": 7}))
	h.upload(mutation(t, "tab1", "m6", "north", "r3", 0, "", map[string]any{"n": 6}))
	rs = results.wait(t, "m6", "m7")
	wantResult(t, rs["m6"], "tab1", "m6", events.Accepted, "")
	wantResult(t, rs["m7"], "tab1", "m7", events.Accepted, "")
	chs = ofRecord(h.orgChanges("north"), "r3")
	if len(chs) != 2 || chs[0].Env.Origin.MutationID != "m6" || chs[1].Env.Origin.MutationID != "m7" ||
		chs[1].Seq != rs["m7"].Version {
		t.Errorf("r3 history = %+v, want m6 then m7 at %d", chs, rs["m7"].Version)
	}
}

func TestIngester_Run_ReplayIsAnsweredNotReapplied(t *testing.T) {
	t.Parallel()
	testReplay(t, 0)
}

func TestIngester_Run_ReplayAfterOrgDuplicateWindowIsAnsweredNotReapplied(t *testing.T) {
	t.Parallel()
	testReplay(t, time.Second)
}

// testReplay accepts a mutation, then uploads its bytes again without a
// dedupe id (a replay after the uploads stream's window), optionally after
// the org stream's duplicate window orgDup has passed too.
func testReplay(t *testing.T, orgDup time.Duration) {
	h := newHarness(t, "north")
	if orgDup > 0 {
		h.setOrgDuplicates(orgDup, "north")
	}
	answers := h.subscribeAnswers("tab1")
	results := h.watchResults("tab1")
	h.start(Options{})

	m1 := mutation(t, "tab1", "m1", "north", "r1", 0, "", map[string]any{"v": 1})
	h.upload(m1)
	first := results.wait(t, "m1")["m1"]
	wantResult(t, first, "tab1", "m1", events.Accepted, "")
	answers.waitN(t, "m1", 1)

	if orgDup > 0 {
		h.waitOrgDedupeExpired("north")
	}
	seq := h.rawUpload(uploadSubject(t, "tab1", m1.Address()), mustEncode(t, m1), "")
	h.waitHandled(seq)

	again := answers.waitN(t, "m1", 2)
	for i, r := range again {
		wantResult(t, r, "tab1", "m1", events.Accepted, "")
		if r.Version != first.Version {
			t.Errorf("answer %d: version %d, want the first answer's %d", i, r.Version, first.Version)
		}
	}
	if len(again) != 2 {
		t.Errorf("mutation answered %d times for 2 uploads", len(again))
	}
	chs := ofRecord(h.orgChanges("north"), "r1")
	if len(chs) != 1 || chs[0].Seq != first.Version {
		t.Fatalf("r1 holds %d changes after the replay, want exactly the one at %d: %+v", len(chs), first.Version, chs)
	}
}

// A replay after the record's history no longer holds the mutation (the
// stream keeps a few versions per record) and the org stream's duplicate
// window has passed is answered from the mutation log alone: same result,
// nothing applied.
func TestIngester_Run_ReplayAfterHistoryTrimmedIsAnsweredNotReapplied(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "north")
	if err := h.b.Client.Provision(testCtx(t), []string{"north"}, natsjs.StreamPolicy{History: 2, Duplicates: time.Second}); err != nil {
		t.Fatal(err)
	}
	answers := h.subscribeAnswers("tab1")
	results := h.watchResults("tab1")
	h.start(Options{})

	m1 := mutation(t, "tab1", "m1", "north", "r1", 0, "", map[string]any{"v": 1})
	h.upload(m1)
	first := results.wait(t, "m1")["m1"]
	wantResult(t, first, "tab1", "m1", events.Accepted, "")
	h.b.MustPublish(t, serverChange(t, "north", "r1", map[string]any{"v": 2}))
	h.b.MustPublish(t, serverChange(t, "north", "r1", map[string]any{"v": 3}))
	if n := len(ofMutation(h.orgChanges("north"), "tab1", "m1")); n != 0 {
		t.Fatalf("history of 2 still holds m1 (%d times)", n)
	}
	h.waitOrgDedupeExpired("north")

	h.waitHandled(h.rawUpload(uploadSubject(t, "tab1", m1.Address()), mustEncode(t, m1), ""))
	again := answers.waitN(t, "m1", 2)[1]
	wantResult(t, again, "tab1", "m1", events.Accepted, "")
	if again.Version != first.Version {
		t.Errorf("replay answered version %d, want %d", again.Version, first.Version)
	}
	if n := len(fromDevices(h.orgChanges("north"))); n != 0 {
		t.Errorf("replay was applied again: %d device changes in the org stream", n)
	}
}

func TestIngester_Run_UnknownUnitIsRejected(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "north")
	results := h.watchResults("tab1")
	r := h.start(Options{})

	h.upload(mutation(t, "tab1", "m1", "west", "r1", 0, "", map[string]any{"v": 1}))
	wantResult(t, results.wait(t, "m1")["m1"], "tab1", "m1", events.Rejected, events.ReasonUnknownUnit)

	h.upload(mutation(t, "tab1", "m2", "north", "r1", 0, "", map[string]any{"v": 1}))
	wantResult(t, results.wait(t, "m2")["m2"], "tab1", "m2", events.Accepted, "")
	r.assertRunning(t)
}

// Two devices' mutations that a naive "mut-<device>-<mutation>" event id
// would confuse ("tab" + "1-x" and "tab-1" + "x") are different changes:
// both must be applied.
func TestIngester_Run_EventIDsOfDifferentDevicesDoNotCollide(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "north")
	a := h.watchResults("tab")
	b := h.watchResults("tab-1")
	h.start(Options{})

	h.upload(mutation(t, "tab", "1-x", "north", "r1", 0, "", map[string]any{"by": "tab"}))
	ra := a.wait(t, "1-x")["1-x"]
	wantResult(t, ra, "tab", "1-x", events.Accepted, "")
	h.upload(mutation(t, "tab-1", "x", "north", "r2", 0, "", map[string]any{"by": "tab-1"}))
	rb := b.wait(t, "x")["x"]
	wantResult(t, rb, "tab-1", "x", events.Accepted, "")
	if ra.Version == rb.Version {
		t.Errorf("two mutations of two records accepted at the same version %d", ra.Version)
	}
	chs := h.orgChanges("north")
	if n := len(ofMutation(chs, "tab-1", "x")); n != 1 {
		t.Errorf("tab-1's mutation x is in the org stream %d times, want 1 (r2 history: %+v)", n, ofRecord(chs, "r2"))
	}
}
