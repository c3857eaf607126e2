package natsjs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"

	"github.com/nats-io/nats.go"
)

// TLSErrorOf returns why err is a failed TLS connection to the broker (a
// certificate that does not verify against the configured CA, a name it
// does not cover, a server without TLS while TLS is wanted), or "".
func TLSErrorOf(err error) string {
	var verify *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var header tls.RecordHeaderError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &verify), errors.As(err, &unknown), errors.As(err, &host), errors.As(err, &invalid),
		errors.As(err, &header), errors.Is(err, nats.ErrSecureConnWanted), errors.Is(err, nats.ErrSecureConnRequired):
		return err.Error()
	}
	return ""
}

// TLSError returns why the last connection attempt failed in TLS (see
// [TLSErrorOf]), or "".
func (c *Client) TLSError() string { return TLSErrorOf(c.nc.LastError()) }
