package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/mcpauthz/mcpauthz/internal/devissuer"
)

// slowRule takes far longer than any evaluation timeout of these tests.
const slowRule = `count([1 | some i in numbers.range(1, 100000); some j in numbers.range(1, 100000); i != j]) > 0`

// TestPolicyTimeoutIsTimeout: an evaluation that runs out of
// policy.eval_timeout is reported as timeout (503), never as a
// policy_error, on the decision path and in the list filter, whose own
// policy_timeout is longer than the evaluation's.
func TestPolicyTimeoutIsTimeout(t *testing.T) {
	tests := []struct {
		name   string
		policy string
	}{
		// Slow only for one caller: the activation check's smoke inputs
		// must pass, or the policy would never be activated.
		{"decision loops", "package mcp.authz\n\ndefault decision := {\"allow\": true, \"reason\": \"fast\"}\n\n" +
			"decision := {\"allow\": true, \"reason\": \"slow\"} if {\n\tinput.token.subject == \"slow-caller\"\n\t" + slowRule + "\n}\n"},
		{"visibility loops", "package mcp.authz\n\ndecision := {\"allow\": true, \"reason\": \"fast\"}\n\n" +
			"visible contains t if {\n\tsome t in input.list.items\n\tinput.token.subject != \"slow-caller\"\n}\n\n" +
			"visible contains t if {\n\tsome t in input.list.items\n\tinput.token.subject == \"slow-caller\"\n\t" + slowRule + "\n}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(tt.policy), 0o600); err != nil {
				t.Fatal(err)
			}
			e := newListEnvYAML(t, dir, "eval_timeout: 5ms")
			tok, err := e.iss.Mint(devissuer.MintOptions{Subject: "slow-caller", Audience: []string{"https://mcp.example.com/mcp"}, TTL: time.Hour, Now: time.Now()})
			if err != nil {
				t.Fatal(err)
			}
			list := `{"jsonrpc":"2.0","id":7,"method":"tools/list"}`
			d, resp := e.rt.Server.Evaluate(t.Context(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
				Http: &authv3.AttributeContext_HttpRequest{Method: "POST", Path: "/mcp", Host: "mcp.example.com", RawBody: []byte(list),
					Headers: map[string]string{"authorization": "Bearer " + tok, "content-type": "application/json"}},
			}}})
			if tt.name == "decision loops" {
				if d.Reason != "timeout" || d.Status != 503 || resp.GetDeniedResponse().GetStatus().GetCode() != 503 {
					t.Fatalf("decision = %d %s (%s), want 503 timeout", d.Status, d.Reason, d.Detail)
				}
				return
			}
			if !d.Allowed {
				t.Fatalf("decision = %d %s (%s), want the list request allowed", d.Status, d.Reason, d.Detail)
			}
			got := e.filter(t, resp.GetDynamicMetadata(), "application/json", toolsResult, 64)
			if want := `{"jsonrpc":"2.0","id":7,"error":{"code":-32603,"message":"Internal error"}}`; got != want {
				t.Errorf("list filter answered\n%s\nwant\n%s", got, want)
			}
			if got := listFilterErrors(t, e.rt); got != "timeout" {
				t.Errorf("list filter error reasons = %q, want timeout", got)
			}
		})
	}
}

// listFilterErrors returns the reasons counted in
// mcpauthz_list_filter_errors_total, comma-separated.
func listFilterErrors(t *testing.T, rt *Runtime) string {
	t.Helper()
	mfs, err := rt.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, mf := range mfs {
		if mf.GetName() != "mcpauthz_list_filter_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetCounter().GetValue() > 0 {
				for _, l := range m.GetLabel() {
					if l.GetName() == "reason" {
						reasons = append(reasons, l.GetValue())
					}
				}
			}
		}
	}
	return strings.Join(reasons, ",")
}
