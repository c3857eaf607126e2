package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/fieldsync/fieldsync/events"
)

// credentialsOption authenticates with the credentials file at path, with
// the user JWT jwtOf gives when it gives one.
func credentialsOption(path string, jwtOf func() string) nats.Option {
	if jwtOf == nil {
		return nats.UserCredentials(path)
	}
	return nats.UserJWT(func() (string, error) {
		if j := jwtOf(); j != "" {
			return j, nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("natsjs: credentials: %w", err)
		}
		return jwt.ParseDecoratedJWT(b)
	}, func(nonce []byte) ([]byte, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("natsjs: credentials: %w", err)
		}
		kp, err := jwt.ParseDecoratedUserNKey(b)
		if err != nil {
			return nil, fmt.Errorf("natsjs: credentials: %w", err)
		}
		defer kp.Wipe()
		return kp.Sign(nonce)
	})
}

// ErrNoGrant: the server did not answer with the device's access (it is
// older than access control, or runs without authentication).
var ErrNoGrant = errors.New("natsjs: the server does not hand out device access")

// Grant asks the server for device's current access ([events.Grant]).
func (c *Client) Grant(ctx context.Context, device string) (events.Grant, error) {
	subj, err := events.AccessRequestSubject(device)
	if err != nil {
		return events.Grant{}, err
	}
	return requestGrant(ctx, c.nc, subj)
}

func requestGrant(ctx context.Context, nc *nats.Conn, subj string) (events.Grant, error) {
	msg, err := nc.RequestWithContext(ctx, subj, nil)
	if errors.Is(err, nats.ErrNoResponders) {
		return events.Grant{}, ErrNoGrant
	}
	if err != nil {
		return events.Grant{}, fmt.Errorf("natsjs: access: %w", err)
	}
	g, err := events.ParseGrant(msg.Data)
	if err != nil {
		return g, err
	}
	if g.Error != "" {
		return g, fmt.Errorf("natsjs: access: the server says: %s", g.Error)
	}
	return g, nil
}

// GrantAs asks for device's access as its status identity (userJWT and
// kp, see natsauth.ParseStatusCreds) on a connection of its own: what a
// device does when the broker refuses its user JWT, to learn whether it
// was revoked or holds an outdated JWT. ca is as [ConnectOptions.CA].
func GrantAs(ctx context.Context, url, ca, device, userJWT string, kp nkeys.KeyPair) (events.Grant, error) {
	inbox, err := events.DeviceInboxPrefix(device)
	if err != nil {
		return events.Grant{}, err
	}
	opts := []nats.Option{nats.Name("fieldsync-agent-status " + device), nats.Timeout(2 * time.Second), nats.NoReconnect(),
		nats.CustomInboxPrefix(inbox), nats.UserJWT(func() (string, error) { return userJWT, nil }, kp.Sign)}
	if ca != "" {
		opts = append(opts, nats.RootCAs(ca))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return events.Grant{}, fmt.Errorf("natsjs: status identity: %w", err)
	}
	defer nc.Close()
	subj, _ := events.AccessRequestSubject(device)
	return requestGrant(ctx, nc, subj)
}

// SubscribeGrants calls fn with each grant the server pushes to device
// and acknowledges it once fn returned nil (the server then applies the
// change that may disconnect the device). Unsubscribe the result to stop.
func (c *Client) SubscribeGrants(device string, fn func(events.Grant) error) (*nats.Subscription, error) {
	subj, err := events.AccessGrantSubject(device)
	if err != nil {
		return nil, err
	}
	return c.nc.Subscribe(subj, func(m *nats.Msg) {
		g, err := events.ParseGrant(m.Data)
		if err == nil {
			err = fn(g)
		}
		if err == nil {
			_ = m.Respond([]byte(events.GrantAck))
		}
	})
}

// SignIn checks user with the server for device ([events.SignIn]).
func (c *Client) SignIn(ctx context.Context, device, user string) (events.SignInReply, error) {
	subj, err := events.SignInSubject(device)
	if err != nil {
		return events.SignInReply{}, err
	}
	data, _ := json.Marshal(events.SignIn{User: user})
	msg, err := c.nc.RequestWithContext(ctx, subj, data)
	if errors.Is(err, nats.ErrNoResponders) {
		return events.SignInReply{}, ErrNoGrant
	}
	if err != nil {
		return events.SignInReply{}, fmt.Errorf("natsjs: sign-in: %w", err)
	}
	var r events.SignInReply
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		return r, fmt.Errorf("natsjs: sign-in answer: %w", err)
	}
	return r, nil
}

// ForceReconnect drops the connection and connects again at once (with a
// user JWT that just changed).
func (c *Client) ForceReconnect() error { return c.nc.ForceReconnect() }
