// Package e2e holds end-to-end tests that run fieldsync's components as
// separate processes and kill them with SIGKILL at chosen points: the
// device agent between publishing an upload and recording it, the broker
// (with its ingest) in the middle of a batch. It has no production code.
package e2e
