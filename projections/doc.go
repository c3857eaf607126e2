// Package projections turns the messages of a unit stream into changes to
// the device's local projections of the Events, Admin and Documents
// channels. It is pure: no NATS, no SQLite, no clock. A [Reader] (what a
// build reads: schema version, kinds) decodes and checks one message
// ([Reader.FromMessage]) or folds a batch ([Reader.Fold]) into changes,
// rejects (bad for good) and [Parked] messages (newer than the reader,
// kept for a newer one). The reference in-memory projection that the SQLite
// store must agree with is test code, in package projectionstest (golden
// files under testdata/).
package projections
