package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/ingest"
	"github.com/fieldsync/fieldsync/metrics"
	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/natsserver"
	"github.com/fieldsync/fieldsync/publish"
)

// Broker is a running server side. Start it with [Open], stop it with
// [Broker.Close].
type Broker struct {
	cfg        Config
	log        *slog.Logger
	srv        *natsserver.Server
	auth       *natsauth.Authority
	nc         *nats.Conn
	client     *natsjs.Client
	ingestNC   *nats.Conn
	publishNC  *nats.Conn
	sub        *nats.Subscription
	docSub     *nats.Subscription
	hello      *nats.Subscription
	stopIngest context.CancelFunc
	ingestDone chan error
	ingest     ingestHealth
	access     *accessControl
	http       *http.Server
	ln         net.Listener
	done       chan error
	metrics    *metrics.Broker
	closeOnce  sync.Once
	closeErr   error
}

// Open starts the embedded server, provisions the streams and starts the
// publish API and the HTTP endpoints.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (_ *Broker, err error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	b := &Broker{cfg: cfg, log: log, done: make(chan error, 1)}
	defer func() {
		if err != nil {
			b.Close(context.WithoutCancel(ctx))
		}
	}()
	scfg := natsserver.Config{Name: cfg.ServerName, Host: cfg.NATS.Host, Port: cfg.NATS.Port,
		StoreDir: cfg.JetStreamDir(), SyncInterval: cfg.NATS.SyncInterval, MaxPayload: cfg.NATS.MaxPayload, Logging: cfg.NATS.Logging,
		DefaultMaxConsumers: maxConsumers(cfg.Streams)}
	if scfg.Cluster, err = cfg.serverCluster(); err != nil {
		return nil, err
	}
	if scfg.Operator, err = b.openAuth(); err != nil {
		return nil, err
	}
	scfg.TLS = b.serverTLS()
	if b.srv, err = natsserver.Start(ctx, scfg); err != nil {
		return nil, err
	}
	if b.nc, err = b.connect(natsauth.RoleBroker); err != nil {
		return nil, err
	}
	if b.client, err = natsjs.NewClient(b.nc); err != nil {
		return nil, err
	}
	if err = b.provision(ctx); err != nil {
		return nil, err
	}
	b.metrics = b.newMetrics()
	if err = b.startAccess(ctx); err != nil {
		return nil, err
	}
	if err = b.startIngest(ctx); err != nil {
		return nil, err
	}
	if b.hello, err = natsjs.ServeHello(b.nc, events.LocalHello("broker")); err != nil {
		return nil, err
	}
	if err = b.startPublish(); err != nil {
		return nil, err
	}
	if b.auth != nil {
		if err := b.auth.SetBrokerURL(b.ClientURL()); err != nil {
			return nil, err
		}
	}
	log.Info("broker ready", "nats", b.ClientURL(), "http", b.HTTPURL(), "org_units", cfg.OrgUnits, "data_dir", cfg.DataDir)
	return b, nil
}

// startPublish serves the publish API and the document publish API (NATS
// and HTTP) on its own connection, as the publish identity.
func (b *Broker) startPublish() error {
	var err error
	if b.auth == nil {
		b.publishNC, err = b.connect(natsauth.RolePublish)
	} else {
		// Signed with the units: deleting document content purges their
		// buckets' streams, which a permission names one by one.
		var userJWT, seed string
		if userJWT, seed, err = b.auth.ComponentFor(natsauth.RolePublish, b.cfg.OrgUnits); err == nil {
			b.publishNC, err = b.srv.Connect("fieldsync-"+string(natsauth.RolePublish), nats.UserJWTAndSeed(userJWT, seed))
		}
	}
	if err != nil {
		return err
	}
	pc, err := natsjs.NewClient(b.publishNC)
	if err != nil {
		return err
	}
	svc := publish.NewService(pc.Publisher(), b.log)
	svc.OnResponse = func(r publish.Response) { b.metrics.Published(publishOutcome(r)) }
	svc.MaxDocumentSize = b.cfg.MaxDocumentSize
	if b.sub, err = svc.Serve(b.publishNC); err != nil {
		return fmt.Errorf("broker: publish API: %w", err)
	}
	if b.docSub, err = svc.ServeDocuments(b.publishNC); err != nil {
		return fmt.Errorf("broker: document publish API: %w", err)
	}
	return b.serveHTTP(svc)
}

