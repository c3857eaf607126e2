package agent

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/internal/yamlconf"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/projections"
)

// Config is the device agent's configuration (YAML). Every key has a
// default except device_id and org_units.
type Config struct {
	// DeviceID identifies the device on the broker: durable names, upload
	// subjects and credentials derive from it.
	DeviceID string `yaml:"device_id"`
	// User is the person signed in on the device.
	User string `yaml:"user"`
	// OrgUnits are the units whose data the device carries.
	OrgUnits []string `yaml:"org_units"`
	// BrokerURL is the NATS URL of the server side (default
	// nats://127.0.0.1:4222); a comma-separated list names several nodes of
	// a cluster.
	BrokerURL string `yaml:"broker_url"`
	// BrokerURLs, if set, are the nodes of a broker cluster (it replaces
	// BrokerURL): the agent connects to one of them, learns the others the
	// cluster announces, and when its node is lost continues on another
	// from its local checkpoints.
	BrokerURLs []string `yaml:"broker_urls"`
	// Credentials is the device's NATS credentials file, as written by
	// `broker-embed device add --out FILE` (user JWT and nkey seed; keep it
	// readable by the agent's user only). [LoadConfig] takes a relative
	// path as relative to the config file. Empty connects without
	// credentials, which only a broker configured with `auth: none` accepts.
	Credentials string `yaml:"credentials"`
	// CA is a PEM file of the certificate authorities the broker's TLS
	// certificate must chain to (relative to the config file). Set, the
	// agent connects with TLS only and refuses a server it cannot verify;
	// broker_url may then be tls://.
	CA string `yaml:"ca"`
	// DataDir holds the SQLite database and the local API token (default
	// [DefaultDataDir]: %ProgramData%\fieldsync\agent on Windows,
	// fieldsync-agent elsewhere). [LoadConfig] takes a relative one as
	// relative to the config file.
	DataDir string `yaml:"data_dir"`
	// APITokenReaders may read the local API token file besides the user
	// running the agent: on Windows account names or SIDs (the tablet
	// user's account when the agent runs as a service under LocalSystem);
	// elsewhere at most one group, which gets read access (mode 0640).
	APITokenReaders []string `yaml:"api_token_readers"`
	// APIAddr is where the local API listens; it must be a loopback address
	// (default 127.0.0.1:7480).
	APIAddr string `yaml:"api_addr"`
	// SyncInterval is the period of the automatic delta sync of every
	// channel, counted from the last automatic completion (default 30m;
	// -1 turns it off, e.g. when only per-category schedules are wanted).
	SyncInterval time.Duration `yaml:"sync_interval"`
	// Schedule adds per-category automatic syncs and a reminder; its Delta
	// is taken from SyncInterval.
	Schedule Schedule `yaml:"schedule"`
	// BatchSize is how many changes one local transaction applies at most
	// (default 5,000).
	BatchSize int `yaml:"batch_size"`
	// BatchBytes bounds the same batch by the bytes of its messages
	// (default 4 MiB; a batch holds at least one change). The agent keeps a
	// few batches in flight, plus a prefetch of twice this from the broker:
	// with 256 KiB documents this, not BatchSize, is what bounds memory.
	BatchBytes int `yaml:"batch_bytes"`
	// DurableInactive is how long the broker keeps an unused device durable
	// (default 7 days; a durable removed earlier is re-created from the
	// local checkpoint anyway).
	DurableInactive time.Duration `yaml:"durable_inactive"`
	// StallTimeout fails a sync that gets nothing while changes are pending
	// (default 30s).
	StallTimeout time.Duration `yaml:"stall_timeout"`
	// AutosyncInterval is the first retry delay after a failed upload or
	// results catch-up; retries back off exponentially, with jitter, up to a
	// minute (default 1s). Writes go up as soon as they are queued and
	// results arrive as ingest publishes them: nothing polls.
	AutosyncInterval time.Duration `yaml:"autosync_interval"`
	// RetentionPurgeInterval is how often accepted device-created events
	// whose retain_events_days ended are removed (default 10m; also at
	// start).
	RetentionPurgeInterval time.Duration `yaml:"retention_purge_interval"`
	// RetainEventsDays keeps events created on the device this many days
	// after the server accepted them; 0 removes them at once (the compliance
	// app's "Retain Events after sync" unchecked). Default 7.
	RetainEventsDays *int `yaml:"retain_events_days"`
	// RetentionDays wipes the device's data at start when the agent was not
	// used (sign-in or API use) for this many days (default 10; -1: never).
	RetentionDays int `yaml:"retention_days"`
	// RefreshMode is the non-blocking sync (default on): changes download
	// into staging and wait for Apply. Off, a sync applies as it downloads
	// (blocking). A change takes effect on the next sync.
	RefreshMode *bool `yaml:"refresh_mode"`
	// ResumeWindow: an interrupted staged download continues where it
	// stopped if resumed within this window, else starts over from the last
	// applied checkpoint (default 12h).
	ResumeWindow time.Duration `yaml:"resume_window"`
	// Kinds, if set, restricts the record kinds the device projects, per
	// channel (a channel not listed takes every kind). By default every
	// kind the server publishes is synced: kinds are not compiled into the
	// agent. Changes of other kinds are parked on the device, not dropped,
	// and applied at the first start whose kinds take them.
	Kinds events.KindSet `yaml:"kinds"`
	// MaxSchemaVersion pins the newest envelope schema the agent reads
	// (default and maximum: this build's, events.SchemaVersion). Changes of
	// a newer schema are parked like changes of an excluded kind; against
	// a server writing a newer schema the agent stops as incompatible.
	MaxSchemaVersion int `yaml:"max_schema_version"`
	// DocumentsReserve is the free disk space, in bytes, a document
	// download must leave on the data folder's volume (default 256 MiB; -1:
	// none): a download that would leave less is refused.
	DocumentsReserve int64 `yaml:"documents_free_reserve"`
	// Clock replaces time.Now for the retention count (tests).
	Clock func() time.Time `yaml:"-"`
}

