package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMain lets the test binary stand in for fsbench: the benchmarks start
// their device processes (agent-child, write-agent) from their own
// executable, and the tests below run each benchmark the same way.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && !strings.HasPrefix(os.Args[1], "-") {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runBench runs fsbench with args in its own process and returns what it
// printed; it fails the test if the benchmark fails.
func runBench(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), os.Args[0], args...)
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("fsbench %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// wantLines fails unless out has a line containing each of want.
func wantLines(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output has no %q:\n%s", w, out)
		}
	}
}

// The benchmarks at a tiny size, so they cannot rot: each runs end to end
// and prints its figures next to their limits.

func TestInitialSync_Tiny(t *testing.T) {
	out := runBench(t, "initial-sync", "--records", "300")
	wantLines(t, out, "(a) raw JetStream consume (ordered consumer over TCP", "the store's own bulk path", "INSERT ... SELECT",
		"(c) end to end", "300 records in", "(d) (c) / min(a, b)", "(e) agent peak memory")
	if strings.Contains(out, "WARNING") {
		t.Errorf("the device did not end with every record:\n%s", out)
	}
}

func TestWrites_Tiny(t *testing.T) {
	out := runBench(t, "writes", "--devices", "2", "--rate", "40", "--duration", "1s", "--drain", "20s", "--burst", "200")
	wantLines(t, out, "answered 202 40,", "refused or failed 0", "0 still pending and 0 gone undecided", "target p99 <= 50 ms",
		"lost 0  target 0 PASS", "doubled 0  target 0 PASS", "applied but shown as conflict 0", "max ingest throughput")
}

func TestApply_Tiny(t *testing.T) {
	out := runBench(t, "apply", "--records", "200", "--changes", "30", "--baseline", "300ms", "--read-rate", "10", "--write-rate", "5")
	wantLines(t, out, "(c) user waits", "(d) background merge: 30 rows", "(e) reader (GET /v1/records", "(g) write -> visible")
}

func TestConnect_Tiny(t *testing.T) {
	out := runBench(t, "connect", "--devices", "20", "--parallel", "5")
	wantLines(t, out, "auth jwt (credentials, permissions)  all 20 connected", "auth none", "broker CPU", "auth costs")
}

func TestFeed_Tiny(t *testing.T) {
	out := runBench(t, "feed", "--records", "3000")
	wantLines(t, out, "(a) raw ordered consumer", "(b) raw durable", "(c) package feed", "of (b)")
}

func TestDocuments_Tiny(t *testing.T) {
	out := runBench(t, "documents", "--large-mb", "2", "--small", "20", "--small-kb", "4", "--runs", "1")
	wantLines(t, out, "(a) raw object-store get", "to io.Discard (the transport's bound", "to a durable file (io.Copy as GetFile does, fsync, rename)",
		"large 2 MB: agent", "raw get to a durable file", "target >= 0.80", "small 20 × 4 KB: agent", "raw gets to durable files")
}

func TestConsumers_Tiny(t *testing.T) {
	out := runBench(t, "consumers", "--devices", "20", "--r3-devices", "4", "--units", "2", "--idle", "1s")
	wantLines(t, out, "R1 memory (candidate, not adopted): 20 devices, 100 durables", "refused or failed 0  target 0 PASS",
		"R3 file (this build: natsjs.OpenCursor): 4 devices, 20 durables", "Raft groups (HA assets)",
		"NATS guidance ~2,000 per server  PASS", "KiB per device", "JetStream API requests")
}
