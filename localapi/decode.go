package localapi

import (
	"net/http"

	"github.com/fieldsync/fieldsync/internal/strictjson"
)

// decodeJSON reads r's body, at most limit bytes, as exactly one JSON
// value into v: fields v has no place for are errors, and so is anything
// but white space after the value. Past the limit the error is an
// *[http.MaxBytesError] (answered 413 by [bodyError]).
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	return strictjson.Decode(http.MaxBytesReader(w, r.Body, limit), v, strictjson.Options{KnownFields: true})
}
