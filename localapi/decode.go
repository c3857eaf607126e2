package localapi

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
)

// errTrailing: a request body holds more than one JSON value.
var errTrailing = errors.New("trailing data after the JSON object (send exactly one)")

// decodeJSON reads r's body, at most limit bytes, as exactly one JSON
// value into v: fields v has no place for are errors, and so is anything
// but white space after the value. Past the limit the error is an
// *[http.MaxBytesError] (answered 413 by [bodyError]).
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	_, err := dec.Token()
	var syntax *json.SyntaxError
	switch {
	case err == io.EOF:
		return nil
	case err == nil, errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF):
		return errTrailing
	}
	return err
}
