package localapi_test

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
)

// grouped writes n with thousands separators, as the page (in en-US) does.
func grouped[N ~int | ~uint64](n N) string {
	s := strconv.FormatUint(uint64(n), 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// browserManual is the content of the browser test's larger document: over
// a MiB, a few seconds on the test's slow link.
var browserManual = bytes.Repeat([]byte("fieldsync field manual\n"), 60000)

// publishBrowserDocs publishes north's documents before the agent starts:
// a manual and a checklist with content, and notes without (metadata only).
func publishBrowserDocs(t *testing.T, e *env) {
	t.Helper()
	e.publishDoc(t, "north", "manual", "Field manual", browserManual)
	e.publishDoc(t, "north", "checklist", "Safety checklist", []byte("check the ladder\n"))
	e.broker.MustPublish(t, fstest.Change(t, "north", events.ChannelDocuments, events.DocumentKind, "notes", map[string]any{"name": "Visit notes"}))
}

// keyDump matches the detail the activity table once showed: "applied
// 10000, automatic false, ...".
var keyDump = regexp.MustCompile(`[a-z]+_[a-z]+|\b[a-z]+ (true|false)\b|^([a-z]+ [^,]+, )+[a-z]+ `)

// browserActivity: after the sync and Apply the activity reads as
// sentences, and each category says when it was last synced (a time, its
// exact local time in the title) instead of the stream sequence it reached.
func browserActivity(t *testing.T, br *browser, e *env) {
	t.Helper()
	rows := waitActivity(t, br, "Applied ")
	applied := regexp.MustCompile(`^Applied ` + grouped(browserChanges) + ` updates in \d+(\.\d)? (ms|s)$`)
	synced := regexp.MustCompile(`^Synced admin, events and documents: ` + grouped(browserChanges) + ` changes downloaded in \d+(\.\d)? (ms|s)(; .+)?; updates wait for Apply$`)
	if !slicesAny(rows, applied.MatchString) || !slicesAny(rows, synced.MatchString) {
		t.Errorf("activity %q: want the Apply (%s) and the sync (%s) as sentences", rows, applied, synced)
	}
	for _, r := range rows {
		if keyDump.MatchString(r) || strings.ContainsAny(r, "{}") {
			t.Errorf("activity entry %q reads as a key dump", r)
		}
	}
	checkActivitySentences(t, br)

	var seq uint64
	for _, c := range e.status(t).Channels {
		for _, cp := range c.Units {
			if c.Channel == events.ChannelEvents && cp.Unit == "north" {
				seq = cp.LastSeq
			}
		}
	}
	type cell struct{ Text, Title, DateTime string }
	got, err := runFor(br, chromedp.Evaluate[cell](`(()=>{const t=document.querySelector('#channels tr[data-channel="events"] td:nth-child(3) time');
		return {Text:t.parentNode.textContent,Title:t.title,DateTime:t.dateTime}})()`))
	if err != nil {
		t.Fatal(err)
	}
	at, perr := time.Parse(time.RFC3339Nano, got.DateTime)
	if !regexp.MustCompile(`^(just now|\d+ minutes? ago)$`).MatchString(got.Text) || strings.Contains(got.Text, fmt.Sprint(seq)) ||
		!strings.HasPrefix(got.Title, "north: ") || perr != nil || time.Since(at) > 10*time.Minute || time.Until(at) > time.Minute {
		t.Errorf("events' Synced up to: %+v (north reached sequence %d), want how long ago, with the time in the title and datetime", got, seq)
	}
	br.shot(t, "activity")
}

// waitActivity waits for an activity entry that starts with prefix and
// returns the sentences of every entry.
func waitActivity(t *testing.T, br *browser, prefix string) []string {
	t.Helper()
	rows, err := runFor(br, chromedp.Poll[[]string](fmt.Sprintf(`(()=>{const r=[...document.querySelectorAll("#activity tr")].map(r=>r.cells[1].textContent);
		return r.some(x=>x.startsWith(%q))&&r})()`, prefix), chromedp.WithPollingInterval(100*time.Millisecond)))
	if err != nil {
		t.Fatalf("waiting for an activity entry %q...: %v; activity: %q", prefix, err, br.text(t, "#activity"))
	}
	return rows
}

// void runs a, dropping its value (for [browser.run]).
func void[T any](a chromedp.Action[T]) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error { _, err := a(ctx, tg); return err })
}

func slicesAny(s []string, f func(string) bool) bool {
	for _, x := range s {
		if f(x) {
			return true
		}
	}
	return false
}

