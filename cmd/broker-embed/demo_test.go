package main

import (
	"context"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/internal/fstest"
)

// TestDemo_Run runs `make demo`'s command and opens the status page
// address it prints: the token in it lets a person in.
func TestDemo_Run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	out := &fstest.Output{}
	done := make(chan error, 1)
	go func() { done <- runDemo(ctx, out, demoOpts{dataDir: t.TempDir(), apiAddr: "127.0.0.1:0"}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("demo: %v", err)
		}
	}()
	page := regexp.MustCompile(`open (http://(127\.0\.0\.1:\d+)/#token=([0-9a-f]{64})) in a browser`)
	m := out.Wait(t, page, 30*time.Second)
	for path, want := range map[string]int{"/": http.StatusOK, "/v1/status": http.StatusOK} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+m[2]+path, nil)
		req.Header.Set("Authorization", "Bearer "+m[3])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET %s with the printed token: %d, want %d", path, resp.StatusCode, want)
		}
	}
}
