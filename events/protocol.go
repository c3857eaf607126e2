package events

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Protocol versions. A device agent and a broker exchange [Hello] messages
// on [HelloSubject] when the agent connects; [Compatible] decides whether
// they may sync.
const (
	// ProtocolVersion is the sync protocol this build speaks.
	ProtocolVersion = 1
	// MinPeerProtocol is the oldest peer protocol this build works with.
	MinPeerProtocol = 1
	// HelloSubject is the NATS request subject the broker answers.
	HelloSubject = "fs.api.hello"
)

// ErrIncompatible: the agent and the broker cannot sync safely.
var ErrIncompatible = errors.New("events: incompatible protocol versions")

// Hello is what each side says about itself.
type Hello struct {
	Role            string `json:"role"` // "agent" or "broker"
	Protocol        int    `json:"protocol"`
	MinPeerProtocol int    `json:"min_peer_protocol"`
	// SchemaVersion is the envelope schema the broker side writes, and the
	// newest the agent reads (its build's, or lower when pinned).
	SchemaVersion int    `json:"schema_version"`
	DeviceID      string `json:"device_id,omitempty"`
}

// LocalHello returns this build's hello for role.
func LocalHello(role string) Hello {
	return Hello{Role: role, Protocol: ProtocolVersion, MinPeerProtocol: MinPeerProtocol, SchemaVersion: SchemaVersion}
}

// Compatible returns nil if agent and broker can sync, otherwise an error
// wrapping [ErrIncompatible] that says which side must be upgraded. Besides
// the protocol ranges, the agent must read the schema the server writes:
// an agent that cannot must stop, not skip the server's changes. (A change
// of a newer schema that reaches a compatible agent anyway, say from a
// publisher upgraded before the broker, is parked on the device, see
// [ErrUnknownVersion].)
func Compatible(agent, broker Hello) error {
	switch {
	case broker.Protocol < agent.MinPeerProtocol:
		return fmt.Errorf("%w: the server speaks protocol %d, this agent needs at least %d: upgrade the server", ErrIncompatible, broker.Protocol, agent.MinPeerProtocol)
	case agent.Protocol < broker.MinPeerProtocol:
		return fmt.Errorf("%w: this agent speaks protocol %d, the server needs at least %d: upgrade the device agent", ErrIncompatible, agent.Protocol, broker.MinPeerProtocol)
	case broker.SchemaVersion > agent.SchemaVersion:
		// Whatever the protocol versions: an agent that went on would read
		// changes it cannot decode.
		return fmt.Errorf("%w: the server writes schema %d, this agent reads up to %d: upgrade the device agent", ErrIncompatible, broker.SchemaVersion, agent.SchemaVersion)
	}
	return nil
}

// ParseHello decodes a hello message.
func ParseHello(b []byte) (Hello, error) {
	var h Hello
	if err := json.Unmarshal(b, &h); err != nil {
		return h, fmt.Errorf("%w: hello: %v", ErrMalformed, err)
	}
	if h.Protocol <= 0 {
		return h, fmt.Errorf("%w: hello without a protocol version", ErrMissingField)
	}
	return h, nil
}
