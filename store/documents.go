package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/fieldsync/fieldsync/events"
)

// Document content on the device. The Documents channel syncs metadata
// like any channel; content is downloaded only when the user asks for a
// document (or all of them), and again automatically when an applied
// update changes a document the device has. doc_files keeps, per
// document, the file on disk and the content wanted next; the agent's
// downloader moves a row from wanted to on disk (see package agent).

// The states of a document request ([DocFile.State]).
const (
	DocIdle   = "idle"   // nothing wanted: the file on disk is the record's content, or the row waits for a reconcile
	DocQueued = "queued" // the wanted content downloads (or waits for its turn, or for the broker)
	DocFailed = "failed" // the last download of the wanted content failed (Error says why)
)

// ErrStaleDownload: the content a download step was about is no longer
// the one the document wants (a newer version came meanwhile, or the
// document went): the step changed nothing.
var ErrStaleDownload = errors.New("store: the download is no longer wanted")

// DocFile is the device's state of one document's content.
type DocFile struct {
	OrgUnit  string
	RecordID string
	// The file on disk: its record version, object, digest, size and file
	// name under the documents folder ("" before the first download).
	Version uint64
	Object  string
	Digest  string
	Size    int64
	Path    string
	// WantVersion and Want are the content wanted next (Want.Object ""
	// when nothing is wanted).
	WantVersion uint64
	Want        events.Content
	// PartBytes, PartSeq and PartChunks say how much of Want the part file
	// holds for certain: bytes, the stream sequence of the last chunk, and
	// chunks.
	PartBytes  int64
	PartSeq    uint64
	PartChunks int64
	State      string
	Error      string
	// RequestedAt orders the queue.
	RequestedAt time.Time
	UpdatedAt   time.Time
}

// HasFile reports whether content of the document is on disk.
func (f DocFile) HasFile() bool { return f.Path != "" }

// DocumentDir returns the folder document files of org unit unit live in,
// under the data folder dataDir.
func DocumentDir(dataDir, unit string) string { return filepath.Join(dataDir, "documents", unit) }

const docColumns = `org_unit, record_id, version, object, digest, size, path, want_version, want_object, want_nuid,
	want_digest, want_type, want_size, want_chunks, part_bytes, part_seq, part_chunks, state, error, requested_at, updated_at`

func scanDocFile(row interface{ Scan(...any) error }) (DocFile, error) {
	var f DocFile
	var req, upd int64
	err := row.Scan(&f.OrgUnit, &f.RecordID, &f.Version, &f.Object, &f.Digest, &f.Size, &f.Path, &f.WantVersion,
		&f.Want.Object, &f.Want.NUID, &f.Want.Digest, &f.Want.Type, &f.Want.Size, &f.Want.Chunks, &f.PartBytes,
		&f.PartSeq, &f.PartChunks, &f.State, &f.Error, &req, &upd)
	f.RequestedAt, f.UpdatedAt = time.UnixMilli(req).UTC(), time.UnixMilli(upd).UTC()
	return f, err
}

