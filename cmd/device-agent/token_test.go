package main

import (
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
)

func TestOpenCmd_Run(t *testing.T) {
	api, _ := startAgent(t)
	out := strings.TrimSpace(mustRun(t, "open", "--api", api))
	u, err := url.Parse(out)
	tok, _ := strings.CutPrefix(u.Fragment, "token=")
	if err != nil || u.Host != api || u.Path != "/" || len(tok) != 64 || u.RawQuery != "" {
		t.Fatalf("open printed %q, want http://%s/#token=<64 hex> (in the fragment, never sent to a server)", out, api)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+api+"/v1/status", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the printed token: GET /v1/status %d, want 200", resp.StatusCode)
	}
}

func TestGlobals_Client_Token(t *testing.T) {
	api, _ := startAgent(t)
	_, err := run(t, "status", "--api", api, "--token-file", filepath.Join(t.TempDir(), "none"))
	if err == nil || !strings.Contains(err.Error(), "no API token file") {
		t.Fatalf("status with a missing token file: %v, want a clear error", err)
	}
	t.Setenv("FIELDSYNC_AGENT_TOKEN", strings.Repeat("0", 64))
	_, err = run(t, "status", "--api", api)
	if err == nil || !strings.Contains(err.Error(), "unauthorized (401)") {
		t.Fatalf("status with a wrong token: %v, want unauthorized", err)
	}
}

// TestGlobals_Client_ConfigAddr: without --api the CLI talks to the
// api_addr of its config, with the token from the config's data folder.
func TestGlobals_Client_ConfigAddr(t *testing.T) {
	api, _ := startAgent(t)
	t.Setenv("FIELDSYNC_AGENT_API", "")
	out := mustRun(t, "open")
	if !strings.HasPrefix(out, "http://"+api+"/#token=") {
		t.Fatalf("open without --api printed %q, want the config's api_addr %s", out, api)
	}
	if out := mustRun(t, "status"); !strings.Contains(out, "tab-cli") {
		t.Fatalf("status without --api: %q", out)
	}
}
