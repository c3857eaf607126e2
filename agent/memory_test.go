package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
)

// rssChild is what testdata/rsschild reports.
type rssChild struct {
	Records   int     `json:"records"`
	PeakRSSMB float64 `json:"peak_rss_mb"`
	Seconds   float64 `json:"seconds"`
	Error     string  `json:"error,omitempty"`
}

// TestSyncer_Sync_PeakRSSBoundedByBytes: a device syncing 2,000 documents
// of 200 KiB (400 MiB) keeps its peak resident memory under 300 MB: the
// prefetch and the batches are bounded by bytes, not by message counts.
// The agent runs in its own process (testdata/rsschild: a full sync with
// the agent's defaults), built without the race detector, which would
// inflate the figure, so only the agent's own memory is measured.
func TestSyncer_Sync_PeakRSSBoundedByBytes(t *testing.T) {
	const records, size, limitMB = 2000, 200 << 10, 300.0
	dir := t.TempDir()
	child := filepath.Join(dir, "rsschild")
	built := time.Now()
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", child, "./testdata/rsschild")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the child: %v\n%s", err, out)
	}
	t.Logf("child built in %v", time.Since(built).Round(time.Millisecond))

	b := fstest.MustStartBroker(t, "north")
	blob := strings.Repeat("0123456789abcdef", size/16)
	i := 0
	n, err := b.Client.Publisher().PublishAll(context.Background(), func() (*events.Envelope, bool) {
		if i == records {
			return nil, false
		}
		i++
		return fstest.Change(t, "north", events.ChannelDocuments, "document", fmt.Sprintf("doc%04d", i), map[string]any{"i": i, "blob": blob}), true
	}, 64)
	if err != nil || n != records {
		t.Fatalf("published %d of %d: %v", n, records, err)
	}
	out, err := exec.Command(child, "-broker", b.URL(), "-creds", b.DeviceCreds(t, "tab-rss", "north"), "-dir", filepath.Join(dir, "device"), "-unit", "north").Output()
	var res rssChild
	if jerr := json.Unmarshal(out, &res); err != nil || jerr != nil || res.Error != "" {
		t.Fatalf("child: %v %v %q\n%s", err, jerr, res.Error, out)
	}
	t.Logf("%d × %d KiB synced in %.1fs: agent peak RSS %.0f MB (limit %.0f MB)", res.Records, size>>10, res.Seconds, res.PeakRSSMB, limitMB)
	if res.Records != records {
		t.Fatalf("child synced %d records, want %d", res.Records, records)
	}
	if res.PeakRSSMB <= 0 || res.PeakRSSMB > limitMB {
		t.Fatalf("agent peak RSS %.0f MB, limit %.0f MB", res.PeakRSSMB, limitMB)
	}
}
