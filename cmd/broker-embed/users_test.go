package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/broker"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/natsjs"
)

// openBrokerAt opens a broker (units north, south) on data dir dir; the
// returned func closes it.
func openBrokerAt(t *testing.T, dir string) (*broker.Broker, func()) {
	t.Helper()
	cfg := broker.Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", OrgUnits: []string{"north", "south"}}
	cfg.NATS.Port = -1
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := broker.Open(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var once bool
	closeIt := func() {
		if once {
			return
		}
		once = true
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b.Close(ctx)
	}
	t.Cleanup(closeIt)
	return b, closeIt
}

func listUsers(t *testing.T, kind, dir string) []natsauth.User {
	t.Helper()
	out, err := run(t, kind, "list", "--json", "--data-dir", dir)
	if err != nil {
		t.Fatalf("%s list: %v %s", kind, err, out)
	}
	var users []natsauth.User
	if err := json.Unmarshal([]byte(out), &users); err != nil {
		t.Fatalf("%s list --json: %v\n%s", kind, err, out)
	}
	return users
}

// mustPrivateFile reads path and checks it is readable by its owner only
// (0600; Windows has no Unix modes).
func mustPrivateFile(t *testing.T, path string) []byte {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v, want 0600", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustCredsFile(t *testing.T, path string) {
	t.Helper()
	b := mustPrivateFile(t, path)
	if !strings.Contains(string(b), "BEGIN NATS USER JWT") || !strings.Contains(string(b), "BEGIN USER NKEY SEED") {
		t.Fatalf("%s is not a NATS credentials file:\n%s", path, b)
	}
}

func TestDeviceCmd_AddListRevoke(t *testing.T) {
	dir := t.TempDir()
	b, _ := openBrokerAt(t, dir)
	creds := filepath.Join(t.TempDir(), "A.creds")
	out, err := run(t, "device", "add", "--id", "A", "--org", "north,south", "--out", creds, "--data-dir", dir)
	if err != nil || !strings.Contains(out, "issued device A (org units north,south") {
		t.Fatalf("device add: %v %q", err, out)
	}
	mustCredsFile(t, creds)
	if _, err := run(t, "device", "add", "--id", "A", "--org", "north", "--out", filepath.Join(t.TempDir(), "again.creds"), "--data-dir", dir); !errors.Is(err, natsauth.ErrExists) {
		t.Fatalf("adding A twice: %v, want ErrExists", err)
	}
	before, _ := os.ReadFile(creds)
	if out, err := run(t, "device", "add", "--id", "A", "--org", "north", "--out", creds, "--if-missing", "--data-dir", dir); err != nil ||
		!strings.Contains(out, "already issued") {
		t.Fatalf("device add --if-missing with the file there: %v %q", err, out)
	}
	if after, _ := os.ReadFile(creds); string(after) != string(before) {
		t.Fatal("device add --if-missing rewrote the credentials")
	}
	users := listUsers(t, "device", dir)
	if len(users) != 1 || users[0].ID != "A" || users[0].Kind != natsauth.KindDevice || strings.Join(users[0].OrgUnits, ",") != "north,south" ||
		users[0].Revoked() || !strings.HasPrefix(users[0].PublicKey, "U") {
		t.Fatalf("device list: %+v", users)
	}
	if text, err := run(t, "device", "list", "--data-dir", dir); err != nil || !strings.Contains(text, "A  ") || !strings.Contains(text, users[0].PublicKey) {
		t.Fatalf("device list (text): %v\n%s", err, text)
	}

	// The running broker disconnects A when the command revokes it.
	closed := make(chan struct{})
	inbox, _ := events.DeviceInboxPrefix("A")
	nc, err := nats.Connect(b.ClientURL(), nats.UserCredentials(creds), nats.CustomInboxPrefix(inbox), nats.ReconnectWait(100*time.Millisecond),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}), nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		t.Fatalf("connect with the issued credentials: %v", err)
	}
	defer nc.Close()
	if _, err := nc.Request(events.HelloSubject, []byte(`{}`), 5*time.Second); err != nil {
		t.Fatalf("version check with the issued credentials: %v", err)
	}
	out, err = run(t, "device", "revoke", "--id", "A", "--data-dir", dir)
	if err != nil || !strings.Contains(out, "disconnected it") {
		t.Fatalf("device revoke: %v %q", err, out)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("A still connected 5 s after device revoke")
	}
	if nc, err := nats.Connect(b.ClientURL(), nats.UserCredentials(creds)); err == nil {
		nc.Close()
		t.Fatal("revoked credentials connect")
	}
	if users := listUsers(t, "device", dir); len(users) != 1 || !users[0].Revoked() {
		t.Fatalf("device list after revoke: %+v", users)
	}
	if _, err := run(t, "device", "revoke", "--id", "nobody", "--data-dir", dir); !errors.Is(err, natsauth.ErrNotFound) {
		t.Fatalf("revoking an unknown device: %v", err)
	}
}