// checkActivitySentences runs the page's activityText over an entry of each
// kind the agent logs, and one it does not know.
func checkActivitySentences(t *testing.T, br *browser) {
	t.Helper()
	times := `started:"2026-01-02T10:00:00Z",finished:"2026-01-02T10:00:04.2Z"`
	for _, tc := range []struct{ entry, want string }{
		{`kind:"sync",scope:"events",outcome:"ok",detail:{received:1250,applied:1250,uploaded:3,automatic:true,staged:false}`,
			"Synced events (automatic): 1,250 changes downloaded in 4.2 s; sent 3 writes"},
		{`kind:"sync",scope:"admin",outcome:"ok",detail:{received:0,rejected:2,results:1}`,
			"Synced admin: no new changes in 4.2 s; the server decided 1 write; 2 changes could not be applied"},
		{`kind:"sync",scope:"full",outcome:"failed",detail:{error:"agent: not connected to the server"}`,
			"Sync of admin, events and documents failed after 4.2 s: not connected to the server"},
		{`kind:"reset",scope:"full",outcome:"ok",detail:{received:10000,resumed:false}`,
			"Cleared and reloaded the local data: 10,000 changes downloaded in 4.2 s"},
		{`kind:"reset",scope:"full",outcome:"refused",detail:{error:"agent: sync now refused: 2 sync errors wait for you"}`,
			"Sync Now (clear and reload) was refused: 2 sync errors wait for you"},
		{`kind:"apply",outcome:"ok",detail:{changes:1250,took_ms:80}`, "Applied 1,250 updates in 80 ms"},
		{`kind:"upload",outcome:"ok",detail:{uploaded:1}`, "Sent 1 write to the server"},
		{`kind:"wipe",outcome:"ok",detail:{records:5000,unsent_writes:2,unused_hours:300,limit_days:10}`,
			"Removed the local data: the device was not used for 12 days (limit 10 days); 5,000 records removed, 2 unsent writes lost"},
		{`kind:"revoked",outcome:"ok",detail:{records:5000,unsent_writes:0}`, "This device was revoked: 5,000 records removed"},
		{`kind:"unassigned",outcome:"ok",detail:{org_unit:"south",records:12,failed_writes:1}`,
			"Org unit south is no longer assigned: 12 records removed, 1 queued write not sent"},
		{`kind:"documents_cleanup",outcome:"ok",detail:{removed:3,flag:true}`, "Documents cleanup completed in 4.2 s"},
	} {
		got, err := runFor(br, chromedp.Evaluate[string](`activityText({`+times+`,`+tc.entry+`})`))
		if err != nil || got != tc.want {
			t.Errorf("activityText({%s}) = %q (%v), want %q", tc.entry, got, err, tc.want)
		}
	}
}

// docRow is what the browser test reads of a row of the documents table.
type docRow struct {
	Key, Name, State string
	Download, Open   bool
}

// docRows reads the documents table.
const docRows = `[...document.querySelectorAll("#documents tr[data-key]")].map(r=>({Key:r.dataset.key,Name:r.cells[0].textContent,
	State:r.cells[3].textContent,Download:!r.querySelector("[data-download]").hidden,Open:!r.querySelector("[data-open]").hidden}))`

