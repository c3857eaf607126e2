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
	if err != nil || u.Host != api || len(u.Query().Get("token")) != 64 {
		t.Fatalf("open printed %q, want http://%s/?token=<64 hex>", out, api)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(out)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 || !resp.Cookies()[0].HttpOnly {
		t.Fatalf("GET %s: %d cookies %v, want 303 with an HttpOnly token cookie", out, resp.StatusCode, resp.Cookies())
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
