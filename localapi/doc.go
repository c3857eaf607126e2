// Package localapi is the device agent's local HTTP/JSON API for the tablet
// app, the status page and the CLI. It listens on loopback only. [Handler]
// serves it for any [Backend]; [Client] calls it.
package localapi