// startIngest runs the ingest of device uploads until Close and waits for
// its first report: reading, or down (then /healthz says so while ingest
// retries by itself). It uses its own in-process connection, as the
// ingest identity (the only one that may publish results), so a slow
// ingest never delays the publish API.
func (b *Broker) startIngest(ctx context.Context) error {
	var err error
	if b.ingestNC, err = b.connect(natsauth.RoleIngest); err != nil {
		return err
	}
	client, err := natsjs.NewClient(b.ingestNC)
	if err != nil {
		return err
	}
	ictx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.stopIngest, b.ingestDone = cancel, make(chan error, 1)
	first := make(chan struct{})
	var once sync.Once
	var authz ingest.Authorizer
	if b.access != nil {
		authz = b.access
	}
	in := ingest.New(client, ingest.Options{Rights: b.cfg.Rights, Access: authz, Policy: b.cfg.Ingest, Log: b.log,
		OnResult: func(r *events.Result) { b.metrics.Ingested(string(r.Status)) },
		OnHealth: func(err error) {
			b.ingest.set(err)
			b.metrics.IngestUp(err == nil)
			once.Do(func() { close(first) })
		}})
	go func() { b.ingestDone <- in.Run(ictx) }()
	select {
	case <-first:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("broker: starting ingest: %w", ctx.Err())
	}
}

// maxConsumers is the consumer limit of every stream: fieldsync's own
// set it, and the server's default is it for those that set none (the
// results stream, document buckets), where nats-server would stop at 1,000.
func maxConsumers(p natsjs.StreamPolicy) int {
	if p.MaxConsumers == 0 {
		return natsjs.DefaultStreamPolicy().MaxConsumers
	}
	return p.MaxConsumers
}

// JetStreamStats reads this node's JetStream figures: streams, consumers,
// Raft groups, API requests.
func (b *Broker) JetStreamStats() (natsserver.JetStreamStats, error) { return b.srv.JetStreamStats() }

// ClientURL is the NATS URL devices connect to.
func (b *Broker) ClientURL() string { return b.srv.ClientURL() }

// HTTPURL is the base URL of the HTTP endpoints.
func (b *Broker) HTTPURL() string { return "http://" + b.ln.Addr().String() }

// Client is the broker's own in-process JetStream client.
func (b *Broker) Client() *natsjs.Client { return b.client }

// Close stops the HTTP server, ingest, the publish API and the embedded
// server. Calling it again returns the first call's result.
func (b *Broker) Close(ctx context.Context) error {
	b.closeOnce.Do(func() { b.closeErr = b.close(ctx) })
	return b.closeErr
}

func (b *Broker) close(ctx context.Context) error {
	var errs []error
	if b.http != nil {
		errs = append(errs, b.http.Shutdown(ctx))
		if err := <-b.done; !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	if b.stopIngest != nil {
		b.stopIngest()
		errs = append(errs, <-b.ingestDone)
	}
	for _, sub := range []*nats.Subscription{b.sub, b.docSub} {
		if sub != nil {
			errs = append(errs, sub.Drain())
		}
	}
	if b.access != nil {
		b.access.close()
	}
	for _, nc := range []*nats.Conn{b.nc, b.ingestNC, b.publishNC} {
		if nc != nil {
			nc.Close()
		}
	}
	if b.auth != nil {
		errs = append(errs, b.auth.SetBrokerURL(""))
	}
	if b.srv != nil {
		errs = append(errs, b.srv.Close(ctx))
	}
	return errors.Join(errs...)
}
