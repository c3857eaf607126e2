package feed

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"
)

// deadLetterLine is one line FileDeadLetters appends.
type deadLetterLine struct {
	At       time.Time `json:"at"`
	Subject  string    `json:"subject"`
	Version  uint64    `json:"version"`
	EventID  string    `json:"id,omitempty"`
	RecordID string    `json:"record,omitempty"`
	Tries    int       `json:"tries"`
	Error    string    `json:"error"`
}

// FileDeadLetters returns a dead-letter sink ([Options.DeadLetters]) that
// appends one JSON object per line to path (created 0600), synced before
// the subscription moves past the change. Integrations publish nothing on
// the broker, so their dead letters stay with them.
func FileDeadLetters(path string) func(context.Context, DeadLetter) error {
	var mu sync.Mutex
	return func(_ context.Context, d DeadLetter) error {
		l := deadLetterLine{At: time.Now().UTC(), Subject: d.Subject, Version: d.Change.Version, Tries: d.Tries, Error: d.Err.Error()}
		if e := d.Change.Envelope; e != nil {
			l.EventID, l.RecordID = e.EventID, e.RecordID
		}
		b, err := json.Marshal(l)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return fmt.Errorf("feed: dead letters: %w", err)
		}
		if _, err := f.Write(append(b, '\n')); err != nil {
			f.Close()
			return fmt.Errorf("feed: dead letters: %w", err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("feed: dead letters: %w", err)
		}
		return f.Close()
	}
}
