package interop

import "testing"

// TestOAuthFlow runs the official MCP TypeScript SDK client, through the
// Envoy stand-in configured from envoy/envoy.yaml and a real mcpauthz
// process, against each authorization server row.
func TestOAuthFlow(t *testing.T) {
	RequireNode(t)
	bin := BuildMcpauthz(t)
	for _, as := range []AuthServer{OIDCProvider, DevServer} {
		t.Run(as.Name, func(t *testing.T) {
			Run(t, bin, NewStandin(t), as)
		})
	}
}
