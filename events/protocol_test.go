package events_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/fieldsync/fieldsync/events"
)

func TestCompatible(t *testing.T) {
	agent, broker := events.LocalHello("agent"), events.LocalHello("broker")
	if err := events.Compatible(agent, broker); err != nil {
		t.Fatalf("same build incompatible: %v", err)
	}
	oldServer := broker
	oldServer.Protocol = 0
	err := events.Compatible(agent, oldServer)
	if !errors.Is(err, events.ErrIncompatible) || !strings.Contains(err.Error(), "upgrade the server") {
		t.Fatalf("old server: %v", err)
	}
	newServer := broker
	newServer.Protocol, newServer.MinPeerProtocol = 5, 3
	err = events.Compatible(agent, newServer)
	if !errors.Is(err, events.ErrIncompatible) || !strings.Contains(err.Error(), "upgrade the device agent") {
		t.Fatalf("server needing a newer agent: %v", err)
	}
	newerSchema := broker
	newerSchema.Protocol, newerSchema.SchemaVersion = 2, events.SchemaVersion+1
	if err := events.Compatible(agent, newerSchema); !errors.Is(err, events.ErrIncompatible) {
		t.Fatalf("server writing a newer schema: %v", err)
	}
	// Same protocol, newer schema: the agent cannot read what the server
	// writes and must stop rather than skip it.
	sameProtocol := broker
	sameProtocol.SchemaVersion = events.SchemaVersion + 1
	err = events.Compatible(agent, sameProtocol)
	if !errors.Is(err, events.ErrIncompatible) || !strings.Contains(err.Error(), "upgrade the device agent") {
		t.Fatalf("server writing a newer schema with the same protocol: %v, want ErrIncompatible", err)
	}
	// An agent pinned to an older schema than the server writes stops too;
	// one that reads newer schemas than the server writes syncs.
	pinned := agent
	pinned.SchemaVersion = broker.SchemaVersion - 1
	if err := events.Compatible(pinned, broker); !errors.Is(err, events.ErrIncompatible) {
		t.Fatalf("agent pinned below the server's schema: %v", err)
	}
	newerAgent := agent
	newerAgent.SchemaVersion = broker.SchemaVersion + 1
	if err := events.Compatible(newerAgent, broker); err != nil {
		t.Fatalf("agent reading newer schemas than the server writes: %v", err)
	}
	if _, err := events.ParseHello([]byte(`{"role":"broker"}`)); err == nil {
		t.Fatal("hello without protocol accepted")
	}
	if _, err := events.ParseHello([]byte(`{`)); !errors.Is(err, events.ErrMalformed) {
		t.Fatalf("bad hello: %v", err)
	}
}
