package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/store"
)

// Documents, after the seeds: a document's metadata syncs with the
// Documents channel; its content is not downloaded with the data. The
// user downloads one document or all new ones ([Agent.DownloadDocument],
// [Agent.DownloadAllDocuments]); after an Apply (or a sync that applies
// at once) a document the device has whose content changed downloads
// again automatically and shows update pending, not openable, until the
// new content is verified; the previous file stays until then, and is
// what a failed update falls back to. Documents not downloaded are still
// listed and found by search. The downloader is documents_fetch.go.

// DocumentState is what the device has of a document's content.
type DocumentState string

// The document states.
const (
	DocNotDownloaded DocumentState = "not_downloaded"
	DocDownloading   DocumentState = "downloading"
	DocDownloaded    DocumentState = "downloaded"
	DocUpdatePending DocumentState = "update_pending"
	DocFailed        DocumentState = "failed"
	// DocNoContent: the record has no content (metadata only).
	DocNoContent DocumentState = "no_content"
)

var (
	// ErrNoSpace: a download would leave less free disk space than the
	// documents_free_reserve setting.
	ErrNoSpace = errors.New("agent: not enough free disk space for the download")
	// ErrNoDocument: no document record of that id (in that unit).
	ErrNoDocument = errors.New("agent: no such document")
	// ErrAmbiguousDocument: the id names documents in several org units;
	// say which.
	ErrAmbiguousDocument = errors.New("agent: document id in several org units")
	// ErrNoContent: the document has no content to download or open.
	ErrNoContent = errors.New("agent: the document has no content")
	// ErrNotOpenable: the content is not on the device, or an update of it
	// is pending (it opens once the download is verified).
	ErrNotOpenable = errors.New("agent: the document's content is not available yet")
	// ErrUpdatePending: the content is being updated (it wraps
	// [ErrNotOpenable]); it opens once the new version is verified.
	ErrUpdatePending = fmt.Errorf("%w: update pending", ErrNotOpenable)
)

// Document is one document as the device lists it: its metadata and the
// state of its content on the device.
type Document struct {
	OrgUnit     string         `json:"org_unit"`
	ID          string         `json:"id"`
	Version     uint64         `json:"version"`
	Name        string         `json:"name"`
	ContentType string         `json:"content_type,omitempty"`
	Size        int64          `json:"size"`
	Digest      string         `json:"digest,omitempty"`
	UpdatedAt   time.Time      `json:"updated_at"`
	Body        map[string]any `json:"body"`
	State       DocumentState  `json:"state"`
	// BytesDone of BytesTotal while downloading (or update pending).
	BytesDone  int64 `json:"bytes_done"`
	BytesTotal int64 `json:"bytes_total"`
	// DownloadedVersion is the record version of the content on the
	// device (0: none).
	DownloadedVersion uint64 `json:"downloaded_version"`
	// Error says why the last download failed.
	Error string `json:"error,omitempty"`
	// Openable: GET .../content serves the file now.
	Openable bool `json:"openable"`
	content  events.Content
}

// DocumentSpace is the disk space documents use and have.
type DocumentSpace struct {
	UsedBytes    int64 `json:"used_bytes"`
	FreeBytes    int64 `json:"free_bytes"`
	ReserveBytes int64 `json:"reserve_bytes"`
}

// DocumentList is [Agent.Documents]' answer.
type DocumentList struct {
	Documents []Document    `json:"documents"`
	Space     DocumentSpace `json:"space"`
}

// DocumentSummary is the documents part of [Status]: counts of the
// documents whose content the device has or fetches, and the download in
// progress.
type DocumentSummary struct {
	Downloaded    int               `json:"downloaded"`
	Downloading   int               `json:"downloading"`
	UpdatePending int               `json:"update_pending"`
	Failed        int               `json:"failed"`
	UsedBytes     int64             `json:"used_bytes"`
	Active        *DocumentProgress `json:"active,omitempty"`
}

// DocumentProgress is the download in progress.
type DocumentProgress struct {
	OrgUnit    string `json:"org_unit"`
	ID         string `json:"id"`
	BytesDone  int64  `json:"bytes_done"`
	BytesTotal int64  `json:"bytes_total"`
}

