package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/localapi"
)

func TestServiceCmd_Tree(t *testing.T) {
	root := newRoot()
	for _, action := range []string{"install", "uninstall", "start", "stop", "status"} {
		c, args, err := root.Find([]string{"service", action})
		if err != nil || c.Name() != action || c.Parent().Name() != "service" || c.RunE == nil || len(args) != 0 {
			t.Errorf("service %s: found %q (parent %q), args %v, err %v", action, c.Name(), c.Parent().Name(), args, err)
		}
	}
	_, err := run(t, "service", "restart")
	if err == nil || err.Error() != `unknown service action "restart" (want one of: install, uninstall, start, stop, status)` {
		t.Errorf("service restart: %v, want an unknown action error listing the actions", err)
	}
	if _, err := run(t, "service", "status", "now"); err == nil {
		t.Error("service status now: no error for the extra argument")
	}
	if out, err := run(t, "service"); err != nil || !strings.Contains(out, "install records the absolute --config path") {
		t.Errorf("service alone: %v, want its help:\n%s", err, out)
	}
}

// TestServiceCmd_Status asks the real service manager, read-only: the
// answer depends on the machine but must be clear.
func TestServiceCmd_Status(t *testing.T) {
	out, err := run(t, "service", "status")
	t.Logf("service status: %q, %v", out, err)
	if err != nil {
		if !strings.HasPrefix(err.Error(), "service status: ") || strings.TrimPrefix(err.Error(), "service status: ") == "exit status 1" {
			t.Fatalf("service status error %q is not clear", err)
		}
		return
	}
	if !regexp.MustCompile(`^fieldsync-agent: (running|stopped|not installed|unknown)\n$`).MatchString(out) {
		t.Fatalf("service status printed %q", out)
	}
	out = mustRun(t, "service", "status", "--json")
	var got map[string]string
	if err := json.Unmarshal([]byte(out), &got); err != nil || got["action"] != "status" || len(got) != 2 ||
		!regexp.MustCompile(`^(running|stopped|not_installed|unknown)$`).MatchString(got["status"]) {
		t.Fatalf("service status --json printed %q (%v)", out, err)
	}
}

func TestConfigPathFor(t *testing.T) {
	for _, c := range []struct{ goos, programData, want string }{
		{"windows", `C:\ProgramData`, filepath.Join(`C:\ProgramData`, "fieldsync", "device-agent.yaml")},
		{"windows", "", "device-agent.yaml"},
		{"linux", "/srv", "device-agent.yaml"},
	} {
		if got := configPathFor(c.goos, c.programData); got != c.want {
			t.Errorf("configPathFor(%q, %q) = %q, want %q", c.goos, c.programData, got, c.want)
		}
	}
	if os.Getenv("FIELDSYNC_AGENT_CONFIG") == "" {
		if f := newRoot().PersistentFlags().Lookup("config"); f.DefValue != defaultConfigPath() {
			t.Errorf("--config defaults to %q, want %q", f.DefValue, defaultConfigPath())
		}
	}
}

// writeAgentConfig writes an agent config file for a device of unit north
// on broker and returns its path.
func writeAgentConfig(t *testing.T, broker, creds, dataDir string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "device-agent.yaml")
	yaml := fmt.Sprintf("device_id: tab-svc\nuser: bob\norg_units: [north]\nbroker_url: %q\ncredentials: %q\ndata_dir: %q\napi_addr: 127.0.0.1:0\n",
		broker, creds, dataDir)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestServiceProgram_StartStop(t *testing.T) {
	b := fstest.MustStartBroker(t, "north")
	b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "ev-1", map[string]any{"title": "One"}))
	dataDir := t.TempDir()
	prev := logToFile
	logToFile = func() bool { return true } // as a Windows service
	t.Cleanup(func() { logToFile = prev })

	out := &fstest.Output{}
	prg := newProgram(writeAgentConfig(t, b.URL(), b.DeviceCreds(t, "tab-svc", "north"), dataDir), false)
	prg.out, prg.stopTimeout = out, 10*time.Second
	prg.exited = func(err error) { t.Errorf("the agent stopped on its own: %v", err) }
	if err := prg.Start(nil); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			prg.Stop(nil)
		}
	})
	api := out.Wait(t, regexp.MustCompile(`device-agent tab-svc: local API http://(127\.0\.0\.1:\d+)/`), 10*time.Second)[1]

	tok, err := localapi.ReadToken(localapi.TokenPath(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	c := localapi.NewClient(api, tok)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil || st.DeviceID != "tab-svc" {
		t.Fatalf("local API of the service: %+v, %v", st, err)
	}

	begin := time.Now()
	err = prg.Stop(nil)
	stopped = true
	if took := time.Since(begin); err != nil || took > prg.stopTimeout {
		t.Fatalf("Stop: %v after %s (timeout %s)", err, took, prg.stopTimeout)
	}
	if _, err := c.Status(ctx); err == nil {
		t.Error("the local API still answers after Stop")
	}
	log, err := os.ReadFile(filepath.Join(dataDir, logFileName))
	if err != nil || len(log) == 0 {
		t.Errorf("the service wrote no %s in its data folder: %v", logFileName, err)
	}
}

func TestServiceProgram_BadConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(path, []byte("device_id: tab-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	prg := newProgram(path, false)
	prg.run = func(context.Context, string, bool, io.Writer) error {
		t.Error("the agent runs with a bad config")
		return nil
	}
	if err := prg.Start(nil); err == nil || !strings.Contains(err.Error(), "org_units") {
		t.Fatalf("Start with no org units: %v, want the config error", err)
	}
	if err := prg.Stop(nil); err != nil {
		t.Fatalf("Stop after a failed Start: %v", err)
	}
}

func TestServiceProgram_StopTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	prg := newProgram(writeAgentConfig(t, "nats://127.0.0.1:1", "", t.TempDir()), false)
	prg.stopTimeout = 100 * time.Millisecond
	prg.run = func(context.Context, string, bool, io.Writer) error { <-release; return nil } // ignores cancellation
	if err := prg.Start(nil); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	err := prg.Stop(nil)
	if err == nil || !strings.Contains(err.Error(), "did not stop within 100ms") || time.Since(begin) > 5*time.Second {
		t.Fatalf("Stop of a stuck agent: %v after %s", err, time.Since(begin))
	}
}

func TestServiceProgram_ExitedOnItsOwn(t *testing.T) {
	prg := newProgram(writeAgentConfig(t, "nats://127.0.0.1:1", "", t.TempDir()), false)
	failure := errors.New("address in use")
	prg.run = func(context.Context, string, bool, io.Writer) error { return failure }
	exited := make(chan error, 1)
	prg.exited = func(err error) { exited <- err }
	if err := prg.Start(nil); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != failure {
			t.Fatalf("exited with %v, want %v", err, failure)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a failed agent was not reported")
	}
	if err := prg.Stop(nil); err != failure {
		t.Fatalf("Stop after the failure: %v, want %v", err, failure)
	}
}
