package natsjs

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Client is a JetStream connection with fieldsync's operations on it.
type Client struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	owns bool
}

// ConnectOptions tune [Connect].
type ConnectOptions struct {
	// Name identifies the connection on the broker (device id, component).
	Name string
	// Timeout bounds the first connection attempt (default 5 s).
	Timeout time.Duration
	// RetryOnFailedConnect keeps trying in the background when the broker is
	// unreachable at start (a device offline at boot).
	RetryOnFailedConnect bool
	// OnStateChange, when set, is told of every connect, disconnect and
	// reconnect.
	OnStateChange func(connected bool, err error)
	// Credentials is a NATS credentials file (user JWT and nkey seed, see
	// `broker-embed device add`); empty connects without credentials.
	Credentials string
	// InboxPrefix replaces the default _INBOX for reply subjects: a device
	// uses [events.DeviceInboxPrefix], the only inboxes its credentials may
	// read.
	InboxPrefix string
	// CA is a PEM file of the certificate authorities the broker's TLS
	// certificate must chain to. Set, the connection uses TLS only
	// (whatever the URL's scheme) and refuses a server it cannot verify.
	CA string
}

// Connect dials the broker at url.
func Connect(url string, o ConnectOptions) (*Client, error) {
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	opts := []nats.Option{nats.Name(o.Name), nats.Timeout(o.Timeout), nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second), nats.RetryOnFailedConnect(o.RetryOnFailedConnect)}
	if o.Credentials != "" {
		opts = append(opts, nats.UserCredentials(o.Credentials))
	}
	if o.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(o.InboxPrefix))
	}
	if o.CA != "" {
		opts = append(opts, nats.RootCAs(o.CA))
	}
	if f := o.OnStateChange; f != nil {
		opts = append(opts,
			nats.ConnectHandler(func(*nats.Conn) { f(true, nil) }),
			nats.ReconnectHandler(func(*nats.Conn) { f(true, nil) }),
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { f(false, err) }))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("natsjs: connect %s: %w", url, err)
	}
	c, err := NewClient(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	c.owns = true
	return c, nil
}

// NewClient wraps an existing connection (e.g. an in-process one). Close
// does not close a connection the client did not open.
func NewClient(nc *nats.Conn) (*Client, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("natsjs: %w", err)
	}
	return &Client{nc: nc, js: js}, nil
}

// Conn is the underlying connection.
func (c *Client) Conn() *nats.Conn { return c.nc }

// Connected reports whether the connection is currently up.
func (c *Client) Connected() bool { return c.nc.IsConnected() }

// Close closes the connection if the client opened it.
func (c *Client) Close() {
	if c.owns {
		c.nc.Close()
	}
}

// Provision creates or updates the tenant stream and the streams of units;
// see [StreamConfig].
func (c *Client) Provision(ctx context.Context, units []string, p StreamPolicy) error {
	return provision(ctx, c.js, units, p)
}

// Publisher returns a publisher on this connection.
func (c *Client) Publisher() *Publisher { return &Publisher{js: c.js} }

// OpenCursor opens a device cursor; see [CursorSpec].
func (c *Client) OpenCursor(ctx context.Context, spec CursorSpec) (*Cursor, error) {
	return openCursor(ctx, c.js, spec)
}

// UnitState returns the state of unit's stream, or [ErrUnknownUnit].
func (c *Client) UnitState(ctx context.Context, unit string) (StreamState, error) {
	return unitState(ctx, c.js, unit)
}

// DeleteDurable removes a device durable (operators, tests). Deleting one
// that does not exist is not an error.
func (c *Client) DeleteDurable(ctx context.Context, unit, durable string) error {
	return deleteDurable(ctx, c.js, unit, durable)
}

// ConsumerLag returns, over the consumers of the named stream (device
// durables, feed consumers), the most messages any one has still to
// receive: how far the furthest-behind reader lags.
func (c *Client) ConsumerLag(ctx context.Context, name string) (uint64, error) {
	s, err := c.js.Stream(ctx, name)
	if err != nil {
		return 0, fmt.Errorf("natsjs: stream %s: %w", name, err)
	}
	var most uint64
	list := s.ListConsumers(ctx)
	for info := range list.Info() {
		most = max(most, info.NumPending)
	}
	if err := list.Err(); err != nil {
		return 0, fmt.Errorf("natsjs: consumers of %s: %w", name, err)
	}
	return most, nil
}

// StreamState returns the state of the named stream.
func (c *Client) StreamState(ctx context.Context, name string) (StreamState, error) {
	s, err := c.js.Stream(ctx, name)
	if err != nil {
		return StreamState{}, fmt.Errorf("natsjs: stream %s: %w", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return StreamState{}, fmt.Errorf("natsjs: stream %s: %w", name, err)
	}
	st := info.State
	return StreamState{Name: name, Msgs: st.Msgs, FirstSeq: st.FirstSeq, LastSeq: st.LastSeq, Subjects: st.NumSubjects, Consumer: st.Consumers}, nil
}
