package app

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/mcpauthz/mcpauthz/internal/config"
)

// TestUpstreamGuideConfigs parses every upstream_credentials block of
// docs/upstream-credentials.md with the real configuration parser, strict,
// as part of a minimal configuration: the guide shows only keys that exist.
// (internal/upstream's TestGuideExamples builds the sources from them.)
func TestUpstreamGuideConfigs(t *testing.T) {
	raw, err := os.ReadFile("../../docs/upstream-credentials.md")
	if err != nil {
		t.Fatal(err)
	}
	const base = "resource: https://mcp.example.com/mcp\nauthorization_servers: [https://idp.example.com]\n" +
		"issuers: [{issuer: https://idp.example.com, jwks_uri: https://idp.example.com/jwks}]\n"
	n := 0
	for _, b := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(raw), -1) {
		if !strings.HasPrefix(b[1], "upstream_credentials:") {
			continue
		}
		n++
		cfg, err := config.Parse("guide.yaml", []byte(base+b[1]))
		if err != nil {
			t.Errorf("guide example %d:\n%s\n%v", n, b[1], err)
			continue
		}
		if len(cfg.UpstreamCredentials) == 0 {
			t.Errorf("guide example %d has no sources", n)
		}
	}
	if n < 5 {
		t.Fatalf("%d upstream_credentials examples in the guide, want at least 5", n)
	}
}
