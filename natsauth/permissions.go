package natsauth

import (
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/jwt/v2"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsjs"
)

// JetStream API subjects (nats-server's wire protocol; the stream and
// consumer names are fieldsync's, see package events and natsjs).
const (
	jsAPI            = "$JS.API."
	jsStreamInfo     = jsAPI + "STREAM.INFO."     // .<stream>
	jsStreamPurge    = jsAPI + "STREAM.PURGE."    // .<stream>
	jsDirectGet      = jsAPI + "DIRECT.GET."      // .<stream>.<subject>: last message of a subject
	jsConsumerCreate = jsAPI + "CONSUMER.CREATE." // .<stream>.<consumer>.<filter>
	jsConsumerInfo   = jsAPI + "CONSUMER.INFO."   // .<stream>.<consumer>
	jsConsumerDelete = jsAPI + "CONSUMER.DELETE." // .<stream>.<consumer>
	jsConsumerNext   = jsAPI + "CONSUMER.MSG.NEXT."
	jsAck            = "$JS.ACK." // .<stream>.<consumer>.…: acknowledgements
)

// DevicePermissions returns what device, carrying units, may do on the
// broker (the README's permission table):
//
//   - create, read, delete and pull from its own consumers only (their
//     names are fixed per device: [natsjs.DurableName],
//     [natsjs.ResultsDurableName]) on the streams of its units and
//     FS_TENANT, and on FS_RESULTS filtered to its own results;
//   - read those streams' info and the last message of a subject in them
//     (on FS_RESULTS only of its own result subjects);
//   - read its units' document content through its own consumer on each
//     unit's bucket ([natsjs.DocumentConsumerName]), filtered to chunks;
//   - publish its uploads (fs.up.<device>.>), the version check, and the
//     requests for its own grant and sign-ins (fs.acc.<device>.get,
//     fs.acc.<device>.signin);
//   - receive its results (fs.res.<device>.>), its pushed grants
//     (fs.acc.<device>.grant, answered once each) and the replies sent to
//     its own inbox prefix ([events.DeviceInboxPrefix]).
//
// Everything else is denied: stream create, update, purge and delete,
// other consumers (listing them too), other devices' uploads and results,
// publishing on fs.org., fs.tenant., fs.res. or the publish API.
func DevicePermissions(device string, units []string) (jwt.Permissions, error) {
	inbox, err := events.DeviceInboxPrefix(device)
	if err != nil {
		return jwt.Permissions{}, err
	}
	upload, _ := events.DeviceUploadSubjects(device)
	results, _ := events.DeviceResultSubjects(device)
	pub, err := readerSubjects(units, func(ch events.Channel) (string, error) { return natsjs.DurableName(device, ch) })
	if err != nil {
		return jwt.Permissions{}, err
	}
	resDurable, _ := natsjs.ResultsDurableName(device)
	rs := events.ResultStream
	pub = append(pub,
		jsStreamInfo+rs,
		jsDirectGet+rs+"."+results,
		jsConsumerCreate+rs+"."+resDurable+"."+results,
		jsConsumerInfo+rs+"."+resDurable,
		jsConsumerDelete+rs+"."+resDurable,
		jsConsumerNext+rs+"."+resDurable,
		upload, events.HelloSubject)
	get, _ := events.AccessRequestSubject(device)
	signin, _ := events.SignInSubject(device)
	grant, _ := events.AccessGrantSubject(device)
	pub = append(pub, get, signin)
	docs, err := documentReaderSubjects(device, units)
	if err != nil {
		return jwt.Permissions{}, err
	}
	pub = append(pub, docs...)
	return jwt.Permissions{
		Pub: jwt.Permission{Allow: pub},
		Sub: jwt.Permission{Allow: []string{inbox + ".>", results, grant}},
		// Acknowledging a pushed grant: one reply per push, within a minute.
		Resp: &jwt.ResponsePermission{MaxMsgs: 1, Expires: time.Minute},
	}, nil
}

// documentReaderSubjects returns the JetStream API subjects device reads
// its units' document content with: its own consumer
// ([natsjs.DocumentConsumerName]) on each unit's bucket stream, created
// only with a filter on that bucket's chunks, and its info, delete and
// pull. No stream info, no object infos, no other consumers: the
// document's record names the chunks (see [events.Content]).
func documentReaderSubjects(device string, units []string) ([]string, error) {
	name, err := natsjs.DocumentConsumerName(device)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, unit := range units {
		stream, err := events.DocumentStream(unit)
		if err != nil {
			return nil, fmt.Errorf("natsauth: org unit: %w", err)
		}
		chunks, _ := events.DocumentChunkSubjects(unit)
		out = append(out,
			jsConsumerCreate+stream+"."+name+"."+chunks,
			jsConsumerInfo+stream+"."+name,
			jsConsumerDelete+stream+"."+name,
			jsConsumerNext+stream+"."+name)
	}
	return out, nil
}

