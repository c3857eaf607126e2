package broker

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/publish"
)

// serveHTTP serves GET /healthz (open to anyone: it says only whether the
// broker works), GET /metrics (the metrics token, see
// [Config.MetricsTokenPath]), POST /v1/publish and PUT and DELETE
// /v1/documents/{unit}/{id} ([publish.Service.DocumentsHTTP]; an
// integration's token, see [Broker.authPublish]). Everything but /healthz is behind
// [Broker.guardHTTP].
func (b *Broker) serveHTTP(svc *publish.Service) error {
	token, err := loadOrCreateToken(b.cfg.MetricsTokenPath())
	if err != nil {
		return err
	}
	api := http.NewServeMux()
	api.Handle("GET /metrics", requireToken(token, b.metrics.Handler()))
	api.Handle("POST /v1/publish", b.authPublish(svc))
	docs := b.authPublish(svc.DocumentsHTTP())
	api.Handle("PUT /v1/documents/{unit}/{id}", docs)
	api.Handle("DELETE /v1/documents/{unit}/{id}", docs)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", b.healthz)
	mux.Handle("/", b.guardHTTP(api))
	ln, err := net.Listen("tcp", b.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("broker: http listen %s: %w", b.cfg.HTTPAddr, err)
	}
	b.ln = ln
	b.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { b.done <- b.http.Serve(ln) }()
	return nil
}

// guardHTTP refuses, with 403, requests whose Host is not one of
// [Config.AllowedHosts] (DNS rebinding) and requests with an Origin header
// that is not this same origin (a page of another site posting through a
// browser). No response carries Access-Control-Allow-* headers: browsers
// refuse cross-origin reads, and a preflight (OPTIONS) gets 405.
func (b *Broker) guardHTTP(next http.Handler) http.Handler {
	allowed := b.cfg.AllowedHosts()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if !hostAllowed(r.Host, allowed) {
			writeHTTPError(w, http.StatusForbidden, publish.CodeForbidden,
				fmt.Sprintf("Host %q is not served here (config http_allowed_hosts)", r.Host))
			return
		}
		if o := r.Header.Get("Origin"); o != "" && !strings.EqualFold(o, "http://"+r.Host) {
			writeHTTPError(w, http.StatusForbidden, publish.CodeForbidden,
				fmt.Sprintf("cross-origin request from %q refused", o))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// authPublish authenticates a publish request by its bearer token (the
// integration's, from `broker-embed integration add`) and hands the
// integration on to the service as its [publish.Caller]: 401 with no
// token or one that is unknown or revoked. With auth: none every request
// may publish anywhere.
func (b *Broker) authPublish(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caller := publish.Caller{Name: "anonymous", AnyUnit: true}
		if b.auth != nil {
			u, err := b.auth.IntegrationByToken(bearer(r))
			if err != nil {
				if !errors.Is(err, natsauth.ErrBadToken) {
					b.log.Error("publish API: reading the users registry", "err", err)
				}
				w.Header().Set("WWW-Authenticate", `Bearer realm="fieldsync-publish"`)
				writeHTTPError(w, http.StatusUnauthorized, publish.CodeUnauthorized,
					"missing, unknown or revoked integration token (Authorization: Bearer <token from broker-embed integration add>)")
				return
			}
			caller = publish.Caller{Name: u.ID, Units: u.OrgUnits}
		}
		next.ServeHTTP(w, r.WithContext(publish.WithCaller(r.Context(), caller)))
	})
}

// requireToken answers 401 unless the request carries token as its bearer
// token.
func requireToken(token string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(bearer(r)), []byte(token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="fieldsync-metrics"`)
			writeHTTPError(w, http.StatusUnauthorized, publish.CodeUnauthorized, "missing or wrong metrics token (see metrics_token_file)")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bearer returns the request's bearer token ("Bearer" is
// case-insensitive, RFC 7235), or "".
func bearer(r *http.Request) string {
	scheme, cred, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(cred)
}

func hostAllowed(hostport string, allowed []string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	host = strings.Trim(host, "[]")
	for _, a := range allowed {
		if strings.EqualFold(host, a) {
			return true
		}
	}
	return false
}

func writeHTTPError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(publish.Response{Error: &publish.Error{Code: code, Message: msg}})
}

// loadOrCreateToken reads the token in path, or writes a new random one
// there (mode 0600) on first start.
func loadOrCreateToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, nil
		}
		return "", fmt.Errorf("broker: metrics token file %s is empty", path)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("broker: metrics token: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("broker: metrics token: %w", err)
	}
	t := hex.EncodeToString(raw)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("broker: metrics token: %w", err)
	}
	_, err = f.WriteString(t + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return "", fmt.Errorf("broker: metrics token: %w", err)
	}
	return t, nil
}

// MetricsTokenFile is the file holding the bearer token GET /metrics
// requires (see [Config.MetricsTokenPath]).
func (b *Broker) MetricsTokenFile() string { return b.cfg.MetricsTokenPath() }
