package events_test

import (
	"errors"
	"testing"

	"github.com/fieldsync/fieldsync/events"
)

func TestDeadLetterSubject(t *testing.T) {
	s, err := events.DeadLetterSubject("undecodable")
	if err != nil || s != "fs.dlq.undecodable" {
		t.Fatalf("DeadLetterSubject = %q, %v", s, err)
	}
	if got := events.DeadLetterSubjects(); got != "fs.dlq.>" {
		t.Fatalf("DeadLetterSubjects = %q", got)
	}
	for _, bad := range []string{"", "a.b", "*", ">", "a b"} {
		if _, err := events.DeadLetterSubject(bad); !errors.Is(err, events.ErrBadSubject) {
			t.Errorf("DeadLetterSubject(%q): %v, want ErrBadSubject", bad, err)
		}
	}
}

func TestPublishSubject(t *testing.T) {
	if events.PublishSubject != "fs.api.publish" {
		t.Fatalf("PublishSubject = %q: devices and backends of earlier builds use fs.api.publish", events.PublishSubject)
	}
}
