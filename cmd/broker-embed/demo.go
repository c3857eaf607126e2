package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/broker"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/localapi"
	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/publish"
	"github.com/fieldsync/fieldsync/seed"
)

type demoOpts struct {
	dataDir string
	apiAddr string
	every   time.Duration
	verbose bool
}

func newDemoCmd() *cobra.Command {
	var o demoOpts
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run broker + demo data for two org units + a device agent that syncs; Ctrl-C stops",
		RunE:  func(cmd *cobra.Command, _ []string) error { return runDemo(cmd.Context(), cmd.OutOrStdout(), o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.dataDir, "data-dir", "", "keep broker and device data here (default: a temporary directory, removed at exit)")
	f.StringVar(&o.apiAddr, "api-addr", "127.0.0.1:7480", "device agent local API / status page address")
	f.DurationVar(&o.every, "every", 15*time.Second, "publish a new server-side change this often (0: never)")
	f.BoolVar(&o.verbose, "verbose", false, "show the components' logs")
	return cmd
}

func runDemo(ctx context.Context, out io.Writer, o demoOpts) error {
	if o.dataDir == "" {
		dir, err := os.MkdirTemp("", "fieldsync-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		o.dataDir = dir
	}
	logOut := io.Discard
	if o.verbose {
		logOut = os.Stderr
	}
	log := slog.New(slog.NewTextHandler(logOut, nil))
	units := []string{"north", "south"}
	bcfg := broker.Config{DataDir: filepath.Join(o.dataDir, "broker"), HTTPAddr: "127.0.0.1:0", OrgUnits: units}
	bcfg.NATS.Port = -1
	b, err := broker.Open(ctx, bcfg, log)
	if err != nil {
		return err
	}
	defer b.Close(context.Background())
	fmt.Fprintf(out, "broker     nats %s, health %s/healthz\n", b.ClientURL(), b.HTTPURL())
	if err := publishDemo(ctx, out, b.Client(), units); err != nil {
		return err
	}
	creds, err := demoCreds(ctx, b, filepath.Join(o.dataDir, "demo-tablet.creds"), "demo-tablet", units)
	if err != nil {
		return err
	}
	acfg := agent.Config{DeviceID: "demo-tablet", User: "alice", OrgUnits: units, BrokerURL: b.ClientURL(), Credentials: creds,
		DataDir: filepath.Join(o.dataDir, "device"), APIAddr: o.apiAddr, SyncInterval: 10 * time.Second}
	a, err := agent.Open(ctx, acfg, log)
	if err != nil {
		return err
	}
	defer a.Close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return localapi.RunAgent(gctx, a, log, func(addr net.Addr) {
			tokenFile := localapi.TokenPath(acfg.DataDir)
			tok, _ := localapi.ReadToken(tokenFile)
			cli := fmt.Sprintf("device-agent --api %s --token-file %s", addr, tokenFile)
			fmt.Fprintf(out, "device     demo-tablet (org units north, south), delta sync every 10s\n")
			fmt.Fprintf(out, "status     open http://%s/#token=%s in a browser, or: %s status\n", addr, tok, cli)
			fmt.Fprintf(out, "records    %s records --channel events\n", cli)
		})
	})
	g.Go(func() error { return narrate(gctx, out, a, b.Client(), units, o.every) })
	err = g.Wait()
	fmt.Fprintln(out, "demo stopped")
	return err
}

// demoCreds returns the credentials file of the demo's device at path,
// issuing them as `broker-embed device add` would when the file is not
// there yet (a demo kept with --data-dir reuses its device's).
func demoCreds(ctx context.Context, b *broker.Broker, path, device string, units []string) (string, error) {
	a := b.Authority()
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	creds, _, err := a.AddDevice(device, units)
	if errors.Is(err, natsauth.ErrExists) { // its file was removed: new credentials
		if _, err = a.Revoke(natsauth.KindDevice, device); err == nil {
			err = a.PushAccount(ctx, b.ClientURL())
		}
		if err == nil {
			creds, _, err = a.AddDevice(device, units)
		}
	}
	if err != nil {
		return "", err
	}
	return path, natsauth.WriteCreds(path, creds)
}

func publishDemo(ctx context.Context, out io.Writer, c *natsjs.Client, units []string) error {
	data := seed.Demo(units)
	i := 0
	n, err := c.Publisher().PublishAll(ctx, func() (*events.Envelope, bool) {
		if i >= len(data) {
			return nil, false
		}
		i++
		return data[i-1], true
	}, 100)
	fmt.Fprintf(out, "server     published %d demo changes (with updates and deletes) for org units north, south and tenant-wide admin\n", n)
	if err != nil {
		return err
	}
	return publishDemoDocuments(ctx, out, c, units)
}

// publishDemoDocuments publishes the demo's documents with their content
// through the document API's service (content in each unit's bucket).
func publishDemoDocuments(ctx context.Context, out io.Writer, c *natsjs.Client, units []string) error {
	svc := publish.NewService(c.Publisher(), nil)
	docs := seed.DemoDocuments(units)
	for _, d := range docs {
		resp := svc.PublishDocument(ctx, publish.DocumentRequest{OrgUnit: d.OrgUnit, RecordID: d.ID, Name: d.Name,
			ContentType: d.ContentType, Body: d.Meta}, bytes.NewReader(d.Content))
		if resp.Error != nil {
			return fmt.Errorf("demo document %s/%s: %w", d.OrgUnit, d.ID, resp.Error)
		}
	}
	fmt.Fprintf(out, "server     published %d demo documents with content (download them from the status page or with device-agent download --all)\n", len(docs))
	return nil
}
