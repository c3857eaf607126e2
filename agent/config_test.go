package agent_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/events"
)

func TestLoadConfig_DataDir(t *testing.T) {
	dir := t.TempDir()
	abs := filepath.Join(t.TempDir(), "abs")
	def := filepath.Join(dir, agent.DefaultDataDir())
	if filepath.IsAbs(agent.DefaultDataDir()) {
		def = agent.DefaultDataDir()
	}
	for yaml, want := range map[string]string{
		"data_dir: data\n":        filepath.Join(dir, "data"),
		"data_dir: " + abs + "\n": abs,
		"":                        def,
	} {
		path := filepath.Join(dir, "device-agent.yaml")
		if err := os.WriteFile(path, []byte("device_id: tab-1\norg_units: [north]\n"+yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := agent.LoadConfig(path)
		if err != nil || cfg.DataDir != want {
			t.Errorf("config %q: data dir %q (%v), want %q (relative to the config file)", yaml, cfg.DataDir, err, want)
		}
	}
}

func TestLoadConfig_Credentials(t *testing.T) {
	dir := t.TempDir()
	abs := filepath.Join(t.TempDir(), "tab-1.creds")
	for yaml, want := range map[string]string{
		"credentials: tab-1.creds\n": filepath.Join(dir, "tab-1.creds"),
		"credentials: " + abs + "\n": abs,
		"":                           "",
	} {
		path := filepath.Join(dir, "device-agent.yaml")
		if err := os.WriteFile(path, []byte("device_id: tab-1\norg_units: [north]\n"+yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := agent.LoadConfig(path)
		if err != nil || cfg.Credentials != want {
			t.Errorf("config %q: credentials %q (%v), want %q (relative to the config file)", yaml, cfg.Credentials, err, want)
		}
	}
}

func TestLoadConfig_CA(t *testing.T) {
	dir := t.TempDir()
	abs := filepath.Join(t.TempDir(), "ca.pem")
	for yaml, want := range map[string]string{
		"ca: ca.pem\n":      filepath.Join(dir, "ca.pem"),
		"ca: " + abs + "\n": abs,
		"":                  "",
	} {
		path := filepath.Join(dir, "device-agent.yaml")
		if err := os.WriteFile(path, []byte("device_id: tab-1\norg_units: [north]\nbroker_url: tls://sync.example:4222\n"+yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := agent.LoadConfig(path)
		if err != nil || cfg.CA != want {
			t.Errorf("config %q: ca %q (%v), want %q (relative to the config file)", yaml, cfg.CA, err, want)
		}
	}
}

func TestLoadConfig_Reader(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "device-agent.yaml")
	write := func(extra string) (agent.Config, error) {
		if err := os.WriteFile(path, []byte("device_id: tab-1\norg_units: [north]\n"+extra), 0o600); err != nil {
			t.Fatal(err)
		}
		return agent.LoadConfig(path)
	}
	cfg, err := write("")
	if err != nil {
		t.Fatal(err)
	}
	if r := cfg.Reader(); r.Kinds != nil || r.SchemaVersion() != events.SchemaVersion {
		t.Fatalf("default reader %+v: want every kind and this build's schema", r)
	}
	cfg, err = write("kinds: {events: [event, action]}\nmax_schema_version: 1\n")
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Reader()
	if !r.Kinds.Accepts(events.ChannelEvents, "action") || r.Kinds.Accepts(events.ChannelEvents, "risk") || !r.Kinds.Accepts(events.ChannelAdmin, "anything") {
		t.Fatalf("kinds setting read as %+v", r.Kinds)
	}
	for _, bad := range []string{"kinds: {gossip: [x]}\n", "kinds: {events: [a.b]}\n", "max_schema_version: 99\n", "max_schema_version: -1\n"} {
		if _, err := write(bad); err == nil {
			t.Errorf("config %q accepted", bad)
		}
	}
}
