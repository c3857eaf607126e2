// Package natsauth owns fieldsync's identities on the broker, with NATS's
// own decentralized authentication: an operator, a system account and the
// tenant account, whose keys and JWTs it creates on first use in a
// directory of the broker's data dir ([Open]); user JWTs for devices and
// integrations, written as standard .creds files, with the least
// privilege subject permissions of [DevicePermissions] and
// [IntegrationPermissions]; the registry of the users it issued, so that
// they can be listed and revoked across restarts ([Registry]); and user
// JWTs for the broker's own components ([Role]).
//
// Revoking a user adds it to the tenant account JWT's revocations; a
// running broker is told with [PushAccount] (a claims update over NATS,
// signed by the operator), and disconnects the user at once.
//
// It imports the NATS JWT, nkeys and client libraries, never nats-server
// (see package natsserver, which runs the server with what this package
// makes).
package natsauth
