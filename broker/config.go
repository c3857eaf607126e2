package broker

import (
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/ingest"
	"github.com/fieldsync/fieldsync/internal/yamlconf"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/publish"
)

// Config is broker-embed's configuration (YAML). Every key has a working
// default: an empty file starts a single node on 127.0.0.1:4222.
type Config struct {
	// DataDir holds JetStream's files and, under auth/, the operator and
	// account keys and the registry of issued users (default
	// ./fieldsync-data).
	DataDir string `yaml:"data_dir"`
	// Auth is how clients authenticate on the NATS port: "jwt" (the
	// default) requires user credentials issued from this data dir
	// (`broker-embed device add`, `integration add`), with the subject
	// permissions of package natsauth; "none" lets any client connect and
	// do anything, and is logged as a warning at every start.
	Auth string `yaml:"auth"`
	NATS struct {
		Host string `yaml:"host"` // default 127.0.0.1
		Port int    `yaml:"port"` // default 4222; -1 picks a free port
		// SyncInterval: how often JetStream fsyncs (default 5s; the server's
		// own default is 2m).
		SyncInterval time.Duration `yaml:"sync_interval"`
		MaxPayload   int32         `yaml:"max_payload"` // default 1 MiB
		Logging      bool          `yaml:"logging"`
		// TLS on the client listener devices connect to (off by default).
		TLS TLSConfig `yaml:"tls"`
	} `yaml:"nats"`
	// HTTPAddr serves /healthz, /metrics, POST /v1/publish and
	// /v1/documents (default 127.0.0.1:8222).
	HTTPAddr string `yaml:"http_addr"`
	// HTTPAllowedHosts are the host names (or IP addresses) the HTTP
	// endpoints answer for, by the request's Host header (default: the
	// host of HTTPAddr, localhost, 127.0.0.1 and ::1); see
	// [Config.AllowedHosts].
	HTTPAllowedHosts []string `yaml:"http_allowed_hosts"`
	// MetricsTokenFile holds the bearer token GET /metrics requires
	// (default <data_dir>/metrics.token, created at first start, 0600).
	MetricsTokenFile string `yaml:"metrics_token_file"`
	// OrgUnits get one stream each; the tenant-wide stream always exists.
	OrgUnits []string `yaml:"org_units"`
	// Streams are the limits of every org unit stream (YAML key streams,
	// see [streamsFile]).
	Streams natsjs.StreamPolicy `yaml:"-"`
	// Ingest holds the limits of device uploads and results (YAML key
	// ingest, see [ingestFile]).
	Ingest natsjs.IngestPolicy `yaml:"-"`
	// Rights say what devices may write (YAML key rights, see [rightsFile]).
	Rights ingest.Rights `yaml:"-"`
	// MaxDocumentSize bounds one document's content in bytes, over HTTP
	// and NATS alike (default [publish.DefaultMaxDocumentSize], 1 GiB; -1:
	// none). A unit's whole bucket is capped by streams.document_bytes.
	MaxDocumentSize int64 `yaml:"max_document_size"`
	// ServerName names this node (default "fieldsync"); every node of a
	// cluster needs its own.
	ServerName string `yaml:"server_name"`
	// AuthPath is where the operator and account keys live (default
	// <data_dir>/auth, see [Config.AuthDir]). The nodes of a cluster share
	// one, created once by `broker-embed init` before they start.
	AuthPath string `yaml:"auth_dir"`
	// Cluster makes this broker one node of a JetStream cluster.
	Cluster ClusterConfig `yaml:"cluster"`
}

// ClusterConfig is this node's part of a cluster: every node runs the
// whole server side (provisioning, publish API, ingest) and they share
// the streams (R3 by default) and the durable ingest consumer.
type ClusterConfig struct {
	// Name of the cluster, the same on every node (default "fieldsync"
	// once routes are set).
	Name string `yaml:"name"`
	// Listen is where this node takes routes from the others (default
	// 0.0.0.0:6222).
	Listen string `yaml:"listen"`
	// Routes to the nodes (nats-route://host:6222), this one may be
	// listed too: the same list can go into every node's file.
	Routes []string `yaml:"routes"`
}

