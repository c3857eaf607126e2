package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"time"

	"github.com/spf13/cobra"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/localapi"
)

// newWriteAgentCmd is one device of the write benchmark in its own
// process: the full agent with its defaults and its local HTTP API, as
// device-agent runs it. It prints {"addr": ...} once the API listens and
// runs until interrupted.
func newWriteAgentCmd() *cobra.Command {
	var url, creds, dir, device, unit string
	cmd := &cobra.Command{
		Use:    "write-agent",
		Hidden: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			cfg := agent.Config{DeviceID: device, OrgUnits: []string{unit}, BrokerURL: url, Credentials: creds, DataDir: dir,
				APIAddr: "127.0.0.1:0"}.WithDefaults()
			a, err := agent.Open(cmd.Context(), cfg, log)
			if err != nil {
				return err
			}
			defer a.Close()
			if path := os.Getenv("FS_AGENT_CPUPROFILE"); path != "" { // profiling the device side
				f, err := os.Create(path + "." + device)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			return localapi.RunAgent(cmd.Context(), a, log, func(addr net.Addr) {
				json.NewEncoder(os.Stdout).Encode(map[string]string{"addr": addr.String()})
			})
		},
	}
	cmd.Flags().StringVar(&url, "broker", "", "")
	cmd.Flags().StringVar(&creds, "creds", "", "")
	cmd.Flags().StringVar(&dir, "dir", "", "")
	cmd.Flags().StringVar(&device, "device", "", "")
	cmd.Flags().StringVar(&unit, "unit", "", "")
	return cmd
}

// agentProc is a running write-agent process and a client of its API.
type agentProc struct {
	device string
	cmd    *exec.Cmd
	api    *localapi.Client
	exited chan error
}

// startAgentProc starts a write-agent process for device and waits for its
// API to answer.
func startAgentProc(ctx context.Context, url, creds, dir, device string) (*agentProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dataDir := filepath.Join(dir, device)
	cmd := exec.Command(self, "write-agent", "--broker", url, "--creds", creds, "--dir", dataDir, "--device", device, "--unit", benchUnit)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &agentProc{device: device, cmd: cmd, exited: make(chan error, 1)}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		var msg struct {
			Addr string `json:"addr"`
		}
		if sc.Scan() && json.Unmarshal(sc.Bytes(), &msg) == nil {
			ready <- msg.Addr
		}
		for sc.Scan() {
		}
		p.exited <- cmd.Wait()
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-p.exited:
		return nil, fmt.Errorf("%s exited before its API listened: %v", device, err)
	case <-time.After(30 * time.Second):
		p.stop()
		return nil, fmt.Errorf("%s: API not listening after 30 s", device)
	case <-ctx.Done():
		p.stop()
		return nil, ctx.Err()
	}
	tok, err := localapi.ReadToken(localapi.TokenPath(dataDir))
	if err != nil {
		p.stop()
		return nil, err
	}
	p.api = localapi.NewClient(addr, tok)
	// Calls beyond 64 at a time wait for a connection (their time counts).
	p.api.HTTP = &http.Client{Transport: &http.Transport{MaxConnsPerHost: 64, MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute}}
	return p, nil
}

// waitSynced waits until the agent's initial sync completed (the app can
// work on local data).
func (p *agentProc) waitSynced(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := p.api.Status(ctx)
		if err == nil && st.State == agent.StateUpToDate && !st.OnlineOnly && st.Connected {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not synced after 60 s: %+v %v", p.device, st, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop interrupts the process and waits for it to exit (killing it after
// 10 s).
func (p *agentProc) stop() {
	if p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}
