package natsjs

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"

	"github.com/fieldsync/fieldsync/internal/retry"
)

// Authentication error kinds, after the seeds' status widget: login
// failed, password (credentials) expired, token rejected.
const (
	AuthLoginFailed     = "login_failed"
	AuthPasswordExpired = "password_expired"
	AuthTokenRejected   = "token_rejected"
)

// AuthRetry is the default wait between connection attempts once the
// broker refused the credentials: 2 s, doubling to at most 5 min, each
// wait drawn within ±50% ([retry.Jitter]). Over 60 s that is at most 7
// attempts: the first, one after the 1 s wait (the refusal is not known
// yet), then waits of at least 1, 2, 4, 8 and 16 s; an 8th would need
// another 32 s, so comes after 64 s at the earliest. A merely unreachable
// broker is retried every second (60 attempts a minute).
var AuthRetry = retry.Policy{Initial: 2 * time.Second, Max: 5 * time.Minute}

// AuthErrorKind returns the kind of authentication error err is, or "".
// Only the server's own answers count: "user authentication revoked"
// ([nats.ErrAuthRevoked]) is token_rejected, "user authentication
// expired" password_expired, "authorization violation" login_failed.
func AuthErrorKind(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAccountAuthExpired):
		return AuthPasswordExpired
	case errors.Is(err, nats.ErrAuthRevoked):
		return AuthTokenRejected
	case errors.Is(err, nats.ErrAuthorization), strings.Contains(strings.ToLower(err.Error()), "authorization violation"):
		return AuthLoginFailed
	}
	return ""
}

// AuthError returns the kind of authentication error the broker gave
// since the connection was last up, or "". The most telling answer is
// kept: a server revokes (or expires) a connected user with its own
// error and then answers every reconnect with a plain authorization
// violation, which must not turn a revocation into a login failure. A
// plain refusal of credentials whose JWT has expired is password_expired.
func (c *Client) AuthError() string {
	c.auth.mu.Lock()
	defer c.auth.mu.Unlock()
	return c.auth.kind
}

// authState is a connection's authentication outcome; see [Client.AuthError].
type authState struct {
	creds    string
	policy   retry.Policy
	onChange func(kind string, err error)

	mu       sync.Mutex
	kind     string
	wait     *backoff.ExponentialBackOff
	lastSeen []byte // the credentials file when last refused
	conn     *nats.Conn
}

// note records err if it is a refusal of the credentials and tells
// onChange when the kind changes.
func (s *authState) note(err error) {
	kind := AuthErrorKind(err)
	if kind == "" {
		return
	}
	if kind == AuthLoginFailed && credsExpired(s.creds) {
		kind = AuthPasswordExpired
	}
	s.mu.Lock()
	old := s.kind
	if rank(kind) > rank(old) {
		s.kind = kind
	}
	if s.creds != "" && s.lastSeen == nil {
		s.lastSeen, _ = os.ReadFile(s.creds)
	}
	changed, now := s.kind != old, s.kind
	s.mu.Unlock()
	if changed && s.onChange != nil {
		s.onChange(now, err)
	}
}

// rank orders the kinds by how much they say: a revocation or an expiry
// the server announced outranks the plain refusals that follow it.
func rank(kind string) int {
	return map[string]int{AuthLoginFailed: 1, AuthPasswordExpired: 2, AuthTokenRejected: 3}[kind]
}

// connected clears the outcome: the broker took the credentials.
func (s *authState) connected() {
	s.mu.Lock()
	s.kind, s.lastSeen = "", nil
	s.wait = nil
	s.mu.Unlock()
}

// delay is nats.go's reconnect wait ([nats.CustomReconnectDelay]): 1 s
// (plus up to 100 ms) while the broker is merely unreachable, the
// [AuthRetry] backoff once it refused the credentials.
func (s *authState) delay(int) time.Duration {
	s.mu.Lock()
	nc := s.conn
	s.mu.Unlock()
	if nc != nil {
		s.note(nc.LastError()) // refusals while retrying the first connection reach no callback
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kind == "" {
		return time.Second + rand.N(100*time.Millisecond)
	}
	if s.wait == nil {
		s.wait = s.policy.New()
	}
	return s.wait.NextBackOff()
}

// watchCredentials retries at once, without waiting out the backoff, when
// the credentials file changes after a refusal. It returns with ctx.
func (s *authState) watchCredentials(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		seen, nc := s.lastSeen, s.conn
		s.mu.Unlock()
		if seen == nil || nc == nil {
			continue
		}
		if now, err := os.ReadFile(s.creds); err == nil && !bytes.Equal(now, seen) {
			s.mu.Lock()
			s.lastSeen, s.wait = now, nil
			s.mu.Unlock()
			_ = nc.ForceReconnect() // closed: nothing to do
		}
	}
}

// credsExpired reports whether the user JWT in the credentials file has
// expired.
func credsExpired(path string) bool {
	if path == "" {
		return false
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	j, err := jwt.ParseDecoratedJWT(b)
	if err != nil {
		return false
	}
	uc, err := jwt.DecodeUserClaims(j)
	return err == nil && uc.Expires > 0 && time.Now().Unix() >= uc.Expires
}