// DocFiles returns every document row, oldest request first.
func (db *DB) DocFiles(ctx context.Context) ([]DocFile, error) {
	rows, err := db.reader.QueryContext(ctx, `SELECT `+docColumns+` FROM doc_files ORDER BY requested_at, org_unit, record_id`)
	if err != nil {
		return nil, fmt.Errorf("store: document files: %w", err)
	}
	defer rows.Close()
	var out []DocFile
	for rows.Next() {
		f, err := scanDocFile(rows)
		if err != nil {
			return nil, fmt.Errorf("store: document files: %w", err)
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// NextQueued returns the oldest queued document request, or [ErrNotFound]
// when none waits.
func (db *DB) NextQueued(ctx context.Context) (DocFile, error) {
	f, err := scanDocFile(db.reader.QueryRowContext(ctx, `SELECT `+docColumns+` FROM doc_files WHERE state = ?
		ORDER BY requested_at, org_unit, record_id LIMIT 1`, DocQueued))
	if errors.Is(err, sql.ErrNoRows) {
		return DocFile{}, ErrNotFound
	}
	if err != nil {
		return DocFile{}, fmt.Errorf("store: next document: %w", err)
	}
	return f, nil
}

// DocCounts sums up the document rows: files on disk and current
// (Downloaded), queued without a file (Downloading) and with one (Update
// pending), failed, and the bytes of files and part files.
type DocCounts struct {
	Downloaded, Downloading, UpdatePending, Failed int
	Bytes                                          int64
}

// DocSummary returns the [DocCounts] in one query.
func (db *DB) DocSummary(ctx context.Context) (DocCounts, error) {
	var c DocCounts
	err := db.reader.QueryRowContext(ctx, `SELECT
		coalesce(sum(state = ? AND path != ''), 0), coalesce(sum(state = ? AND path = ''), 0),
		coalesce(sum(state = ? AND path != ''), 0), coalesce(sum(state = ?), 0),
		coalesce(sum(CASE WHEN path != '' THEN size ELSE 0 END + part_bytes), 0) FROM doc_files`,
		DocIdle, DocQueued, DocQueued, DocFailed).Scan(&c.Downloaded, &c.Downloading, &c.UpdatePending, &c.Failed, &c.Bytes)
	if err != nil {
		return c, fmt.Errorf("store: document summary: %w", err)
	}
	return c, nil
}

// DocFile returns one document's row, or [ErrNotFound].
func (db *DB) DocFile(ctx context.Context, unit, recordID string) (DocFile, error) {
	f, err := scanDocFile(db.reader.QueryRowContext(ctx, `SELECT `+docColumns+` FROM doc_files WHERE org_unit = ? AND record_id = ?`, unit, recordID))
	if errors.Is(err, sql.ErrNoRows) {
		return DocFile{}, ErrNotFound
	}
	if err != nil {
		return DocFile{}, fmt.Errorf("store: document file: %w", err)
	}
	return f, nil
}

// WantDocument asks for content c (version of the record) of a document,
// in one transaction: nothing changes when that content is on disk
// already or downloading; otherwise the row wants c, queued (a failed
// request is queued again), and it reports true. The part file counts
// only while it holds the same content.
func (db *DB) WantDocument(ctx context.Context, unit, recordID string, version uint64, c events.Content, now time.Time) (bool, error) {
	queued := false
	err := db.tx(ctx, func(tx *sql.Tx) error {
		f, err := scanDocFile(tx.QueryRowContext(ctx, `SELECT `+docColumns+` FROM doc_files WHERE org_unit = ? AND record_id = ?`, unit, recordID))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			f = DocFile{OrgUnit: unit, RecordID: recordID}
		case err != nil:
			return err
		case f.HasFile() && f.Object == c.Object:
			_, err := tx.ExecContext(ctx, `UPDATE doc_files SET version = ?, want_object = '', state = ?, error = '', updated_at = ?
				WHERE org_unit = ? AND record_id = ? AND (want_object != '' OR version != ?)`, version, DocIdle, now.UnixMilli(), unit, recordID, version)
			return err
		case f.Want.Object == c.Object && f.State == DocQueued:
			return nil
		}
		if f.Want.Object != c.Object {
			f.PartBytes, f.PartSeq, f.PartChunks = 0, 0, 0
		}
		queued = true
		_, err = tx.ExecContext(ctx, `INSERT OR REPLACE INTO doc_files (`+docColumns+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			unit, recordID, f.Version, f.Object, f.Digest, f.Size, f.Path, version, c.Object, c.NUID, c.Digest, c.Type,
			c.Size, c.Chunks, f.PartBytes, f.PartSeq, f.PartChunks, DocQueued, "", now.UnixMilli(), now.UnixMilli())
		return err
	})
	if err != nil {
		return false, fmt.Errorf("store: want document %s/%s: %w", unit, recordID, err)
	}
	return queued, nil
}

// DocProgress records that the part file of object holds bytes bytes in
// chunks chunks, the last at stream sequence seq (the caller synced the
// file first). It fails with [ErrStaleDownload] when object is no longer
// wanted.
func (db *DB) DocProgress(ctx context.Context, unit, recordID, object string, bytes int64, seq uint64, chunks int64) error {
	return db.docUpdate(ctx, unit, recordID, object, `part_bytes = ?, part_seq = ?, part_chunks = ?`, bytes, seq, chunks)
}

// DocFailed marks the download of object failed with reason; the part
// file no longer counts (the next attempt starts afresh). The file on
// disk, if any, stays.
func (db *DB) DocFailed(ctx context.Context, unit, recordID, object, reason string, now time.Time) error {
	return db.docUpdate(ctx, unit, recordID, object, `state = ?, error = ?, part_bytes = 0, part_seq = 0, part_chunks = 0, updated_at = ?`,
		DocFailed, reason, now.UnixMilli())
}

func (db *DB) docUpdate(ctx context.Context, unit, recordID, object, set string, args ...any) error {
	res, err := db.shortExec(ctx, `UPDATE doc_files SET `+set+` WHERE org_unit = ? AND record_id = ? AND want_object = ?`,
		append(args, unit, recordID, object)...)
	if err != nil {
		return fmt.Errorf("store: document %s/%s: %w", unit, recordID, err)
	}
	if res == 0 {
		return fmt.Errorf("%w: %s/%s %s", ErrStaleDownload, unit, recordID, object)
	}
	return nil
}

func (db *DB) shortExec(ctx context.Context, q string, args ...any) (int64, error) {
	var n int64
	err := db.shortTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, q, args...)
		if err == nil {
			n, err = res.RowsAffected()
		}
		return err
	})
	return n, err
}

