package agent_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/fieldsync/fieldsync/agent"
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