// LoadConfig reads a YAML config file and applies defaults. A relative
// data_dir (and credentials file) is taken relative to the config file's folder, so that a
// service (started in System32 or /) and the CLI find the same data.
func LoadConfig(path string) (Config, error) {
	var c Config
	if err := yamlconf.Load(path, &c); err != nil {
		return c, fmt.Errorf("agent: %w", err)
	}
	c = c.WithDefaults()
	abs, err := filepath.Abs(path)
	if err != nil {
		return c, fmt.Errorf("agent: config %s: %w", path, err)
	}
	if !filepath.IsAbs(c.DataDir) {
		c.DataDir = filepath.Join(filepath.Dir(abs), c.DataDir)
	}
	if c.Credentials != "" && !filepath.IsAbs(c.Credentials) {
		c.Credentials = filepath.Join(filepath.Dir(abs), c.Credentials)
	}
	if c.CA != "" && !filepath.IsAbs(c.CA) {
		c.CA = filepath.Join(filepath.Dir(abs), c.CA)
	}
	return c, c.Validate()
}

// WithDefaults returns c with every unset key at its default.
func (c Config) WithDefaults() Config {
	if len(c.BrokerURLs) > 0 {
		c.BrokerURL = strings.Join(c.BrokerURLs, ",")
	}
	if c.BrokerURL == "" {
		c.BrokerURL = "nats://127.0.0.1:4222"
	}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir()
	}
	if c.APIAddr == "" {
		c.APIAddr = "127.0.0.1:7480"
	}
	if c.SyncInterval == 0 {
		c.SyncInterval = 30 * time.Minute
	}
	if c.BatchSize == 0 {
		c.BatchSize = 5000
	}
	if c.DurableInactive == 0 {
		c.DurableInactive = natsjs.DefaultInactiveThreshold
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = 30 * time.Second
	}
	if c.BatchBytes == 0 {
		c.BatchBytes = 4 << 20
	}
	if c.AutosyncInterval == 0 {
		c.AutosyncInterval = time.Second
	}
	if c.RetentionPurgeInterval == 0 {
		c.RetentionPurgeInterval = 10 * time.Minute
	}
	if c.RetentionDays == 0 {
		c.RetentionDays = 10
	}
	if c.DocumentsReserve == 0 {
		c.DocumentsReserve = 256 << 20
	}
	if c.RefreshMode == nil {
		on := true
		c.RefreshMode = &on
	}
	if c.ResumeWindow == 0 {
		c.ResumeWindow = 12 * time.Hour
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.RetainEventsDays == nil {
		days := 7
		c.RetainEventsDays = &days
	}
	return c
}

// Validate reports the first invalid key.
func (c Config) Validate() error {
	if err := events.ValidToken(c.DeviceID); err != nil {
		return fmt.Errorf("agent: config device_id: %w", err)
	}
	if len(c.OrgUnits) == 0 {
		return errors.New("agent: config org_units: at least one org unit is required")
	}
	seen := map[string]bool{}
	for _, u := range c.OrgUnits {
		if err := events.ValidToken(u); err != nil {
			return fmt.Errorf("agent: config org_units: %w", err)
		}
		if seen[u] {
			return fmt.Errorf("agent: config org_units: %q listed twice", u)
		}
		seen[u] = true
	}
	if *c.RetainEventsDays < 0 {
		return fmt.Errorf("agent: config retain_events_days %d: want 0 or more", *c.RetainEventsDays)
	}
	if c.BatchSize < 1 || c.BatchSize > 100000 {
		return fmt.Errorf("agent: config batch_size %d: want 1..100000", c.BatchSize)
	}
	if c.MaxSchemaVersion < 0 || c.MaxSchemaVersion > events.SchemaVersion {
		return fmt.Errorf("agent: config max_schema_version %d: want 1..%d (0: %[2]d)", c.MaxSchemaVersion, events.SchemaVersion)
	}
	if err := c.Kinds.Validate(); err != nil {
		return fmt.Errorf("agent: config kinds: %w", err)
	}
	if c.BatchBytes < 64<<10 || c.BatchBytes > 1<<30 {
		return fmt.Errorf("agent: config batch_bytes %d: want 65536..1073741824", c.BatchBytes)
	}
	if c.AutosyncInterval < 0 || c.RetentionPurgeInterval < 0 {
		return fmt.Errorf("agent: config autosync_interval %s, retention_purge_interval %s: want positive durations", c.AutosyncInterval, c.RetentionPurgeInterval)
	}
	return nil
}

// Reader is what this agent reads of its streams: the schema and kinds
// settings (see [projections.Reader]).
func (c Config) Reader() projections.Reader {
	return projections.Reader{MaxSchemaVersion: c.MaxSchemaVersion, Kinds: c.Kinds}
}

// Refresh reports whether syncs are non-blocking (staged until Apply).
func (c Config) Refresh() bool { return c.RefreshMode == nil || *c.RefreshMode }

func (c Config) schedule() Schedule {
	s := c.Schedule
	s.Delta = max(c.SyncInterval, 0)
	return s
}

// RetainEvents is how long accepted device-created events stay.
func (c Config) RetainEvents() time.Duration {
	return time.Duration(*c.RetainEventsDays) * 24 * time.Hour
}

// DBPath is the SQLite database file.
func (c Config) DBPath() string { return filepath.Join(c.DataDir, "device.db") }