// DocDone makes the verified file path (under the unit's documents
// folder) the document's content, in one transaction, if object is still
// the one wanted ([ErrStaleDownload] otherwise), and returns the file it
// replaces ("" if none) for the caller to remove.
func (db *DB) DocDone(ctx context.Context, unit, recordID, object, path string, now time.Time) (string, error) {
	var old string
	err := db.tx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT path FROM doc_files WHERE org_unit = ? AND record_id = ? AND want_object = ?`,
			unit, recordID, object).Scan(&old)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: %s/%s %s", ErrStaleDownload, unit, recordID, object)
		}
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE doc_files SET version = want_version, object = want_object, digest = want_digest,
			size = want_size, path = ?, want_object = '', part_bytes = 0, part_seq = 0, part_chunks = 0, state = ?, error = '',
			updated_at = ? WHERE org_unit = ? AND record_id = ?`, path, DocIdle, now.UnixMilli(), unit, recordID)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("store: document %s/%s done: %w", unit, recordID, err)
	}
	if old == path {
		old = ""
	}
	return old, nil
}

// DropDocument removes a document's row (the document was deleted, or
// lost its content) and returns its file ("" if none) for the caller to
// remove.
func (db *DB) DropDocument(ctx context.Context, unit, recordID string) (string, error) {
	var path string
	err := db.tx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `DELETE FROM doc_files WHERE org_unit = ? AND record_id = ? RETURNING path`, unit, recordID).Scan(&path)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		return err
	})
	if err != nil {
		return "", fmt.Errorf("store: drop document %s/%s: %w", unit, recordID, err)
	}
	return path, nil
}

// DocumentsComplete reports whether the device holds the whole documents
// channel of unit (its first full download finished): only then may a
// document missing from the channel be taken as deleted.
func (db *DB) DocumentsComplete(ctx context.Context, unit string) (bool, error) {
	var done int
	err := db.reader.QueryRowContext(ctx, `SELECT snapshot_done FROM checkpoints WHERE org_unit = ? AND channel = ?`,
		unit, string(events.ChannelDocuments)).Scan(&done)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: documents checkpoint of %s: %w", unit, err)
	}
	return done != 0, nil
}
