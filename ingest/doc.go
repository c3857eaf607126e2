// Package ingest is the server side of offline writes: it reads device
// uploads through one shared durable, checks the device's rights, applies
// each mutation to its org unit stream with optimistic concurrency on the
// record (the version the device based its change on), and answers every
// mutation with a result the device consumes.
//
// Exactly once, forever: the result of every mutation is remembered in the
// results stream, one subject per mutation (for
// [natsjs.IngestPolicy.ResultRetention], 400 days by default), so a
// mutation delivered again — redelivery, a device that
// crashed before recording its upload, a replay from a backup weeks later —
// gets the same result and is never applied twice. The window between
// applying a mutation and remembering its result is covered by the
// stream's dedupe id (a redelivery within minutes) and, beyond that, by
// finding the mutation in the record's history.
package ingest
