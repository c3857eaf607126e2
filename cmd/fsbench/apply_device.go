package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/localapi"
)

// applyDevice is the device of the apply benchmark: the agent's store
// and its local HTTP API on a loopback port, which the benchmark's app
// side (reader, writer, the user's Apply) goes through. The agent does not
// connect to a broker: the download is staged directly, and the merge the
// agent's merger would run after Apply is run by the benchmark with the
// same call.
type applyDevice struct {
	agent  *agent.Agent
	api    *localapi.Client
	cancel context.CancelFunc
	done   chan error
}

func openApplyDevice(ctx context.Context, dir string) (*applyDevice, error) {
	cfg := agent.Config{DeviceID: "bench-tablet", OrgUnits: []string{benchUnit}, DataDir: dir, APIAddr: "127.0.0.1:0"}
	a, err := agent.Open(ctx, cfg, quietLog())
	if err != nil {
		return nil, err
	}
	return &applyDevice{agent: a}, nil
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// serve starts the local API, as the running agent serves it.
func (d *applyDevice) serve(ctx context.Context) error {
	tok, err := localapi.EnsureToken(localapi.TokenPath(d.agent.Config().DataDir))
	if err != nil {
		return err
	}
	h := localapi.Handler(d.agent, localapi.Options{Token: tok, Log: quietLog()})
	sctx, cancel := context.WithCancel(ctx)
	d.cancel, d.done = cancel, make(chan error, 1)
	ready := make(chan net.Addr, 1)
	go func() { d.done <- localapi.Serve(sctx, "127.0.0.1:0", h, func(a net.Addr) { ready <- a }) }()
	select {
	case addr := <-ready:
		d.api = localapi.NewClient(addr.String(), tok)
		// Calls beyond 16 at a time wait for a connection (their time counts).
		d.api.HTTP = &http.Client{Transport: &http.Transport{MaxConnsPerHost: 16, MaxIdleConnsPerHost: 16, IdleConnTimeout: time.Minute}}
		return nil
	case err := <-d.done:
		return err
	}
}

func (d *applyDevice) close() {
	if d.cancel != nil {
		d.cancel()
		<-d.done
	}
	d.agent.Close()
}
