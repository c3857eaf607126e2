// Command rsschild is the device process of agent's memory test: it runs
// one full sync with the agent's defaults and prints what it synced and its
// peak resident memory as JSON. The test builds it without the race
// detector, which would inflate the figure.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/store"
)

type result struct {
	Records   int     `json:"records"`
	PeakRSSMB float64 `json:"peak_rss_mb"`
	Seconds   float64 `json:"seconds"`
	Error     string  `json:"error,omitempty"`
}

func main() {
	broker := flag.String("broker", "", "broker URL")
	dir := flag.String("dir", "", "data dir")
	unit := flag.String("unit", "", "org unit")
	creds := flag.String("creds", "", "device tab-rss's credentials file")
	flag.Parse()
	var res result
	if err := run(*broker, *creds, *dir, *unit, &res); err != nil {
		res.Error = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(res)
}

func run(broker, creds, dir, unit string, res *result) error {
	ctx := context.Background()
	cfg := agent.Config{DeviceID: "tab-rss", OrgUnits: []string{unit}, BrokerURL: broker, Credentials: creds, DataDir: dir}.WithDefaults()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := agent.Open(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer a.Close()
	inbox, err := events.DeviceInboxPrefix(cfg.DeviceID)
	if err != nil {
		return err
	}
	client, err := natsjs.Connect(broker, natsjs.ConnectOptions{Name: "rss-child", Credentials: creds, InboxPrefix: inbox})
	if err != nil {
		return err
	}
	defer client.Close()
	start := time.Now()
	if _, err := agent.NewSyncer(cfg, client, a.DB(), log).Sync(ctx, agent.ScopeFull); err != nil {
		return err
	}
	res.Seconds = time.Since(start).Seconds()
	for _, ch := range events.Channels {
		n, err := a.DB().Count(ctx, store.Query{Channel: ch, Unit: store.AnyUnit})
		if err != nil {
			return err
		}
		res.Records += n
	}
	res.PeakRSSMB, err = peakRSSMB()
	return err
}

// peakRSSMB reads the process's peak resident set size (Linux VmHWM).
func peakRSSMB() (float64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseFloat(f[1], 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/self/status")
}
