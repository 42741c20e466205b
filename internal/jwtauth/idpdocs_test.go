package jwtauth

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/mcpauthz/mcpauthz/internal/config"
)

// TestIDPDocExamplesBuildVerifiers loads every YAML example of
// docs/idp.md (as internal/config's test does) and builds a Verifier from
// it, so that the examples the guide gives are accepted by the verifier
// too, not only by the loader. The context is cancelled: nothing is
// fetched.
func TestIDPDocExamplesBuildVerifiers(t *testing.T) {
	raw, err := os.ReadFile("../../docs/idp.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(raw), -1)
	if len(blocks) < 10 {
		t.Fatalf("found %d yaml blocks, want at least 10", len(blocks))
	}
	secret := writeFile(t, "secret", []byte("s3cret\n"))
	fileKey := regexp.MustCompile(`(?m)^(\s*client_secret_file:\s*)\S+\s*$`)
	envKey := regexp.MustCompile(`(?m)^\s*client_secret_env:\s*(\S+)\s*$`)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i, m := range blocks {
		b := fileKey.ReplaceAllString(m[1], "${1}"+secret)
		for _, e := range envKey.FindAllStringSubmatch(b, -1) {
			t.Setenv(e[1], "s3cret")
		}
		cfg, err := config.Parse("idp.md", []byte("resource: https://mcp.example.com/mcp\nauthorization_servers: [https://as.example.com]\n"+b))
		if err != nil {
			t.Errorf("example %d does not load: %v", i, err)
			continue
		}
		if _, err := NewVerifier(ctx, cfg.Issuers, cfg.Resource, Options{}); err != nil {
			t.Errorf("example %d (%s): NewVerifier: %v", i, strings.SplitN(b, "\n", 3)[1], err)
		}
	}
}