// Documents lists every document record of the device's units, with the
// state of its content, ordered by unit and id. q, if set, keeps those
// whose name or any text of their metadata contains it (case-insensitive).
func (a *Agent) Documents(ctx context.Context, q string) (DocumentList, error) {
	files, err := a.docFileMap(ctx)
	if err != nil {
		return DocumentList{}, err
	}
	list := DocumentList{Documents: []Document{}}
	q = strings.ToLower(q)
	var after *store.Key
	for {
		recs, err := a.db.Records(ctx, store.Query{Channel: events.ChannelDocuments, Unit: store.AnyUnit,
			Kind: events.DocumentKind, After: after, Limit: 1000})
		if err != nil {
			return DocumentList{}, err
		}
		for _, r := range recs {
			if q == "" || matches(r.Body, q) {
				f, ok := files[docKey{r.OrgUnit, r.RecordID}]
				list.Documents = append(list.Documents, a.document(r, f, ok))
			}
		}
		if len(recs) < 1000 {
			break
		}
		last := recs[len(recs)-1]
		after = &store.Key{OrgUnit: last.OrgUnit, Kind: last.Kind, RecordID: last.RecordID}
	}
	list.Space = a.documentSpace(files)
	return list, nil
}

type docKey struct{ unit, id string }

func (a *Agent) docFileMap(ctx context.Context) (map[docKey]store.DocFile, error) {
	rows, err := a.db.DocFiles(ctx)
	if err != nil {
		return nil, err
	}
	m := make(map[docKey]store.DocFile, len(rows))
	for _, f := range rows {
		m[docKey{f.OrgUnit, f.RecordID}] = f
	}
	return m, nil
}

// matches reports whether any string in v (map keys excluded) contains q.
func matches(v any, q string) bool {
	switch t := v.(type) {
	case string:
		return strings.Contains(strings.ToLower(t), q)
	case map[string]any:
		for k, x := range t {
			if k != events.ContentField && matches(x, q) {
				return true
			}
		}
	case []any:
		for _, x := range t {
			if matches(x, q) {
				return true
			}
		}
	}
	return false
}

// document combines a record and the device's row of its content.
func (a *Agent) document(r store.Record, f store.DocFile, has bool) Document {
	d := Document{OrgUnit: r.OrgUnit, ID: r.RecordID, Version: r.Version, UpdatedAt: r.UpdatedAt, Body: r.Body}
	d.Name, _ = r.Body["name"].(string)
	c, err := events.ParseContent(r.RecordID, r.Body)
	if err != nil {
		d.State = DocNoContent
		if !errors.Is(err, events.ErrNoContent) {
			d.Error = err.Error()
		}
		return d
	}
	d.content, d.ContentType, d.Size, d.Digest, d.BytesTotal = c, c.Type, c.Size, c.Digest, c.Size
	if !has {
		d.State = DocNotDownloaded
		return d
	}
	if f.HasFile() {
		d.DownloadedVersion = f.Version
	}
	current := f.HasFile() && f.Object == c.Object
	switch {
	case f.State == store.DocFailed:
		d.State, d.Error, d.Openable = DocFailed, f.Error, f.HasFile()
	case current:
		d.State, d.BytesDone, d.Openable = DocDownloaded, c.Size, true
	case f.HasFile():
		d.State = DocUpdatePending
	default:
		d.State = DocDownloading
	}
	if d.State == DocUpdatePending || d.State == DocDownloading {
		d.BytesDone = f.PartBytes
		if p := a.docProgress.Load(); p != nil && p.OrgUnit == d.OrgUnit && p.ID == d.ID {
			d.BytesDone = p.BytesDone
		}
	}
	return d
}

func (a *Agent) documentSpace(files map[docKey]store.DocFile) DocumentSpace {
	s := DocumentSpace{ReserveBytes: max(a.cfg.DocumentsReserve, 0)}
	for _, f := range files {
		if f.HasFile() {
			s.UsedBytes += f.Size
		}
		s.UsedBytes += f.PartBytes
	}
	s.FreeBytes, _ = freeSpace(a.cfg.DataDir)
	return s
}

// documentSummary is the status' documents part: one aggregate over the
// device's rows (not the records), so a status read stays cheap.
func (a *Agent) documentSummary(ctx context.Context) (*DocumentSummary, error) {
	c, err := a.db.DocSummary(ctx)
	if err != nil {
		return nil, err
	}
	return &DocumentSummary{Downloaded: c.Downloaded, Downloading: c.Downloading, UpdatePending: c.UpdatePending,
		Failed: c.Failed, UsedBytes: c.Bytes, Active: a.docProgress.Load()}, nil
}

