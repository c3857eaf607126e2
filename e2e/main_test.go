package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/broker"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/store"
)

// TestMain lets the test binary play a component in a child process.
func TestMain(m *testing.M) {
	switch os.Getenv("FS_E2E_ROLE") {
	case "broker":
		os.Exit(runBroker())
	case "uploader":
		os.Exit(runUploader())
	case "applier":
		os.Exit(runApplier())
	}
	os.Exit(m.Run())
}

// runBroker runs broker-embed's server side on FS_DIR and FS_PORT until
// killed.
func runBroker() int {
	cfg := broker.Config{DataDir: os.Getenv("FS_DIR"), HTTPAddr: "127.0.0.1:0", OrgUnits: []string{"north"}}
	fmt.Sscan(os.Getenv("FS_PORT"), &cfg.NATS.Port)
	b, err := broker.Open(context.Background(), cfg, nil)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("ready", b.ClientURL())
	select {}
}

// uploaderDevice is the device the uploader child runs as.
const uploaderDevice = "tab1"

// uploaderOptions connect the uploader child as uploaderDevice with the
// credentials file FS_CREDS.
func uploaderOptions() natsjs.ConnectOptions {
	inbox, _ := events.DeviceInboxPrefix(uploaderDevice)
	return natsjs.ConnectOptions{Name: "uploader", Credentials: os.Getenv("FS_CREDS"), InboxPrefix: inbox}
}

// runUploader uploads FS_DB's queued writes to FS_BROKER and, after the
// first publish, announces it and hangs before recording it as sent.
func runUploader() int {
	ctx := context.Background()
	client, err := natsjs.Connect(os.Getenv("FS_BROKER"), uploaderOptions())
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	db, err := store.Open(ctx, os.Getenv("FS_DB"), store.Options{})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	s := agent.NewSyncer(agent.Config{DeviceID: uploaderDevice, OrgUnits: []string{"north"}}, client, db, nil)
	agent.SetBeforeMarkSent(s, func(m store.Mutation) {
		fmt.Println("published", m.MutationID)
		select {}
	})
	if _, err := s.Upload(ctx); err != nil {
		fmt.Println("error", err)
		return 1
	}
	return 0
}

// child is a component running in a child process of the test.
type child struct {
	cmd   *exec.Cmd
	lines chan string
}

// startChild runs the test binary in role with env and returns once it
// printed a line starting with want (the rest of that line is returned).
func startChild(t *testing.T, role, want string, env ...string) (*child, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), "FS_E2E_ROLE="+role), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, lines: make(chan string, 16)}
	go c.read(out)
	t.Cleanup(func() { c.kill() })
	select {
	case line := <-c.lines:
		if !strings.HasPrefix(line, want) {
			t.Fatalf("%s child said %q, want %q", role, line, want)
		}
		return c, strings.TrimSpace(strings.TrimPrefix(line, want))
	case <-time.After(20 * time.Second):
		t.Fatalf("%s child did not say %q", role, want)
	}
	return nil, ""
}

func (c *child) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		c.lines <- sc.Text()
	}
	close(c.lines)
}

// kill sends SIGKILL and reaps the process.
func (c *child) kill() {
	if c.cmd.ProcessState == nil {
		c.cmd.Process.Kill()
		c.cmd.Wait()
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
