// Command openreport is a small backend integration built on package feed:
// it keeps a file-based report of the open events per org unit up to date
// from fieldsync's change feed, with its own read-only credentials.
//
//	broker-embed integration add --name openreport --org north,south --out openreport.creds
//	go run ./examples/openreport --creds openreport.creds --org north,south --out report.json
//
// An event is open unless its body's "status" is "closed" (a deleted one
// is gone). The report and the record versions behind it are written
// (atomically) before each change is acknowledged, so a restart resumes
// where it stopped and a redelivered change is recognised by its version.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/feed"
	"github.com/fieldsync/fieldsync/natsjs"
)

func main() {
	url := flag.String("url", "nats://127.0.0.1:4222", "broker NATS URL")
	creds := flag.String("creds", "openreport.creds", "the integration's credentials file")
	name := flag.String("name", "openreport", "the integration's name (as issued)")
	units := flag.String("org", "", "org units to report on, comma-separated")
	out := flag.String("out", "report.json", "the report file")
	dead := flag.String("dead-letters", "openreport.dead.jsonl", "where changes that cannot be handled go")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *url, *creds, *name, strings.Split(*units, ","), *out, *dead); err != nil {
		fmt.Fprintln(os.Stderr, "openreport:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, url, creds, name string, units []string, out, dead string) error {
	if len(units) == 0 || units[0] == "" {
		return fmt.Errorf("--org: name at least one org unit")
	}
	r, err := openReport(out)
	if err != nil {
		return err
	}
	inbox, err := events.IntegrationInboxPrefix(name)
	if err != nil {
		return err
	}
	c, err := natsjs.Connect(url, natsjs.ConnectOptions{Name: name, Credentials: creds, InboxPrefix: inbox, RetryOnFailedConnect: true})
	if err != nil {
		return err
	}
	defer c.Close()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	sub := feed.New(c, feed.Options{Integration: name, Units: units, Channels: []events.Channel{events.ChannelEvents},
		Kinds: []string{"event"}, DeadLetters: feed.FileDeadLetters(dead), Log: log}, r.apply)
	log.Info("following the change feed", "units", units, "report", out)
	return sub.Run(ctx)
}
