package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/store"
)

// composeProject is one run of the repository's docker-compose.yml under
// its own project name (containers, network and volumes of its own).
type composeProject struct {
	t       *testing.T
	cmd     []string // docker compose, or Debian's docker-compose
	name    string
	root    string // the repository, where docker-compose.yml is
	network string
}

// startCompose builds the images (make images), runs `up -d` and waits
// until every service is healthy or done, as `up --wait` does. It skips
// the test where no Docker engine or Compose runs, and removes
// everything (down -v) when the test ends.
func startCompose(t *testing.T, env ...string) *composeProject {
	t.Helper()
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Skipf("no Docker engine runs here (docker info: %v: %s): the docker-compose.yml test needs one", err, bytes.TrimSpace(out))
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	p := &composeProject{t: t, root: root, name: fmt.Sprintf("fse2e%d", os.Getpid())}
	switch {
	case exec.Command("docker", "compose", "version").Run() == nil:
		p.cmd = []string{"docker", "compose"}
	case exec.Command("docker-compose", "version").Run() == nil:
		p.cmd = []string{"docker-compose"}
	default:
		t.Skip("no Docker Compose (neither docker compose nor docker-compose): the docker-compose.yml test needs it")
	}
	p.network = p.name + "_fieldsync"
	if out, err := exec.Command("make", "-C", p.root, "images", "IMAGE_TAG=e2e").CombinedOutput(); err != nil {
		t.Fatalf("make images: %v\n%s", err, out)
	}
	t.Setenv("FIELDSYNC_TAG", "e2e") // read by docker-compose.yml
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := p.run(context.Background(), "logs", "--no-color", "--tail", "30")
			t.Logf("compose logs:\n%s", out)
		}
		if out, err := p.run(context.Background(), "down", "-v", "--remove-orphans"); err != nil {
			t.Errorf("compose down -v: %v\n%s", err, out)
		}
	})
	p.must("up", "-d")
	wait := exec.Command(filepath.Join(p.root, "deploy/compose/wait-healthy"), "240")
	wait.Dir = p.root
	wait.Env = append(os.Environ(), "COMPOSE="+strings.Join(append(p.cmd, "-p", p.name), " "))
	if out, err := wait.CombinedOutput(); err != nil {
		t.Fatalf("services not healthy: %v\n%s", err, out)
	}
	return p
}

// run runs a compose command of the project.
func (p *composeProject) run(ctx context.Context, args ...string) ([]byte, error) {
	full := append(append(append([]string{}, p.cmd[1:]...), "-p", p.name, "-f", filepath.Join(p.root, "docker-compose.yml")), args...)
	cmd := exec.CommandContext(ctx, p.cmd[0], full...)
	cmd.WaitDelay = 5 * time.Second // compose's own children (docker exec) may outlive it
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", strings.Join(p.cmd, " "), strings.Join(args, " "), err, stderr.Bytes())
	}
	return out, nil
}

func (p *composeProject) must(args ...string) []byte {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := p.run(ctx, args...)
	if err != nil {
		p.t.Fatal(err)
	}
	return out
}

// exec runs a program of service's image in its container (no shell).
func (p *composeProject) exec(ctx context.Context, service string, args ...string) ([]byte, error) {
	return p.run(ctx, append([]string{"exec", "-T", service}, args...)...)
}

// container is the id of service's container (running or not).
func (p *composeProject) container(service string) string {
	p.t.Helper()
	id := strings.TrimSpace(string(p.must("ps", "-a", "-q", service)))
	if id == "" {
		p.t.Fatalf("no container for %s", service)
	}
	return id
}

func docker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// agentStatus is `device-agent status --json` in agent n's container.
func (p *composeProject) agentStatus(n int) (agent.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var st agent.Status
	out, err := p.exec(ctx, fmt.Sprintf("agent%d", n), "/device-agent", "status", "--json", "--config", fmt.Sprintf("/config/agent%d.yaml", n))
	if err == nil {
		err = json.Unmarshal(out, &st)
	}
	return st, err
}

