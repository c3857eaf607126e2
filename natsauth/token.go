package natsauth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// ErrBadToken: the bearer token is not the token of any integration that
// is not revoked.
var ErrBadToken = errors.New("natsauth: unknown or revoked token")

// tokenPrefix marks fieldsync integration tokens (easy to spot in a leak
// scan); 32 random bytes follow, base64url.
const tokenPrefix = "fsi_"

// newToken returns a new integration token and its hash.
func newToken() (token, hash string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("natsauth: token: %w", err)
	}
	token = tokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	return token, hashToken(token), nil
}

// hashToken is what the registry keeps of a token: its SHA-256, hex. The
// token is 256 random bits, so a plain hash (no salt, no stretching) is
// enough: nothing in the registry lets anyone rebuild it.
func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// IntegrationByToken returns the integration whose HTTP publish API
// token is token, or [ErrBadToken] when none (not revoked) has it. It
// reads the registry at every call, so that an `integration revoke` run
// by another process takes effect on the next request.
func (a *Authority) IntegrationByToken(token string) (User, error) {
	if !strings.HasPrefix(token, tokenPrefix) {
		return User{}, ErrBadToken
	}
	want := []byte(hashToken(token))
	a.mu.Lock()
	r, err := a.loadRegistry()
	a.mu.Unlock()
	if err != nil {
		return User{}, err
	}
	for _, u := range r.Users {
		if u.Kind == KindIntegration && !u.Revoked() && subtle.ConstantTimeCompare([]byte(u.TokenHash), want) == 1 {
			return u, nil
		}
	}
	return User{}, ErrBadToken
}
