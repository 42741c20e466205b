package metrics

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/mcpauthz/mcpauthz/extauthz"
	"github.com/mcpauthz/mcpauthz/internal/jwtauth"
	"github.com/mcpauthz/mcpauthz/policy"
)

// series gathers reg into "name{label="value",...}" → value, labels sorted
// by name as Prometheus exposes them.
func series(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			var v float64
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				v = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				v = m.GetGauge().GetValue()
			default:
				continue
			}
			out[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = v
		}
	}
	return out
}

// TestSeriesPreCreated: every series of the decision path and of policy
// reloads exists at 0 as soon as the metrics are created, from the closed
// sets the packages export (so a new reason is pre-created as soon as it is
// added there).
func TestSeriesPreCreated(t *testing.T) {
	reg := prometheus.NewRegistry()
	New(reg, []string{"https://idp.example.com", "https://other.example.com"})
	got := series(t, reg)

	var want []string
	for _, o := range extauthz.Outcomes() {
		want = append(want, fmt.Sprintf(`mcpauthz_decisions_total{decision=%q,mcp_method="",reason=%q,status=%q,tool=""}`, o.Outcome, o.Reason, strconv.Itoa(o.Status)))
	}
	for _, is := range []string{"https://idp.example.com", "https://other.example.com"} {
		want = append(want, fmt.Sprintf(`mcpauthz_token_validations_total{issuer=%q,result="valid"}`, is))
	}
	for _, r := range jwtauth.Reasons() {
		want = append(want, fmt.Sprintf(`mcpauthz_token_validations_total{issuer="unknown",result=%q}`, r))
	}
	for _, r := range []string{"success", "error", "refused"} {
		want = append(want, fmt.Sprintf(`mcpauthz_policy_reloads_total{result=%q}`, r))
	}
	for _, r := range []string{"test_failed", "test_error", "eval_error", "invalid_decision", "invalid_visibility"} {
		want = append(want, fmt.Sprintf(`mcpauthz_policy_activation_refusals_total{reason=%q}`, r))
	}
	want = append(want, "mcpauthz_policy_last_reload_successful{}", "mcpauthz_policy_last_reload_timestamp_seconds{}")
	for _, w := range want {
		v, ok := got[w]
		if !ok || v != 0 {
			t.Errorf("after New: %s = %v (present %v), want present at 0", w, v, ok)
		}
	}
	// A sample of outcomes that must be among them, whatever else changes.
	for _, w := range []string{
		`mcpauthz_decisions_total{decision="deny",mcp_method="",reason="policy_error",status="503",tool=""}`,
		`mcpauthz_decisions_total{decision="deny",mcp_method="",reason="insufficient_scope",status="403",tool=""}`,
		`mcpauthz_decisions_total{decision="deny",mcp_method="",reason="invalid_json",status="400",tool=""}`,
		`mcpauthz_decisions_total{decision="deny",mcp_method="",reason="content_type",status="415",tool=""}`,
		`mcpauthz_decisions_total{decision="shadow_deny",mcp_method="",reason="policy_allow",status="200",tool=""}`,
		`mcpauthz_token_validations_total{issuer="unknown",result="expired"}`,
	} {
		if _, ok := got[w]; !ok {
			t.Errorf("after New: no %s", w)
		}
	}
	if n := len(extauthz.Outcomes()); n < 40 {
		t.Errorf("extauthz.Outcomes() has %d entries, want the whole status mapping", n)
	}
}

