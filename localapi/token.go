package localapi

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// TokenFileName is the name of the local API token file in the agent's
// data folder.
const TokenFileName = "api-token"

// tokenCookie carries the token for the status page, so that its
// EventSource (which cannot set headers) is authorised too.
const tokenCookie = "fieldsync_token"

// ErrNoToken is returned by [ReadToken] when there is no token file: the
// agent has not run yet, or the path is wrong.
var ErrNoToken = errors.New("localapi: no API token file")

// EnsureToken returns the token stored at path, creating a new random one
// first if the file is missing or empty. The file is readable only by the
// user running the agent (mode 0600; on Windows an ACL for that user,
// SYSTEM and Administrators) and by readers: on Windows accounts or SIDs,
// elsewhere at most one group (mode 0640).
func EnsureToken(path string, readers ...string) (string, error) {
	if tok, err := ReadToken(path); err == nil {
		return tok, restrictFile(path, readers)
	} else if !errors.Is(err, ErrNoToken) {
		return "", err
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("localapi: token: %w", err)
	}
	tok := hex.EncodeToString(b)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("localapi: token: %w", err)
	}
	tmp := path + ".tmp"
	os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("localapi: token: %w", err)
	}
	if err := restrictFile(tmp, readers); err != nil {
		f.Close()
		return "", err
	}
	_, err = f.WriteString(tok + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return "", fmt.Errorf("localapi: token: %w", err)
	}
	return tok, nil
}

// TokenPath is the token file of an agent whose data folder is dataDir.
func TokenPath(dataDir string) string { return filepath.Join(dataDir, TokenFileName) }

// ReadToken reads the token file at path.
func ReadToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("%w: %s", ErrNoToken, path)
	}
	if err != nil {
		return "", fmt.Errorf("localapi: token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%w: %s is empty", ErrNoToken, path)
	}
	return tok, nil
}

// guard refuses requests that do not come for a loopback host name (DNS
// rebinding) and, outside the public paths, requests without the token:
// an "Authorization: Bearer" header, or the cookie the status page gets
// from "/?token=". Cookie-authorised writes must come from the page's own
// origin.
func guard(token string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !loopbackHost(r.Host) {
			writeError(w, http.StatusForbidden, "forbidden_host", "the local API answers only for 127.0.0.1, [::1] or localhost")
			return
		}
		if r.URL.Path == "/" && r.URL.Query().Has("token") {
			pageLogin(w, r, token)
			return
		}
		if public(r) {
			next.ServeHTTP(w, r)
			return
		}
		switch via := authorised(r, token); {
		case via == "":
			w.Header().Set("WWW-Authenticate", `Bearer realm="fieldsync-agent"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "missing or wrong local API token (see the api-token file in the agent's data folder)")
		case via == "cookie" && r.Method != http.MethodGet && !sameOrigin(r):
			writeError(w, http.StatusForbidden, "forbidden_origin", "cross-origin request refused")
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// public paths need no token: the status page itself (it holds no data)
// and the API description.
func public(r *http.Request) bool {
	return r.Method == http.MethodGet && (r.URL.Path == "/" || r.URL.Path == "/v1/openapi.json")
}

// authorised says how r carries the right token: "header", "cookie" or "".
func authorised(r *http.Request, token string) string {
	if token == "" {
		return ""
	}
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") && equal(strings.TrimPrefix(h, "Bearer "), token) {
		return "header"
	}
	if c, err := r.Cookie(tokenCookie); err == nil && equal(c.Value, token) {
		return "cookie"
	}
	return ""
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// pageLogin trades "/?token=" for a cookie and sends the browser to "/"
// so that the token does not stay in the address bar or history.
func pageLogin(w http.ResponseWriter, r *http.Request, token string) {
	if !equal(r.URL.Query().Get("token"), token) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="fieldsync-agent"`)
		writeError(w, http.StatusUnauthorized, "unauthorized", "wrong local API token")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	return o == "" || o == "http://"+r.Host
}

func loopbackHost(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
