package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/store"
)

// reconcileDocuments brings the device's document files in line with the
// live records, after a sync or an Apply changed them: a document whose
// content changed downloads again (update pending until verified), one
// that was deleted or lost its content loses its file. A unit whose
// documents channel has not completed its first download is left alone:
// a record missing there may just not have arrived.
func (a *Agent) reconcileDocuments(ctx context.Context) error {
	rows, err := a.db.DocFiles(ctx)
	if err != nil {
		return err
	}
	complete := map[string]bool{}
	queued := false
	for _, f := range rows {
		done, ok := complete[f.OrgUnit]
		if !ok {
			if done, err = a.db.DocumentsComplete(ctx, f.OrgUnit); err != nil {
				return err
			}
			complete[f.OrgUnit] = done
		}
		q, err := a.reconcileDocument(ctx, f, done)
		if err != nil {
			return err
		}
		queued = queued || q
	}
	if queued {
		a.statusChanged()
	}
	return nil
}

func (a *Agent) reconcileDocument(ctx context.Context, f store.DocFile, complete bool) (bool, error) {
	recs, err := a.db.Records(ctx, store.Query{Channel: events.ChannelDocuments, Unit: f.OrgUnit, Kind: events.DocumentKind,
		RecordID: f.RecordID, Limit: 1})
	if err != nil {
		return false, err
	}
	var c events.Content
	if len(recs) == 1 {
		c, err = events.ParseContent(f.RecordID, recs[0].Body)
	}
	switch {
	case len(recs) == 0 || errors.Is(err, events.ErrNoContent):
		if complete {
			return false, a.dropDocument(ctx, f)
		}
		return false, nil
	case err != nil:
		a.log.Warn("documents: unreadable content of a record", "org_unit", f.OrgUnit, "id", f.RecordID, "err", err)
		return false, nil
	case f.Object == c.Object && f.HasFile() && f.Want.Object == "" && f.Version == recs[0].Version:
		return false, nil
	case f.Want.Object == c.Object && f.State != store.DocIdle:
		return false, nil // already wanted (or failed: the user asks again)
	}
	return a.db.WantDocument(ctx, f.OrgUnit, f.RecordID, recs[0].Version, c, a.now())
}

// dropDocument removes a document's row, then its file and part files.
func (a *Agent) dropDocument(ctx context.Context, f store.DocFile) error {
	path, err := a.db.DropDocument(ctx, f.OrgUnit, f.RecordID)
	if err != nil {
		return err
	}
	dir := store.DocumentDir(a.cfg.DataDir, f.OrgUnit)
	if path != "" {
		os.Remove(filepath.Join(dir, path))
	}
	if f.Want.Object != "" {
		os.Remove(filepath.Join(dir, partName(f, f.Want.Object)))
	}
	a.log.Info("document removed from the device", "org_unit", f.OrgUnit, "id", f.RecordID)
	return nil
}

// sweepDocuments removes the files under the documents folder no row
// names: what a crash left between renaming a verified file into place
// and recording it, replaced files whose removal was interrupted, part
// files of downloads no longer wanted, and the folders of units the
// device no longer carries.
func (a *Agent) sweepDocuments(ctx context.Context) {
	rows, err := a.db.DocFiles(ctx)
	if err != nil {
		a.log.Warn("documents: sweep", "err", err)
		return
	}
	keep := map[string]bool{}
	for _, f := range rows {
		dir := store.DocumentDir(a.cfg.DataDir, f.OrgUnit)
		if f.Path != "" {
			keep[filepath.Join(dir, f.Path)] = true
		}
		if f.Want.Object != "" {
			keep[filepath.Join(dir, partName(f, f.Want.Object))] = true
		}
	}
	root := filepath.Join(a.cfg.DataDir, "documents")
	units, _ := os.ReadDir(root)
	for _, u := range units {
		dir := filepath.Join(root, u.Name())
		files, _ := os.ReadDir(dir)
		for _, e := range files {
			if p := filepath.Join(dir, e.Name()); !keep[p] && !e.IsDir() {
				a.log.Info("documents: removing a file no document names", "file", p)
				os.Remove(p)
			}
		}
		if !strings.HasPrefix(u.Name(), ".") {
			os.Remove(dir) // only if empty
		}
	}
}
