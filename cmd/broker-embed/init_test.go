package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fieldsync/fieldsync/natsauth"
)

// TestInitCmd_Run creates the keys a cluster's nodes share, once: a second
// run keeps them.
func TestInitCmd_Run(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "node.yaml")
	auth := filepath.Join(dir, "shared-auth")
	if err := os.WriteFile(cfg, []byte("server_name: n1\nauth_dir: "+auth+"\ncluster:\n  routes: [nats-route://127.0.0.1:6222]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "init", "--config", cfg)
	if err != nil || !strings.Contains(out, "created in "+auth) {
		t.Fatalf("init: %v\n%s", err, out)
	}
	a, err := natsauth.OpenExisting(auth)
	if err != nil {
		t.Fatal(err)
	}
	out, err = run(t, "init", "--config", cfg)
	if err != nil || !strings.Contains(out, "nothing to do") {
		t.Fatalf("second init: %v\n%s", err, out)
	}
	b, err := natsauth.OpenExisting(auth)
	if err != nil || b.TenantAccount() != a.TenantAccount() {
		t.Fatalf("second init changed the keys: %v", err)
	}
}
