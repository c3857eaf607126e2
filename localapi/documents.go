package localapi

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"os"
	"path"

	"github.com/fieldsync/fieldsync/agent"
)

// DocumentBackend is a [Backend] that holds documents (*agent.Agent is
// one): without it the /v1/documents routes answer 404.
type DocumentBackend interface {
	Documents(ctx context.Context, q string) (agent.DocumentList, error)
	DownloadDocument(ctx context.Context, unit, id string) (agent.Document, error)
	DownloadAllDocuments(ctx context.Context) (int, error)
	OpenDocument(ctx context.Context, unit, id string) (*os.File, agent.Document, error)
}

func (h *handler) docs(w http.ResponseWriter) (DocumentBackend, bool) {
	d, ok := h.b.(DocumentBackend)
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", "this agent holds no documents")
	}
	return d, ok
}

// documents answers GET /v1/documents[?q=text][&org=U]: every document
// with the state of its content, and the space documents use.
func (h *handler) documents(w http.ResponseWriter, r *http.Request) {
	d, ok := h.docs(w)
	if !ok {
		return
	}
	list, err := d.Documents(r.Context(), r.URL.Query().Get("q"))
	if err != nil {
		h.internal(w, err)
		return
	}
	if org := r.URL.Query().Get("org"); org != "" {
		kept := list.Documents[:0]
		for _, doc := range list.Documents {
			if doc.OrgUnit == org {
				kept = append(kept, doc)
			}
		}
		list.Documents = kept
	}
	writeJSON(w, http.StatusOK, list)
}

// download answers POST /v1/documents/{id}/download[?org=U]: 202 with the
// document, its download queued (or 200 when its content is on the
// device already).
func (h *handler) download(w http.ResponseWriter, r *http.Request) {
	d, ok := h.docs(w)
	if !ok {
		return
	}
	doc, err := d.DownloadDocument(r.Context(), r.URL.Query().Get("org"), r.PathValue("id"))
	if err != nil {
		h.documentError(w, err)
		return
	}
	status := http.StatusAccepted
	if doc.State == agent.DocDownloaded {
		status = http.StatusOK
	}
	writeJSON(w, status, map[string]any{"document": doc})
}

// downloadAll answers POST /v1/documents/download-all: 202 with how many
// documents it queued (Download All: every one not on the device).
func (h *handler) downloadAll(w http.ResponseWriter, r *http.Request) {
	d, ok := h.docs(w)
	if !ok {
		return
	}
	n, err := d.DownloadAllDocuments(r.Context())
	if err != nil {
		h.documentError(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]int{"queued": n})
}

// content answers GET /v1/documents/{id}/content[?org=U] with the file
// (ranges supported), or 409 while it is not on the device or an update
// of it is pending.
func (h *handler) content(w http.ResponseWriter, r *http.Request) {
	d, ok := h.docs(w)
	if !ok {
		return
	}
	f, doc, err := d.OpenDocument(r.Context(), r.URL.Query().Get("org"), r.PathValue("id"))
	if err != nil {
		h.documentError(w, err)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		h.internal(w, err)
		return
	}
	if doc.ContentType != "" {
		w.Header().Set("Content-Type", doc.ContentType)
	}
	name := doc.Name
	if name == "" {
		name = doc.ID
	}
	w.Header().Set("Content-Disposition", mime.FormatMediaType("inline", map[string]string{"filename": path.Base(name)}))
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Fieldsync-Version", fmt.Sprint(doc.DownloadedVersion))
	http.ServeContent(w, r, "", st.ModTime(), f)
}

func (h *handler) documentError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, agent.ErrNoDocument):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, agent.ErrAmbiguousDocument):
		writeError(w, http.StatusConflict, "ambiguous", err.Error()+" (add ?org=)")
	case errors.Is(err, agent.ErrNoContent):
		writeError(w, http.StatusConflict, "no_content", err.Error())
	case errors.Is(err, agent.ErrNoSpace):
		writeError(w, http.StatusInsufficientStorage, "insufficient_storage", err.Error())
	case errors.Is(err, agent.ErrUpdatePending):
		writeError(w, http.StatusConflict, string(agent.DocUpdatePending), err.Error())
	case errors.Is(err, agent.ErrNotOpenable):
		writeError(w, http.StatusConflict, string(agent.DocNotDownloaded), err.Error())
	default:
		h.internal(w, err)
	}
}
