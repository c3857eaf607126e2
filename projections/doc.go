// Package projections turns the messages of a unit stream into changes to
// the device's local projections of the Events, Admin and Documents
// channels. It is pure: no NATS, no SQLite, no clock. [FromMessage] decodes
// and checks one message, [Fold] a batch, and [State] is the reference
// in-memory projection that the SQLite store must agree with (golden files
// under testdata/).
package projections
