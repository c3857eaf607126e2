package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/kardianos/service"

	"github.com/fieldsync/fieldsync/agent"
)

const (
	serviceName        = "fieldsync-agent"
	serviceDisplayName = "fieldsync device agent"
	// serviceStopTimeout bounds Stop: Windows gives a stopping service
	// about 20s (5s at shutdown) before it kills it.
	serviceStopTimeout = 15 * time.Second
)

var serviceActions = []string{"install", "uninstall", "start", "stop", "status"}

// runningAsService reports whether the Windows service manager started
// this process. Elsewhere systemd and launchd run `device-agent run` as a
// plain process that stops on SIGTERM and logs to stderr.
func runningAsService() bool {
	return runtime.GOOS == "windows" && !service.Interactive()
}

// serviceConfig describes the service that runs `device-agent run --config
// cfgPath` (an absolute path: a Windows service starts in System32).
func serviceConfig(cfgPath string) *service.Config {
	return &service.Config{
		Name:        serviceName,
		DisplayName: serviceDisplayName,
		Description: "Keeps this device's fieldsync data in sync with the server and serves the local API.",
		Arguments:   []string{"run", "--config", cfgPath},
		Option: service.KeyValue{
			// Windows: restart a failed agent after 10s, counting failures over a day.
			"OnFailure":              "restart",
			"OnFailureDelayDuration": "10s",
			"OnFailureResetPeriod":   24 * 60 * 60,
		},
	}
}

// program runs the agent for the service manager: Start launches runAgent
// and returns at once, Stop cancels it and waits at most stopTimeout.
type program struct {
	cfgPath     string
	debug       bool
	out         io.Writer // the line with the API address; nil: discarded
	stopTimeout time.Duration
	// exited, if set, gets the error of an agent that stopped on its own
	// rather than through Stop.
	exited func(error)
	// run is runAgent (tests replace it).
	run func(ctx context.Context, cfgPath string, debug bool, out io.Writer) error

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func newProgram(cfgPath string, debug bool) *program {
	return &program{cfgPath: cfgPath, debug: debug, out: io.Discard, stopTimeout: serviceStopTimeout, run: runAgent}
}

func (p *program) Start(service.Service) error {
	// A config that does not load fails the start itself, so that the
	// service manager reports it.
	if _, err := agent.LoadConfig(p.cfgPath); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	p.mu.Lock()
	p.cancel, p.done, p.err = cancel, done, nil
	p.mu.Unlock()
	go func() {
		defer close(done)
		err := p.run(ctx, p.cfgPath, p.debug, p.out)
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		if ctx.Err() == nil && p.exited != nil {
			p.exited(err)
		}
	}()
	return nil
}

func (p *program) Stop(service.Service) error {
	p.mu.Lock()
	cancel, done := p.cancel, p.done
	p.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
	case <-time.After(p.stopTimeout):
		return fmt.Errorf("the agent did not stop within %s", p.stopTimeout)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if errors.Is(p.err, context.Canceled) {
		return nil
	}
	return p.err
}

// runService runs the agent under the Windows service manager until it
// stops the service. The agent logs to agent.log in its data folder; start
// and stop errors also go to the Windows event log.
func runService(cfgPath string, debug bool) error {
	prg := newProgram(cfgPath, debug)
	s, err := service.New(prg, serviceConfig(cfgPath))
	if err != nil {
		return err
	}
	logger, err := s.Logger(nil)
	if err != nil {
		return err
	}
	prg.out = loggerWriter{logger}
	prg.exited = func(err error) {
		if err == nil {
			err = errors.New("no error")
		}
		logger.Errorf("the agent stopped on its own: %v", err)
		os.Exit(1) // the service manager sees a failure and restarts it
	}
	if err := s.Run(); err != nil {
		logger.Error(err)
		return err
	}
	return nil
}

// loggerWriter writes each line written to it to a service logger.
type loggerWriter struct{ l service.Logger }

func (w loggerWriter) Write(b []byte) (int, error) {
	return len(b), w.l.Info(strings.TrimSpace(string(b)))
}
