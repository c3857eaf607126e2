package natsauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/fieldsync/fieldsync/events"
)

// Kind is what a user is.
type Kind string

// The kinds of users issued to the outside.
const (
	KindDevice      Kind = "device"
	KindIntegration Kind = "integration"
)

// User is one entry of the registry of issued users.
type User struct {
	ID        string     `json:"id"`
	Kind      Kind       `json:"kind"`
	OrgUnits  []string   `json:"org_units"`
	PublicKey string     `json:"public_key"`
	IssuedAt  time.Time  `json:"issued_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// Person is the user (a person of the Admin data) a device is bound
	// to: its assignments decide the device's org units. Empty for a
	// device whose units were given when it was added.
	Person string `json:"person,omitempty"`
	// JWT is a device's current user JWT ([Authority.SetDeviceAccess]
	// re-issues it when its units change).
	JWT string `json:"jwt,omitempty"`
	// StatusKey is the public key of a device's status identity, which may
	// only ask for the device's grant ([StatusPermissions]) and is not
	// revoked with the device: a revoked device that comes back is told so.
	StatusKey string `json:"status_key,omitempty"`
	// TokenHash is the SHA-256 (hex) of an integration's HTTP publish API
	// token ([Authority.AddIntegration]); the token itself is not kept.
	TokenHash string `json:"token_hash,omitempty"`
}

// Revoked reports whether the user was revoked.
func (u User) Revoked() bool { return u.RevokedAt != nil }

// registry is the users.json file.
type registry struct {
	Users []User `json:"users"`
}

// Users returns every user issued, revoked ones included, by kind and id.
func (a *Authority) Users() ([]User, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, err := a.loadRegistry()
	return r.Users, err
}

// index returns the position of the user of kind and id, or -1.
func (r registry) index(kind Kind, id string) int {
	return slices.IndexFunc(r.Users, func(u User) bool { return u.Kind == kind && u.ID == id })
}

func (a *Authority) loadRegistry() (registry, error) {
	var r registry
	b, err := os.ReadFile(filepath.Join(a.dir, registryFile))
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("natsauth: %w", err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("natsauth: %s: %w", registryFile, err)
	}
	return r, nil
}

func (a *Authority) saveRegistry(r registry) error {
	slices.SortFunc(r.Users, func(x, y User) int {
		if x.Kind != y.Kind {
			return map[bool]int{true: -1, false: 1}[x.Kind < y.Kind]
		}
		return map[bool]int{true: -1, false: 1}[x.ID < y.ID]
	})
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("natsauth: %w", err)
	}
	return writeFileAtomic(filepath.Join(a.dir, registryFile), append(b, '\n'))
}

// DeviceOption tunes [Authority.AddDevice].
type DeviceOption func(*deviceOptions)

type deviceOptions struct {
	ttl    time.Duration
	person string
}

// ForPerson binds the device to person: the broker then derives its org
// units from person's user assignments ([Authority.SetDeviceAccess]).
func ForPerson(person string) DeviceOption {
	return func(o *deviceOptions) { o.person = person }
}

// ExpiresIn makes the device's credentials expire after d: the server
// then disconnects the device with "user authentication expired" and
// refuses it from then on (the agent reports password_expired). By
// default a device's credentials do not expire.
func ExpiresIn(d time.Duration) DeviceOption {
	return func(o *deviceOptions) { o.ttl = d }
}

// AddDevice issues credentials to device for units: a user JWT with
// [DevicePermissions] and its nkey seed, as the contents of a .creds file
// ([jwt.FormatUserConfig]), followed by the device's status identity
// ([StatusPermissions]) in the same format, and records the user. Clients
// that read only a file's first JWT and seed (nats.go, the nats CLI) see
// the device identity. A device already issued and not revoked is
// [ErrExists]; a revoked one may be issued again (new keys).
func (a *Authority) AddDevice(device string, units []string, opts ...DeviceOption) ([]byte, User, error) {
	perms, err := DevicePermissions(device, units)
	if err != nil {
		return nil, User{}, err
	}
	var o deviceOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.person != "" {
		if err := events.ValidToken(o.person); err != nil {
			return nil, User{}, fmt.Errorf("natsauth: person: %w", err)
		}
	}
	status, statusKey, err := a.statusIdentity(device)
	if err != nil {
		return nil, User{}, err
	}
	creds, u, err := a.add(KindDevice, device, units, perms, o.ttl, "", func(u *User) {
		u.Person, u.StatusKey = o.person, statusKey
	})
	if err != nil {
		return nil, User{}, err
	}
	return append(creds, status...), u, nil
}

// AddIntegration issues credentials to the integration name, reading
// units (and the tenant-wide admin data); see [IntegrationPermissions].
// It also returns the integration's bearer token for the HTTP publish
// API, which may publish to units only; the registry keeps only its hash
// (see [Authority.IntegrationByToken]), so it is shown this once.
func (a *Authority) AddIntegration(name string, units []string) (creds []byte, token string, u User, err error) {
	perms, err := IntegrationPermissions(name, units)
	if err != nil {
		return nil, "", User{}, err
	}
	token, hash, err := newToken()
	if err != nil {
		return nil, "", User{}, err
	}
	creds, u, err = a.add(KindIntegration, name, units, perms, 0, hash, nil)
	if err != nil {
		return nil, "", User{}, err
	}
	return creds, token, u, nil
}

func (a *Authority) add(kind Kind, id string, units []string, perms jwt.Permissions, ttl time.Duration, tokenHash string, more func(*User)) ([]byte, User, error) {
	if err := validUnits(units); err != nil {
		return nil, User{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	r, err := a.loadRegistry()
	if err != nil {
		return nil, User{}, err
	}
	i := r.index(kind, id)
	if i >= 0 && !r.Users[i].Revoked() {
		return nil, User{}, fmt.Errorf("%w: %s %s (revoke it first to issue new credentials)", ErrExists, kind, id)
	}
	creds, pub, err := a.signUser(string(kind)+" "+id, perms, ttl, map[string]string{"kind": string(kind)})
	if err != nil {
		return nil, User{}, err
	}
	u := User{ID: id, Kind: kind, OrgUnits: slices.Clone(units), PublicKey: pub, IssuedAt: time.Now().UTC().Truncate(time.Second), TokenHash: tokenHash}
	if kind == KindDevice {
		u.JWT, _ = jwt.ParseDecoratedJWT(creds)
	}
	if more != nil {
		more(&u)
	}
	if i >= 0 {
		r.Users[i] = u
	} else {
		r.Users = append(r.Users, u)
	}
	if err := a.saveRegistry(r); err != nil {
		return nil, User{}, err
	}
	return creds, u, nil
}

// Revoke revokes the user of kind and id: the tenant account JWT lists
// its key as revoked (push it to a running broker with [PushAccount]).
// Revoking a revoked user again is not an error.
func (a *Authority) Revoke(kind Kind, id string) (User, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, err := a.loadRegistry()
	if err != nil {
		return User{}, err
	}
	i := r.index(kind, id)
	if i < 0 {
		return User{}, fmt.Errorf("%w: %s %s", ErrNotFound, kind, id)
	}
	if err := a.revoke(r.Users[i].PublicKey); err != nil {
		return User{}, err
	}
	if !r.Users[i].Revoked() {
		now := time.Now().UTC().Truncate(time.Second)
		r.Users[i].RevokedAt = &now
	}
	return r.Users[i], a.saveRegistry(r)
}

// Component returns the user JWT and seed the broker's component role
// connects with. Component users are not recorded: they are made afresh
// at every start and live as long as the process.
func (a *Authority) Component(role Role) (userJWT, seed string, err error) {
	perms, err := componentPermissions(role)
	if err != nil {
		return "", "", err
	}
	ttl := time.Duration(0)
	if role == RoleTool || role == RoleTail {
		ttl = 24 * time.Hour // a command-line run
	}
	creds, _, err := a.signUser("fieldsync-"+string(role), perms, ttl, map[string]string{"role": string(role)})
	if err != nil {
		return "", "", err
	}
	return credsParts(creds)
}

// signUser makes a new user key and returns its credentials file contents
// and public key; a zero ttl never expires.
func (a *Authority) signUser(name string, perms jwt.Permissions, ttl time.Duration, tags map[string]string) ([]byte, string, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, "", fmt.Errorf("natsauth: new user key: %w", err)
	}
	pub, _ := kp.PublicKey()
	uc := jwt.NewUserClaims(pub)
	uc.Name, uc.Permissions = name, perms
	for k, v := range tags {
		uc.Tags.Add(k + ":" + v)
	}
	if ttl > 0 {
		uc.Expires = time.Now().Add(ttl).Unix()
	}
	j, err := uc.Encode(a.tenant)
	if err != nil {
		return nil, "", fmt.Errorf("natsauth: sign user %s: %w", name, err)
	}
	seed, _ := kp.Seed()
	creds, err := jwt.FormatUserConfig(j, seed)
	if err != nil {
		return nil, "", fmt.Errorf("natsauth: %w", err)
	}
	return creds, pub, nil
}

// systemUser returns a short-lived system account user (the claims
// updates of [PushAccount]).
func (a *Authority) systemUser() (userJWT, seed string, err error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", "", fmt.Errorf("natsauth: new user key: %w", err)
	}
	pub, _ := kp.PublicKey()
	uc := jwt.NewUserClaims(pub)
	uc.Name, uc.Expires = "fieldsync-admin", time.Now().Add(5*time.Minute).Unix()
	if userJWT, err = uc.Encode(a.system); err != nil {
		return "", "", fmt.Errorf("natsauth: sign system user: %w", err)
	}
	s, _ := kp.Seed()
	return userJWT, string(s), nil
}

func credsParts(creds []byte) (string, string, error) {
	j, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		return "", "", fmt.Errorf("natsauth: %w", err)
	}
	kp, err := jwt.ParseDecoratedUserNKey(creds)
	if err != nil {
		return "", "", fmt.Errorf("natsauth: %w", err)
	}
	seed, _ := kp.Seed()
	return j, string(seed), nil
}

func validUnits(units []string) error {
	seen := map[string]bool{}
	for _, u := range units {
		if err := events.ValidToken(u); err != nil {
			return fmt.Errorf("natsauth: org unit: %w", err)
		}
		if seen[u] {
			return fmt.Errorf("natsauth: org unit %q listed twice", u)
		}
		seen[u] = true
	}
	return nil
}

// WriteCreds writes credentials to a new file at path, readable by its
// owner only (0600). An existing file is not replaced.
func WriteCreds(path string, creds []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("natsauth: credentials file: %w", err)
	}
	if _, err := f.Write(creds); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("natsauth: credentials file: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("natsauth: credentials file: %w", err)
	}
	return nil
}
