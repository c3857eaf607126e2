package agent

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/store"
)

// runDocChild runs an agent (config from FS_BROKER, FS_CREDS, FS_DIR) that
// downloads document FS_DOC, printing "progress N" after each durable
// progress record and pausing after it, until it is killed.
func runDocChild() int {
	cfg := testConfig("tab1", "north")
	cfg.BrokerURL, cfg.Credentials, cfg.DataDir, cfg.DocumentsReserve = os.Getenv("FS_BROKER"), os.Getenv("FS_CREDS"), os.Getenv("FS_DIR"), -1
	a, err := Open(context.Background(), cfg, nil)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	a.onDocProgress = func(n int64) {
		fmt.Printf("progress %d\n", n)
		time.Sleep(300 * time.Millisecond) // paces the download so the parent can kill it midway: not synchronisation
	}
	go a.Run(context.Background())
	for {
		if _, err := a.DownloadDocument(context.Background(), "", os.Getenv("FS_DOC")); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond) // until the initial sync brought the record
	}
	select {}
}

// TestAgent_DownloadDocument_ResumesAfterKill kills an agent process
// (SIGKILL) in the middle of a large download: the document is then
// downloading, never downloaded with part of its content, and a restarted
// agent resumes after the chunks recorded and finishes it byte-identical.
func TestAgent_DownloadDocument_ResumesAfterKill(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	data := mustRandomBytes(t, 40<<20)
	publishDocument(t, b, "north", "big", "Big", data)
	cfg := docAgentConfig(t, b, false, "north")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "FS_DOC_CHILD=1", "FS_BROKER="+b.URL(), "FS_CREDS="+cfg.Credentials, "FS_DIR="+cfg.DataDir, "FS_DOC=big")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "error") {
			t.Fatalf("child: %s", line)
		}
		if strings.HasPrefix(line, "progress") {
			cmd.Process.Kill() // SIGKILL mid-download
			break
		}
	}
	cmd.Wait()

	db, err := store.Open(context.Background(), cfg.DBPath(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := db.DocFile(context.Background(), "north", "big")
	db.Close()
	if err != nil || f.HasFile() || f.State != store.DocQueued || f.PartBytes < docCheckpoint || f.PartBytes >= int64(len(data)) {
		t.Fatalf("after the kill: %+v, %v; want queued, no file, part of the content recorded", f, err)
	}
	var first int64
	a := runAgent(t, cfg, func(a *Agent) {
		a.onDocProgress = func(n int64) {
			if first == 0 {
				first = n
			}
		}
	})
	if d, err := a.findDocument(context.Background(), "", "big"); err == nil && d.State == DocDownloaded {
		t.Fatal("downloaded before the restarted agent finished the download")
	}
	waitDocument(t, a, "big", DocDownloaded)
	if got := mustReadDocument(t, a, "big"); !bytes.Equal(got, data) {
		t.Fatal("resumed download is not byte-identical")
	}
	if first <= f.PartBytes {
		t.Fatalf("restarted download's first progress at %d bytes: it did not resume after the %d recorded", first, f.PartBytes)
	}
	entries, _ := os.ReadDir(filepath.Join(cfg.DataDir, "documents", "north"))
	if len(entries) != 1 {
		t.Fatalf("files after the resumed download: %v", entries)
	}
}
