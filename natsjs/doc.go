// Package natsjs is the one package that talks to JetStream. It provisions
// fieldsync's streams ([Client.Provision]), appends server-side changes with
// per-record optimistic concurrency ([Publisher]) and reads a unit's
// changes for a device through durable pull consumers ([Client.OpenCursor]).
// A device's ingest results arrive on a plain subscription
// ([Client.SubscribeResults]) while it is connected, and through its results
// cursor after it was offline.
//
// Everything above it deals in [events.Envelope] values and stream
// sequences; nothing above it imports the jetstream package.
package natsjs
