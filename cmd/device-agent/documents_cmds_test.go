package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
)

// publishDocs publishes n documents with content into north and returns
// their content by id.
func publishDocs(t *testing.T, b *fstest.Broker, n int) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for i := range n {
		id := fmt.Sprintf("form%02d", i)
		data := bytes.Repeat([]byte(id), 1000+i)
		c, err := b.Client.Publisher().PutContent(context.Background(), "north", id, "text/plain", bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		b.MustPublish(t, fstest.Change(t, "north", events.ChannelDocuments, events.DocumentKind, id,
			map[string]any{"name": "Form " + id, events.ContentField: c.Map()}))
		out[id] = data
	}
	return out
}

func TestDownloadCmd_OneAndAll(t *testing.T) {
	api, b := startAgent(t)
	docs := publishDocs(t, b, 12)
	mustRun(t, "sync", "--scope", "documents", "--wait", "--api", api)

	out := mustRun(t, "documents", "--api", api)
	if !strings.Contains(out, "form03") || !strings.Contains(out, "not_downloaded") || !strings.Contains(out, "13 documents") {
		t.Fatalf("documents:\n%s", out)
	}
	out = mustRun(t, "download", "form03", "--api", api)
	if !strings.Contains(out, "download north/form03 ") || !strings.Contains(out, "downloaded") || !strings.Contains(out, "1 downloaded, 0 failed") {
		t.Fatalf("download form03:\n%s", out)
	}
	out = mustRun(t, "download", "--all", "--api", api)
	if !strings.Contains(out, "11 documents queued") || !strings.Contains(out, "12 downloaded, 0 failed") {
		t.Fatalf("download --all:\n%s", out)
	}
	var list agent.DocumentList
	if err := json.Unmarshal([]byte(mustRun(t, "documents", "--json", "--api", api)), &list); err != nil {
		t.Fatal(err)
	}
	var used int64
	for _, d := range list.Documents {
		if d.ID != "doc-1" && d.State != agent.DocDownloaded {
			t.Errorf("%s: %s after download --all", d.ID, d.State)
		}
	}
	for _, data := range docs {
		used += int64(len(data))
	}
	if list.Space.UsedBytes != used {
		t.Fatalf("space used %d, want %d", list.Space.UsedBytes, used)
	}
	if _, err := run(t, "download", "doc-1", "--api", api); err == nil || !strings.Contains(err.Error(), "no_content") {
		t.Fatalf("download of a metadata-only document: %v", err)
	}
	if _, err := run(t, "download", "--api", api); err == nil {
		t.Fatal("download without an id or --all did not fail")
	}
}
