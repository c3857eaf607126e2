// Package natsserver owns the embedded nats-server: it starts a JetStream
// enabled server from a small [Config], hands out in-process connections to
// the process's own components and shuts the server down cleanly.
//
// It is the only package that imports github.com/nats-io/nats-server.
package natsserver

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Config is what fieldsync needs to say about the embedded server. Zero
// values take the documented defaults.
type Config struct {
	// Name of this server (and JetStream node).
	Name string
	// Host and Port of the client listener devices connect to. Port -1 picks
	// a free port (tests); 0 means the default 4222.
	Host string
	Port int
	// StoreDir is where JetStream keeps its files. Required.
	StoreDir string
	// SyncInterval is how often the file store fsyncs. nats-server's default
	// is 2 minutes: a power loss could lose that much acknowledged data. We
	// default to 5 s; process crashes lose nothing either way (the data is in
	// the OS page cache once acknowledged).
	SyncInterval time.Duration
	// MaxPayload is the largest message the server accepts (default 1 MiB).
	MaxPayload int32
	// MaxStore caps JetStream disk use in bytes (0 = no fixed cap).
	MaxStore int64
	// DefaultMaxConsumers is the per-stream consumer limit applied where a
	// stream sets none. nats-server 2.15 defaults to 1,000; see
	// natsjs.StreamPolicy for the limit set on fieldsync's own streams.
	DefaultMaxConsumers int
	// Logging turns the server's own log on (stderr).
	Logging bool
	// Users, when set, require a user name and password (name → password)
	// from every client connecting over the network (tests of the agent's
	// authentication errors). Ignored when Operator is set.
	Users map[string]string
	// Operator, when set, runs the server in operator mode: every client,
	// in-process ones included, must present a user JWT signed by one of
	// the preloaded accounts, with the subject permissions in it.
	Operator *OperatorAuth
	// TLS, when set, serves TLS on the client listener. In-process
	// connections ([Server.Connect]) never need it.
	TLS *TLS
	// Cluster, when set, makes this server one node of a JetStream
	// cluster (Name must then be unique in it).
	Cluster *Cluster
}

// Cluster is this node's part of a JetStream cluster: the cluster's name,
// where this node listens for routes, and the routes to the other nodes
// (nats-route://host:port; listing this node too is harmless). Every node
// of a cluster must trust the same operator and accounts.
type Cluster struct {
	Name   string
	Host   string
	Port   int
	Routes []string
	// User and Password authenticate routes both ways: this node refuses
	// a route that does not present them and presents them on its own.
	// Both empty: routes unauthenticated (refused by [Start]).
	User, Password string
}

// TLS is the client listener's certificate and whether plain connections
// are refused.
type TLS struct {
	// CertFile and KeyFile are PEM files: the server's certificate (chain)
	// and its private key.
	CertFile, KeyFile string
	// Required refuses clients that do not start TLS; false also accepts
	// plain connections (a migration step).
	Required bool
}

// OperatorAuth is NATS's decentralized authentication (operator → account
// → user JWTs, see package natsauth, which makes and signs them).
//
// The accounts are preloaded into nats-server's memory resolver
// (MEMORY with resolver_preload, in config file terms). That resolver does
// not track updates itself, so the server listens on
// $SYS.REQ.ACCOUNT.<account>.CLAIMS.UPDATE: a system account user
// publishing a newer account JWT there (new revocations, limits) changes
// the running server at once, and users the account JWT now revokes are
// disconnected. Users themselves need no server state: any user JWT the
// account key signed is accepted, so issuing one needs no update at all.
// The caller keeps the authoritative account JWTs (package natsauth keeps
// them in the data dir) and preloads them again at every start, which is
// why the full `nats` resolver, with a JWT store of its own, is not used.
type OperatorAuth struct {
	// OperatorJWT is the trusted operator's JWT.
	OperatorJWT string
	// SystemAccount is the public key of the system account.
	SystemAccount string
	// Accounts maps account public keys to their JWTs (the system
	// account's included).
	Accounts map[string]string
}

// maxControlLine is the longest protocol line the server reads (nats-server
// defaults to 4 KiB). A device's CONNECT carries its user JWT, whose
// permissions name its own consumers on each of its units' streams: about
// 2.7 KB for one unit and 1.1 KB more per unit, so 4 KiB refused a device
// of two units. 256 KiB allows about 230 units per device.
const maxControlLine = 256 << 10

// Server is a running embedded nats-server.
type Server struct {
	ns *server.Server
}

