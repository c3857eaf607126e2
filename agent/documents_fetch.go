package agent

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/store"
)

// The document downloader: one download at a time, oldest request first,
// into a part file next to the final one. The part file is synced and its
// length recorded (store.DocProgress) every docCheckpoint bytes, so a
// download interrupted by a crash or a lost connection resumes after the
// last recorded chunk. The content is verified (size and SHA-256 digest)
// before it is renamed into place and made the document's file in one
// transaction; only then is the previous file removed. A file is never
// served before that, and a part file never.

// docCheckpoint is how many bytes a download writes between two durable
// progress records.
const docCheckpoint = 8 << 20

// errCorrupt: downloaded content does not match its record's digest or
// size; the part file is dropped and the download fails with the reason.
var errCorrupt = errors.New("content does not match its digest")

// documents runs the downloader until ctx ends: it reconciles the
// device's documents with their records at start and whenever syncs or
// Applies change them, then downloads what is queued.
func (a *Agent) documents(ctx context.Context, client *natsjs.Client) {
	retry := backoff.NewExponentialBackOff()
	retry.InitialInterval, retry.MaxInterval = time.Second, 2*time.Minute
	a.sweepDocuments(ctx)
	reconcile := true
	for ctx.Err() == nil {
		if reconcile {
			if err := a.reconcileDocuments(ctx); err != nil && ctx.Err() == nil {
				a.log.Warn("documents: reconcile", "err", err)
			}
		}
		wait, err := a.fetchQueued(ctx, client)
		if err != nil && ctx.Err() == nil {
			a.log.Warn("documents: download interrupted; retrying", "err", err)
			wait = retry.NextBackOff()
		} else if err == nil {
			retry.Reset()
		}
		reconcile = a.waitDocuments(ctx, wait)
	}
}

// waitDocuments waits for a kick, a change of the documents (it returns
// true: reconcile first), wait if not 0, or the end of ctx.
func (a *Agent) waitDocuments(ctx context.Context, wait time.Duration) bool {
	var timer <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-ctx.Done():
	case <-a.docKick:
	case <-a.docsChanged:
		return true
	case <-timer:
	}
	return false
}

// fetchQueued downloads every queued document while connected. It returns
// how long to wait before trying again (0: until kicked), or the error of
// an interrupted download.
func (a *Agent) fetchQueued(ctx context.Context, client *natsjs.Client) (time.Duration, error) {
	for ctx.Err() == nil {
		if !client.Connected() {
			return 0, nil // the connection coming up kicks
		}
		f, err := a.db.NextQueued(ctx)
		if errors.Is(err, store.ErrNotFound) {
			return 0, nil
		}
		if err != nil {
			return 0, err
		}
		if err := a.fetch(ctx, client, f); err != nil {
			return 0, err
		}
	}
	return 0, nil
}

// fetch downloads f's wanted content. Failures that another attempt would
// repeat (corrupt or vanished content, no space) are recorded on the row
// and return nil; others (the connection) are returned and retried.
func (a *Agent) fetch(ctx context.Context, client *natsjs.Client, f store.DocFile) error {
	defer a.docProgress.Store(nil)
	if a.beforeFetch != nil {
		a.beforeFetch(f)
	}
	err := a.download(ctx, client, f)
	var reason string
	switch {
	case err == nil, errors.Is(err, store.ErrStaleDownload):
		a.statusChanged()
		return nil
	case errors.Is(err, errCorrupt):
		reason = err.Error()
	case errors.Is(err, natsjs.ErrContentGone):
		reason = "the content is no longer on the server: sync and apply to get the current version"
	case errors.Is(err, ErrNoSpace):
		reason = err.Error()
	default:
		return err
	}
	a.log.Warn("documents: download failed", "org_unit", f.OrgUnit, "id", f.RecordID, "reason", reason)
	if err := a.db.DocFailed(ctx, f.OrgUnit, f.RecordID, f.Want.Object, reason, a.now()); err != nil && !errors.Is(err, store.ErrStaleDownload) {
		return err
	}
	a.statusChanged()
	return nil
}

// partName and fileName are f's part file and final file for object: the
// upload token of the object name keeps versions apart.
func partName(f store.DocFile, object string) string { return fileName(f, object) + ".part" }

func fileName(f store.DocFile, object string) string {
	_, upload, _ := strings.Cut(object, "/")
	return f.RecordID + "." + upload
}