// IntegrationPermissions returns what the integration (a backend reading
// changes) named name may do: read its units' streams and FS_TENANT
// through its own consumers ([natsjs.IntegrationDurableName]) and receive
// replies on its own inbox prefix ([events.IntegrationInboxPrefix]).
// It publishes nothing but those JetStream API requests.
func IntegrationPermissions(name string, units []string) (jwt.Permissions, error) {
	inbox, err := events.IntegrationInboxPrefix(name)
	if err != nil {
		return jwt.Permissions{}, err
	}
	durable := func(ch events.Channel) (string, error) { return natsjs.IntegrationDurableName(name, ch) }
	pub, err := readerSubjects(units, durable)
	if err != nil {
		return jwt.Permissions{}, err
	}
	acks, err := ackSubjects(units, durable)
	if err != nil {
		return jwt.Permissions{}, err
	}
	pub = append(pub, acks...)
	return jwt.Permissions{
		Pub: jwt.Permission{Allow: pub},
		Sub: jwt.Permission{Allow: []string{inbox + ".>"}},
	}, nil
}

// readerSubjects returns the JetStream API subjects of a reader of units'
// streams and FS_TENANT whose consumer of channel ch is named durable(ch):
// stream info, last message of a subject, and create (with a filter),
// info, delete and pull of those consumers only.
func readerSubjects(units []string, durable func(events.Channel) (string, error)) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	err := eachConsumer(units, durable, func(stream, name string) {
		if !seen[stream] {
			seen[stream] = true
			out = append(out, jsStreamInfo+stream, jsDirectGet+stream+".>")
		}
		out = append(out,
			jsConsumerCreate+stream+"."+name+".>",
			jsConsumerInfo+stream+"."+name,
			jsConsumerDelete+stream+"."+name,
			jsConsumerNext+stream+"."+name)
	})
	return out, err
}

// ackSubjects returns the acknowledgement subjects of the consumers
// durable(ch) on units' streams and FS_TENANT ($JS.ACK.<stream>.<name>.>):
// an integration acknowledges what it processed, so that its durable
// resumes after it (devices use no acks: their checkpoint is local).
func ackSubjects(units []string, durable func(events.Channel) (string, error)) ([]string, error) {
	var out []string
	err := eachConsumer(units, durable, func(stream, name string) { out = append(out, jsAck+stream+"."+name+".>") })
	return out, err
}

// eachConsumer calls fn with the stream and name of the reader's consumer
// of every channel of units' streams, and of the admin channel of
// FS_TENANT (tenant-wide data is admin only).
func eachConsumer(units []string, durable func(events.Channel) (string, error), fn func(stream, name string)) error {
	for _, unit := range append([]string{""}, units...) {
		stream, err := events.OrgStream(unit)
		if err != nil {
			return fmt.Errorf("natsauth: org unit: %w", err)
		}
		for _, ch := range events.Channels {
			if unit == "" && ch != events.ChannelAdmin {
				continue
			}
			name, err := durable(ch)
			if err != nil {
				return err
			}
			fn(stream, name)
		}
	}
	return nil
}

// Role is one of the broker's own components; each connects with its own
// user ([Authority.Component]).
type Role string

// The components.
const (
	// RoleBroker provisions streams and serves metrics and the version
	// check: the account's administrator.
	RoleBroker Role = "broker"
	// RoleIngest applies device uploads: reads FS_UPLOADS, writes the org
	// unit streams, results and dead letters. The only identity that
	// publishes results.
	RoleIngest Role = "ingest"
	// RolePublish serves the publish API and the document publish API:
	// appends to the org streams, puts and deletes document content (the
	// delete only when signed with the units, [Authority.ComponentFor]).
	RolePublish Role = "publish"
	// RoleTool is the operator's command-line tools (seed, publish) and the
	// demo: they append to the org streams, call the publish APIs and put
	// document content (never purge or delete it).
	RoleTool Role = "tool"
	// RoleTail is `broker-embed tail`, the operator's reader: it follows
	// any stream through ordered consumers (their names are random, so
	// they cannot be named in a permission) and publishes nothing else.
	RoleTail Role = "tail"
)

// streamAdmin are the JetStream requests that change streams.
var streamAdmin = []string{jsAPI + "STREAM.CREATE.>", jsAPI + "STREAM.UPDATE.>", jsAPI + "STREAM.DELETE.>",
	jsAPI + "STREAM.PURGE.>", jsAPI + "STREAM.MSG.DELETE.>", jsAPI + "STREAM.RESTORE.>"}

