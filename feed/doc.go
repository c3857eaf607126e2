// Package feed is the Go library for backend integrations that follow
// fieldsync's change feed (the contract is docs/change-feed.md): a named
// durable subscription over a set of org units, channels and kinds that
// starts at the beginning, a time, a sequence or now, hands typed
// envelopes to a handler in stream order, acknowledges each change once
// the handler returns, resumes exactly after the last acknowledged change
// when it runs again, retries a failing handler with backoff and
// dead-letters a change that keeps failing without holding up the rest,
// and reports its lag.
//
// It owns the retry and dead-letter policy; reading the durables is
// package natsjs's ([natsjs.Client.OpenFeed]).
package feed
