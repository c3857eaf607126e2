package events

import "fmt"

// Subjects of the broker's own services.
const (
	apiToken        = "api"
	deadLetterToken = "dlq"
	// PublishSubject is the NATS request subject of the server-side
	// publish API (package publish).
	PublishSubject = subjectRoot + "." + apiToken + ".publish"
)

// DeadLetterSubject returns the subject an upload ingest could not use is
// stored on, fs.dlq.<reason>; reason must be a token (see [ValidToken]).
func DeadLetterSubject(reason string) (string, error) {
	if err := ValidToken(reason); err != nil {
		return "", fmt.Errorf("%w: dead-letter reason: %w", ErrBadSubject, err)
	}
	return subjectRoot + "." + deadLetterToken + "." + reason, nil
}

// DeadLetterSubjects returns the filter of every dead-letter subject.
func DeadLetterSubjects() string { return subjectRoot + "." + deadLetterToken + ".>" }
