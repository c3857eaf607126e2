package main

import (
	"strings"
	"testing"
)

func TestHealthcheckCmd_Run(t *testing.T) {
	api, _ := startAgent(t)
	if out := mustRun(t, "healthcheck", "--synced", "--api", api); !strings.Contains(out, "healthy: tab-cli, state up_to_date") {
		t.Fatalf("healthcheck of a synced agent: %q", out)
	}
	t.Setenv("FIELDSYNC_AGENT_TOKEN", "any")
	if _, err := run(t, "healthcheck", "--api", "127.0.0.1:1", "--timeout", "2s"); err == nil || !strings.Contains(err.Error(), "unhealthy") {
		t.Fatalf("healthcheck against no agent: %v", err)
	}
}
