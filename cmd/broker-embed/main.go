// Command broker-embed is fieldsync's server side: an embedded
// NATS/JetStream broker with the org unit streams, the publish API and the
// health endpoint (`run`), a one-command demo (`demo`), synthetic data
// (`seed`), a command-line publisher (`publish`) and the credentials of
// devices and integrations (`device`, `integration`).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/fieldsync/fieldsync/natsauth"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "broker-embed",
		Short:         "fieldsync server side: embedded JetStream broker, provisioning and publish API",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newRunCmd(), newInitCmd(), newHealthcheckCmd(), newDemoCmd(), newSeedCmd(), newPublishCmd(), newTailCmd(),
		newUsersCmd(natsauth.KindDevice, "Device credentials: add, revoke, list"),
		newUsersCmd(natsauth.KindIntegration, "Integration (backend) credentials: add, revoke, list"))
	return root
}
