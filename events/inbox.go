package events

// Reply inboxes. A client's requests (JetStream API calls, pulls, the
// version check) are answered on its inbox subjects. Devices and
// integrations use a prefix of their own so that the broker's permissions
// let each read its own replies and nobody else's; the broker's own
// components keep the NATS default _INBOX.<random>.
const (
	inboxRoot        = "_INBOX"
	deviceInbox      = "dev"
	integrationInbox = "int"
)

// DeviceInboxPrefix returns the inbox prefix of device:
// _INBOX.dev.<device> (its inboxes are _INBOX.dev.<device>.<random>).
func DeviceInboxPrefix(device string) (string, error) {
	if err := ValidToken(device); err != nil {
		return "", err
	}
	return inboxRoot + "." + deviceInbox + "." + device, nil
}

// IntegrationInboxPrefix returns the inbox prefix of the integration
// named name: _INBOX.int.<name>.
func IntegrationInboxPrefix(name string) (string, error) {
	if err := ValidToken(name); err != nil {
		return "", err
	}
	return inboxRoot + "." + integrationInbox + "." + name, nil
}
