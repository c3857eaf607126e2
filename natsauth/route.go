package natsauth

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// RouteUser is the user name a cluster's nodes authenticate their routes
// with; the password is the cluster's route secret ([RouteSecret]).
const RouteUser = "fieldsync-route"

const routeSecretFile = "route.secret"

// ErrNoRouteSecret: the auth dir holds no route secret; `broker-embed init`
// makes one.
var ErrNoRouteSecret = errors.New("natsauth: no route secret")

// EnsureRouteSecret creates the cluster's route secret in dir (mode 0600,
// 32 random bytes) unless there is one, and reports whether it did. Every
// node of a cluster reads the same one: a server without it cannot join
// the cluster (its routes are refused) and so never sees its data.
func EnsureRouteSecret(dir string) (bool, error) {
	if _, err := RouteSecret(dir); err == nil {
		return false, nil
	} else if !errors.Is(err, ErrNoRouteSecret) {
		return false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("natsauth: %w", err)
	}
	b := make([]byte, 32)
	rand.Read(b)
	if err := writeFileAtomic(filepath.Join(dir, routeSecretFile), []byte(base64.RawURLEncoding.EncodeToString(b)+"\n")); err != nil {
		return false, err
	}
	return true, nil
}

// RouteSecret reads the cluster's route secret from dir: [ErrNoRouteSecret]
// when there is none.
func RouteSecret(dir string) (string, error) {
	path := filepath.Join(dir, routeSecretFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%w in %s", ErrNoRouteSecret, dir)
	}
	if err != nil {
		return "", fmt.Errorf("natsauth: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if len(s) < 32 {
		return "", fmt.Errorf("natsauth: %s: route secret too short (%d characters)", path, len(s))
	}
	return s, nil
}
