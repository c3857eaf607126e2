package broker_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/broker"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/ingest"
	"github.com/fieldsync/fieldsync/natsjs"
)

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "broker.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfig_LoadConfig(t *testing.T) {
	t.Run("empty file", func(t *testing.T) {
		cfg, err := broker.LoadConfig(writeConfig(t, ""))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(cfg, broker.Config{}.WithDefaults()) {
			t.Fatalf("got %+v, want the defaults", cfg)
		}
		if cfg.DataDir != "fieldsync-data" || cfg.NATS.Host != "127.0.0.1" || cfg.NATS.Port != 4222 || cfg.HTTPAddr != "127.0.0.1:8222" {
			t.Fatalf("defaults: %+v", cfg)
		}
		if cfg.Auth != broker.AuthJWT || cfg.AuthDir() != filepath.Join("fieldsync-data", "auth") {
			t.Fatalf("auth by default: %q in %q", cfg.Auth, cfg.AuthDir())
		}
		if cfg.JetStreamDir() != filepath.Join("fieldsync-data", "jetstream") {
			t.Fatalf("jetstream dir %q", cfg.JetStreamDir())
		}
	})
	t.Run("comments only", func(t *testing.T) {
		cfg, err := broker.LoadConfig(writeConfig(t, "# nothing set\n"))
		if err != nil || !reflect.DeepEqual(cfg, broker.Config{}.WithDefaults()) {
			t.Fatalf("got %+v, %v", cfg, err)
		}
	})
	t.Run("values", func(t *testing.T) {
		cfg, err := broker.LoadConfig(writeConfig(t, `
data_dir: /var/lib/fs
nats:
  port: 4333
  sync_interval: 3s
http_addr: 127.0.0.1:9000
org_units: [north, south]
streams:
  history: 4
  duplicates: 90s
`))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.NATS.SyncInterval != 3*time.Second {
			t.Fatalf("sync_interval %v, want 3s", cfg.NATS.SyncInterval)
		}
		if cfg.Streams.Duplicates != 90*time.Second || cfg.Streams.History != 4 {
			t.Fatalf("streams %+v", cfg.Streams)
		}
		if cfg.DataDir != "/var/lib/fs" || cfg.NATS.Port != 4333 || cfg.NATS.Host != "127.0.0.1" || cfg.HTTPAddr != "127.0.0.1:9000" ||
			strings.Join(cfg.OrgUnits, ",") != "north,south" {
			t.Fatalf("config %+v", cfg)
		}
	})
	t.Run("every section key", func(t *testing.T) {
		cfg, err := broker.LoadConfig(writeConfig(t, `
rights:
  devices: {tab1: [north]}
  writable: {events: [event, risk]}
ingest:
  device_pending_uploads: 50
  result_retention: 96h
  ack_wait: 7s
  replicas: 3
  upload_max_bytes: 5000000
  deadletter_max_bytes: 60000
  deadletter_retention: 72h
streams:
  history: 4
  duplicates: 90s
  max_consumers: 123
  replicas: 3
  max_bytes: 4096
  document_bytes: 8192
max_document_size: 5000
`))
		if err != nil {
			t.Fatal(err)
		}
		wantStreams := natsjs.StreamPolicy{History: 4, Duplicates: 90 * time.Second, MaxConsumers: 123, Replicas: 3, MaxBytes: 4096, DocumentBytes: 8192}
		wantIngest := natsjs.IngestPolicy{DevicePendingUploads: 50, ResultRetention: 96 * time.Hour, AckWait: 7 * time.Second, Replicas: 3,
			UploadMaxBytes: 5000000, DeadLetterMaxBytes: 60000, DeadLetterRetention: 72 * time.Hour}
		wantRights := ingest.Rights{Devices: map[string][]string{"tab1": {"north"}}, Writable: map[events.Channel][]string{events.ChannelEvents: {"event", "risk"}}}
		if cfg.MaxDocumentSize != 5000 {
			t.Fatalf("max_document_size read as %d", cfg.MaxDocumentSize)
		}
		if cfg.Streams != wantStreams || cfg.Ingest != wantIngest || !reflect.DeepEqual(cfg.Rights, wantRights) {
			t.Fatalf("sections read as streams %+v ingest %+v rights %+v", cfg.Streams, cfg.Ingest, cfg.Rights)
		}
	})
	errCases := map[string]string{
		"unknown key":        "data_dir: x\ncolour: red\n",
		"unknown nested key": "nats:\n  hots: 0.0.0.0\n",
		"unknown ingest key": "ingest:\n  ackwait: 3s\n",
		"unknown rights key": "rights:\n  device: {}\n",
		"Go field name":      "streams:\n  maxconsumers: 3\n",
		"bad org unit":       "org_units: [north, \"a.b\"]\n",
		"wildcard org unit":  "org_units: [\"*\"]\n",
		"bad duration":       "nats:\n  sync_interval: soon\n",
		"not yaml":           "org_units: [north\n",
	}
	for name, yaml := range errCases {
		t.Run(name, func(t *testing.T) {
			if cfg, err := broker.LoadConfig(writeConfig(t, yaml)); err == nil {
				t.Fatalf("accepted %q as %+v", yaml, cfg)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		if _, err := broker.LoadConfig(filepath.Join(t.TempDir(), "nope.yaml")); err == nil {
			t.Fatal("no error for a missing file")
		}
	})
}

func TestConfig_WithDefaults(t *testing.T) {
	var c broker.Config
	c.NATS.Port = -1
	c.DataDir = "d"
	got := c.WithDefaults()
	if got.NATS.Port != -1 || got.DataDir != "d" || got.HTTPAddr != "127.0.0.1:8222" || got.MaxDocumentSize != 1<<30 {
		t.Fatalf("WithDefaults overrode set keys or missed unset ones: %+v", got)
	}
}

func TestConfig_LoadConfig_Auth(t *testing.T) {
	cfg, err := broker.LoadConfig(writeConfig(t, "auth: none\n"))
	if err != nil || cfg.Auth != broker.AuthNone {
		t.Fatalf("auth: none: %q %v", cfg.Auth, err)
	}
	if _, err := broker.LoadConfig(writeConfig(t, "auth: off\n")); err == nil || !strings.Contains(err.Error(), "auth") {
		t.Fatalf("auth: off: %v, want an error naming auth", err)
	}
}

func TestConfig_Validate(t *testing.T) {
	if err := (broker.Config{OrgUnits: []string{"north", "south-2"}}).Validate(); err != nil {
		t.Fatalf("valid units rejected: %v", err)
	}
	for _, u := range []string{"a.b", "", "-x", "a b", ">"} {
		if err := (broker.Config{OrgUnits: []string{u}}).Validate(); err == nil {
			t.Errorf("org unit %q accepted", u)
		}
	}
}

func TestConfig_LoadConfig_TLS(t *testing.T) {
	cfg, err := broker.LoadConfig(writeConfig(t, "nats:\n  tls: {cert: s.pem, key: k.pem}\n"))
	if err != nil || cfg.NATS.TLS.Cert != "s.pem" || cfg.NATS.TLS.Key != "k.pem" || !cfg.NATS.TLS.IsRequired() {
		t.Fatalf("tls: %+v %v, want cert, key, required by default", cfg.NATS.TLS, err)
	}
	cfg, err = broker.LoadConfig(writeConfig(t, "nats:\n  tls: {cert: s.pem, key: k.pem, required: false}\n"))
	if err != nil || !cfg.NATS.TLS.Enabled() || cfg.NATS.TLS.IsRequired() {
		t.Fatalf("tls required: false: %+v %v", cfg.NATS.TLS, err)
	}
	if cfg, _ := broker.LoadConfig(writeConfig(t, "")); cfg.NATS.TLS.Enabled() || cfg.NATS.TLS.IsRequired() {
		t.Fatalf("TLS on by default: %+v", cfg.NATS.TLS)
	}
	for _, bad := range []string{"nats:\n  tls: {cert: s.pem}\n", "nats:\n  tls: {key: k.pem}\n", "nats:\n  tls: {required: true}\n"} {
		if _, err := broker.LoadConfig(writeConfig(t, bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestConfig_AllowedHosts(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1:8222":      "localhost,127.0.0.1,::1",
		"broker.example:8222": "localhost,127.0.0.1,::1,broker.example",
		"0.0.0.0:8222":        "localhost,127.0.0.1,::1",
		"[::]:8222":           "localhost,127.0.0.1,::1",
	} {
		if got := strings.Join(broker.Config{HTTPAddr: addr}.AllowedHosts(), ","); got != want {
			t.Errorf("%s: %s, want %s", addr, got, want)
		}
	}
	if got := (broker.Config{HTTPAddr: "0.0.0.0:8222", HTTPAllowedHosts: []string{"sync.example"}}).AllowedHosts(); strings.Join(got, ",") != "sync.example" {
		t.Fatalf("configured: %v", got)
	}
}
