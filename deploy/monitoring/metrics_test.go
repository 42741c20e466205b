package monitoring

import (
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/mcpauthz/mcpauthz/extauthz"
	"github.com/mcpauthz/mcpauthz/extproc"
	"github.com/mcpauthz/mcpauthz/internal/metrics"
)

// promqlParser parses with the default options, as a stock Prometheus does.
var promqlParser = parser.NewParser(parser.Options{})

// exportedMetrics returns the names of the series mcpauthz exports (with the
// _bucket, _sum and _count series of histograms), by family: it registers
// internal/metrics into a fresh registry, observes one of everything (a
// family appears only once it has a series) and gathers.
func exportedMetrics(t *testing.T) map[string]string {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, []string{"https://idp.example.com"})
	m.Record(t.Context(), &extauthz.Decision{
		Allowed: true, Status: 200, Reason: "policy_allow", TokenResult: "valid",
		Duration: time.Millisecond, PolicyDuration: time.Microsecond,
	})
	m.JWKSRefresh("https://idp.example.com", 2, nil)
	m.JWKSRefresh("https://idp.example.com", 2, errors.New("fetch failed"))
	m.PolicyReload("r1", nil)
	m.PolicyReload("", errors.New("compile failed"))
	m.SetCredentialSources([]string{"github"})
	m.UpstreamObserver().ObserveFetch("github", "ok", time.Millisecond)
	m.ListFilter().Record(t.Context(), extproc.Outcome{Method: "tools/list", Removed: 1, Duration: time.Millisecond})
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	m.InitGRPC(srv)

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	for _, mf := range mfs {
		name := mf.GetName()
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[name+s] = name
			}
		case dto.MetricType_SUMMARY:
			names[name], names[name+"_sum"], names[name+"_count"] = name, name, name
		default:
			names[name] = name
		}
	}
	// The families the rules and the dashboard are built on; if one is
	// missing, exportedMetrics no longer observes everything.
	for _, want := range []string{
		"mcpauthz_decisions_total", "mcpauthz_check_duration_seconds_bucket",
		"mcpauthz_policy_eval_duration_seconds_bucket", "mcpauthz_token_validations_total",
		"mcpauthz_checks_in_flight", "mcpauthz_jwks_refreshes_total", "mcpauthz_jwks_keys",
		"mcpauthz_jwks_last_success_timestamp_seconds", "mcpauthz_policy_reloads_total",
		"mcpauthz_policy_info", "mcpauthz_policy_last_reload_success_timestamp_seconds",
		"mcpauthz_policy_last_reload_successful", "mcpauthz_policy_last_reload_timestamp_seconds",
		"mcpauthz_policy_activation_refusals_total",
		"grpc_server_handled_total", "grpc_server_handling_seconds_bucket", "go_goroutines",
		"mcpauthz_list_filter_total", "mcpauthz_list_filter_duration_seconds_bucket",
		"mcpauthz_upstream_credential_fetches_total", "mcpauthz_upstream_credential_cache_total",
		"mcpauthz_upstream_credential_fetch_duration_seconds_bucket",
	} {
		if names[want] == "" {
			t.Errorf("internal/metrics exports no %s (gathered: %v)", want, sortedKeys(names))
		}
	}
	return names
}

// metricNames returns the metric names the selectors of expr select. A
// selector without an exact name is an error: it could select anything.
func metricNames(expr parser.Expr) ([]string, error) {
	var names []string
	var errs []error
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		if name == "" {
			for _, m := range vs.LabelMatchers {
				if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
					name = m.Value
				}
			}
		}
		if name == "" {
			errs = append(errs, fmt.Errorf("selector %s has no exact metric name", vs))
			return nil
		}
		names = append(names, name)
		return nil
	})
	return names, errors.Join(errs...)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// TestServerBinaryHasNoPrometheusServer: the Prometheus server module (rule
// parsing, PromQL engine, TSDB) is for these tests only.
func TestServerBinaryHasNoPrometheusServer(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	out, err := exec.CommandContext(t.Context(), goBin, "-C", "../..", "list", "-e", "-deps", "-f", "{{.ImportPath}}", "./cmd/mcpauthz").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/mcpauthz/mcpauthz/internal/metrics") {
		t.Fatalf("go list output does not look like mcpauthz's dependencies:\n%s", out)
	}
	for _, p := range deps {
		if p == "github.com/prometheus/prometheus" || strings.HasPrefix(p, "github.com/prometheus/prometheus/") {
			t.Errorf("cmd/mcpauthz links %s: the Prometheus server module must stay in _test.go files", p)
		}
	}
}