// Start starts the server and waits until it accepts connections.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("natsserver: StoreDir is required")
	}
	opts := &server.Options{
		ServerName:         cfg.Name,
		Host:               cfg.Host,
		Port:               cfg.Port,
		JetStream:          true,
		StoreDir:           cfg.StoreDir,
		SyncInterval:       cfg.SyncInterval,
		MaxPayload:         cfg.MaxPayload,
		JetStreamMaxStore:  cfg.MaxStore,
		JetStreamMaxMemory: 256 << 20,
		NoSigs:             true,
		MaxControlLine:     maxControlLine,
		JetStreamLimits:    server.JSLimitOpts{DefaultMaxConsumers: cfg.DefaultMaxConsumers},
	}
	if cfg.Cluster != nil {
		if err := clusterMode(opts, cfg); err != nil {
			return nil, err
		}
	}
	if cfg.TLS != nil {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cfg.TLS.CertFile, KeyFile: cfg.TLS.KeyFile})
		if err != nil {
			return nil, fmt.Errorf("natsserver: tls: %w", err)
		}
		opts.TLSConfig, opts.TLS, opts.TLSTimeout, opts.AllowNonTLS = tc, true, 2, !cfg.TLS.Required
	}
	if cfg.Operator != nil {
		if err := operatorMode(opts, cfg.Operator); err != nil {
			return nil, err
		}
	} else {
		for name, pass := range cfg.Users {
			opts.Users = append(opts.Users, &server.User{Username: name, Password: pass})
		}
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Port == 0 {
		opts.Port = 4222
	}
	if opts.SyncInterval == 0 {
		opts.SyncInterval = 5 * time.Second
	}
	if opts.MaxPayload == 0 {
		opts.MaxPayload = 1 << 20
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsserver: %w", err)
	}
	if cfg.Logging {
		ns.ConfigureLogger()
	}
	go ns.Start()
	wait := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		wait = time.Until(dl)
	}
	if !ns.ReadyForConnections(wait) {
		ns.Shutdown()
		return nil, fmt.Errorf("natsserver: not ready for connections within %s", wait)
	}
	return &Server{ns: ns}, nil
}

// How often a route is pinged, and how many unanswered pings close it.
const (
	routePingInterval = 5 * time.Second
	routeMaxPingsOut  = 3
)

// clusterMode sets opts up as one node of cfg.Cluster.
func clusterMode(opts *server.Options, cfg Config) error {
	c := cfg.Cluster
	if c.Name == "" || cfg.Name == "" {
		return errors.New("natsserver: a cluster node needs a cluster name and a server name")
	}
	// Routes ping every 5 s and give up after 3 missed answers: a node cut
	// off (a partition, a dead host: no TCP reset) is noticed in about
	// 15 s instead of the server's default of up to 90 s. Client
	// connections keep the default, so idle devices cost no more.
	opts.Cluster = server.ClusterOpts{Name: c.Name, Host: c.Host, Port: c.Port, PingInterval: routePingInterval, MaxPingsOut: routeMaxPingsOut}
	if opts.Cluster.Port == 0 {
		opts.Cluster.Port = 6222
	}
	if c.User == "" || c.Password == "" {
		return errors.New("natsserver: a cluster node needs the route user and password (unauthenticated routes would let any server join)")
	}
	opts.Cluster.Username, opts.Cluster.Password = c.User, c.Password
	for _, r := range c.Routes {
		u, err := url.Parse(r)
		if err != nil || u.Scheme != "nats-route" || u.Host == "" {
			return fmt.Errorf("natsserver: cluster route %q: want nats-route://host:port", r)
		}
		u.User = url.UserPassword(c.User, c.Password)
		opts.Routes = append(opts.Routes, u)
	}
	return nil
}

// operatorMode sets opts up for decentralized auth with a memory resolver
// holding a's accounts (see [OperatorAuth]).
func operatorMode(opts *server.Options, a *OperatorAuth) error {
	op, err := jwt.DecodeOperatorClaims(a.OperatorJWT)
	if err != nil {
		return fmt.Errorf("natsserver: operator JWT: %w", err)
	}
	res := &server.MemAccResolver{}
	for pub, j := range a.Accounts {
		if err := res.Store(pub, j); err != nil {
			return fmt.Errorf("natsserver: preload account %s: %w", pub, err)
		}
	}
	opts.TrustedOperators = []*jwt.OperatorClaims{op}
	opts.SystemAccount = a.SystemAccount
	opts.AccountResolver = res
	return nil
}

// ClientURL is the URL devices and other processes connect to.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Connect opens an in-process connection (no socket) for the process's own
// components.
func (s *Server) Connect(name string, opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.Name(name), nats.InProcessServer(s.ns), nats.MaxReconnects(-1)}, opts...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("natsserver: in-process connect: %w", err)
	}
	return nc, nil
}

// Close shuts the server down and waits for it, or for ctx.
func (s *Server) Close(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("natsserver: shutdown: %w", ctx.Err())
	}
}

// Ready reports whether the server and its JetStream subsystem are up.
func (s *Server) Ready() bool { return s.ns.Running() && s.ns.JetStreamEnabled() }

// JetStreamStats is what one node holds of JetStream (see
// [Server.JetStreamStats]).
type JetStreamStats struct {
	Streams, Consumers int
	// HAAssets counts the Raft groups this node takes part in (the meta
	// group, each replicated stream and consumer): the figure NATS's
	// max_ha_assets limit and its guidance of about 2,000 a server are about.
	HAAssets int
	// Memory is the bytes held in memory storage.
	Memory uint64
	// APIRequests is the JetStream API requests this node has served.
	APIRequests uint64
}

// JetStreamStats reads this node's JetStream figures.
func (s *Server) JetStreamStats() (JetStreamStats, error) {
	js, err := s.ns.Jsz(&server.JSzOptions{})
	if err != nil {
		return JetStreamStats{}, fmt.Errorf("natsserver: jsz: %w", err)
	}
	return JetStreamStats{Streams: js.Streams, Consumers: js.Consumers, HAAssets: js.HAAssets,
		Memory: js.Memory, APIRequests: js.API.Total}, nil
}
