package server

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"hotfleet/internal/api"
)

// openAPIFile is the API description, from this package's directory.
const openAPIFile = "../../api/openapi.yaml"

func loadOpenAPI(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile(openAPIFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("parse %s: %v", openAPIFile, err)
	}
	return doc
}

var pathParam = regexp.MustCompile(`\{[^}]*\}`)

// routeKey is "METHOD /path/{}" with parameter names erased: the mux and
// the document may name one parameter differently.
func routeKey(method, path string) string {
	return strings.ToUpper(method) + " " + pathParam.ReplaceAllString(path, "{}")
}

// registeredRoutes are the routes the server registers: the admin table,
// and the device routes read from this package's sources (the mux does not
// list its patterns).
func registeredRoutes(t *testing.T) map[string]bool {
	t.Helper()
	consts := map[string]string{
		"PathEnroll": api.PathEnroll, "PathCheckIn": api.PathCheckIn, "PathReports": api.PathReports,
		"PathWatch": api.PathWatch, "PathBundles": api.PathBundles, "PathAdmin": api.PathAdmin, "PathHealth": api.PathHealth,
	}
	routes := map[string]bool{}
	for _, rt := range (&Server{}).adminRouteTable() {
		routes[routeKey(rt.method, api.PathAdmin+rt.path)] = true
	}
	files, _ := filepath.Glob("*.go")
	reg := regexp.MustCompile(`s\.mux\.HandleFunc\("([A-Z]+) "\+api\.(\w+)(?:\+"([^"]*)")?`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range reg.FindAllStringSubmatch(string(b), -1) {
			p, ok := consts[m[2]]
			if !ok {
				t.Fatalf("%s registers a route on api.%s, which this test does not know; add it to consts", f, m[2])
			}
			if m[2] == "PathAdmin" {
				continue // the admin table, above
			}
			routes[routeKey(m[1], p+m[3])] = true
		}
	}
	return routes
}

func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	doc := loadOpenAPI(t)
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.1.") {
		t.Errorf("openapi version %q, want 3.1.x", v)
	}
	paths, _ := doc["paths"].(map[string]any)
	documented := map[string]bool{}
	s := New(Config{})
	for path, item := range paths {
		ops, _ := item.(map[string]any)
		for method, op := range ops {
			if method == "parameters" {
				continue
			}
			key := routeKey(method, path)
			documented[key] = true
			o, _ := op.(map[string]any)
			resp, _ := o["responses"].(map[string]any)
			if len(resp) == 0 {
				t.Errorf("%s documents no responses", key)
			}
			if strings.HasPrefix(path, api.PathAdmin) {
				if _, ok := resp["401"]; !ok {
					t.Errorf("%s: an admin operation must document 401", key)
				}
				if sec, _ := o["security"].([]any); len(sec) != 1 || sec[0].(map[string]any)["bearer"] == nil {
					t.Errorf("%s: an admin operation must require the bearer scheme, has %v", key, o["security"])
				}
			}
			// The mux must route the documented path to a pattern of the
			// same shape.
			concrete := pathParam.ReplaceAllString(path, strings.Repeat("0", 64))
			req := httptest.NewRequest(strings.ToUpper(method), concrete, nil)
			_, pattern := s.mux.Handler(req)
			if m, p, _ := strings.Cut(pattern, " "); routeKey(m, p) != key {
				t.Errorf("%s is documented, but the server routes it to %q", key, pattern)
			}
		}
	}
	registered := registeredRoutes(t)
	var missing, extra []string
	for k := range registered {
		if !documented[k] {
			missing = append(missing, k)
		}
	}
	for k := range documented {
		if !registered[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 {
		t.Errorf("routes missing from %s:\n%s", openAPIFile, strings.Join(missing, "\n"))
	}
	if len(extra) > 0 {
		t.Errorf("%s documents routes the server does not register:\n%s", openAPIFile, strings.Join(extra, "\n"))
	}
}

// TestOpenAPIReferencesResolve checks every $ref, and that the schemas of
// the wire types name exactly the Go types' JSON fields.
func TestOpenAPIReferencesResolve(t *testing.T) {
	doc := loadOpenAPI(t)
	var walk func(v any, at string)
	walk = func(v any, at string) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				if k == "$ref" {
					ref, _ := c.(string)
					if resolve(doc, ref) == nil {
						t.Errorf("%s: $ref %q does not resolve", at, ref)
					}
					continue
				}
				walk(c, at+"/"+k)
			}
		case []any:
			for _, c := range x {
				walk(c, at)
			}
		}
	}
	walk(doc, "")

	for name, v := range map[string]any{
		"Error": api.Error{}, "EnrollRequest": api.EnrollRequest{}, "CheckIn": api.CheckIn{}, "CheckInResponse": api.CheckInResponse{},
		"Assignment": api.Assignment{}, "Notice": api.Notice{}, "WatchResponse": api.WatchResponse{}, "ReportsResponse": api.ReportsResponse{},
		"BundleUpload": api.BundleUpload{}, "ReleaseRequest": api.ReleaseRequest{}, "Release": api.Release{}, "PauseRequest": api.PauseRequest{},
		"ReleaseStatus": api.ReleaseStatus{}, "RingStatus": api.RingStatus{}, "Forecast": api.Forecast{}, "Thresholds": api.Thresholds{},
		"Overrides": api.Overrides{}, "Device": api.Device{}, "TokenRequest": api.TokenRequest{}, "TokenResponse": api.TokenResponse{},
		"AdminTokenRequest": api.AdminTokenRequest{}, "AdminTokenResponse": api.AdminTokenResponse{}, "AuditEntry": api.AuditEntry{},
		"DeviceList": api.DeviceList{}, "AuditList": api.AuditList{}, "Pause": api.Pause{},
	} {
		schema, _ := resolve(doc, "#/components/schemas/"+name).(map[string]any)
		props, _ := schema["properties"].(map[string]any)
		var doc, code []string
		for p := range props {
			doc = append(doc, p)
		}
		rt := reflect.TypeOf(v)
		for i := 0; i < rt.NumField(); i++ {
			tag := strings.Split(rt.Field(i).Tag.Get("json"), ",")[0]
			if tag != "" && tag != "-" {
				code = append(code, tag)
			}
		}
		sort.Strings(doc)
		sort.Strings(code)
		if strings.Join(doc, " ") != strings.Join(code, " ") {
			t.Errorf("schema %s has properties %v; api.%s has JSON fields %v", name, doc, rt.Name(), code)
		}
	}
}

// resolve follows a local reference such as "#/components/schemas/Error".
func resolve(doc map[string]any, ref string) any {
	rest, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil
	}
	var cur any = doc
	for _, part := range strings.Split(rest, "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[part]
	}
	return cur
}
