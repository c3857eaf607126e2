package localapi_test

import (
	"encoding/json"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/localapi"
	"github.com/fieldsync/fieldsync/store"
)

// schemaTypes are the Go types openapi.json's component schemas describe.
var schemaTypes = map[string]reflect.Type{
	"Status":           reflect.TypeFor[agent.Status](),
	"ChannelProgress":  reflect.TypeFor[agent.ChannelProgress](),
	"ChannelStatus":    reflect.TypeFor[agent.ChannelStatus](),
	"Checkpoint":       reflect.TypeFor[store.Checkpoint](),
	"Due":              reflect.TypeFor[agent.Due](),
	"WipeReport":       reflect.TypeFor[store.WipeReport](),
	"Record":           reflect.TypeFor[store.Record](),
	"RecordsPage":      reflect.TypeFor[localapi.RecordsPage](),
	"Conflict":         reflect.TypeFor[store.Conflict](),
	"Activity":         reflect.TypeFor[store.Activity](),
	"ApplyReport":      reflect.TypeFor[agent.ApplyReport](),
	"Report":           reflect.TypeFor[agent.Report](),
	"WriteResponse":    reflect.TypeFor[localapi.WriteResponse](),
	"Write":            reflect.TypeFor[agent.WriteRequest](),
	"Error":            reflect.TypeFor[localapi.ErrorBody](),
	"Document":         reflect.TypeFor[agent.Document](),
	"DocumentList":     reflect.TypeFor[agent.DocumentList](),
	"DocumentSpace":    reflect.TypeFor[agent.DocumentSpace](),
	"DocumentSummary":  reflect.TypeFor[agent.DocumentSummary](),
	"DocumentProgress": reflect.TypeFor[agent.DocumentProgress](),
}

// jsonFields returns the JSON names of t's fields and their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "-" || !f.IsExported():
		case f.Anonymous && name == "":
			for k, v := range jsonFields(f.Type) {
				out[k] = v
			}
		case name == "":
			out[f.Name] = f.Type
		default:
			out[name] = f.Type
		}
	}
	return out
}

// jsonType is the JSON Schema type of values of t.
func jsonType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == reflect.TypeFor[time.Time]():
		return "string"
	case t.Kind() == reflect.String:
		return "string"
	case t.Kind() == reflect.Bool:
		return "boolean"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "integer"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "number"
	case t.Kind() == reflect.Slice:
		return "array"
	default:
		return "object"
	}
}

type schemaDoc struct {
	Components struct {
		Schemas map[string]struct {
			Properties map[string]struct {
				Type string `json:"type"`
				Ref  string `json:"$ref"`
			} `json:"properties"`
		} `json:"schemas"`
	} `json:"components"`
}

// TestOpenAPI_SchemasMatchTypes: every component schema lists exactly the
// JSON fields of its Go type, each with the right JSON type.
func TestOpenAPI_SchemasMatchTypes(t *testing.T) {
	b, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var d schemaDoc
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	for name, typ := range schemaTypes {
		s, ok := d.Components.Schemas[name]
		if !ok {
			t.Errorf("openapi.json has no schema %s", name)
			continue
		}
		fields := jsonFields(typ)
		var missing, extra []string
		for f, ft := range fields {
			p, ok := s.Properties[f]
			switch {
			case !ok:
				missing = append(missing, f)
			case p.Ref == "" && p.Type != jsonType(ft):
				t.Errorf("%s.%s: type %q, want %q", name, f, p.Type, jsonType(ft))
			}
		}
		for p := range s.Properties {
			if _, ok := fields[p]; !ok {
				extra = append(extra, p)
			}
		}
		sort.Strings(missing)
		sort.Strings(extra)
		if len(missing)+len(extra) > 0 {
			t.Errorf("schema %s vs %s: missing %v, not in the type %v", name, typ, missing, extra)
		}
	}
}