// TestDeviceCmd_BrokerStopped: the commands work on a stopped broker's
// data dir; it applies them when it starts.
func TestDeviceCmd_BrokerStopped(t *testing.T) {
	dir := t.TempDir()
	_, stop := openBrokerAt(t, dir)
	credsA, credsB := filepath.Join(t.TempDir(), "A.creds"), filepath.Join(t.TempDir(), "B.creds")
	if _, err := run(t, "device", "add", "--id", "A", "--org", "north", "--out", credsA, "--data-dir", dir); err != nil {
		t.Fatal(err)
	}
	stop()
	if _, err := run(t, "device", "add", "--id", "B", "--org", "north", "--out", credsB, "--data-dir", dir); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "device", "revoke", "--id", "A", "--data-dir", dir)
	if err != nil || !strings.Contains(out, "not running") {
		t.Fatalf("revoke while stopped: %v %q", err, out)
	}
	b, _ := openBrokerAt(t, dir)
	if nc, err := nats.Connect(b.ClientURL(), nats.UserCredentials(credsA)); err == nil {
		nc.Close()
		t.Fatal("A, revoked while the broker was stopped, connects after its start")
	}
	nc, err := nats.Connect(b.ClientURL(), nats.UserCredentials(credsB))
	if err != nil {
		t.Fatalf("B, issued while the broker was stopped: %v", err)
	}
	nc.Close()
}