// browserDocuments: the Documents section lists north's documents, its
// search filters them, Download shows the progress and then the document
// downloaded and openable, Open opens its content, Download All gets the
// rest.
func browserDocuments(t *testing.T, br *browser, e *env) {
	t.Helper()
	rows, err := runFor(br, chromedp.Poll[[]docRow](`(()=>{const r=`+docRows+`;return r.length===3&&r})()`, chromedp.WithPollingInterval(100*time.Millisecond)))
	if err != nil {
		t.Fatalf("documents listed: %v", err)
	}
	want := []docRow{{"north/checklist", "Safety checklist", "Not downloaded", true, false},
		{"north/manual", "Field manual", "Not downloaded", true, false}, {"north/notes", "Visit notes", "No file: details only", false, false}}
	if fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Fatalf("documents %+v, want %+v", rows, want)
	}
	checkAccessible(t, br)

	search := func(q string, want ...string) {
		t.Helper()
		js := fmt.Sprintf(`(()=>{const q=document.getElementById("doc-q");q.value=%q;q.dispatchEvent(new Event("input"));return true})()`, q)
		if _, err := runFor(br, chromedp.Evaluate[bool](js)); err != nil {
			t.Fatal(err)
		}
		keys := fmt.Sprintf(`%q`, strings.Join(want, ","))
		if _, err := runFor(br, chromedp.Poll[bool](`[...document.querySelectorAll("#documents tr[data-key]")].map(r=>r.dataset.key).join()===`+keys,
			chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second))); err != nil {
			t.Fatalf("search %q: want %v; page shows %q", q, want, br.text(t, "#documents"))
		}
	}
	search("MANUAL", "north/manual")
	br.shot(t, "documents-search")
	search("no such thing")
	if got := br.text(t, "#documents"); got != "No document matches your search." {
		t.Errorf("a search that finds nothing shows %q", got)
	}
	search("", "north/checklist", "north/manual", "north/notes")

	// Every state the manual's row shows, to see its download progress.
	br.run(t, "watch the manual's row", void(chromedp.Evaluate[bool](`window.manual=[];new MutationObserver(()=>{
		const r=document.querySelector('#documents tr[data-key="north/manual"]'),s=r&&r.cells[3].textContent;
		if(s&&window.manual[window.manual.length-1]!==s)window.manual.push(s)}).observe(document.getElementById("documents"),{subtree:true,childList:true,characterData:true});true`)))
	br.run(t, "download the manual", chromedp.Click(chromedp.CSS(`#documents tr[data-key="north/manual"] button[data-download]`)),
		chromedp.WaitVisible(chromedp.CSS(`#documents tr[data-key="north/manual"] a[data-open]`)))
	if f, err := runFor(br, chromedp.Evaluate[string](`document.activeElement.closest("#documents tr")?.dataset.key||document.activeElement.tagName`)); err != nil || f != "north/manual" {
		t.Errorf("focus after Download: %q (%v), want it kept in the manual's row", f, err)
	}
	seen, err := runFor(br, chromedp.Evaluate[[]string](`window.manual`))
	progress := regexp.MustCompile(`^Downloading: \d+(\.\d)? of 1\.3 MB$`)
	if err != nil || !slicesAny(seen, progress.MatchString) || seen[len(seen)-1] != "Downloaded" {
		t.Errorf("the manual's row showed %q (%v), want its progress (%s) and then Downloaded", seen, err, progress)
	}
	if _, err := runFor(br, chromedp.Poll[bool](`document.getElementById("doc-space").textContent.startsWith("1 downloaded · Space used: 1.3 MB · free on this device: ")`,
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Errorf("documents' space %q, want 1 downloaded using 1.3 MB, and the free space", br.text(t, "#doc-space"))
	}
	br.shot(t, "documents-downloaded")

	// Open reads the file with the token and opens it in a new tab.
	br.run(t, "open the manual", void(chromedp.Evaluate[bool](`window.open=u=>{window.opened=u;return {}};const mk=URL.createObjectURL;
		URL.createObjectURL=b=>{window.blob=b;return mk(b)};true`)), chromedp.Click(chromedp.CSS(`#documents tr[data-key="north/manual"] a[data-open]`)))
	type opened struct {
		URL, Type, Head string
		Size            int
	}
	got, err := runFor(br, chromedp.Poll[opened](`window.opened&&window.blob.text().then(t=>({URL:window.opened,Type:window.blob.type,Size:window.blob.size,Head:t.slice(0,23)}))`,
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second)))
	if err != nil || !strings.HasPrefix(got.URL, "blob:") || got.Type != "application/pdf" || got.Size != len(browserManual) || got.Head != string(browserManual[:23]) {
		t.Errorf("Open opened %+v (%v), want a blob of the manual's %d bytes (application/pdf)", got, err, len(browserManual))
	}

	br.run(t, "download all", chromedp.Click(chromedp.CSS(`#download-all`)),
		chromedp.WaitVisible(chromedp.CSS(`#documents tr[data-key="north/checklist"] a[data-open]`)))
	if got := br.text(t, "#doc-msg"); got != "Download All queued 1 document." {
		t.Errorf("Download All says %q, want that it downloads the checklist", got)
	}
	rows, err = runFor(br, chromedp.Evaluate[[]docRow](docRows))
	want[0].State, want[0].Download, want[0].Open = "Downloaded", false, true
	want[1] = want[0]
	want[1].Key, want[1].Name = "north/manual", "Field manual"
	if err != nil || fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Errorf("documents after Download All %+v (%v), want %+v", rows, err, want)
	}
	checkAccessible(t, br)
	br.shot(t, "documents-all")
}
