package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/localapi"
)

func newRunCmd(g *globals) *cobra.Command {
	var debug bool
	cmd := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Run the agent: sync with the broker and serve the local API and status page",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if runningAsService() {
				return runService(g.config, debug)
			}
			return runAgent(cmd.Context(), g.config, debug, cmd.OutOrStdout())
		},
	}
	cmd.Flags().BoolVar(&debug, "debug", false, "debug logging")
	return cmd
}

// runAgent runs the agent of the config file cfgPath with its local API
// until ctx is cancelled or it fails; out gets a line with the API address
// once it listens. It logs to stderr, or to agent.log in the data folder
// when logToFile says so (as a Windows service).
func runAgent(ctx context.Context, cfgPath string, debug bool, out io.Writer) (err error) {
	cfg, err := agent.LoadConfig(cfgPath)
	if err != nil {
		return err
	}
	toFile := logToFile()
	log, closeLog, err := openLog(cfg.DataDir, debug, toFile)
	if err != nil {
		return err
	}
	defer closeLog()
	if toFile {
		// The log file says why the agent stopped, after what led to it.
		defer func() {
			if err != nil {
				log.Error("agent stopped", "err", err)
			}
		}()
	}
	a, err := agent.Open(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer a.Close()
	return localapi.RunAgent(ctx, a, log, func(addr net.Addr) {
		fmt.Fprintf(out, "device-agent %s: local API http://%s/ (broker %s); open the status page with: device-agent open\n", cfg.DeviceID, addr, cfg.BrokerURL)
	})
}

// logFileName is the agent's log in its data folder when it runs as a
// Windows service, whose stderr goes nowhere.
const logFileName = "agent.log"

// logToFile reports whether runAgent logs to logFileName instead of stderr
// (a variable for tests).
var logToFile = runningAsService

// openLog returns the agent's logger, writing to stderr or to logFileName
// in dataDir, and a function that closes its file.
func openLog(dataDir string, debug, toFile bool) (*slog.Logger, func(), error) {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	if debug {
		opts.Level = slog.LevelDebug
	}
	if !toFile {
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), func() {}, nil
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, nil, err
	}
	f, err := os.OpenFile(filepath.Join(dataDir, logFileName), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, err
	}
	return slog.New(slog.NewTextHandler(f, opts)), func() { f.Close() }, nil
}