// Enabled reports whether this broker is a cluster node.
func (c ClusterConfig) Enabled() bool { return c.Name != "" || len(c.Routes) > 0 }

// TLSConfig is TLS on the NATS client listener: on when Cert is set.
type TLSConfig struct {
	// Cert and Key are PEM files: the server certificate (with any
	// intermediates) and its private key.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// Required refuses plain (non-TLS) clients (default true when Cert is
	// set; false accepts both, for a migration).
	Required *bool `yaml:"required"`
}

// Enabled reports whether TLS is configured.
func (t TLSConfig) Enabled() bool { return t.Cert != "" }

// IsRequired reports whether plain clients are refused.
func (t TLSConfig) IsRequired() bool { return t.Enabled() && (t.Required == nil || *t.Required) }

// LoadConfig reads path (YAML); unknown keys are errors.
func LoadConfig(path string) (Config, error) {
	var f configFile
	if err := yamlconf.Load(path, &f); err != nil {
		return Config{}, fmt.Errorf("broker: %w", err)
	}
	c := f.config().WithDefaults()
	return c, c.Validate()
}

// configFile is the YAML file: the broker's own keys plus the sections the
// broker maps onto the option structs of natsjs and ingest, which know
// nothing of configuration files.
type configFile struct {
	Config  `yaml:",inline"`
	Streams streamsFile `yaml:"streams"`
	Ingest  ingestFile  `yaml:"ingest"`
	Rights  rightsFile  `yaml:"rights"`
}

// streamsFile is the streams section ([natsjs.StreamPolicy]).
type streamsFile struct {
	History      int64         `yaml:"history"`
	Duplicates   time.Duration `yaml:"duplicates"`
	MaxConsumers int           `yaml:"max_consumers"`
	Replicas     int           `yaml:"replicas"`
	MaxBytes     int64         `yaml:"max_bytes"`
	// DocumentBytes caps each unit's document bucket (-1 or unset: none).
	DocumentBytes int64 `yaml:"document_bytes"`
}

// ingestFile is the ingest section ([natsjs.IngestPolicy]).
type ingestFile struct {
	ResultRetention time.Duration `yaml:"result_retention"`
	AckWait         time.Duration `yaml:"ack_wait"`
	Replicas        int           `yaml:"replicas"`
	// Stream bounds (see [natsjs.IngestPolicy]).
	UploadMaxBytes       int64         `yaml:"upload_max_bytes"`
	DevicePendingUploads int64         `yaml:"device_pending_uploads"`
	DeadLetterMaxBytes   int64         `yaml:"deadletter_max_bytes"`
	DeadLetterRetention  time.Duration `yaml:"deadletter_retention"`
}

// rightsFile is the rights section ([ingest.Rights]).
type rightsFile struct {
	Devices  map[string][]string         `yaml:"devices"`
	Writable map[events.Channel][]string `yaml:"writable"`
}

func (f configFile) config() Config {
	c := f.Config
	s, i := f.Streams, f.Ingest
	c.Streams = natsjs.StreamPolicy{History: s.History, Duplicates: s.Duplicates, MaxConsumers: s.MaxConsumers, Replicas: s.Replicas, MaxBytes: s.MaxBytes,
		DocumentBytes: s.DocumentBytes}
	c.Ingest = natsjs.IngestPolicy{ResultRetention: i.ResultRetention, AckWait: i.AckWait, Replicas: i.Replicas,
		UploadMaxBytes: i.UploadMaxBytes, DevicePendingUploads: i.DevicePendingUploads, DeadLetterMaxBytes: i.DeadLetterMaxBytes, DeadLetterRetention: i.DeadLetterRetention}
	c.Rights = ingest.Rights{Devices: f.Rights.Devices, Writable: f.Rights.Writable}
	return c
}

