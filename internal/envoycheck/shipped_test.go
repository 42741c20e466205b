package envoycheck

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// repoRoot is the module root, relative to this package.
const repoRoot = "../.."

// isBootstrap reports whether a YAML file is an Envoy bootstrap: a mapping
// with bootstrap keys and without Kubernetes' apiVersion/kind.
func isBootstrap(data []byte) bool {
	var top map[string]any
	if yaml.Unmarshal(data, &top) != nil {
		return false
	}
	if _, k8s := top["kind"]; k8s {
		return false
	}
	for _, k := range []string{"static_resources", "staticResources", "dynamic_resources", "dynamicResources", "admin", "layered_runtime", "node"} {
		if _, ok := top[k]; ok {
			return true
		}
	}
	return false
}

// TestShippedEnvoyConfigs validates every Envoy bootstrap under envoy/ and
// deploy/: no errors and no warnings.
func TestShippedEnvoyConfigs(t *testing.T) {
	var found []string
	for _, dir := range []string{"envoy", "deploy"} {
		err := filepath.WalkDir(filepath.Join(repoRoot, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			switch filepath.Ext(path) {
			case ".yaml", ".yml", ".json":
			default:
				return nil
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if !isBootstrap(data) {
				return nil
			}
			rel, _ := filepath.Rel(repoRoot, path)
			found = append(found, rel)
			t.Run(rel, func(t *testing.T) {
				r, err := Validate(t.Context(), data)
				if err != nil {
					t.Fatal(err)
				}
				for _, f := range r.Findings {
					if f.Severity >= Warning {
						t.Errorf("%s:%d: %v", rel, f.Line, f)
					} else {
						t.Logf("%s:%d: %v", rel, f.Line, f)
					}
				}
			})
			return nil
		})
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"envoy/envoy.yaml", "envoy/envoy-tls.yaml"} {
		found := strings.Join(found, " ")
		if !strings.Contains(found, filepath.FromSlash(want)) {
			t.Errorf("%s was not recognised as an Envoy bootstrap (found: %s)", want, found)
		}
	}
}

// TestEnvoyVersionPinned: envoy/ENVOY_VERSION is the one place the Envoy
// version is pinned; the validator's API (go-control-plane/envoy in go.mod)
// must be the same minor.
func TestEnvoyVersionPinned(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, "envoy", "ENVOY_VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	pinned := strings.TrimSpace(string(raw))
	if !regexp.MustCompile(`^v1\.\d+\.\d+$`).MatchString(pinned) {
		t.Fatalf("envoy/ENVOY_VERSION is %q, want vX.Y.Z", pinned)
	}
	// Test binaries carry no dependency build information, so read go.mod
	// (APIVersion reports the same in the mcpauthz binary).
	gomod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/envoyproxy/go-control-plane/envoy (v\S+)`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("go.mod does not require github.com/envoyproxy/go-control-plane/envoy")
	}
	api := string(m[1])
	if v := APIVersion(); v != "" && v != api {
		t.Errorf("linked go-control-plane/envoy %s differs from go.mod's %s", v, api)
	}
	minor := func(v string) string { return v[:strings.LastIndexByte(v, '.')] }
	if minor(api) != minor(pinned) {
		t.Errorf("Envoy %s is pinned in envoy/ENVOY_VERSION but the validator uses the %s API (github.com/envoyproxy/go-control-plane/envoy %s): move them together", pinned, minor(api), api)
	}
}
