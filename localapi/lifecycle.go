package localapi

import (
	"net/http"
	"strconv"
)

func (h *handler) activity(w http.ResponseWriter, r *http.Request) {
	limit := 100
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, "bad_request", "limit: want 1..1000")
			return
		}
		limit = n
	}
	acts, err := h.b.Activity(r.Context(), limit)
	if err != nil {
		h.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"activity": acts})
}

// Settings is the body of POST /v1/settings.
type Settings struct {
	// RefreshMode switches non-blocking sync on or off (next sync).
	RefreshMode *bool `json:"refresh_mode"`
}

func (h *handler) settings(w http.ResponseWriter, r *http.Request) {
	var s Settings
	if err := decodeJSON(w, r, 4096, &s); err != nil || s.RefreshMode == nil {
		bodyError(w, err, `body: want {"refresh_mode": true|false}`)
		return
	}
	if err := h.b.SetRefreshMode(r.Context(), *s.RefreshMode); err != nil {
		h.internal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"refresh_mode": *s.RefreshMode, "effective": "next sync"})
}
