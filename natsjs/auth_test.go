package natsjs

import (
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
)

func TestAuthErrorKind(t *testing.T) {
	for err, want := range map[error]string{
		nil:                                      "",
		fmt.Errorf("x: %w", nats.ErrAuthExpired): AuthPasswordExpired,
		nats.ErrAuthRevoked:                      AuthTokenRejected,
		nats.ErrAuthorization:                    AuthLoginFailed,
		fmt.Errorf("nats: Authorization Violation"): AuthLoginFailed,
		nats.ErrTimeout: "",
	} {
		if got := AuthErrorKind(err); got != want {
			t.Errorf("AuthErrorKind(%v) = %q, want %q", err, got, want)
		}
	}
}
