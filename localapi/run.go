package localapi

import (
	"context"
	"log/slog"
	"net"

	"golang.org/x/sync/errgroup"

	"github.com/fieldsync/fieldsync/agent"
)

// RunAgent runs a and serves its local API on its configured address until
// ctx is cancelled or either fails. The API token is read from, or first
// written to, [TokenPath] of the agent's data folder. ready, if not nil,
// gets the API address.
func RunAgent(ctx context.Context, a *agent.Agent, log *slog.Logger, ready func(net.Addr)) error {
	tok, err := EnsureToken(TokenPath(a.Config().DataDir), a.Config().APITokenReaders...)
	if err != nil {
		return err
	}
	h := Handler(a, Options{Token: tok, Log: log, Metrics: a.Metrics()})
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.Run(gctx) })
	g.Go(func() error { return Serve(gctx, a.Config().APIAddr, h, ready) })
	return g.Wait()
}
