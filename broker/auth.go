package broker

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/natsserver"
)

// openAuth opens (on first start: creates) the authority in the data dir
// and returns the server's operator mode settings, or nil with a warning
// when the config says auth: none.
func (b *Broker) openAuth() (*natsserver.OperatorAuth, error) {
	if b.cfg.Auth == AuthNone {
		b.log.Warn("NATS port WITHOUT AUTHENTICATION (config auth: none): any client that reaches it can read, write and delete every stream, and the HTTP publish API takes requests without a token",
			"nats_host", b.cfg.NATS.Host, "nats_port", b.cfg.NATS.Port)
		return nil, nil
	}
	open := natsauth.Open
	if b.cfg.Cluster.Enabled() {
		// Nodes starting together must not each create an operator: the
		// shared authority is made once, by `broker-embed init`.
		open = natsauth.OpenExisting
	}
	a, err := open(b.cfg.AuthDir())
	if errors.Is(err, natsauth.ErrNoAuthority) {
		return nil, fmt.Errorf("broker: cluster node %s: no operator keys in %s: run `broker-embed init --config FILE` once before starting the nodes: %w",
			b.cfg.ServerName, b.cfg.AuthDir(), err)
	}
	if err != nil {
		return nil, err
	}
	b.auth = a
	return &natsserver.OperatorAuth{OperatorJWT: a.OperatorJWT(), SystemAccount: a.SystemAccount(), Accounts: a.Accounts()}, nil
}

// connect opens an in-process connection for the component role, with
// that role's credentials when authentication is on.
func (b *Broker) connect(role natsauth.Role) (*nats.Conn, error) {
	name := "fieldsync-" + string(role)
	if b.auth == nil {
		return b.srv.Connect(name)
	}
	userJWT, seed, err := b.auth.Component(role)
	if err != nil {
		return nil, err
	}
	return b.srv.Connect(name, nats.UserJWTAndSeed(userJWT, seed))
}

// Authority is the broker's operator side (keys, issued users), nil when
// the config says auth: none.
func (b *Broker) Authority() *natsauth.Authority { return b.auth }

// pushAccount applies the tenant account's current JWT (revocations,
// re-issued devices) on the embedded server, over an in-process system
// account connection (so it works whatever the device listener requires).
func (b *Broker) pushAccount(ctx context.Context) error {
	userJWT, seed, err := b.auth.SystemUser()
	if err != nil {
		return err
	}
	nc, err := b.srv.Connect("fieldsync-admin", nats.UserJWTAndSeed(userJWT, seed))
	if err != nil {
		return err
	}
	defer nc.Close()
	return natsauth.PushAccountOn(ctx, nc, b.auth.TenantAccount(), b.auth.TenantJWT())
}
