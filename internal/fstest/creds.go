package fstest

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/natsjs"
)

// MustDeviceCreds issues credentials for device, carrying units, from a
// broker's authority, as an operator running `broker-embed device add`
// would, and returns the path of the .creds file (in a temporary
// directory).
func MustDeviceCreds(tb testing.TB, a *natsauth.Authority, device string, units ...string) string {
	tb.Helper()
	creds, _, err := a.AddDevice(device, units)
	if err != nil {
		tb.Fatalf("issue device %s: %v", device, err)
	}
	return mustWriteCreds(tb, device, creds)
}

// MustIntegrationCreds is [MustDeviceCreds] for an integration.
func MustIntegrationCreds(tb testing.TB, a *natsauth.Authority, name string, units ...string) string {
	tb.Helper()
	creds, _, _, err := a.AddIntegration(name, units)
	if err != nil {
		tb.Fatalf("issue integration %s: %v", name, err)
	}
	return mustWriteCreds(tb, name, creds)
}

func mustWriteCreds(tb testing.TB, name string, creds []byte) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), name+".creds")
	if err := natsauth.WriteCreds(path, creds); err != nil {
		tb.Fatal(err)
	}
	return path
}

// mustRewriteCreds replaces the user JWT of the credentials file at path
// with userJWT, keeping its seed (a re-issued JWT for the same key).
func mustRewriteCreds(tb testing.TB, path, userJWT string) {
	tb.Helper()
	old, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	kp, err := jwt.ParseDecoratedUserNKey(old)
	if err != nil {
		tb.Fatal(err)
	}
	seed, _ := kp.Seed()
	creds, err := jwt.FormatUserConfig(userJWT, seed)
	if err != nil {
		tb.Fatal(err)
	}
	if err := natsauth.WriteCreds(path, creds); err != nil {
		tb.Fatal(err)
	}
}

// MustConnectDevice issues credentials for device (units) from a and
// connects to url with them and the device's inbox prefix, as the agent
// does. The connection is closed when the test ends.
func MustConnectDevice(tb testing.TB, url string, a *natsauth.Authority, device string, units ...string) *natsjs.Client {
	tb.Helper()
	return MustConnectCreds(tb, url, MustDeviceCreds(tb, a, device, units...), device)
}

// MustConnectCreds connects to url with the credentials file creds and the
// inbox prefix of device.
func MustConnectCreds(tb testing.TB, url, creds, device string) *natsjs.Client {
	tb.Helper()
	inbox, err := events.DeviceInboxPrefix(device)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := natsjs.Connect(url, natsjs.ConnectOptions{Name: device, Credentials: creds, InboxPrefix: inbox, Timeout: 5 * time.Second})
	if err != nil {
		tb.Fatalf("connect as %s: %v", device, err)
	}
	tb.Cleanup(c.Close)
	return c
}

// ToolCreds returns the connect option of the operator's tools (seed,
// publish; [natsauth.RoleTool]) signed by a.
func ToolCreds(tb testing.TB, a *natsauth.Authority) nats.Option {
	tb.Helper()
	userJWT, seed, err := a.Component(natsauth.RoleTool)
	if err != nil {
		tb.Fatal(err)
	}
	return nats.UserJWTAndSeed(userJWT, seed)
}

// MustIntegrationToken issues an integration (units) from a, as
// `broker-embed integration add` does, and returns its HTTP publish API
// bearer token.
func MustIntegrationToken(tb testing.TB, a *natsauth.Authority, name string, units ...string) string {
	tb.Helper()
	_, token, _, err := a.AddIntegration(name, units)
	if err != nil {
		tb.Fatalf("issue integration %s: %v", name, err)
	}
	return token
}
