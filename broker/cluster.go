package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/natsserver"
)

// A cluster node runs the whole server side, as a single broker does:
// every node provisions (idempotently: the same configuration from every
// node changes nothing), serves the publish API (queue group) and runs
// ingest on the one shared durable of FS_UPLOADS, so JetStream hands each
// upload to one node; ingest's mutation log and the per-record expected
// version keep an upload retried on another node from applying twice.

// clusterWait bounds how long a starting node waits for JetStream: a
// cluster has none until a majority of its nodes is up and has elected
// a meta leader.
const clusterWait = 3 * time.Minute

func (c Config) serverCluster() (*natsserver.Cluster, error) {
	if !c.Cluster.Enabled() {
		return nil, nil
	}
	host, port, err := net.SplitHostPort(c.Cluster.Listen)
	if err != nil {
		return nil, fmt.Errorf("broker: cluster.listen: %w", err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, fmt.Errorf("broker: cluster.listen port %q: %w", port, err)
	}
	secret, err := natsauth.RouteSecret(c.AuthDir())
	if errors.Is(err, natsauth.ErrNoRouteSecret) {
		return nil, fmt.Errorf("broker: cluster node: %w: run `broker-embed init --config FILE` once on the auth_dir the nodes share "+
			"(it adds the route secret to existing keys)", err)
	}
	if err != nil {
		return nil, fmt.Errorf("broker: cluster node: %w", err)
	}
	return &natsserver.Cluster{Name: c.Cluster.Name, Host: host, Port: p, Routes: c.Cluster.Routes,
		User: natsauth.RouteUser, Password: secret}, nil
}

// provisionAttempt bounds one provisioning attempt of a cluster node.
const provisionAttempt = 4 * time.Second

// provision creates or updates the streams, buckets and the uploads
// stream. On a cluster node it retries, with backoff, until JetStream
// answers (a majority of the nodes is up) or clusterWait ends.
func (b *Broker) provision(ctx context.Context) error {
	once := func(ctx context.Context) error {
		if b.cfg.Cluster.Enabled() { // one attempt must not use up the whole wait
			// Short: a request made before the meta leader exists is never
			// answered, and what one attempt created stays for the next.
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, provisionAttempt)
			defer cancel()
		}
		if err := b.client.Provision(ctx, b.cfg.OrgUnits, b.cfg.Streams); err != nil {
			return err
		}
		err := b.client.ProvisionIngest(ctx, b.cfg.Ingest)
		if errors.Is(err, natsjs.ErrLegacyUploads) {
			b.log.Error("uploads stream from an older build kept as it is; recreate it once ingest has drained it (README, quotas)", "err", err)
			return nil
		}
		return err
	}
	if !b.cfg.Cluster.Enabled() {
		return once(ctx)
	}
	start := time.Now()
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		err := once(ctx)
		if err != nil && ctx.Err() == nil {
			b.log.Info("waiting for the cluster's JetStream (a majority of the nodes must be up)", "node", b.cfg.ServerName,
				"waited", time.Since(start).Round(time.Second), "err", err)
		}
		return struct{}{}, err
	}, backoff.WithBackOff(backoff.NewExponentialBackOff()), backoff.WithMaxElapsedTime(clusterWait))
	if err != nil {
		return fmt.Errorf("broker: provisioning on cluster %s: %w", b.cfg.Cluster.Name, err)
	}
	return nil
}