// WithDefaults fills every unset key.
func (c Config) WithDefaults() Config {
	if c.DataDir == "" {
		c.DataDir = "fieldsync-data"
	}
	if c.NATS.Host == "" {
		c.NATS.Host = "127.0.0.1"
	}
	if c.NATS.Port == 0 {
		c.NATS.Port = 4222
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = "127.0.0.1:8222"
	}
	if c.Auth == "" {
		c.Auth = AuthJWT
	}
	if c.MaxDocumentSize == 0 {
		c.MaxDocumentSize = publish.DefaultMaxDocumentSize
	}
	if c.ServerName == "" {
		c.ServerName = "fieldsync"
	}
	if c.Cluster.Enabled() {
		c = c.clusterDefaults()
	}
	return c
}

// clusterDefaults are the defaults of a cluster node: three replicas of
// every stream (a node may be lost without losing data or the quorum).
func (c Config) clusterDefaults() Config {
	if c.Cluster.Name == "" {
		c.Cluster.Name = "fieldsync"
	}
	if c.Cluster.Listen == "" {
		c.Cluster.Listen = "0.0.0.0:6222"
	}
	if c.Streams.Replicas == 0 {
		c.Streams.Replicas = 3
	}
	if c.Ingest.Replicas == 0 {
		c.Ingest.Replicas = 3
	}
	return c
}

// The values of [Config.Auth].
const (
	AuthJWT  = "jwt"
	AuthNone = "none"
)

// Validate checks the auth mode and the org unit names.
func (c Config) Validate() error {
	if c.Auth != "" && c.Auth != AuthJWT && c.Auth != AuthNone {
		return fmt.Errorf("broker: config auth %q: want %q or %q", c.Auth, AuthJWT, AuthNone)
	}
	if t := c.NATS.TLS; (t.Cert == "") != (t.Key == "") || (t.Cert == "" && t.Required != nil && *t.Required) {
		return fmt.Errorf("broker: config nats.tls: cert and key go together (and required needs them)")
	}
	for _, u := range c.OrgUnits {
		if err := events.ValidToken(u); err != nil {
			return fmt.Errorf("broker: config org_units: %w", err)
		}
	}
	if c.Cluster.Enabled() {
		if _, _, err := net.SplitHostPort(c.Cluster.Listen); err != nil {
			return fmt.Errorf("broker: config cluster.listen %q: %w", c.Cluster.Listen, err)
		}
		if c.ServerName == "fieldsync" {
			return fmt.Errorf("broker: config server_name: every node of a cluster needs its own name")
		}
	}
	return nil
}

// AuthDir is where the operator and account keys and the registry of
// issued users are kept (see package natsauth).
func (c Config) AuthDir() string {
	if c.AuthPath != "" {
		return c.AuthPath
	}
	return filepath.Join(c.DataDir, "auth")
}

// AllowedHosts returns [Config.HTTPAllowedHosts], or by default the host
// of HTTPAddr (unless it is a wildcard address such as 0.0.0.0, which
// names no host: list the names clients use then), localhost, 127.0.0.1
// and ::1.
func (c Config) AllowedHosts() []string {
	if len(c.HTTPAllowedHosts) > 0 {
		return c.HTTPAllowedHosts
	}
	out := []string{"localhost", "127.0.0.1", "::1"}
	if host, _, err := net.SplitHostPort(c.HTTPAddr); err == nil && host != "" {
		if ip := net.ParseIP(host); (ip == nil || !ip.IsUnspecified()) && !slices.Contains(out, host) {
			out = append(out, host)
		}
	}
	return out
}

// MetricsTokenPath is [Config.MetricsTokenFile] or its default.
func (c Config) MetricsTokenPath() string {
	if c.MetricsTokenFile != "" {
		return c.MetricsTokenFile
	}
	return filepath.Join(c.DataDir, "metrics.token")
}

// JetStreamDir is where the embedded server stores its data.
func (c Config) JetStreamDir() string { return filepath.Join(c.DataDir, "jetstream") }
