// Package store owns the device's local SQLite database: the projections of
// the Events, Admin and Documents channels, the per-(unit, channel)
// checkpoints that are the truth about what the device has applied, sync
// errors, changes parked for a newer build (parked.go), and device
// metadata.
//
// It uses modernc.org/sqlite (pure Go, so the agent cross-compiles to
// Windows) in WAL mode with exactly one writer connection and a separate
// pool of read-only connections. Every batch of changes and the checkpoint
// after it commit in one transaction, so the checkpoint is never ahead of
// the data.
package store
