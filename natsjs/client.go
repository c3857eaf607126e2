package natsjs

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fieldsync/fieldsync/internal/retry"
)

// Client is a JetStream connection with fieldsync's operations on it.
type Client struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	owns bool
	auth *authState
	stop context.CancelFunc // the credentials watcher
	done chan struct{}
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
	// JWT, when set and answering non-empty, is the user JWT sent instead
	// of the credentials file's: one the server re-issued for the same key
	// (see [Client.Grant]). The seed still comes from the file.
	JWT func() string
	// InboxPrefix replaces the default _INBOX for reply subjects: a device
	// uses [events.DeviceInboxPrefix], the only inboxes its credentials may
	// read.
	InboxPrefix string
	// CA is a PEM file of the certificate authorities the broker's TLS
	// certificate must chain to. Set, the connection uses TLS only
	// (whatever the URL's scheme) and refuses a server it cannot verify.
	CA string
	// OnAuthError, when set, is told when the broker refuses the
	// credentials and each time [Client.AuthError] changes kind (for
	// example from login_failed to token_rejected). It runs on nats.go's
	// callback goroutine: do not block in it.
	OnAuthError func(kind string, err error)
	// AuthRetry is the wait between connection attempts after a refusal of
	// the credentials (default [AuthRetry]). A change of the credentials
	// file retries at once.
	AuthRetry retry.Policy
}

// Connect dials the broker at url. It keeps reconnecting after a
// disconnect, every second while the broker cannot be reached, and with
// the [ConnectOptions.AuthRetry] backoff while it refuses the
// credentials ([Client.AuthError] says how), so a refused device does
// not hammer the broker and comes back by itself once its credentials
// file holds credentials the broker takes.
func Connect(url string, o ConnectOptions) (*Client, error) {
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	auth := &authState{creds: o.Credentials, policy: o.AuthRetry.WithDefaults(AuthRetry), onChange: o.OnAuthError}
	opts := []nats.Option{nats.Name(o.Name), nats.Timeout(o.Timeout), nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(auth.delay), nats.IgnoreAuthErrorAbort(), nats.RetryOnFailedConnect(o.RetryOnFailedConnect),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { auth.note(err) })}
	if o.Credentials != "" {
		opts = append(opts, credentialsOption(o.Credentials, o.JWT))
	}
	if o.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(o.InboxPrefix))
	}
	if o.CA != "" {
		opts = append(opts, nats.RootCAs(o.CA))
	}
	f := o.OnStateChange
	if f == nil {
		f = func(bool, error) {}
	}
	opts = append(opts,
		nats.ConnectHandler(func(*nats.Conn) { auth.connected(); f(true, nil) }),
		nats.ReconnectHandler(func(*nats.Conn) { auth.connected(); f(true, nil) }),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { auth.note(err) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { auth.note(err); f(false, err) }))
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("natsjs: connect %s: %w", url, err)
	}
	c, err := NewClient(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	c.owns, c.auth = true, auth
	auth.mu.Lock()
	auth.conn = nc
	auth.mu.Unlock()
	if o.Credentials != "" {
		ctx, stop := context.WithCancel(context.Background())
		c.stop, c.done = stop, make(chan struct{})
		go func() {
			defer close(c.done)
			auth.watchCredentials(ctx, time.Second)
		}()
	}
	return c, nil
}

// NewClient wraps an existing connection (e.g. an in-process one). Close
// does not close a connection the client did not open.
func NewClient(nc *nats.Conn) (*Client, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("natsjs: %w", err)
	}
	return &Client{nc: nc, js: js, auth: &authState{}}, nil
}

// ConnectedURL is the server the client is connected to ("" while it is
// not), credentials removed.
func (c *Client) ConnectedURL() string { return c.nc.ConnectedUrlRedacted() }

// Conn is the underlying connection.
func (c *Client) Conn() *nats.Conn { return c.nc }

// Connected reports whether the connection is currently up.
func (c *Client) Connected() bool { return c.nc.IsConnected() }

// Close closes the connection if the client opened it.
func (c *Client) Close() {
	if c.stop != nil {
		c.stop()
		<-c.done
	}
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
