package main

import (
	"encoding/json"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/store"
)

// newAgentChildCmd is the device side of the benchmark, in its own process
// so its memory is measured alone: a full initial sync with the agent's
// code and defaults, then a query through the agent.
func newAgentChildCmd() *cobra.Command {
	var url, dir, unit string
	cmd := &cobra.Command{
		Use:    "agent-child",
		Hidden: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfg := agent.Config{DeviceID: "bench-tablet", OrgUnits: []string{unit}, BrokerURL: url, DataDir: dir}.WithDefaults()
			a, err := agent.Open(ctx, cfg, nil)
			if err != nil {
				return err
			}
			defer a.Close()
			client, err := natsjs.Connect(url, natsjs.ConnectOptions{Name: "bench-agent"})
			if err != nil {
				return err
			}
			defer client.Close()
			if path := os.Getenv("FS_AGENT_CPUPROFILE"); path != "" { // profiling the device side
				f, err := os.Create(path)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			start := time.Now()
			if _, err := agent.NewSyncer(cfg, client, a.DB(), nil).Sync(ctx, agent.ScopeFull); err != nil {
				return err
			}
			res := childResult{Seconds: time.Since(start).Seconds(), PeakRSSMB: peakRSSMB()}
			for _, ch := range events.Channels {
				n, err := a.DB().Count(ctx, store.Query{Channel: ch, Unit: store.AnyUnit})
				if err != nil {
					return err
				}
				res.Records += n
			}
			recs, err := a.Records(ctx, store.Query{Channel: events.ChannelEvents, Unit: unit, Kind: "event", Limit: 50})
			if err != nil {
				return err
			}
			res.Queried = len(recs)
			res.PeakRSSMB = peakRSSMB()
			return json.NewEncoder(os.Stdout).Encode(res)
		},
	}
	cmd.Flags().StringVar(&url, "broker", "", "")
	cmd.Flags().StringVar(&dir, "dir", "", "")
	cmd.Flags().StringVar(&unit, "unit", "", "")
	return cmd
}

// peakRSSMB reads the process's peak resident set size (Linux VmHWM).
func peakRSSMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return -1
}
