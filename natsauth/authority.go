package natsauth

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// Files of an authority directory. Seeds (the private keys) and JWTs are
// written 0600 in a 0700 directory.
const (
	operatorSeedFile = "operator.nk"
	operatorJWTFile  = "operator.jwt"
	systemSeedFile   = "system.nk"
	systemJWTFile    = "system.jwt"
	tenantSeedFile   = "tenant.nk"
	tenantJWTFile    = "tenant.jwt"
	registryFile     = "users.json"
	// urlFile holds the NATS URL of the broker running on this directory
	// (see [Authority.SetBrokerURL]).
	urlFile = "broker.url"
)

// Account names in the JWTs (the servers know accounts by public key).
const (
	operatorName = "fieldsync"
	systemName   = "SYS"
	tenantName   = "TENANT"
)

// ErrNotFound: no user of that kind and id in the registry.
var ErrNotFound = errors.New("natsauth: no such user")

// ErrExists: a user of that kind and id is already issued and not revoked.
var ErrExists = errors.New("natsauth: user already exists")

// ErrNoAuthority: the directory holds no keys (the broker never ran with
// authentication on this data dir).
var ErrNoAuthority = errors.New("natsauth: no keys in this directory")

// Authority is the operator side of one broker's data dir: the operator,
// system account and tenant account keys and JWTs, and the registry of
// issued users. Methods are safe for concurrent use within one process;
// two processes changing one directory at the same moment (two CLI
// commands) may lose one's registry change, so run them one at a time.
type Authority struct {
	dir string
	mu  sync.Mutex

	operator, system, tenant nkeys.KeyPair
	operatorJWT, systemJWT   string
	tenantClaims             *jwt.AccountClaims
	tenantJWT                string
}

// Open loads the authority in dir, creating the directory, the keys and
// the JWTs when they do not exist yet (first start of a broker).
func Open(dir string) (*Authority, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("natsauth: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("natsauth: %w", err)
	}
	a := &Authority{dir: dir}
	var err error
	if a.operator, err = a.loadOrCreateKey(operatorSeedFile, nkeys.CreateOperator); err != nil {
		return nil, err
	}
	if a.system, err = a.loadOrCreateKey(systemSeedFile, nkeys.CreateAccount); err != nil {
		return nil, err
	}
	if a.tenant, err = a.loadOrCreateKey(tenantSeedFile, nkeys.CreateAccount); err != nil {
		return nil, err
	}
	if err := a.loadOrSignJWTs(); err != nil {
		return nil, err
	}
	return a, nil
}

// OpenExisting is [Open] for commands that must not create an authority:
// it fails with [ErrNoAuthority] when dir holds no operator key.
func OpenExisting(dir string) (*Authority, error) {
	if _, err := os.Stat(filepath.Join(dir, operatorSeedFile)); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s (start the broker once with authentication on)", ErrNoAuthority, dir)
	}
	return Open(dir)
}

// loadOrCreateKey reads the seed in name or creates one with create.
func (a *Authority) loadOrCreateKey(name string, create func() (nkeys.KeyPair, error)) (nkeys.KeyPair, error) {
	path := filepath.Join(a.dir, name)
	seed, err := os.ReadFile(path)
	if err == nil {
		kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
		if err != nil {
			return nil, fmt.Errorf("natsauth: %s: %w", path, err)
		}
		return kp, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("natsauth: %w", err)
	}
	kp, err := create()
	if err != nil {
		return nil, fmt.Errorf("natsauth: new key: %w", err)
	}
	seed, _ = kp.Seed()
	if err := writeFileAtomic(path, append(seed, '\n')); err != nil {
		return nil, err
	}
	return kp, nil
}

// loadOrSignJWTs reads the three JWTs, signing those missing. The operator
// and system JWTs never change; the tenant JWT changes with revocations.
func (a *Authority) loadOrSignJWTs() error {
	opPub, _ := a.operator.PublicKey()
	sysPub, _ := a.system.PublicKey()
	tenPub, _ := a.tenant.PublicKey()
	var err error
	a.operatorJWT, err = a.loadOrSign(operatorJWTFile, func() (string, error) {
		oc := jwt.NewOperatorClaims(opPub)
		oc.Name, oc.SystemAccount = operatorName, sysPub
		return oc.Encode(a.operator)
	})
	if err != nil {
		return err
	}
	a.systemJWT, err = a.loadOrSign(systemJWTFile, func() (string, error) {
		ac := jwt.NewAccountClaims(sysPub)
		ac.Name = systemName
		return ac.Encode(a.operator)
	})
	if err != nil {
		return err
	}
	a.tenantJWT, err = a.loadOrSign(tenantJWTFile, func() (string, error) {
		return tenantAccount(tenPub).Encode(a.operator)
	})
	if err != nil {
		return err
	}
	if a.tenantClaims, err = jwt.DecodeAccountClaims(a.tenantJWT); err != nil {
		return fmt.Errorf("natsauth: %s: %w", tenantJWTFile, err)
	}
	return nil
}