// objectPublish is every object store subject of the account. NATS
// wildcards match whole tokens only ("$O.FS_DOCS_*.>" would be a literal
// token), so a permission without the unit names takes every bucket; the
// account's only buckets are the document buckets (FS_DOCS_<unit>).
const objectPublish = "$O.*.>"

// documentWriterSubjects are what putting content into units' document
// buckets takes beyond stream info and direct get, which the roles have
// on every stream (nats.go's object store Put reads the bucket's stream
// info and the object's info, then publishes the chunks and the info):
// publishing on the buckets' subjects, "$O.*.>" when units are not known.
// Deleting an object purges its chunks: with units, the purge of their
// document streams (the publish identity only).
func documentWriterSubjects(units []string, purge bool) ([]string, error) {
	if units == nil {
		return []string{objectPublish}, nil
	}
	var out []string
	for _, u := range units {
		subj, err := events.DocumentObjectSubjects(u)
		if err != nil {
			return nil, fmt.Errorf("natsauth: org unit: %w", err)
		}
		out = append(out, subj)
		if purge {
			stream, _ := events.DocumentStream(u)
			out = append(out, jsStreamPurge+stream)
		}
	}
	return out, nil
}

// ComponentFor is [Authority.Component] for a component that knows the
// broker's org units: [RolePublish] then writes and purges exactly those
// units' document buckets (deleting content needs the purge, which a
// permission can only grant by stream name). Other roles get
// [Authority.Component]'s permissions.
func (a *Authority) ComponentFor(role Role, units []string) (userJWT, seed string, err error) {
	if role != RolePublish {
		return a.Component(role)
	}
	perms, err := componentPermissions(role)
	if err != nil {
		return "", "", err
	}
	docs, err := documentWriterSubjects(units, true)
	if err != nil {
		return "", "", err
	}
	perms.Pub.Allow = slices.Concat(slices.DeleteFunc(perms.Pub.Allow, func(s string) bool { return s == objectPublish }), docs)
	creds, _, err := a.signUser("fieldsync-"+string(role), perms, 0, map[string]string{"role": string(role)})
	if err != nil {
		return "", "", err
	}
	return credsParts(creds)
}

// componentPermissions returns role's permissions. Components use the
// default _INBOX prefix; only devices and integrations are held to their
// own.
func componentPermissions(role Role) (jwt.Permissions, error) {
	tenant, _ := events.OrgSubjects("")
	changes := []string{events.AllOrgSubjects(), tenant}
	reply := &jwt.ResponsePermission{MaxMsgs: 1, Expires: time.Minute}
	switch role {
	case RoleBroker:
		return jwt.Permissions{Pub: jwt.Permission{Allow: []string{">"}}, Sub: jwt.Permission{Allow: []string{">"}}}, nil
	case RoleIngest:
		return jwt.Permissions{
			Pub: jwt.Permission{Allow: slices.Concat(changes, []string{jsAPI + ">", jsAck + events.UploadStream + ".>",
				events.ResultSubjects(), events.DeadLetterSubjects()}), Deny: streamAdmin},
			Sub: jwt.Permission{Allow: []string{"_INBOX.>"}},
		}, nil
	case RolePublish:
		return jwt.Permissions{
			Pub: jwt.Permission{Allow: slices.Concat(changes, []string{objectPublish, jsStreamInfo + "*", jsDirectGet + ">", jsAPI + "STREAM.MSG.GET.*"})},
			Sub: jwt.Permission{Allow: []string{"_INBOX.>", events.PublishSubject, events.DocumentAPISubject}},
			// Answering publish API requests.
			Resp: reply,
		}, nil
	case RoleTail:
		return jwt.Permissions{
			Pub: jwt.Permission{Allow: []string{jsStreamInfo + "*", jsConsumerCreate + "*.>", jsConsumerInfo + "*.*",
				jsConsumerDelete + "*.*", jsConsumerNext + "*.*"}},
			Sub: jwt.Permission{Allow: []string{"_INBOX.>"}},
		}, nil
	case RoleTool:
		return jwt.Permissions{
			Pub: jwt.Permission{Allow: slices.Concat(changes, []string{objectPublish, events.PublishSubject, events.DocumentAPISubject,
				jsStreamInfo + "*", jsDirectGet + ">"})},
			Sub: jwt.Permission{Allow: []string{"_INBOX.>"}},
		}, nil
	}
	return jwt.Permissions{}, fmt.Errorf("natsauth: unknown role %q", role)
}
