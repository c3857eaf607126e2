package broker

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/ingest"
	"github.com/fieldsync/fieldsync/internal/yamlconf"
	"github.com/fieldsync/fieldsync/natsjs"
)

// Config is broker-embed's configuration (YAML). Every key has a working
// default: an empty file starts a single node on 127.0.0.1:4222.
type Config struct {
	// DataDir holds JetStream's files (default ./fieldsync-data).
	DataDir string `yaml:"data_dir"`
	NATS    struct {
		Host string `yaml:"host"` // default 127.0.0.1
		Port int    `yaml:"port"` // default 4222; -1 picks a free port
		// SyncInterval: how often JetStream fsyncs (default 5s; the server's
		// own default is 2m).
		SyncInterval time.Duration `yaml:"sync_interval"`
		MaxPayload   int32         `yaml:"max_payload"` // default 1 MiB
		Logging      bool          `yaml:"logging"`
	} `yaml:"nats"`
	// HTTPAddr serves /healthz and POST /v1/publish (default 127.0.0.1:8222).
	HTTPAddr string `yaml:"http_addr"`
	// OrgUnits get one stream each; the tenant-wide stream always exists.
	OrgUnits []string `yaml:"org_units"`
	// Streams are the limits of every org unit stream.
	Streams natsjs.StreamPolicy `yaml:"streams"`
	// Ingest holds the limits of device uploads and results.
	Ingest natsjs.IngestPolicy `yaml:"ingest"`
	// Rights say what devices may write.
	Rights ingest.Rights `yaml:"rights"`
}

// LoadConfig reads path (YAML); unknown keys are errors.
func LoadConfig(path string) (Config, error) {
	var c Config
	if err := yamlconf.Load(path, &c); err != nil {
		return c, fmt.Errorf("broker: %w", err)
	}
	c = c.WithDefaults()
	return c, c.Validate()
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
	return c
}

// Validate checks the org unit names.
func (c Config) Validate() error {
	for _, u := range c.OrgUnits {
		if err := events.ValidToken(u); err != nil {
			return fmt.Errorf("broker: config org_units: %w", err)
		}
	}
	return nil
}

// JetStreamDir is where the embedded server stores its data.
func (c Config) JetStreamDir() string { return filepath.Join(c.DataDir, "jetstream") }
