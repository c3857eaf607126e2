// Package events owns fieldsync's wire contract: the [Envelope] every change
// travels in, its msgpack encoding, and the NATS subject and stream names
// changes are published on.
//
// Nothing outside this package builds or parses a subject. The package has no
// NATS import: it is pure data and can be used by the server side, the device
// agent, backends and tests alike.
//
// Subject scheme (every token is validated, see [ValidToken]):
//
//	fs.org.<unit>.<channel>.<kind>.<recordID>    org unit data, stream FS_ORG_<unit>
//	fs.tenant.admin.<kind>.<recordID>            tenant-wide admin data, stream FS_TENANT
//	fs.up.<device>.<unit>.<channel>.<kind>.<id>  device uploads (offline writes), stream FS_UPLOADS,
//	                                             stored as fs.up.<device> (the per-device quota)
//	fs.res.<device>.<mutationID>                 ingest results for one device, stream FS_RESULTS
//
// The layout lets the broker restrict a device by subject permissions alone:
// read fs.org.<its units>.> and fs.tenant.>, publish only fs.up.<its id>.>,
// read only fs.res.<its id>.>.
//
// Record kinds are open: any valid token is a kind, and the subject says
// which channel a record belongs to, so a kind the tenant adds reaches
// every agent without a release (see [ValidKind], [KindSet]). Envelope
// schemas are versioned ([SchemaVersion]): a reader meets a newer one as
// [ErrUnknownVersion], a kind it does not accept as [ErrUnknownKind]; both
// mean "newer than this reader", not "bad", and a device keeps such
// changes for a newer build. [Compatible] stops an agent that cannot read
// the schema its server writes.
package events
