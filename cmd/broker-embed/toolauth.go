package main

import (
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/fieldsync/fieldsync/natsauth"
)

// toolAuth is how seed and publish authenticate: a credentials file
// (--creds), else the operator's tool identity signed on the spot with
// the keys of the broker's data dir (--data-dir / --config, default
// ./fieldsync-data), else nothing (a broker with auth: none).
type toolAuth struct {
	dir   dataDirFlags
	creds string
}

func (t *toolAuth) register(cmd *cobra.Command) {
	t.dir.register(cmd)
	cmd.Flags().StringVar(&t.creds, "creds", "", "NATS credentials file (default: sign a tool identity with the data dir's keys)")
}

// connect dials url as name with the tool's credentials.
func (t *toolAuth) connect(url, name string) (*nats.Conn, error) {
	return t.connectAs(url, name, natsauth.RoleTool)
}

// connectAs dials url as name with --creds, else as role signed with the
// data dir's keys.
func (t *toolAuth) connectAs(url, name string, role natsauth.Role) (*nats.Conn, error) {
	opts := []nats.Option{nats.Name(name)}
	switch a, err := t.dir.authority(); {
	case t.creds != "":
		opts = append(opts, nats.UserCredentials(t.creds))
	case errors.Is(err, natsauth.ErrNoAuthority):
	case err != nil:
		return nil, err
	default:
		userJWT, seed, err := a.Component(role)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserJWTAndSeed(userJWT, seed))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", url, err)
	}
	return nc, nil
}
