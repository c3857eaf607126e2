package broker_test

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/broker"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/fstest"
)

// tlsConfig is testConfig with TLS required on the NATS listener.
func tlsConfig(t *testing.T, f fstest.TLSFiles, units ...string) broker.Config {
	cfg := testConfig(t.TempDir(), units...)
	cfg.NATS.TLS = broker.TLSConfig{Cert: f.Cert, Key: f.Key}
	return cfg
}

// TestBroker_TLS_PlainRefused: with TLS required the server announces it,
// and a client speaking plain NATS gets no answer but a closed connection;
// a client verifying against the CA connects, one with another CA does
// not.
func TestBroker_TLS_PlainRefused(t *testing.T) {
	f := fstest.MustTLSFiles(t)
	b := openBroker(t, tlsConfig(t, f, "north"))
	if !strings.HasPrefix(b.ClientURL(), "tls://") {
		t.Fatalf("client URL %s, want tls://", b.ClientURL())
	}
	u, err := url.Parse(b.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(conn)
	info, err := r.ReadString('\n')
	if err != nil || !strings.Contains(info, `"tls_required":true`) {
		t.Fatalf("INFO %q (%v), want tls_required", info, err)
	}
	if _, err := conn.Write([]byte("CONNECT {\"verbose\":false}\r\nPING\r\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := r.ReadString('\n'); err == nil || strings.HasPrefix(line, "PONG") {
		t.Fatalf("plain client answered %q (%v), want the connection closed", line, err)
	}

	creds := fstest.MustDeviceCreds(t, b.Authority(), "tab1", "north")
	nc, err := nats.Connect(b.ClientURL(), nats.UserCredentials(creds), nats.RootCAs(f.CA), nats.CustomInboxPrefix(inboxOf(t, "tab1")))
	if err != nil {
		t.Fatalf("connect with the right CA: %v", err)
	}
	defer nc.Close()
	if _, err := nc.Request(events.HelloSubject, []byte(`{}`), 5*time.Second); err != nil {
		t.Fatalf("version check over TLS: %v", err)
	}
	other := fstest.MustTLSFiles(t)
	if nc, err := nats.Connect(b.ClientURL(), nats.UserCredentials(creds), nats.RootCAs(other.CA)); err == nil {
		nc.Close()
		t.Fatal("connected with another CA")
	} else if !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("connect with another CA: %v, want an unknown authority", err)
	}
}

// TestBroker_TLS_Agent: an agent configured with the broker's CA syncs
// over TLS; one with another CA refuses the server, and its status says
// why.
func TestBroker_TLS_Agent(t *testing.T) {
	f := fstest.MustTLSFiles(t)
	b := openBroker(t, tlsConfig(t, f, "north"))
	v := publishChange(t, b, "north", events.ChannelEvents, "event", "e1")

	good := runAgentCA(t, b, "A", fstest.MustDeviceCreds(t, b.Authority(), "A", "north"), f.CA, "north")
	hasRecord(t, good, "north", events.ChannelEvents, "event", "e1", v)

	bad := runAgentCA(t, b, "B", fstest.MustDeviceCreds(t, b.Authority(), "B", "north"), fstest.MustTLSFiles(t).CA, "north")
	var st agent.Status
	fstest.Eventually(t, 15*time.Second, func() bool {
		var err error
		if st, err = bad.Status(context.Background()); err != nil {
			t.Fatal(err)
		}
		return st.State == agent.StateFailed && strings.Contains(st.LastError, "certificate signed by unknown authority")
	}, "B's status says the server's certificate did not verify; last %+v", &st)
	if st.Connected || st.LastSyncCompleted != nil {
		t.Fatalf("B connected or synced with the wrong CA: %+v", st)
	}
}

// TestBroker_TLS_Warning: a NATS listener beyond loopback without
// required TLS is warned about at start; with TLS, or on loopback, it is
// not.
func TestBroker_TLS_Warning(t *testing.T) {
	f := fstest.MustTLSFiles(t)
	for _, c := range []struct {
		name, host string
		tls, warn  bool
	}{
		{"all interfaces, plain", "0.0.0.0", false, true},
		{"all interfaces, TLS", "0.0.0.0", true, false},
		{"loopback, plain", "127.0.0.1", false, false},
	} {
		cfg := testConfig(t.TempDir(), "north")
		cfg.NATS.Host = c.host
		if c.tls {
			cfg.NATS.TLS = broker.TLSConfig{Cert: f.Cert, Key: f.Key}
		}
		log := &fstest.Output{}
		b, err := broker.Open(ctxT(t), cfg, slog.New(slog.NewTextHandler(log, nil)))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		closeBroker(t, b)
		warned := strings.Contains(log.String(), "level=WARN") && strings.Contains(log.String(), "WITHOUT REQUIRED TLS")
		if warned != c.warn {
			t.Errorf("%s: warned %v, want %v:\n%s", c.name, warned, c.warn, log.String())
		}
	}
}
