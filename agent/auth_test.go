package agent

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
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
	var st Status
	fstest.Eventually(t, 10*time.Second, func() bool {
		var err error
		if st, err = a.Status(ctx); err != nil {
			t.Fatal(err)
		}
		return st.State == StateAuthError
	}, "status authentication_error; last %+v", &st)
	if st.AuthError != natsjs.AuthLoginFailed {
		t.Fatalf("auth error kind %q, want %q", st.AuthError, natsjs.AuthLoginFailed)
	}
	cancel()
	<-done
}

// incompatibleStatus runs an agent against a broker that answers the
// version check with hello (a server the agent cannot sync with), waits
// for the incompatible_server status and checks that nothing was applied.
func incompatibleStatus(t *testing.T, hello events.Hello) Status {
	t.Helper()
	ctx := context.Background()
	b := fstest.MustStartBroker(t, "north")
	if err := b.Hello.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(hello)
	sub, err := b.Client.Conn().Subscribe(events.HelloSubject, func(m *nats.Msg) { m.Respond(data) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	b.MustPublish(t, fstest.Change(t, "north", events.ChannelEvents, "event", "e1", map[string]any{"x": 1}))
	cfg := testConfig("tab1", "north")
	cfg.DataDir, cfg.BrokerURL, cfg.APIAddr = t.TempDir(), b.URL(), "127.0.0.1:0"
	cfg.Credentials = b.DeviceCreds(t, cfg.DeviceID, cfg.OrgUnits...)
	a, err := Open(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done; a.Close() })
	var st Status
	fstest.Eventually(t, 10*time.Second, func() bool {
		var err error
		if st, err = a.Status(ctx); err != nil {
			t.Fatal(err)
		}
		return st.State == StateIncompatible
	}, "status incompatible_server; last %+v", &st)
	if st.Channels[0].Records != 0 || len(st.Channels[0].Units) != 0 {
		t.Fatalf("nothing may be applied: %+v", st.Channels[0])
	}
	return st
}

func TestAgent_Status_IncompatibleServer(t *testing.T) {
	newer := events.LocalHello("broker")
	newer.Protocol, newer.MinPeerProtocol = events.ProtocolVersion+2, events.ProtocolVersion+1 // needs newer agents
	st := incompatibleStatus(t, newer)
	if !strings.Contains(st.LastError, "upgrade the device agent") {
		t.Fatalf("incompatible status should say which side to upgrade: %q", st.LastError)
	}
}
