package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/fieldsync/fieldsync/broker"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsauth"
)

type connectOpts struct {
	devices  int
	parallel int
}

func newConnectCmd() *cobra.Command {
	var o connectOpts
	cmd := &cobra.Command{
		Use:   "connect",
		Short: "N devices connecting to the broker with their own credentials, next to the same without auth: time and broker CPU",
		RunE:  func(cmd *cobra.Command, _ []string) error { return runConnect(cmd.Context(), o) },
	}
	cmd.Flags().IntVar(&o.devices, "devices", 1000, "devices connecting")
	cmd.Flags().IntVar(&o.parallel, "parallel", 100, "connections opened at a time")
	return cmd
}

// connectRun is one run's figures.
type connectRun struct {
	wall    time.Duration // from the first connect to the last connected
	brokerS float64       // CPU seconds of the broker's process meanwhile
}

func runConnect(ctx context.Context, o connectOpts) error {
	fmt.Printf("connect benchmark: %d devices (one process, %d connections opened at a time, each with its own credentials and inbox prefix) connect to a broker in this process; the broker's CPU is this process's\n",
		o.devices, o.parallel)
	var runs [2]connectRun
	for i, mode := range []string{broker.AuthJWT, broker.AuthNone} {
		r, err := connectOnce(ctx, o, mode)
		if err != nil {
			return fmt.Errorf("auth %s: %w", mode, err)
		}
		runs[i] = r
	}
	for i, mode := range []string{"jwt (credentials, permissions)", "none"} {
		r := runs[i]
		fmt.Printf("auth %-31s all %d connected in %7.2f s (%6.0f connects/s), broker CPU %6.2f s (%.2f ms per connect)\n",
			mode, o.devices, r.wall.Seconds(), float64(o.devices)/r.wall.Seconds(), r.brokerS, r.brokerS*1000/float64(o.devices))
	}
	fmt.Printf("auth costs %.2fx the broker CPU of no auth per connect\n", runs[0].brokerS/max(runs[1].brokerS, 1e-9))
	return nil
}

// connectOnce starts a broker with auth mode, issues the devices their
// credentials (jwt) and times a child process connecting them all.
func connectOnce(ctx context.Context, o connectOpts, mode string) (connectRun, error) {
	dir, err := os.MkdirTemp("", "fsbench-connect-")
	if err != nil {
		return connectRun{}, err
	}
	defer os.RemoveAll(dir)
	cfg := broker.Config{DataDir: filepath.Join(dir, "broker"), HTTPAddr: "127.0.0.1:0", OrgUnits: []string{benchUnit}, Auth: mode}
	cfg.NATS.Port = -1
	b, err := broker.Open(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return connectRun{}, err
	}
	defer b.Close(context.Background())
	credsDir := filepath.Join(dir, "creds")
	if err := os.Mkdir(credsDir, 0o700); err != nil {
		return connectRun{}, err
	}
	if mode == broker.AuthJWT {
		for i := range o.devices {
			c, _, err := b.Authority().AddDevice(connectDevice(i), []string{benchUnit})
			if err != nil {
				return connectRun{}, err
			}
			if err := natsauth.WriteCreds(filepath.Join(credsDir, connectDevice(i)+".creds"), c); err != nil {
				return connectRun{}, err
			}
		}
	}
	self, err := os.Executable()
	if err != nil {
		return connectRun{}, err
	}
	child := exec.CommandContext(ctx, self, "connect-clients", "--url", b.ClientURL(), "--devices", fmt.Sprint(o.devices),
		"--parallel", fmt.Sprint(o.parallel), "--creds-dir", credsDir, "--auth", mode)
	child.Stderr = os.Stderr
	stdin, err := child.StdinPipe()
	if err != nil {
		return connectRun{}, err
	}
	out, err := child.StdoutPipe()
	if err != nil {
		return connectRun{}, err
	}
	if err := child.Start(); err != nil {
		return connectRun{}, err
	}
	defer child.Wait()
	defer stdin.Close() // the child disconnects and exits
	cpu0 := processCPU()
	var res struct {
		Seconds float64 `json:"seconds"`
		Error   string  `json:"error"`
	}
	if err := json.NewDecoder(bufio.NewReader(out)).Decode(&res); err != nil {
		return connectRun{}, fmt.Errorf("connect-clients: %w", err)
	}
	if res.Error != "" {
		return connectRun{}, fmt.Errorf("connect-clients: %s", res.Error)
	}
	return connectRun{wall: time.Duration(res.Seconds * float64(time.Second)), brokerS: processCPU() - cpu0}, nil
}

func connectDevice(i int) string { return fmt.Sprintf("cdev%04d", i) }

// processCPU returns this process's user+system CPU seconds so far.
func processCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// newConnectClientsCmd is the devices' side: it connects them all, prints
// {"seconds": ...} from the first connect to the last, and holds the
// connections until stdin closes.
func newConnectClientsCmd() *cobra.Command {
	var url, credsDir, mode string
	var devices, parallel int
	cmd := &cobra.Command{
		Use:    "connect-clients",
		Hidden: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conns, secs, err := connectAll(cmd.Context(), url, credsDir, mode, devices, parallel)
			defer func() {
				for _, nc := range conns {
					if nc != nil {
						nc.Close()
					}
				}
			}()
			msg := map[string]any{"seconds": secs}
			if err != nil {
				msg["error"] = err.Error()
			}
			json.NewEncoder(os.Stdout).Encode(msg)
			io.Copy(io.Discard, os.Stdin)
			return nil
		},
	}
	cmd.Flags().StringVar(&url, "url", "", "")
	cmd.Flags().StringVar(&credsDir, "creds-dir", "", "")
	cmd.Flags().StringVar(&mode, "auth", broker.AuthJWT, "")
	cmd.Flags().IntVar(&devices, "devices", 1000, "")
	cmd.Flags().IntVar(&parallel, "parallel", 100, "")
	return cmd
}

// connectAll connects devices clients, parallel at a time, as agents do
// (credentials and the device's inbox prefix with auth), and checks each
// with a round trip.
func connectAll(ctx context.Context, url, credsDir, mode string, devices, parallel int) ([]*nats.Conn, float64, error) {
	conns := make([]*nats.Conn, devices)
	var mu sync.Mutex
	g, _ := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	start := time.Now()
	for i := range devices {
		g.Go(func() error {
			dev := connectDevice(i)
			opts := []nats.Option{nats.Name(dev), nats.Timeout(30 * time.Second)}
			if mode == broker.AuthJWT {
				inbox, err := events.DeviceInboxPrefix(dev)
				if err != nil {
					return err
				}
				opts = append(opts, nats.UserCredentials(filepath.Join(credsDir, dev+".creds")), nats.CustomInboxPrefix(inbox))
			}
			nc, err := nats.Connect(url, opts...)
			if err != nil {
				return fmt.Errorf("%s: %w", dev, err)
			}
			mu.Lock()
			conns[i] = nc
			mu.Unlock()
			return nc.FlushTimeout(30 * time.Second) // the server has processed the CONNECT
		})
	}
	err := g.Wait()
	return conns, time.Since(start).Seconds(), err
}