// findDocument returns the live document id of unit ("" : whichever unit
// has it, [ErrAmbiguousDocument] if several do).
func (a *Agent) findDocument(ctx context.Context, unit, id string) (Document, error) {
	q := store.Query{Channel: events.ChannelDocuments, Unit: store.AnyUnit, Kind: events.DocumentKind, RecordID: id, Limit: 2}
	if unit != "" {
		q.Unit = unit
	}
	recs, err := a.db.Records(ctx, q)
	switch {
	case err != nil:
		return Document{}, err
	case len(recs) == 0:
		return Document{}, fmt.Errorf("%w: %q", ErrNoDocument, id)
	case len(recs) > 1:
		return Document{}, fmt.Errorf("%w: %q is in %s and %s", ErrAmbiguousDocument, id, recs[0].OrgUnit, recs[1].OrgUnit)
	}
	f, err := a.db.DocFile(ctx, recs[0].OrgUnit, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return Document{}, err
	}
	return a.document(recs[0], f, err == nil), nil
}

// DownloadDocument queues the download of a document's current content
// (unit "" when the id is in one unit only) and returns the document. A
// document whose content is on the device already is left as is. It
// fails with [ErrNoDocument], [ErrAmbiguousDocument], [ErrNoContent], or
// [ErrNoSpace] when the download would leave less free space than the
// reserve.
func (a *Agent) DownloadDocument(ctx context.Context, unit, id string) (Document, error) {
	d, err := a.findDocument(ctx, unit, id)
	if err != nil {
		return d, err
	}
	if _, err := a.wantDocument(ctx, d); err != nil {
		return d, err
	}
	return a.findDocument(ctx, d.OrgUnit, id)
}

func (a *Agent) wantDocument(ctx context.Context, d Document) (bool, error) {
	switch d.State {
	case DocNoContent:
		return false, fmt.Errorf("%w: %s/%s", ErrNoContent, d.OrgUnit, d.ID)
	case DocDownloaded:
		return false, nil
	}
	if err := a.checkSpace(d.Size - d.BytesDone); err != nil {
		return false, err
	}
	queued, err := a.db.WantDocument(ctx, d.OrgUnit, d.ID, d.Version, d.content, a.now())
	if queued {
		kick(a.docKick)
		a.statusChanged()
	}
	return queued, err
}

// DownloadAllDocuments queues every document whose content is not on the
// device (Download All) and returns how many it queued; it stops with
// [ErrNoSpace] once their total would break the free-space reserve.
func (a *Agent) DownloadAllDocuments(ctx context.Context) (int, error) {
	list, err := a.Documents(ctx, "")
	if err != nil {
		return 0, err
	}
	n, need := 0, int64(0)
	for _, d := range list.Documents {
		if d.State != DocNotDownloaded && d.State != DocFailed {
			continue
		}
		need += d.Size - d.BytesDone
		if err := a.checkSpace(need); err != nil {
			return n, err
		}
		queued, err := a.db.WantDocument(ctx, d.OrgUnit, d.ID, d.Version, d.content, a.now())
		if err != nil {
			return n, err
		}
		if queued {
			n++
		}
	}
	if n > 0 {
		kick(a.docKick)
		a.statusChanged()
	}
	return n, nil
}

// checkSpace fails with [ErrNoSpace] when writing need more bytes would
// leave less free space than the reserve.
func (a *Agent) checkSpace(need int64) error {
	if a.cfg.DocumentsReserve < 0 {
		return nil
	}
	free, err := freeSpace(a.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("agent: free disk space: %w", err)
	}
	if free-need < a.cfg.DocumentsReserve {
		return fmt.Errorf("%w: it needs %d bytes, %d are free and %d must stay free (documents_free_reserve)",
			ErrNoSpace, need, free, a.cfg.DocumentsReserve)
	}
	return nil
}

// OpenDocument opens the content of a document for reading: the verified
// file of its current version, or of the version before when the update
// failed. It fails with [ErrNotOpenable] while the content is not on the
// device or an update of it is pending.
func (a *Agent) OpenDocument(ctx context.Context, unit, id string) (*os.File, Document, error) {
	d, err := a.findDocument(ctx, unit, id)
	if err != nil {
		return nil, d, err
	}
	switch {
	case d.State == DocUpdatePending:
		return nil, d, fmt.Errorf("%w: %s/%s opens once its new content is verified", ErrUpdatePending, d.OrgUnit, d.ID)
	case !d.Openable:
		return nil, d, fmt.Errorf("%w: %s/%s is %s", ErrNotOpenable, d.OrgUnit, d.ID, d.State)
	}
	f, err := a.db.DocFile(ctx, d.OrgUnit, id)
	if err != nil {
		return nil, d, err
	}
	file, err := os.Open(filepath.Join(store.DocumentDir(a.cfg.DataDir, d.OrgUnit), f.Path))
	return file, d, err
}
