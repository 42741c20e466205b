package app

import (
	"strings"
	"testing"

	"github.com/mcpauthz/mcpauthz/internal/config"
)

// TestCacheSettingsAndMetrics: the byte bounds of the caches are
// configuration keys located in the file, and every cache's size is a
// metric read at scrape time.
func TestCacheSettingsAndMetrics(t *testing.T) {
	head := "resource: https://mcp.example.com/mcp\nauthorization_servers: [https://as.example.com]\nissuers: [{issuer: https://as.example.com, jwks_uri: https://as.example.com/jwks}]\n"
	cfg := head + "token_cache_bytes: 100\npolicy:\n  decision_cache_bytes: 100\nlist_filtering:\n  parse_memo_size: -2\n  parse_memo_bytes: 100\n"
	parsed, err := config.Parse("c.yaml", []byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	rt, err := Compile(parsed, Options{Observe: true})
	if err == nil {
		rt.Close()
		t.Fatal("Compile accepted cache bounds of 100 bytes")
	}
	for _, want := range []string{"c.yaml:4: token_cache_bytes", "c.yaml:6: policy.decision_cache_bytes", "c.yaml:8: list_filtering.parse_memo_size: must be -1 (disabled), 0 (default 16)", "c.yaml:9: list_filtering.parse_memo_bytes: must be 0 (default 2097152)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("problems lack %q:\n%v", want, err)
		}
	}

	e := newUpstreamEnv(t)
	tok := e.token(t, "tools:get_weather")
	for range 3 {
		if resp := e.call(t, tok, "get_weather", nil); resp.GetOkResponse() == nil {
			t.Fatalf("get_weather: %v", resp)
		}
	}
	gauges := map[string]float64{}
	mfs, err := e.rt.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "mcpauthz_cache_entries" && mf.GetName() != "mcpauthz_cache_bytes" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "cache" {
					gauges[mf.GetName()+"/"+l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	if gauges["mcpauthz_cache_entries/token"] != 1 || gauges["mcpauthz_cache_entries/decision"] < 1 || gauges["mcpauthz_cache_bytes/token"] <= 0 {
		t.Errorf("cache gauges after one token's three calls: %v, want one token entry, a decision entry, their bytes", gauges)
	}
	if _, ok := gauges["mcpauthz_cache_entries/list_parse"]; !ok {
		t.Errorf("cache gauges %v lack the list filter's parse memo (list_parse)", gauges)
	}
}

// TestLogDroppedMetric: the asynchronous log output's drops are a counter.
func TestLogDroppedMetric(t *testing.T) {
	e := newUpstreamEnvWith(t, "", Options{LogDropped: func() uint64 { return 3 }})
	if got := metricValue(t, e.rt, "mcpauthz_log_lines_dropped_total", nil); got != 3 {
		t.Errorf("mcpauthz_log_lines_dropped_total = %v, want 3", got)
	}
}
