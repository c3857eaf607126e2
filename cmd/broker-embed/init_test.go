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
	secret, err := natsauth.RouteSecret(auth)
	if err != nil || !strings.Contains(out, "route secret created") {
		t.Fatalf("init made no route secret: %v\n%s", err, out)
	}
	out, err = run(t, "init", "--config", cfg)
	if err != nil || !strings.Contains(out, "nothing else to do") {
		t.Fatalf("second init: %v\n%s", err, out)
	}
	b, err := natsauth.OpenExisting(auth)
	if err != nil || b.TenantAccount() != a.TenantAccount() {
		t.Fatalf("second init changed the keys: %v", err)
	}
	if again, _ := natsauth.RouteSecret(auth); again != secret {
		t.Fatal("second init changed the route secret")
	}

	// Keys from a build before route secrets: init adds the secret only.
	os.Remove(filepath.Join(auth, "route.secret"))
	out, err = run(t, "init", "--config", cfg)
	if err != nil || !strings.Contains(out, "keys already in") || !strings.Contains(out, "route secret created") {
		t.Fatalf("init on keys without a route secret: %v\n%s", err, out)
	}
	if c, _ := natsauth.OpenExisting(auth); c.TenantAccount() != a.TenantAccount() {
		t.Fatal("adding the route secret changed the keys")
	}
}
