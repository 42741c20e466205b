//go:build e2e

package e2e

import (
	"os/exec"
	"testing"

	"github.com/mcpauthz/mcpauthz/test/interop"
)

// TestOAuthFlowThroughEnvoy runs the interop test's client flows (the MCP
// TypeScript SDK against each authorization server row, see test/interop)
// through a real Envoy with the shipped envoy/envoy.yaml, only its
// addresses changed. Without an Envoy, `make test` runs the same flows
// through the Go stand-in.
func TestOAuthFlowThroughEnvoy(t *testing.T) {
	envoy, err := exec.LookPath("envoy")
	if err != nil {
		t.Skip("no envoy binary on PATH: the OAuth flows run through the Envoy stand-in instead (test/interop, part of make test)")
	}
	interop.RequireNode(t)
	bin := interop.BuildMcpauthz(t)
	for _, as := range []interop.AuthServer{interop.OIDCProvider, interop.DevServer} {
		t.Run(as.Name, func(t *testing.T) {
			interop.Run(t, bin, interop.NewEnvoy(t, envoy), as)
		})
	}
}
