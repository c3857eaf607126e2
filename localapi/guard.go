package localapi

import (
	"crypto/subtle"
	"net"
	"net/http"
	"strings"
)

// guard refuses requests that do not come for a loopback host name (DNS
// rebinding) and, outside the public paths, requests without the token in
// an "Authorization: Bearer" header. There are no cookies or other ambient
// credentials: a page on another local port cannot borrow the status
// page's access, and no request is authorised just by being sent.
func guard(token string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if !loopbackHost(r.Host) {
			writeError(w, http.StatusForbidden, "forbidden_host", "the local API answers only for 127.0.0.1, [::1] or localhost")
			return
		}
		if !public(r) && !authorised(r, token) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="fieldsync-agent"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "missing or wrong local API token (see the api-token file in the agent's data folder)")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// public requests need no token: the status page itself (it holds no
// data; it reads the API with the token it is given in its address's
// fragment) and the API description.
func public(r *http.Request) bool {
	return (r.Method == http.MethodGet || r.Method == http.MethodHead) && (r.URL.Path == "/" || r.URL.Path == "/v1/openapi.json")
}

// authorised reports whether r carries the token ("Bearer" is
// case-insensitive, RFC 7235). An empty token authorises nothing.
func authorised(r *http.Request, token string) bool {
	scheme, cred, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	return ok && token != "" && strings.EqualFold(scheme, "Bearer") &&
		subtle.ConstantTimeCompare([]byte(strings.TrimSpace(cred)), []byte(token)) == 1
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
