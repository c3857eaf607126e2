package localapi

import (
	"context"
	"log/slog"
	"net"

	"golang.org/x/sync/errgroup"

	"github.com/fieldsync/fieldsync/agent"
)

// RunAgent runs a and serves its local API on its configured address until
// ctx is cancelled or either fails. ready, if not nil, gets the API address.
func RunAgent(ctx context.Context, a *agent.Agent, log *slog.Logger, ready func(net.Addr)) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.Run(gctx) })
	g.Go(func() error { return Serve(gctx, a.Config().APIAddr, Handler(a, log), ready) })
	return g.Wait()
}
