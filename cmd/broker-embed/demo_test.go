package main

import (
	"bytes"
	"context"
	"net/http"
	"regexp"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the demo's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDemo_Run runs `make demo`'s command and opens the status page
// address it prints: the token in it lets a person in.
func TestDemo_Run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- runDemo(ctx, out, demoOpts{dataDir: t.TempDir(), apiAddr: "127.0.0.1:0"}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("demo: %v", err)
		}
	}()
	page := regexp.MustCompile(`open (http://(127\.0\.0\.1:\d+)/#token=([0-9a-f]{64})) in a browser`)
	deadline := time.Now().Add(30 * time.Second)
	var m []string
	for m = page.FindStringSubmatch(out.String()); m == nil; m = page.FindStringSubmatch(out.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("demo printed no status page address with a token:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
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
