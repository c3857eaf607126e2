package localapi_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
)

// browserChanges is how many changes the browser test's sync downloads:
// enough that the page shows the sync in progress for a while.
const browserChanges = 10000

// browserLinkSpeed is the broker link of the browser test (bytes/s): the
// download takes a few seconds.
const browserLinkSpeed = 400 << 10

// chromiumPath finds Debian's chromium (or $CHROMIUM).
func chromiumPath() string {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// artifactDir is where the browser test saves its screenshots:
// $FIELDSYNC_ARTIFACTS/browser, else artifacts/browser in the repository.
func artifactDir(t *testing.T) string {
	t.Helper()
	root := os.Getenv("FIELDSYNC_ARTIFACTS")
	if root == "" {
		root = filepath.Join("..", "artifacts")
	}
	dir, err := filepath.Abs(filepath.Join(root, "browser"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	old, _ := filepath.Glob(filepath.Join(dir, "*.png"))
	for _, f := range old { // the screenshots of this run only
		os.Remove(f)
	}
	return dir
}

// browser is a headless Chromium tab on a 10-inch tablet screen.
type browser struct {
	ctx   context.Context
	shots string
	n     int
}

func startBrowser(t *testing.T) *browser {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		t.Skip("browser test skipped: Chromium not found (install Debian's chromium package, or set $CHROMIUM)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 800), chromedp.Flag("lang", "en-US"))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium %s: %v", path, err)
	}
	return &browser{ctx: ctx, shots: artifactDir(t)}
}

// run runs actions with a timeout, failing the test with what it was doing.
func (b *browser) run(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if _, err := runFor(b, chromedp.Steps(steps...)); err != nil {
		text, _ := runFor(b, chromedp.Text(chromedp.CSS("body")))
		t.Fatalf("browser: %s: %v\npage text: %.800s", what, err, text)
	}
}

// runFor runs one action with a minute's timeout.
func runFor[T any](b *browser, a chromedp.Action[T]) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	return chromedp.Run(ctx, a)
}

// shot saves a full-page screenshot as NN-name.png in the artifacts.
func (b *browser) shot(t *testing.T, name string) {
	t.Helper()
	png, err := runFor(b, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	b.n++
	path := filepath.Join(b.shots, fmt.Sprintf("%02d-%s.png", b.n, name))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s", path)
}

// text returns the trimmed text of sel.
func (b *browser) text(t *testing.T, sel string) string {
	t.Helper()
	s, err := runFor(b, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("read %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

// publishMany publishes n new north events in one pipelined batch.
func publishMany(t *testing.T, b *fstest.Broker, n int) {
	t.Helper()
	i := 0
	_, err := b.Client.Publisher().PublishAll(context.Background(), func() (*events.Envelope, bool) {
		if i == n {
			return nil, false
		}
		i++
		return fstest.Change(t, "north", events.ChannelEvents, "event", fmt.Sprintf("bulk-%06d", i), map[string]any{"title": "bulk"}), true
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
}

// TestPage_Browser drives the status page in headless Chromium: a sync the
// user starts shows its progress, then updates available; Apply makes the
// device up to date; the activity reads as sentences and each category
// says when it was synced; a sync error is listed and Undo clears it; the
// documents are listed, searched, downloaded and opened.
func TestPage_Browser(t *testing.T) {
	br := startBrowser(t)
	e := &env{broker: fstest.MustStartBroker(t, "north"), versions: map[string]uint64{}}
	e.versions["srv-1"] = e.broker.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "srv-1", map[string]any{"title": "T srv-1"}))
	publishBrowserDocs(t, e)
	e.run(t, agent.Config{DeviceID: "tab-ui", User: "alice", OrgUnits: []string{"north"},
		BrokerURL: slowProxy(t, strings.TrimPrefix(e.broker.URL(), "nats://"), browserLinkSpeed), DataDir: t.TempDir(),
		APIAddr: "127.0.0.1:0", StallTimeout: 10 * time.Second, AutosyncInterval: 50 * time.Millisecond})
	runIngest(t, e.broker)

	browserOpen(t, br, e)
	browserSync(t, br, e)
	browserApply(t, br, e)
	browserActivity(t, br, e)
	browserUndo(t, br, e)
	browserDocuments(t, br, e)
}

// browserOpen: without the token the page says how to get in; with it the
// page shows the state, and the token leaves the address bar.
func browserOpen(t *testing.T, br *browser, e *env) {
	t.Helper()
	br.run(t, "open the page without the token", chromedp.Navigate(e.base+"/"), chromedp.WaitVisible(chromedp.CSS("#notice")))
	if got := br.text(t, "#notice"); !strings.Contains(got, "device-agent open") {
		t.Fatalf("page without the token says %q, want how to open it", got)
	}
	br.shot(t, "no-token")
	br.run(t, "open the page with the token", chromedp.Navigate(e.base+"/#token="+e.token),
		chromedp.WaitVisible(chromedp.CSS(`#widget[data-state="up_to_date"]`)))
	if got := br.text(t, "#state-label"); got != "Up to date" {
		t.Fatalf("state label %q, want Up to date", got)
	}
	if hash, err := runFor(br, chromedp.Evaluate[string](`location.hash`)); err != nil || hash != "" {
		t.Fatalf("address fragment after load %q (%v), want the token gone from the address bar", hash, err)
	}
	checkAccessible(t, br)
	br.shot(t, "up-to-date")
	checkWidgetStates(t, br)
}

// browserSync starts a sync from the page and watches it: progress per
// category, focus kept, then updates available after exactly in_progress.
func browserSync(t *testing.T, br *browser, e *env) {
	t.Helper()
	// Record every state the widget shows, to check the order afterwards.
	br.run(t, "watch the widget", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Evaluate[bool](`window.states=[];new MutationObserver(()=>{const s=document.getElementById("widget").dataset.state;
		if(window.states[window.states.length-1]!==s)window.states.push(s)}).observe(document.getElementById("widget"),{attributes:true});true`)(ctx, tg)
		return err
	}))
	publishMany(t, e.broker, browserChanges)
	br.run(t, "start a sync from the page", chromedp.Click(chromedp.CSS("#sync-full")),
		chromedp.WaitVisible(chromedp.CSS(`#widget[data-state="in_progress"]`)), chromedp.WaitVisible(chromedp.CSS(`#progress-box`)))
	br.run(t, "focus a Sync button", chromedp.Focus(chromedp.CSS(`#channels button[data-scope="admin"]`)), chromedp.Sleep(time.Second))
	if f, err := runFor(br, chromedp.Evaluate[string](`document.activeElement.dataset.scope||document.activeElement.tagName`)); err != nil || f != "admin" {
		t.Fatalf("focus after a second of live updates: %q (%v), want the Sync Admin button", f, err)
	}
	br.shot(t, "sync-in-progress")
	bars, err := runFor(br, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#progress progress")].map(p=>p.getAttribute("aria-label"))`))
	if err != nil || !slices.ContainsFunc(bars, func(l string) bool {
		return strings.HasPrefix(l, "north Events: ") && strings.HasSuffix(l, " of "+grouped(browserChanges))
	}) {
		t.Fatalf("progress bars while syncing: %q (%v), want one labelled north Events: n of %s", bars, err, grouped(browserChanges))
	}

	br.run(t, "wait for updates available", chromedp.WaitVisible(chromedp.CSS(`#widget[data-state="updates_available"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#apply`)))
	if got := br.text(t, "#state-detail"); !strings.Contains(got, grouped(browserChanges)+" changes") {
		t.Fatalf("updates detail %q, want the %d staged changes", got, browserChanges)
	}
	br.shot(t, "updates-available")
	states, err := runFor(br, chromedp.Evaluate[[]string](`window.states`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(states, ",") != "in_progress,updates_available" {
		t.Fatalf("widget states %v, want in_progress then updates_available", states)
	}

}

// browserApply clicks Apply Update, then checks a refused action's error
// stays on screen, and the portrait layout.
func browserApply(t *testing.T, br *browser, e *env) {
	t.Helper()
	br.run(t, "apply", chromedp.Click(chromedp.CSS("#apply")),
		chromedp.WaitVisible(chromedp.CSS(`#widget[data-state="up_to_date"]`)), chromedp.WaitNotVisible(chromedp.CSS("#apply")))
	if n := e.status(t).Channels[0].Records; n < browserChanges {
		t.Fatalf("after Apply the device holds %d events, want at least %d", n, browserChanges)
	}
	br.shot(t, "applied-up-to-date")
	// An action's error stays on screen through the live updates.
	if _, err := runFor(br, chromedp.Evaluate[bool](`act(()=>api("/v1/apply",{method:"POST"})).then(()=>true)`, chromedp.EvalAwaitPromise)); err != nil {
		t.Fatal(err)
	}
	br.run(t, "live updates", chromedp.Sleep(1500*time.Millisecond))
	if got := br.text(t, "#notice"); !strings.Contains(got, "No downloaded updates are waiting") {
		t.Fatalf("notice after a refused Apply: %q, want the error kept", got)
	}
	br.run(t, "portrait tablet", chromedp.EmulateViewport(800, 1280))
	checkAccessible(t, br)
	br.shot(t, "portrait")
	br.run(t, "landscape tablet", chromedp.EmulateViewport(1280, 800))
}

// browserUndo: a conflict shows as a sync error; the list's Undo clears it.
func browserUndo(t *testing.T, br *browser, e *env) {
	t.Helper()
	makeConflict(t, e)
	br.run(t, "wait for the sync error", chromedp.WaitVisible(chromedp.CSS(`#widget.tone-bad #show-errors`)))
	if got := br.text(t, "#state-label"); got != "1 sync error" {
		t.Fatalf("state label %q, want 1 sync error", got)
	}
	br.shot(t, "sync-error")
	br.run(t, "open the list", chromedp.Click(chromedp.CSS("#show-errors")),
		chromedp.WaitVisible(chromedp.CSS(`#errors li button[data-resolve="undo"]`)))
	br.shot(t, "sync-error-list")
	br.run(t, "undo", chromedp.Click(chromedp.CSS(`#errors li button[data-resolve="undo"]`)),
		chromedp.WaitNotPresent(chromedp.CSS(`#errors li`)), chromedp.WaitNotVisible(chromedp.CSS("#show-errors")),
		chromedp.WaitVisible(chromedp.CSS(`#widget.tone-ok`)))
	if cs := e.conflicts(t); len(cs) != 0 {
		t.Fatalf("conflicts after Undo in the page: %+v", cs)
	}
	waitActivity(t, br, "Sent 1 write to the server")
	br.shot(t, "undone")
}

// checkWidgetStates runs the page's own view() over every state the agent
// reports: the icon, colour and words the seeds' status widget shows.
func checkWidgetStates(t *testing.T, br *browser) {
	t.Helper()
	base := `{device_id:"d",org_units:[],progress:[],channels:[],sync_errors:0,pending_writes:0,staged_changes:3,updates_available_since:new Date().toISOString()`
	for _, tc := range []struct{ status, want string }{
		{`state:"up_to_date"`, "check ok Up to date"},
		{`state:"in_progress"`, "sync busy Sync in progress"},
		{`state:"in_progress",blocking:true`, "sync busy Sync in progress: please wait"},
		{`state:"updates_available",age_band:"green"`, "cloud green Updates available"},
		{`state:"updates_available",age_band:"orange"`, "cloud orange Updates available"},
		{`state:"updates_available",age_band:"red"`, "cloud red Updates available"},
		{`state:"up_to_date",sync_errors:2`, "alert bad 2 sync errors"},
		{`state:"failed",last_error:"x"`, "alert bad Sync failed"},
		{`state:"authentication_error",auth_error:"password_expired"`, "alert bad Authentication error"},
		{`state:"incompatible_server",last_error:"x"`, "alert bad Upgrade the device agent"},
		{`state:"not_started",online_only:true`, "clock idle Not synced yet"},
	} {
		got, err := runFor(br, chromedp.Evaluate[string](`(()=>{const v=view(`+base+`,`+tc.status+`});return v.icon+" "+v.tone+" "+v.label})()`))
		if err != nil || got != tc.want {
			t.Errorf("view({%s}) = %q (%v), want %q", tc.status, got, err, tc.want)
		}
	}
}

// checkAccessible checks what a screen reader needs: the state is a live
// region in words, every visible control has a name, and touch targets
// are at least 44 px.
func checkAccessible(t *testing.T, br *browser) {
	t.Helper()
	problems, err := runFor(br, chromedp.Evaluate[[]string](`(()=>{const out=[];
		const live=document.querySelector('[role=status][aria-live]');
		if(!live||!live.textContent.trim())out.push("no live status region with text");
		for(const el of document.querySelectorAll("button,input,progress,table")){
			if(el.offsetParent===null)continue;
			const name=(el.getAttribute("aria-label")||el.textContent||(el.labels&&el.labels[0]&&el.labels[0].textContent)||"").trim();
			if(!name)out.push(el.outerHTML.slice(0,80)+" has no accessible name");
			const r=el.getBoundingClientRect();
			if(el.tagName==="BUTTON"&&(r.height<44||r.width<44))out.push(el.outerHTML.slice(0,80)+" smaller than 44px");
			if(el.tagName==="INPUT"&&el.labels[0].getBoundingClientRect().height<44)out.push(el.id+": its label is a touch target under 44px");
		}
		return out})()`))
	if err != nil || len(problems) > 0 {
		t.Fatalf("accessibility: %v %q", err, problems)
	}
}

// makeConflict changes srv-1 on the server behind the device's back, then
// writes it on the device: ingest finds the write in conflict.
func makeConflict(t *testing.T, e *env) {
	t.Helper()
	e.broker.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "srv-1", map[string]any{"title": "server edit"}))
	e.write(t, `{"org_unit":"north","channel":"events","kind":"event","id":"srv-1","body":{"title":"device edit"}}`)
	// After Apply the agent merges the applied rows in the background; under
	// the race detector that holds the writer for seconds at a time, so the
	// upload and its result may take a while.
	var st agent.Status
	fstest.Eventually(t, 90*time.Second, func() bool {
		if len(e.conflicts(t)) == 1 {
			return true
		}
		st = e.status(t)
		return false
	}, "one conflict; last status %+v", &st)
}

// slowProxy forwards loopback TCP connections to target, sending what the
// target answers at about bytesPerSec per connection: a real broker seen
// over a slow link, so that a sync stays in progress long enough to watch.
func slowProxy(t *testing.T, target string, bytesPerSec int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			t.Cleanup(func() { in.Close(); out.Close() })
			go io.Copy(out, in)
			go copySlowly(in, out, bytesPerSec)
		}
	}()
	return "nats://" + ln.Addr().String()
}

func copySlowly(dst io.Writer, src io.Reader, bytesPerSec int) {
	buf := make([]byte, max(bytesPerSec/100, 512))
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			time.Sleep(time.Duration(n) * time.Second / time.Duration(bytesPerSec)) // the slow link itself: not synchronisation
		}
		if err != nil {
			return
		}
	}
}