// tenantAccount returns the claims of a new tenant account: JetStream on,
// without account-level limits (the streams set their own).
func tenantAccount(pub string) *jwt.AccountClaims {
	ac := jwt.NewAccountClaims(pub)
	ac.Name = tenantName
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: jwt.NoLimit, DiskStorage: jwt.NoLimit,
		Streams: jwt.NoLimit, Consumer: jwt.NoLimit, MaxAckPending: jwt.NoLimit}
	return ac
}

func (a *Authority) loadOrSign(name string, sign func() (string, error)) (string, error) {
	path := filepath.Join(a.dir, name)
	b, err := os.ReadFile(path)
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("natsauth: %w", err)
	}
	j, err := sign()
	if err != nil {
		return "", fmt.Errorf("natsauth: sign %s: %w", name, err)
	}
	return j, writeFileAtomic(path, []byte(j+"\n"))
}

// Dir is the authority's directory.
func (a *Authority) Dir() string { return a.dir }

// OperatorJWT is the operator's JWT (the server's trusted operator).
func (a *Authority) OperatorJWT() string { return a.operatorJWT }

// SystemAccount is the system account's public key.
func (a *Authority) SystemAccount() string { pub, _ := a.system.PublicKey(); return pub }

// TenantAccount is the tenant account's public key.
func (a *Authority) TenantAccount() string { pub, _ := a.tenant.PublicKey(); return pub }

// TenantJWT is the tenant account's current JWT (with its revocations).
func (a *Authority) TenantJWT() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.tenantJWT
}

// Accounts maps the public key of each account to its current JWT: what
// the server preloads.
func (a *Authority) Accounts() map[string]string {
	return map[string]string{a.SystemAccount(): a.systemJWT, a.TenantAccount(): a.TenantJWT()}
}

// revoke adds the user public key pub to the tenant account's revocations
// and stores the re-signed account JWT. Callers hold a.mu.
func (a *Authority) revoke(pub string) error {
	return a.updateRevocations(func(r jwt.RevocationList) { r.Revoke(pub, time.Now()) })
}

// updateRevocations changes a copy of the tenant account's revocations
// with change and stores the re-signed account JWT. Callers hold a.mu.
func (a *Authority) updateRevocations(change func(jwt.RevocationList)) error {
	ac := *a.tenantClaims
	ac.Revocations = jwt.RevocationList{}
	for k, v := range a.tenantClaims.Revocations {
		ac.Revocations[k] = v
	}
	change(ac.Revocations)
	j, err := ac.Encode(a.operator)
	if err != nil {
		return fmt.Errorf("natsauth: sign tenant account: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(a.dir, tenantJWTFile), []byte(j+"\n")); err != nil {
		return err
	}
	a.tenantClaims, a.tenantJWT = &ac, j
	return nil
}

// decoratedBlocks returns the contents of the "-----BEGIN …-----" blocks
// of a credentials file, in order.
func decoratedBlocks(creds []byte) []string {
	var out []string
	for _, m := range credsBlockRE.FindAllSubmatch(creds, -1) {
		out = append(out, string(m[1]))
	}
	return out
}

// credsBlockRE is the block pattern of nkeys' credentials parser.
var credsBlockRE = regexp.MustCompile(`\s*(?:(?:[-]{3,}.*[-]{3,}\r?\n)([\w\-.=]+)(?:\r?\n[-]{3,}.*[-]{3,}\r?\n))`)

// SetBrokerURL records the NATS URL of the broker now serving this
// directory, so that commands run against the data dir reach it; an
// empty url removes the record (the broker stopped).
func (a *Authority) SetBrokerURL(url string) error {
	path := filepath.Join(a.dir, urlFile)
	if url == "" {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("natsauth: %w", err)
		}
		return nil
	}
	return writeFileAtomic(path, []byte(url+"\n"))
}

// BrokerURL returns the URL recorded by [Authority.SetBrokerURL], or ""
// when no broker recorded one.
func (a *Authority) BrokerURL() string {
	b, err := os.ReadFile(filepath.Join(a.dir, urlFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// writeFileAtomic writes data to path (mode 0600) through a temporary file
// in the same directory, synced and renamed into place: a crash leaves the
// old or the new content, never a mix.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("natsauth: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("natsauth: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("natsauth: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("natsauth: sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("natsauth: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("natsauth: %w", err)
	}
	return nil
}