// TestPolicyReloadGauges drives PolicyReload with the errors a real engine
// reports: the gauge holds the last attempt's outcome until the next one,
// counters count by result, refusals by reason.
func TestPolicyReloadGauges(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, nil)
	e := policy.New(policy.Options{OnReload: m.PolicyReload})
	if err := e.Load(context.Background(), policy.DefaultSource()); err != nil {
		t.Fatal(err)
	}
	good := e.Revision()
	dir := t.TempDir()
	refusedRego := "package mcp.authz\n\ndecision := {\"allow\": true} if input.mcp.kind == \"request\"\n"
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(refusedRego), 0o644); err != nil {
		t.Fatal(err)
	}

	before := time.Now().Unix()
	steps := []struct {
		name        string
		load        policy.Source
		successful  float64
		success     float64
		errors      float64
		refused     float64
		invalidDecs float64
	}{
		{"refused", policy.Source{Paths: []string{dir}}, 0, 0, 0, 1, 1},
		{"still refused, next attempt does not compile", policy.Source{Paths: []string{filepath.Join(dir, "missing")}}, 0, 0, 1, 1, 1},
		{"good again", policy.DefaultSource(), 1, 1, 1, 1, 1},
	}
	for _, st := range steps {
		_ = e.Load(context.Background(), st.load)
		got := series(t, reg)
		for name, want := range map[string]float64{
			`mcpauthz_policy_last_reload_successful{}`:                             st.successful,
			`mcpauthz_policy_reloads_total{result="success"}`:                      st.success + 1, // the first load
			`mcpauthz_policy_reloads_total{result="error"}`:                        st.errors,
			`mcpauthz_policy_reloads_total{result="refused"}`:                      st.refused,
			`mcpauthz_policy_activation_refusals_total{reason="invalid_decision"}`: st.invalidDecs,
			`mcpauthz_policy_activation_refusals_total{reason="test_failed"}`:      0,
			fmt.Sprintf(`mcpauthz_policy_info{revision=%q}`, good):                 1,
		} {
			if got[name] != want {
				t.Errorf("%s: %s = %v, want %v", st.name, name, got[name], want)
			}
		}
		if ts := got[`mcpauthz_policy_last_reload_timestamp_seconds{}`]; ts < float64(before) {
			t.Errorf("%s: last reload timestamp %v, want at least %d", st.name, ts, before)
		}
	}
	if e.Revision() != good {
		t.Errorf("Revision() = %q, want the good %q throughout", e.Revision(), good)
	}
}

func TestPolicyReloadClassifiesErrors(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{nil, "success"},
		{errors.New("policy: a.rego:1: rego_parse_error"), "error"},
		{fmt.Errorf("wrapped: %w", &policy.ActivationError{Revision: "r", Problems: []policy.ActivationProblem{{Reason: policy.RefusedTestFailed}}}), "refused"},
	} {
		if got := policy.ReloadResult(tt.err); got != tt.want {
			t.Errorf("ReloadResult(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
	if !slices.Equal(policy.ReloadResults(), []string{"success", "error", "refused"}) {
		t.Errorf("ReloadResults() = %v", policy.ReloadResults())
	}
}

// TestCacheMetrics: the caches of a real engine are exported by name, read
// at scrape time, with their evictions; unknown cache names create no
// series.
func TestCacheMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, nil)
	e := policy.New(policy.Options{DecisionCacheSize: 8, EvalTimeout: 30 * time.Second})
	if err := e.Load(context.Background(), policy.DefaultSource()); err != nil {
		t.Fatal(err)
	}
	m.ObserveCaches(nil, e, nil)
	m.SetCache("attacker-chosen", func() CacheStats { return CacheStats{Entries: 1} })
	tok := &policy.Token{Subject: "alice", Scopes: []string{"tools:*"}, Expiry: time.Now().Add(time.Hour).Unix()}
	for i := range 20 {
		msgs := []policy.MCP{{Kind: "request", Method: "tools/call", Tool: fmt.Sprintf("t%d", i)}}
		if _, err := e.Decide(context.Background(), &policy.Request{Method: "POST", Path: "/mcp"}, tok, msgs); err != nil {
			t.Fatal(err)
		}
	}
	got := series(t, reg)
	st := e.DecisionCacheStats()
	if st.Evictions == 0 || st.Entries == 0 || st.Entries > 8 {
		t.Fatalf("decision cache stats %+v: want evictions and at most 8 entries", st)
	}
	want := map[string]float64{
		`mcpauthz_cache_entries{cache="decision"}`:           float64(st.Entries),
		`mcpauthz_cache_bytes{cache="decision"}`:             float64(st.Bytes),
		`mcpauthz_cache_evictions_total{cache="decision"}`:   float64(st.Evictions),
		`mcpauthz_cache_entries{cache="visibility"}`:         0,
		`mcpauthz_cache_evictions_total{cache="visibility"}`: 0,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	for k := range got {
		if strings.Contains(k, "attacker") {
			t.Errorf("series for an unknown cache name: %s", k)
		}
	}
}
