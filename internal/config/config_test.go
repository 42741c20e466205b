package config

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpauthz/mcpauthz/internal/problem"
)

const good = `
grpc_addr: 127.0.0.1:9191
http_addr: 127.0.0.1:9192
resource: https://mcp.example.com/mcp
resource_name: Example MCP server
authorization_servers: [https://idp.example.com]
scopes_supported: []
issuers:
  - issuer: https://idp.example.com
    jwks_uri: https://idp.example.com/jwks
    audiences: [https://mcp.example.com/mcp]
    leeway: 30s
policy:
  paths: []
mcp:
  paths: [/mcp]
  allowed_origins: []
upstream:
  forward_token: false
`

func TestParseGood(t *testing.T) {
	cfg, err := Parse("good.yaml", []byte(good))
	if err != nil {
		t.Fatalf("Parse(good) = %v", err)
	}
	if got, want := cfg.Issuers[0].Leeway.D(), 30*time.Second; got != want {
		t.Errorf("leeway = %v, want %v", got, want)
	}
	// The file format applies no defaults: unset keys stay zero, and the
	// package that uses each one defaults it.
	if cfg.Issuers[0].Algorithms != nil || cfg.Upstream.IdentityHeaders.Subject != "" || cfg.MCP.MaxBatch != 0 {
		t.Errorf("Parse applied defaults: %+v", cfg)
	}
	if diff := cmp.Diff([]string{"/mcp"}, cfg.MCP.Paths); diff != "" {
		t.Errorf("mcp.paths (-want +got):\n%s", diff)
	}
}

// TestParseProblems checks that every problem of the file format is
// reported at once, each with file:line and key.
func TestParseProblems(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{
			name: "unknown keys and wrong types",
			yaml: "resource: https://mcp.example.com/mcp\nresorce_name: x\nmcp:\n  paths: /mcp\n  max_batch: many\n",
			want: []string{
				`c.yaml:2: unknown key "resorce_name"`,
				"c.yaml:4: cannot unmarshal !!str `/mcp` into []string",
				"c.yaml:5: cannot unmarshal !!str `many` into int",
			},
		},
		{
			name: "bad duration",
			yaml: "resource: https://m.example/mcp\nissuers:\n  - issuer: https://i.example\n    leeway: soon\n",
			want: []string{`c.yaml:4: invalid duration "soon" (want e.g. "60s")`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse() = nil, want errors")
			}
			if diff := cmp.Diff(tt.want, strings.Split(err.Error(), "\n")); diff != "" {
				t.Errorf("Parse() problems (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLocate places problems reported by key path at the line of the key,
// or of its closest parent present in the file.
func TestLocate(t *testing.T) {
	cfg, err := Parse("c.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	var l problem.List
	l.Add("issuers[0].leeway", "too long")
	l.Add("issuers[0].jwks.min_refresh", "absent key: its parent's line")
	l.Add("policy.paths[3]", "past the end: the sequence's line")
	l.Add("", "not about a key")
	got := strings.Split(cfg.Locate(errors.Join(l.Err(), errors.New("plain error"))).Error(), "\n")
	// In file order; what has no line first.
	want := []string{
		"plain error",
		"c.yaml:2: not about a key",
		"c.yaml:9: issuers[0].jwks.min_refresh: absent key: its parent's line",
		"c.yaml:12: issuers[0].leeway: too long",
		"c.yaml:14: policy.paths[3]: past the end: the sequence's line",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Locate (-want +got):\n%s", diff)
	}
	if (&Config{}).Locate(nil) != nil {
		t.Error("Locate(nil) != nil")
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !strings.Contains(err.Error(), "read config") {
		t.Fatalf("Load(missing) = %v", err)
	}
}
