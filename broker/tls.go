package broker

import (
	"net"
	"strings"

	"github.com/fieldsync/fieldsync/natsserver"
)

// serverTLS returns the NATS listener's TLS settings, or nil, and warns
// when devices would reach the listener over the network in plain text:
// a host that is not loopback without TLS, or with TLS not required.
func (b *Broker) serverTLS() *natsserver.TLS {
	t := b.cfg.NATS.TLS
	if !t.IsRequired() && !loopback(b.cfg.NATS.Host) {
		b.log.Warn("NATS port listens beyond this machine WITHOUT REQUIRED TLS: credentials and records cross the network readable (set nats.tls.cert and key)",
			"nats_host", b.cfg.NATS.Host, "nats_port", b.cfg.NATS.Port, "tls", t.Enabled())
	}
	if !t.Enabled() {
		return nil
	}
	return &natsserver.TLS{CertFile: t.Cert, KeyFile: t.Key, Required: t.IsRequired()}
}

// loopback reports whether host (a name or an address) is this machine
// only.
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
