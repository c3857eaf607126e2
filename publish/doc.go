// Package publish is the API backends use to append server-side changes:
// one JSON [Request] per change, answered with a [Response] carrying the
// record's new version or a typed error. The same [Service] answers on the
// NATS request subject [Subject] (queue group, so every broker node can
// serve it) and over HTTP (POST /v1/publish); [Client] is the Go client.
package publish
