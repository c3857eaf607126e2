package agent

import (
	"context"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/natsserver"
)

func TestAgent_Status_AuthenticationError(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := natsserver.Start(ctx, natsserver.Config{Port: -1, StoreDir: t.TempDir(), Users: map[string]string{"tab1": "right"}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close(context.Background())
	cfg := testConfig("tab1", "north")
	cfg.DataDir = t.TempDir()
	cfg.BrokerURL = "nats://tab1:wrong@" + srv.ClientURL()[len("nats://"):]
	a, err := Open(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := a.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.State == StateAuthError {
			if st.AuthError != natsjs.AuthLoginFailed {
				t.Fatalf("auth error kind %q, want %q", st.AuthError, natsjs.AuthLoginFailed)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %s (%s) after 10s, want authentication_error", st.State, st.LastError)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	<-done
}
