package localapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fieldsync/fieldsync/localapi"
)

type openAPIDoc struct {
	Paths map[string]map[string]struct {
		Responses   map[string]any `json:"responses"`
		RequestBody any            `json:"requestBody"`
		Security    *[]any         `json:"security"` // [] on public operations
	} `json:"paths"`
}

func loadOpenAPI(t *testing.T) openAPIDoc {
	t.Helper()
	b, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var d openAPIDoc
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	return d
}

func TestOpenAPI_MatchesRoutes(t *testing.T) {
	d := loadOpenAPI(t)
	var described, routed []string
	for path, ops := range d.Paths {
		for method := range ops {
			described = append(described, strings.ToUpper(method)+" "+path)
		}
	}
	for _, r := range localapi.Routes() {
		routed = append(routed, r.Method+" "+r.Path)
	}
	sort.Strings(described)
	sort.Strings(routed)
	if strings.Join(described, "\n") != strings.Join(routed, "\n") {
		t.Fatalf("openapi.json describes\n%s\nthe API routes\n%s", strings.Join(described, "\n"), strings.Join(routed, "\n"))
	}
}

// TestOpenAPI_Walk calls every described operation on a real agent and
// checks the answer's status code is one the description lists.
func TestOpenAPI_Walk(t *testing.T) {
	e := startEnv(t)
	d := loadOpenAPI(t)
	for path, ops := range d.Paths {
		for method, op := range ops {
			url := e.base + strings.NewReplacer("{id}", "nope", "{action}", "undo").Replace(path)
			if path == "/v1/records" && method == "get" {
				url += "?channel=events"
			}
			body := ""
			if op.RequestBody != nil {
				body = "{}"
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			req, err := http.NewRequestWithContext(ctx, strings.ToUpper(method), url, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := e.send(req) // the stream answers its headers at once
			if err != nil {
				cancel()
				t.Fatalf("%s %s: %v", method, path, err)
			}
			resp.Body.Close()
			cancel()
			if _, ok := op.Responses[strconv.Itoa(resp.StatusCode)]; !ok {
				t.Errorf("%s %s answered %d, not among its documented responses %v", strings.ToUpper(method), path, resp.StatusCode, keys(op.Responses))
			}
		}
	}
	resp, err := http.Get(e.base + "/v1/openapi.json")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/openapi.json: %v %v", resp, err)
	}
	resp.Body.Close()
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
