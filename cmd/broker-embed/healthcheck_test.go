package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHealthcheckCmd_Run(t *testing.T) {
	b := startBroker(t)
	out, err := run(t, "healthcheck", "--url", b.HTTPURL()+"/healthz")
	if err != nil || !strings.Contains(out, `"ok"`) {
		t.Fatalf("healthy broker: %q %v", out, err)
	}
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"status":"unavailable","reason":"ingest down"}`, http.StatusServiceUnavailable)
	}))
	defer down.Close()
	if _, err := run(t, "healthcheck", "--url", down.URL+"/healthz"); err == nil || !strings.Contains(err.Error(), "ingest down") {
		t.Fatalf("503: err %v, want unhealthy with the reason", err)
	}
	addr := down.Listener.Addr().String()
	down.Close()
	if _, err := run(t, "healthcheck", "--url", "http://"+addr+"/healthz", "--timeout", "2s"); err == nil {
		t.Fatal("nothing listening: healthy")
	}
}

func TestLoopbackAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0.0.0.0:8222":   "127.0.0.1:8222",
		":8222":          "127.0.0.1:8222",
		"[::]:8222":      "127.0.0.1:8222",
		"10.0.0.5:8222":  "10.0.0.5:8222",
		"127.0.0.1:8222": "127.0.0.1:8222",
	} {
		if got := loopbackAddr(in); got != want {
			t.Errorf("loopbackAddr(%q) = %q, want %q", in, got, want)
		}
	}
}
