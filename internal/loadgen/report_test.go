package loadgen

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func round(checks int, lat time.Duration, window, serverCPU time.Duration, answers map[string]uint64) *RoundResult {
	h := &Histogram{}
	for range checks {
		h.Record(lat)
	}
	return &RoundResult{Window: window, Checks: uint64(checks), Latency: h, ServerCPU: serverCPU, ClientCPU: serverCPU / 2, Answers: answers}
}

func sampleReport() *Report {
	noop := Summarize("do-nothing", "noop", OutcomeAllow, []*RoundResult{
		round(10000, 500*time.Microsecond, time.Second, 500*time.Millisecond, map[string]uint64{"allow": 10500}),
		round(12000, 500*time.Microsecond, time.Second, 600*time.Millisecond, map[string]uint64{"allow": 12500}),
	}, Memory{PeakRSS: 20 << 20})
	bad := round(5000, time.Millisecond, time.Second, time.Second, map[string]uint64{"allow": 5100, "503": 2})
	bad.Unexpected, bad.Examples = 2, []string{"503 body: {}"}
	mcp := Summarize("mcpauthz", "mcpauthz", OutcomeAllow, []*RoundResult{
		// The calibration-style round: answers only.
		{Answers: map[string]uint64{"allow": 100}},
		bad,
		round(6000, 2*time.Millisecond, time.Second, time.Second, map[string]uint64{"allow": 6100}),
	}, Memory{PeakRSS: 40 << 20})
	return &Report{
		Machine:  Machine{CPUModel: "Test CPU", Cores: 2, GOMAXPROCS: 2, GoVersion: "go1.26", OS: "linux", Arch: "amd64", Revision: "abc123", Binary: "built"},
		Settings: Settings{Concurrency: 16, Connections: 4, Rounds: 2, Duration: "1s", Warmup: "100ms", Workloads: []string{"hot"}},
		Started:  time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Elapsed: "5s",
		Workloads:  []Workload{{Name: "hot", Servers: []Server{noop, mcp}, Ratios: []Ratio{Compare(mcp, noop)}, Notes: []string{"a note"}}},
		Targets:    []Target{{Name: "hot: checks/s vs do-nothing", Result: "FAIL", Value: "50.0 %", Limit: "≥ 90 %"}},
		Unexpected: 2,
		Problems:   []string{"something odd"},
	}
}

func TestSummarize(t *testing.T) {
	r := sampleReport()
	noop, mcp := r.Workloads[0].Servers[0], r.Workloads[0].Servers[1]
	if noop.ChecksPerSec != 11000 || len(noop.Rounds) != 2 {
		t.Errorf("noop checks/s = %v over %d rounds, want 11000 over 2", noop.ChecksPerSec, len(noop.Rounds))
	}
	if got := noop.CPUPerCheckUS; got < 49.99 || got > 50.01 {
		t.Errorf("noop CPU per check = %vµs, want 50", got)
	}
	if mcp.Answers["allow"] != 11300 || mcp.Answers["503"] != 2 || mcp.Unexpected != 2 || len(mcp.Rounds) != 2 {
		t.Errorf("mcpauthz answers %v, unexpected %d, rounds %d", mcp.Answers, mcp.Unexpected, len(mcp.Rounds))
	}
	// 5000 samples at 1ms and 6000 at 2ms: p50 is 2ms, within the error.
	if p := mcp.Latency.P50; p < 1990 || p > 2010 {
		t.Errorf("p50 = %vµs, want ~2000", p)
	}
	ra := r.Workloads[0].Ratios[0]
	if ra.Throughput != 0.5 || ra.CPUPerCheck < 3.63 || ra.CPUPerCheck > 3.65 || ra.P99 < 3.9 || ra.P99 > 4.1 {
		t.Errorf("ratio = %+v, want throughput 0.5, CPU (2s/11000 vs 1.1s/22000) 3.64, p99 ~4", ra)
	}
	if z := Compare(mcp, Server{}); z.Throughput != 0 {
		t.Errorf("a ratio to a server with no checks = %v, want 0 (n/a)", z.Throughput)
	}
}

func TestWriteText(t *testing.T) {
	var b strings.Builder
	if err := WriteText(&b, sampleReport()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"16 callers over 4 HTTP/2 connections, 2 × 1s measured rounds",
		"machine: Test CPU, 2 cores, GOMAXPROCS 2, go1.26 linux/amd64",
		"mcpauthz: revision abc123",
		"checks/s", "p99.9", "server CPU/check", "peak RSS",
		"11000", "20.0 MiB", "40.0 MiB", "500µs",
		"mcpauthz / do-nothing: throughput 0.50×, CPU per check 3.64×, p99 4.00×",
		"do-nothing             ok: allow 23000",
		"UNEXPECTED 2 (want allow): 503 2, allow 11300",
		"e.g. 503 body: {}",
		"hot: a note",
		"FAIL  hot: checks/s vs do-nothing", "50.0 % (limit ≥ 90 %)",
		"!!! 2 UNEXPECTED ANSWERS", "!!! something odd",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	// The table's rows are aligned: every row has as many cells as the header.
	var rows []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "MiB") {
			rows = append(rows, l)
		}
	}
	if len(rows) != 2 {
		t.Fatalf("table rows %q: want 2", rows)
	}
	for _, r := range rows {
		if len(strings.Fields(r)) != 12 { // "20.0 MiB" is two fields, the idle RSS "-" one
			t.Errorf("table row %q: want 11 cells", r)
		}
	}
	if utf8.RuneCountInString(rows[0]) != utf8.RuneCountInString(rows[1]) {
		t.Errorf("table rows not aligned:\n%s\n%s", rows[0], rows[1])
	}
}

func TestReportJSON(t *testing.T) {
	r := sampleReport()
	r.Workloads[0].Ratios = append(r.Workloads[0].Ratios, Compare(r.Workloads[0].Servers[0], Server{}))
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	s := back.Workloads[0].Servers[1]
	if s.Name != "mcpauthz" || s.Latency.P99 == 0 || back.Unexpected != 2 || back.Machine.Revision != "abc123" {
		t.Errorf("round trip lost data: %+v", s)
	}
	for _, key := range []string{`"checks_per_sec"`, `"p99_9"`, `"server_cpu_per_check_us"`, `"peak_rss_bytes"`, `"load_average_before"`, `"mcpauthz_revision"`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("JSON lacks %s", key)
		}
	}
}

func TestFormatLatency(t *testing.T) {
	for in, want := range map[float64]string{0: "-", 1.234: "1.23µs", 12.34: "12.3µs", 123.4: "123µs", 1234: "1.23ms", 12345: "12.3ms", 123456: "123ms"} {
		if got := FormatLatency(in); got != want {
			t.Errorf("FormatLatency(%v) = %q, want %q", in, got, want)
		}
	}
}
