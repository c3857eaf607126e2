// Package agent is the device agent: it keeps the device's local store in
// step with its org units' streams. [Syncer] runs one sync (initial
// snapshot or delta, scoped to channels); [Agent] owns the store, the broker
// connection and the schedule, and exposes the status the local API serves.
package agent
