package broker

import (
	"encoding/json"
	"errors"
	"net/http"
	"sync"
)

// errIngestStarting is ingest's state before its first report.
var errIngestStarting = errors.New("starting")

// ingestHealth is ingest's last report: nil while it reads uploads.
type ingestHealth struct {
	mu       sync.Mutex
	err      error
	reported bool
}

func (h *ingestHealth) set(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.err, h.reported = err, true
}

// down returns why ingest is down, or nil.
func (h *ingestHealth) down() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.reported {
		return errIngestStarting
	}
	return h.err
}

// health is the answer of GET /healthz.
type health struct {
	Status   string   `json:"status"`           // "ok" or "unavailable"
	Reason   string   `json:"reason,omitempty"` // what is down
	OrgUnits []string `json:"org_units"`
}

// healthz answers 200 {"status":"ok"} while the embedded server, the
// broker's connection and ingest all work, else 503 "unavailable" with the
// reason.
func (b *Broker) healthz(w http.ResponseWriter, r *http.Request) {
	h := health{Status: "ok", OrgUnits: b.cfg.OrgUnits}
	switch {
	case !b.srv.Ready():
		h.Reason = "nats: server not ready"
	case !b.nc.IsConnected():
		h.Reason = "nats: broker connection down"
	default:
		if err := b.ingest.down(); err != nil {
			h.Reason = "ingest down: " + err.Error()
		}
	}
	code := http.StatusOK
	if h.Reason != "" {
		h.Status, code = "unavailable", http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(h)
}