// agentRecords is every events record of unit agent n holds
// (`device-agent records --all --json`): id -> version.
func (p *composeProject) agentRecords(n int, unit string) map[string]uint64 {
	p.t.Helper()
	out := p.must("exec", "-T", fmt.Sprintf("agent%d", n), "/device-agent", "records", "--channel", "events", "--org", unit,
		"--all", "--limit", "10000", "--json", "--config", fmt.Sprintf("/config/agent%d.yaml", n))
	var recs []store.Record
	if err := json.Unmarshal(out, &recs); err != nil {
		p.t.Fatalf("agent%d records: %v", n, err)
	}
	m := make(map[string]uint64, len(recs))
	for _, r := range recs {
		m[r.RecordID] = r.Version
	}
	return m
}

// serverClient connects from the host to service's NATS port on the
// project's network, as the read-only tail identity signed with the keys
// the init job made (copied out of its container).
func (p *composeProject) serverClient(service string) *natsjs.Client {
	p.t.Helper()
	dir := p.t.TempDir()
	docker(p.t, "cp", p.container("init")+":/auth", dir)
	auth, err := natsauth.OpenExisting(filepath.Join(dir, "auth"))
	if err != nil {
		p.t.Fatal(err)
	}
	userJWT, seed, err := auth.Component(natsauth.RoleTail)
	if err != nil {
		p.t.Fatal(err)
	}
	ip := docker(p.t, "inspect", "-f", `{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}`, p.container(service))
	nc, err := nats.Connect("nats://"+ip+":4222", nats.UserJWTAndSeed(userJWT, seed), nats.Name("fieldsync-e2e"))
	if err != nil {
		p.t.Fatalf("connect to %s at %s: %v", service, ip, err)
	}
	p.t.Cleanup(nc.Close)
	c, err := natsjs.NewClient(nc)
	if err != nil {
		p.t.Fatal(err)
	}
	return c
}

// serverRecords is the server's state of unit's events channel: each
// record's latest version (deleted records absent).
func serverRecords(t *testing.T, c *natsjs.Client, unit string) map[string]uint64 {
	t.Helper()
	latest := map[string]uint64{}
	ops := map[string]events.Op{}
	for seq, e := range clusterChangesBySeq(t, c, unit) {
		if e.Channel == events.ChannelEvents && seq > latest[e.RecordID] {
			latest[e.RecordID], ops[e.RecordID] = seq, e.Op
		}
	}
	for id, op := range ops {
		if op == events.OpDelete {
			delete(latest, id)
		}
	}
	return latest
}

// requireAgentEqualsServer syncs agent n and checks it holds exactly the
// server's records of each unit, at the server's versions.
func (p *composeProject) requireAgentEqualsServer(n int, c *natsjs.Client, units ...string) {
	p.t.Helper()
	p.must("exec", "-T", fmt.Sprintf("agent%d", n), "/device-agent", "sync", "--scope", "events", "--wait",
		"--config", fmt.Sprintf("/config/agent%d.yaml", n))
	for _, unit := range units {
		server, device := serverRecords(p.t, c, unit), p.agentRecords(n, unit)
		if len(device) != len(server) {
			p.t.Fatalf("agent%d holds %d records of %s, the server %d", n, len(device), unit, len(server))
		}
		for id, v := range server {
			if device[id] != v {
				p.t.Fatalf("agent%d: %s record %s at version %d, the server's is %d", n, unit, id, device[id], v)
			}
		}
		p.t.Logf("agent%d: %d records of %s, each at the server's version", n, len(device), unit)
	}
}

