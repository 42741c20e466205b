package extauthz_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpauthz/mcpauthz/extauthz"
	"github.com/mcpauthz/mcpauthz/internal/config"
	"github.com/mcpauthz/mcpauthz/internal/devissuer"
	"github.com/mcpauthz/mcpauthz/policy"
)

// captured runs requests through a Server whose only recorder is a
// LogRecorder writing JSON into a buffer, and returns the log lines.
func captured(t *testing.T, rec extauthz.LogRecorder, opts []envOption, reqs ...req) []map[string]any {
	t.Helper()
	e := newEnv(t, opts...)
	var buf bytes.Buffer
	rec.Logger = slog.New(extauthz.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})) // as serve logs
	for _, r := range reqs {
		d, _ := e.server.Evaluate(context.Background(), checkRequest(r))
		rec.Record(context.Background(), d)
	}
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		delete(m, "time")
		delete(m, "latency")
		lines = append(lines, m)
	}
	return lines
}

func TestDecisionLog(t *testing.T) {
	e := newEnv(t)
	tok := e.token(t, "tools:get_weather")
	secretCall := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/x","Password":"hunter2","nested":{"api_key":"k","keep":1}}}}`
	lines := captured(t, extauthz.LogRecorder{AllowSampleRate: 1, Arguments: true, RedactKeys: extauthz.DefaultRedactKeys}, nil,
		req{body: callWeather, headers: merge(bearer(tok), map[string]string{"x-request-id": "r-allow", "cookie": "session=s3cret"})},
		req{body: secretCall, headers: merge(bearer(tok), map[string]string{"x-request-id": "r-deny"})},
	)
	// newEnv in captured mints with its own key cache: same key, so the
	// token verifies there too.
	want := []map[string]any{
		{
			"level": "INFO", "msg": "decision", "request_id": "r-allow", "decision": "allow", "status": float64(200),
			"reason": "policy_allow", "http_method": "POST", "path": "/mcp", "mcp_method": "tools/call", "tool": "get_weather",
			"issuer": issuerURL, "subject": "alice", "client_id": "client-1", "policy_reason": "tool_scope",
			"arguments": `{"city":"Paris"}`,
		},
		{
			"level": "INFO", "msg": "decision", "request_id": "r-deny", "decision": "deny", "status": float64(403),
			"reason": "insufficient_scope", "http_method": "POST", "path": "/mcp", "mcp_method": "tools/call", "tool": "delete_file",
			"issuer": issuerURL, "subject": "alice", "client_id": "client-1", "policy_reason": "insufficient_scope",
			"detail": "token lacks a required scope", "required_scopes": []any{"tools:delete_file", "tools:get_weather"},
			"arguments": `{"path":"/x","Password":"[REDACTED]","nested":{"api_key":"[REDACTED]","keep":1}}`,
		},
	}
	for _, l := range lines {
		delete(l, "policy_revision")
	}
	if diff := cmp.Diff(want, lines); diff != "" {
		t.Errorf("decision log (-want +got):\n%s", diff)
	}
	all, _ := json.Marshal(lines)
	for _, secret := range []string{tok, "hunter2", "s3cret", `"k"`} {
		if strings.Contains(string(all), secret) {
			t.Errorf("decision log contains secret %q", secret)
		}
	}
}

func TestDecisionLogDefaultsAndSampling(t *testing.T) {
	e := newEnv(t)
	tok := e.token(t, "tools:get_weather")
	lines := captured(t, extauthz.LogRecorder{AllowSampleRate: 0}, nil,
		req{body: callWeather, headers: bearer(tok)}, // allowed, not sampled: Debug, filtered out
		req{body: callDelete, headers: bearer(tok)},  // denied: always logged
		req{body: callWeather},                       // 401: always logged
	)
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2 (denials only): %v", len(lines), lines)
	}
	if _, ok := lines[0]["arguments"]; ok {
		t.Errorf("arguments logged without opt-in: %v", lines[0])
	}
	if got := lines[1]["reason"]; got != "no_token" {
		t.Errorf("second line reason = %v, want no_token", got)
	}
}

func TestShadowMode(t *testing.T) {
	e := newEnv(t, withConfig(func(c *config.Config) { c.Shadow = true }))
	tok := e.token(t, "tools:get_weather")
	// A policy denial is allowed and recorded as shadow_deny.
	d, resp := e.server.Evaluate(context.Background(), checkRequest(req{body: callDelete, headers: bearer(tok)}))
	if resp.GetOkResponse() == nil || d.Outcome() != "shadow_deny" || d.Status != 200 {
		t.Fatalf("shadow deny: outcome %s status %d resp %v", d.Outcome(), d.Status, resp)
	}
	if diff := cmp.Diff([]string{"insufficient_scope"}, d.ShadowDenials); diff != "" {
		t.Errorf("shadow denials (-want +got):\n%s", diff)
	}
	// Token checks are still enforced.
	d, _ = e.server.Evaluate(context.Background(), checkRequest(req{body: callDelete}))
	if d.Status != 401 {
		t.Errorf("no token in shadow mode: status %d, want 401", d.Status)
	}
}

func TestShadowPerRule(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir+"/p.rego", `package mcp.authz

default decision := {"allow": false, "reason": "denied"}

decision := {"allow": false, "reason": "new_rule", "shadow": true} if input.mcp.tool == "delete_file"

decision := {"allow": true, "reason": "ok"} if input.mcp.tool == "get_weather"

scopes_supported := []
scope_prefixes := []
`)
	e := newEnv(t, func(_ *config.Config, s *envSetup) { s.policySrc = &policy.Source{Paths: []string{dir}} })
	tok := e.token(t, "")
	d, resp := e.server.Evaluate(context.Background(), checkRequest(req{body: callDelete, headers: bearer(tok)}))
	if resp.GetOkResponse() == nil || d.Outcome() != "shadow_deny" {
		t.Errorf("per-rule shadow: outcome %s, want shadow_deny with OK", d.Outcome())
	}
	d, resp = e.server.Evaluate(context.Background(), checkRequest(req{body: `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"other"}}`, headers: bearer(tok)}))
	if resp.GetDeniedResponse() == nil || d.Outcome() != "deny" {
		t.Errorf("non-shadow rule: outcome %s, want deny", d.Outcome())
	}
}

// TestDecisionLogAgentIdentity: a delegated token's acting client chain
// and its depth are in the decision log.
func TestDecisionLogAgentIdentity(t *testing.T) {
	e := newEnv(t)
	tok := e.token(t, "tools:get_weather", func(o *devissuer.MintOptions) {
		o.ExtraClaims = map[string]any{"act": map[string]any{"sub": "agent-7", "client_id": "planner",
			"act": map[string]any{"sub": "orchestrator"}}}
	})
	lines := captured(t, extauthz.LogRecorder{AllowSampleRate: 1}, nil,
		req{body: callWeather, headers: merge(bearer(tok), map[string]string{"x-request-id": "r-act"})})
	if len(lines) != 1 {
		t.Fatalf("%d log lines, want 1", len(lines))
	}
	got := map[string]any{"actor": lines[0]["actor"], "delegation_depth": lines[0]["delegation_depth"], "subject": lines[0]["subject"]}
	want := map[string]any{"actor": "planner, orchestrator", "delegation_depth": float64(2), "subject": "alice"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("agent identity in the decision log (-want +got):\n%s", diff)
	}
}
