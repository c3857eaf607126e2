// Package broker is the server side of fieldsync: it runs the embedded
// NATS/JetStream server, provisions the org unit streams from
// configuration, serves the publish API (NATS and HTTP) and the health
// endpoint. cmd/broker-embed only wires it to the command line.
package broker