// TestCompose_ClusterSurvivesNodeLossAndPartition runs the repository's
// docker-compose.yml for real: the agents sync; the node agent 2 syncs
// from is killed (docker kill) in the middle of a 120,000-change delta
// sync; one node is cut off (docker network disconnect): it accepts no
// write while the majority does; after it returns, both agents hold
// exactly the server's state.
func TestCompose_ClusterSurvivesNodeLossAndPartition(t *testing.T) {
	p := startCompose(t)
	for n := 1; n <= 2; n++ {
		st, err := p.agentStatus(n)
		if err != nil || st.OnlineOnly || st.State != agent.StateUpToDate {
			t.Fatalf("agent%d after up: %+v %v", n, st, err)
		}
	}
	c := p.serverClient("broker1")
	p.requireAgentEqualsServer(1, c, "north")
	p.requireAgentEqualsServer(2, c, "north", "south")

	// A delta of 60,000 changes per unit, then agent 2's node killed
	// while it reads them.
	st, _ := p.agentStatus(2)
	node := strings.TrimSuffix(strings.TrimPrefix(st.Broker, "nats://"), ":4222")
	other := map[string]string{"broker1": "broker2", "broker2": "broker3", "broker3": "broker1"}[node]
	if other == "" {
		t.Fatalf("agent2 connected to %q, not a compose node", st.Broker)
	}
	p.must("exec", "-T", other, "/broker-embed", "seed", "--org", "north,south", "--events", "60000", "--seed", "7",
		"--url", "nats://"+other+":4222", "--config", "/config/"+other+".yaml")
	p.must("exec", "-T", "agent2", "/device-agent", "sync", "--scope", "events", "--config", "/config/agent2.yaml")
	fstest.Eventually(t, 60*time.Second, func() bool {
		st, _ = p.agentStatus(2)
		var got uint64
		for _, pr := range st.Progress {
			got += pr.Received
		}
		return got > 5000
	}, "agent2 receiving the delta (last status %+v)", &st)
	docker(t, "kill", p.container(node))
	st, _ = p.agentStatus(2)
	t.Logf("killed %s with agent2 at %+v", node, st.Progress)
	fstest.Eventually(t, 120*time.Second, func() bool {
		st, _ = p.agentStatus(2)
		return st.Connected && st.State == agent.StateUpToDate && st.Broker != "" && !strings.Contains(st.Broker, node)
	}, "agent2 done on another node (last status %+v)", &st)
	c = p.serverClient(other)
	p.requireAgentEqualsServer(2, c, "north", "south")
	p.must("start", node)

	// A partition: broker3 alone accepts no write; the majority does.
	fstest.Eventually(t, 90*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := p.exec(ctx, node, "/broker-embed", "healthcheck", "--config", "/config/"+node+".yaml")
		return err == nil
	}, "%s back after its restart", node)
	docker(t, "network", "disconnect", p.network, p.container("broker3"))
	publish := func(service, id string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		_, err := p.exec(ctx, service, "/broker-embed", "publish", "--org", "north", "--channel", "events", "--kind", "event",
			"--id", id, "--body", `{"title":"partition"}`, "--timeout", "20s", "--url", "nats://127.0.0.1:4222", "--config", "/config/"+service+".yaml")
		return err
	}
	if err := publish("broker3", "minority-write"); err == nil {
		t.Fatal("broker3, cut off from the other two, accepted a write")
	} else {
		t.Logf("minority write refused: %v", err)
	}
	fstest.Eventually(t, 60*time.Second, func() bool { return publish("broker1", "majority-write") == nil },
		"the majority accepts a write during the partition")
	docker(t, "network", "connect", "--alias", "broker3", p.network, p.container("broker3"))

	// Converged: the rejoined node serves the state, the agents hold it.
	c3 := p.serverClient("broker3")
	fstest.Eventually(t, 90*time.Second, func() bool {
		s := serverRecords(t, c3, "north")
		_, minority := s["minority-write"]
		_, majority := s["majority-write"]
		if minority {
			t.Fatal("the minority's write reached the stream")
		}
		return majority
	}, "broker3 serves the majority's write after the partition")
	for n := 1; n <= 2; n++ {
		units := []string{"north"}
		if n == 2 {
			units = append(units, "south")
		}
		p.requireAgentEqualsServer(n, c3, units...)
		if _, ok := p.agentRecords(n, "north")["majority-write"]; !ok {
			t.Fatalf("agent%d lacks the write made during the partition", n)
		}
	}
}
