package access_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/access"
	"github.com/fieldsync/fieldsync/events"
)

// TestDirectory runs testdata/directory.txt: put/del lines apply Admin
// changes, the others compare an answer with the expected one after "=>".
func TestDirectory(t *testing.T) {
	f, err := os.Open("testdata/directory.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var d access.Directory
	var changed []string
	var lastErr error
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cmd, want, hasWant := strings.Cut(line, " => ")
		f := strings.Fields(cmd)
		var got string
		switch f[0] {
		case "put", "del":
			changed, lastErr = d.Apply(change(t, f[0], f[1:], cmd))
			continue
		case "changed":
			got = list(changed)
		case "error":
			got = errName(lastErr)
		case "units":
			got = list(d.Units(f[1]))
		case "known":
			got = errName(d.Known(f[1]))
		case "write":
			got = errName(d.MayWrite(f[1], f[2], f[3]))
		default:
			t.Fatalf("line %d: unknown command %q", n, f[0])
		}
		if !hasWant {
			t.Fatalf("line %d: %q has no expected answer", n, line)
		}
		if got != want {
			t.Errorf("line %d: %s => %s, want %s", n, cmd, got, want)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
}

func change(t testing.TB, op string, f []string, line string) *events.Envelope {
	t.Helper()
	unit := f[0]
	if unit == "-" {
		unit = ""
	}
	e := &events.Envelope{OrgUnit: unit, Channel: events.ChannelAdmin, Kind: f[1], RecordID: f[2], Op: events.OpDelete}
	if op == "put" {
		var body map[string]any
		if err := json.Unmarshal([]byte(line[strings.Index(line, "{"):]), &body); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		b, err := msgpack.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		e.Op, e.Body = events.OpUpsert, b
	}
	return e
}

func list(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ",")
}

func errName(err error) string {
	for name, target := range map[string]error{"unknown_user": access.ErrUnknownUser, "not_assigned": access.ErrNotAssigned,
		"disabled": access.ErrDisabled, "role_denied": access.ErrRoleDenied, "bad_record": access.ErrBadRecord} {
		if errors.Is(err, target) {
			return name
		}
	}
	if err != nil {
		return err.Error()
	}
	return "ok"
}

// TestDirectory_Clone: a clone answers as the original did and does not
// change with it.
func TestDirectory_Clone(t *testing.T) {
	var d access.Directory
	d.Apply(change(t, "put", []string{"north", "user_assignment", "a1"}, `put {"user":"alice","role":"lead"}`))
	c := d.Clone()
	d.Apply(change(t, "del", []string{"north", "user_assignment", "a1"}, "del"))
	if got := list(c.Units("alice")); got != "north" {
		t.Fatalf("clone: alice's units %s after the original lost them, want north", got)
	}
	if got := list(d.Units("alice")); got != "-" {
		t.Fatalf("original: alice's units %s, want none", got)
	}
}

// BenchmarkDirectory_MayWrite: one write check in a tenant of 10,000 users
// with three assignments each (go test -bench MayWrite ./access); it reads
// only the writer's assignments.
func BenchmarkDirectory_MayWrite(b *testing.B) {
	var d access.Directory
	for u := range 10000 {
		for i, unit := range []string{"north", "south", "east"} {
			id := fmt.Sprintf("a%d-%d", u, i)
			d.Apply(change(b, "put", []string{unit, "user_assignment", id}, fmt.Sprintf(`put {"user":"u%d","role":"inspector"}`, u)))
		}
	}
	d.Apply(change(b, "put", []string{"-", "role_permission", "r1"}, `put {"role":"inspector","allow":["event:write"]}`))
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if err := d.MayWrite(fmt.Sprintf("u%d", i%10000), "south", "event"); err != nil {
			b.Fatal(err)
		}
	}
}
