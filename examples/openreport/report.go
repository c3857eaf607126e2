package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/feed"
)

// record is what the report remembers of one event.
type record struct {
	Version uint64 `json:"version"`
	Open    bool   `json:"open"`
}

// reportFile is the report as written: the open events per unit, and the
// records behind them with the version each was last changed at.
type reportFile struct {
	OpenPerUnit map[string]int               `json:"open_per_unit"`
	Records     map[string]map[string]record `json:"records"` // unit -> record id -> record
}

// report is the running report; apply is its feed handler.
type report struct {
	mu   sync.Mutex
	path string
	f    reportFile
}

func openReport(path string) (*report, error) {
	r := &report{path: path, f: reportFile{OpenPerUnit: map[string]int{}, Records: map[string]map[string]record{}}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &r.f); err != nil {
		return nil, fmt.Errorf("report %s: %w", path, err)
	}
	return r, nil
}

// apply folds one change into the report and writes it before returning
// (the change is acknowledged after). A change at or below the version the
// report holds is a redelivery and changes nothing.
func (r *report) apply(_ context.Context, c feed.Change) error {
	e := c.Envelope
	r.mu.Lock()
	defer r.mu.Unlock()
	recs := r.f.Records[e.OrgUnit]
	if recs == nil {
		recs = map[string]record{}
		r.f.Records[e.OrgUnit] = recs
	}
	if old, ok := recs[e.RecordID]; ok && c.Version <= old.Version {
		return nil
	}
	open := false
	if e.Op == events.OpUpsert {
		var body struct {
			Status string `msgpack:"status"`
		}
		if err := msgpack.Unmarshal(e.Body, &body); err != nil {
			return fmt.Errorf("event %s: %w", e.RecordID, err)
		}
		open = body.Status != "closed"
	}
	recs[e.RecordID] = record{Version: c.Version, Open: open} // a delete stays as closed, at its version
	n := 0
	for _, rec := range recs {
		if rec.Open {
			n++
		}
	}
	r.f.OpenPerUnit[e.OrgUnit] = n
	return r.write()
}

// write replaces the report file atomically.
func (r *report) write() error {
	b, err := json.MarshalIndent(r.f, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(r.path), "."+filepath.Base(r.path)+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, r.path)
}