func (a *Agent) download(ctx context.Context, client *natsjs.Client, f store.DocFile) error {
	dir := store.DocumentDir(a.cfg.DataDir, f.OrgUnit)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := a.checkSpace(f.Want.Size - f.PartBytes); err != nil {
		return err
	}
	part := filepath.Join(dir, partName(f, f.Want.Object))
	w, err := openPart(part, &f)
	if err != nil {
		return err
	}
	defer w.file.Close()
	a.docProgress.Store(&DocumentProgress{OrgUnit: f.OrgUnit, ID: f.RecordID, BytesDone: w.bytes, BytesTotal: f.Want.Size})
	a.statusChanged()
	w.startCheckpoints(ctx, a, f)
	err = client.ReadContent(ctx, natsjs.ContentRead{Device: a.cfg.DeviceID, Unit: f.OrgUnit, Content: f.Want,
		AfterSeq: f.PartSeq, Done: f.PartChunks}, func(data []byte, seq uint64) error { return a.writeChunk(w, &f, data, seq) })
	if cerr := w.stopCheckpoints(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := w.verify(f.Want); err != nil {
		w.file.Close()
		os.Remove(part)
		return err
	}
	final := fileName(f, f.Want.Object)
	if err := os.Rename(part, filepath.Join(dir, final)); err != nil {
		return err
	}
	syncDir(dir)
	old, err := a.db.DocDone(ctx, f.OrgUnit, f.RecordID, f.Want.Object, final, a.now())
	if errors.Is(err, store.ErrStaleDownload) {
		os.Remove(filepath.Join(dir, final))
	}
	if err != nil {
		return err
	}
	if old != "" {
		os.Remove(filepath.Join(dir, old))
	}
	a.log.Info("document downloaded", "org_unit", f.OrgUnit, "id", f.RecordID, "bytes", f.Want.Size)
	return nil
}

// partWriter is a part file being written and the digest of its bytes.
type partWriter struct {
	file    *os.File
	sum     hash.Hash
	bytes   int64
	chunks  int64
	lastRec int64 // bytes at the last progress record handed to the checkpointer
	// notified is when the status stream last heard of the progress.
	notified time.Time
	// marks feeds the checkpointer, which syncs the file and records
	// progress off the download's path; failed holds its first error.
	marks  chan checkpoint
	done   chan struct{}
	failed atomic.Pointer[error]
}

// checkpoint is a progress record to make durable: the part file holds
// bytes in chunks, the last at stream sequence seq.
type checkpoint struct {
	bytes, chunks int64
	seq           uint64
}

// startCheckpoints runs the checkpointer: for each mark it syncs the part
// file (everything written so far, the mark's bytes included) and then
// records the mark, so a recorded length is always on disk. It runs beside
// the download: an fsync does not stop the transfer.
func (w *partWriter) startCheckpoints(ctx context.Context, a *Agent, f store.DocFile) {
	w.marks, w.done = make(chan checkpoint, 1), make(chan struct{})
	go func() {
		defer close(w.done)
		for cp := range w.marks {
			if w.failed.Load() != nil {
				continue
			}
			err := w.file.Sync()
			if err == nil {
				err = a.db.DocProgress(ctx, f.OrgUnit, f.RecordID, f.Want.Object, cp.bytes, cp.seq, cp.chunks)
			}
			if err != nil {
				w.failed.Store(&err)
				continue
			}
			if a.onDocProgress != nil {
				a.onDocProgress(cp.bytes)
			}
		}
	}()
}

// stopCheckpoints waits for the checkpointer and returns its error.
func (w *partWriter) stopCheckpoints() error {
	close(w.marks)
	<-w.done
	if err := w.failed.Load(); err != nil {
		return *err
	}
	return nil
}

// openPart opens f's part file and readies it to continue after what the
// row says it holds for certain: longer files are cut back, a shorter or
// missing one restarts from the first chunk. The digest is taken over the
// kept bytes again.
func openPart(path string, f *store.DocFile) (*partWriter, error) {
	file, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	st, err := file.Stat()
	if err == nil && st.Size() < f.PartBytes {
		f.PartBytes, f.PartSeq, f.PartChunks = 0, 0, 0
	}
	w := &partWriter{file: file, sum: sha256.New(), bytes: f.PartBytes, chunks: f.PartChunks, lastRec: f.PartBytes, notified: time.Now()}
	if err == nil {
		err = file.Truncate(f.PartBytes)
	}
	if err == nil && f.PartBytes > 0 {
		_, err = io.Copy(w.sum, io.NewSectionReader(file, 0, f.PartBytes))
	}
	if err == nil {
		_, err = file.Seek(f.PartBytes, io.SeekStart)
	}
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("agent: part file %s: %w", path, err)
	}
	return w, nil
}

// writeChunk appends one chunk and, every docCheckpoint bytes, hands a
// progress record to the checkpointer (if it is still busy with the last
// one, the next chunk tries again).
func (a *Agent) writeChunk(w *partWriter, f *store.DocFile, data []byte, seq uint64) error {
	if err := w.failed.Load(); err != nil {
		return *err
	}
	if w.bytes+int64(len(data)) > f.Want.Size {
		return fmt.Errorf("%w: more than the %d bytes the record names", errCorrupt, f.Want.Size)
	}
	if _, err := w.file.Write(data); err != nil {
		return err
	}
	w.sum.Write(data)
	w.bytes += int64(len(data))
	w.chunks++
	a.docProgress.Store(&DocumentProgress{OrgUnit: f.OrgUnit, ID: f.RecordID, BytesDone: w.bytes, BytesTotal: f.Want.Size})
	if time.Since(w.notified) >= time.Second { // progress on the status stream, about once a second
		w.notified = time.Now()
		a.statusChanged()
	}
	if w.bytes-w.lastRec < docCheckpoint || w.bytes == f.Want.Size {
		return nil // the last chunk is made durable by the verification
	}
	select {
	case w.marks <- checkpoint{bytes: w.bytes, chunks: w.chunks, seq: seq}:
		w.lastRec = w.bytes
	default:
	}
	return nil
}

// verify checks the written content against c.
func (w *partWriter) verify(c events.Content) error {
	if w.bytes != c.Size {
		return fmt.Errorf("%w: %d bytes, the record names %d", errCorrupt, w.bytes, c.Size)
	}
	if got := "SHA-256=" + base64.URLEncoding.EncodeToString(w.sum.Sum(nil)); got != c.Digest {
		return fmt.Errorf("%w: digest %s, the record names %s", errCorrupt, got, c.Digest)
	}
	return w.file.Sync()
}

// syncDir makes a rename in dir durable where the platform can (not on
// Windows, where directories cannot be opened for syncing).
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