// TestIntegrationCmd_AddListRevoke: an integration reads its units'
// changes through its own consumer and cannot publish.
func TestIntegrationCmd_AddListRevoke(t *testing.T) {
	dir := t.TempDir()
	b, _ := openBrokerAt(t, dir)
	ctx := context.Background()
	if _, err := run(t, "publish", "--url", b.ClientURL(), "--data-dir", dir, "--org", "north", "--channel", "events", "--kind", "event", "--id", "e1", "--body", `{"x":1}`); err != nil {
		t.Fatal(err)
	}
	creds := filepath.Join(t.TempDir(), "crm.creds")
	if out, err := run(t, "integration", "add", "--name", "crm", "--org", "north", "--out", creds, "--data-dir", dir); err != nil {
		t.Fatalf("integration add: %v %q", err, out)
	}
	mustCredsFile(t, creds)
	token := mustTokenFile(t, filepath.Join(filepath.Dir(creds), "crm.token"))
	if users := listUsers(t, "integration", dir); len(users) != 1 || users[0].ID != "crm" || users[0].Kind != natsauth.KindIntegration {
		t.Fatalf("integration list: %+v", users)
	}
	if users := listUsers(t, "device", dir); len(users) != 0 {
		t.Fatalf("device list shows integrations: %+v", users)
	}

	inbox, _ := events.IntegrationInboxPrefix("crm")
	perr := make(chan error, 8)
	nc, err := nats.Connect(b.ClientURL(), nats.UserCredentials(creds), nats.CustomInboxPrefix(inbox),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { perr <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c, err := natsjs.NewClient(nc)
	if err != nil {
		t.Fatal(err)
	}
	durable, _ := natsjs.IntegrationDurableName("crm", events.ChannelEvents)
	cur, err := c.OpenCursor(ctx, natsjs.CursorSpec{Unit: "north", Channel: events.ChannelEvents, Durable: durable})
	if err != nil {
		t.Fatalf("integration opens its consumer on north: %v", err)
	}
	got, err := cur.Next(ctx, 10)
	cur.Close()
	if err != nil || len(got) != 1 || got[0].Subject != "fs.org.north.events.event.e1" {
		t.Fatalf("integration reads north: %+v %v", got, err)
	}
	if err := nc.Publish("fs.org.north.events.event.e1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	select {
	case err := <-perr:
		if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), `Publish to "fs.org.north.events.event.e1"`) {
			t.Fatalf("integration publish: %v, want the server's permission violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("integration published on fs.org.north without a permission error")
	}
	js, _ := jetstream.New(b.Client().Conn())
	if _, err := js.Consumer(ctx, "FS_ORG_south", durable); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("consumer on south: %v", err)
	}

	if code := httpPublish(t, b, token, "north", "h1"); code != http.StatusOK {
		t.Fatalf("HTTP publish with the issued token: %d", code)
	}
	if code := httpPublish(t, b, token, "south", "h2"); code != http.StatusForbidden {
		t.Fatalf("HTTP publish to a unit not the integration's: %d, want 403", code)
	}

	if out, err := run(t, "integration", "revoke", "--name", "crm", "--data-dir", dir); err != nil || !strings.Contains(out, "disconnected it") {
		t.Fatalf("integration revoke: %v %q", err, out)
	}
	if users := listUsers(t, "integration", dir); len(users) != 1 || !users[0].Revoked() {
		t.Fatalf("integration list after revoke: %+v", users)
	}
	if code := httpPublish(t, b, token, "north", "h3"); code != http.StatusUnauthorized {
		t.Fatalf("HTTP publish with a revoked integration's token: %d, want 401", code)
	}
}

// mustTokenFile checks the token file written by integration add (0600,
// one token) and returns the token.
func mustTokenFile(t *testing.T, path string) string {
	t.Helper()
	b := mustPrivateFile(t, path)
	token := strings.TrimSpace(string(b))
	if !strings.HasPrefix(token, "fsi_") || strings.ContainsAny(token, " \n") {
		t.Fatalf("%s does not hold one token: %q", path, b)
	}
	return token
}

// httpPublish posts one change to unit through the broker's HTTP publish
// API with token and returns the status.
func httpPublish(t *testing.T, b *broker.Broker, token, unit, id string) int {
	t.Helper()
	body := `{"org_unit":"` + unit + `","channel":"events","kind":"event","record_id":"` + id + `","body":{"x":1}}`
	req, _ := http.NewRequest(http.MethodPost, b.HTTPURL()+"/v1/publish", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestDeviceCmd_Errors(t *testing.T) {
	dir := t.TempDir()
	openBrokerAt(t, dir)
	out := filepath.Join(t.TempDir(), "x.creds")
	for name, args := range map[string][]string{
		"no org":     {"device", "add", "--id", "A", "--out", out, "--data-dir", dir},
		"dotted id":  {"device", "add", "--id", "a.b", "--org", "north", "--out", out, "--data-dir", dir},
		"bad unit":   {"device", "add", "--id", "A", "--org", "no*rth", "--out", out, "--data-dir", dir},
		"no out":     {"device", "add", "--id", "A", "--org", "north", "--data-dir", dir},
		"no keys":    {"device", "add", "--id", "A", "--org", "north", "--out", out, "--data-dir", t.TempDir()},
		"list empty": {"device", "list", "--data-dir", t.TempDir()},
	} {
		if _, err := run(t, args...); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a failed add left %s: %v", out, err)
	}
	if err := os.WriteFile(out, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "device", "add", "--id", "A", "--org", "north", "--out", out, "--data-dir", dir); err == nil {
		t.Fatal("add over an existing file: no error")
	}
	if b, _ := os.ReadFile(out); string(b) != "keep" {
		t.Fatalf("existing file replaced: %q", b)
	}
	if users := listUsers(t, "device", dir); len(users) != 0 {
		t.Fatalf("failed adds recorded users: %+v", users)
	}
}
