package natsjs

import (
	"errors"
	"strings"

	"github.com/nats-io/nats.go"
)

// Authentication error kinds, after the seeds' status widget: login
// failed, password (credentials) expired, token rejected.
const (
	AuthLoginFailed     = "login_failed"
	AuthPasswordExpired = "password_expired"
	AuthTokenRejected   = "token_rejected"
)

// AuthErrorKind returns the kind of authentication error err is, or "".
func AuthErrorKind(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, nats.ErrAuthExpired):
		return AuthPasswordExpired
	case errors.Is(err, nats.ErrAuthRevoked):
		return AuthTokenRejected
	case errors.Is(err, nats.ErrAuthorization), strings.Contains(strings.ToLower(err.Error()), "authorization violation"):
		return AuthLoginFailed
	}
	return ""
}

// AuthError returns the kind of the authentication error the broker last
// reported on this connection, or "".
func (c *Client) AuthError() string { return AuthErrorKind(c.nc.LastError()) }
