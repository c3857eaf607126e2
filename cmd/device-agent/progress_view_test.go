package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/events"

	"github.com/fieldsync/fieldsync/internal/fstest"
)

// progressSteps is what a sync of two units reports, poll after poll.
var progressSteps = [][]agent.ChannelProgress{
	{{Unit: "north", Channel: events.ChannelEvents, Expected: 4}},
	{{Unit: "north", Channel: events.ChannelEvents, Received: 2, Expected: 4}, {Unit: "", Channel: events.ChannelAdmin, Expected: 1}},
	{{Unit: "north", Channel: events.ChannelEvents, Received: 4, Expected: 4, Done: true}, {Unit: "", Channel: events.ChannelAdmin, Received: 1, Expected: 1, Done: true}},
	{{Unit: "north", Channel: events.ChannelEvents, Received: 4, Expected: 4, Done: true}, {Unit: "", Channel: events.ChannelAdmin, Received: 1, Expected: 1, Done: true}},
}

func TestNewProgressView_NotTTY(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var buf bytes.Buffer
	for name, v := range map[string]progressView{"buffer": newProgressView(&buf, false), "file": newProgressView(f, false), "json": newProgressView(os.Stdout, true)} {
		if _, ok := v.(*lineView); !ok {
			t.Errorf("%s: view %T, want the line view", name, v)
		}
	}
	v := newProgressView(&buf, false)
	for _, p := range progressSteps {
		v.update(p)
	}
	v.close()
	want := "progress north events 0/4\nprogress north events 2/4\nprogress tenant admin 0/1\nprogress north events 4/4\nprogress tenant admin 1/1\n"
	if buf.String() != want {
		t.Fatalf("line view printed:\n%s\nwant:\n%s", buf.String(), want)
	}
	re := regexp.MustCompile(`^progress \S+ \w+ \d+/\d+$`)
	for _, l := range strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n") {
		if !re.MatchString(l) {
			t.Errorf("line %q is not parseable progress", l)
		}
	}
}

func TestBarView_Renders(t *testing.T) {
	out := &fstest.Output{}
	v := newBarView(out, 60)
	v.update(progressSteps[1])
	out.Wait(t, regexp.MustCompile(`(?m)^north events +\[=+>?-+\] 2/4\n`), 10*time.Second)
	for _, p := range progressSteps[2:] {
		v.update(p)
	}
	v.close()
	v.close() // a second close does nothing
	v.update(progressSteps[0])
	// Later frames move the cursor up over the earlier ones and clear them.
	all := out.String()
	i := strings.LastIndex(all, "\x1b[2A\x1b[J")
	if i < 0 {
		t.Fatalf("bars are not redrawn in place: %q", all)
	}
	last := all[i+len("\x1b[2A\x1b[J"):]
	re := regexp.MustCompile(`^north events +\[=+\] 4/4 done\ntenant admin +\[=+\] 1/1 done\n$`)
	if !re.MatchString(last) {
		t.Errorf("last frame %q does not match %s", last, re)
	}
}

func TestBarView_Unfinished(t *testing.T) {
	var buf bytes.Buffer
	v := newBarView(&buf, 60)
	v.update(progressSteps[1])
	v.close() // e.g. the sync failed: the bars stay as they were
	out := buf.String()
	for _, re := range []string{`(?m)^north events +\[=+>?-+\] 2/4$`, `(?m)^tenant admin +\[-+\] 0/1$`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("bars lack a line matching %s:\n%q", re, out)
		}
	}
}
