package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/app"
	"github.com/mcpauthz/mcpauthz/internal/config"
	"github.com/mcpauthz/mcpauthz/internal/loadgen"
)

// TestMain lets the harness re-execute the test binary as its do-nothing
// server, as it does with the real binary.
func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(runRole(context.Background(), role, os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func srv(name, kind string, rate, cpu, p99 float64, rss uint64) loadgen.Server {
	return loadgen.Server{Name: name, Kind: kind, ChecksPerSec: rate, CPUPerCheckUS: cpu, Latency: loadgen.Latency{P99: p99}, PeakRSSBytes: rss}
}

func TestEvaluateTargets(t *testing.T) {
	idle := func(s loadgen.Server, rss uint64) loadgen.Server { s.IdleRSSBytes = rss; return s }
	ws := []loadgen.Workload{
		{Name: "hot", Servers: []loadgen.Server{srv("do-nothing", "noop", 10000, 50, 1000, 20<<20), idle(srv("mcpauthz", "mcpauthz", 9500, 60, 1300, 40<<20), 30<<20)}},
		{Name: "cold", Servers: []loadgen.Server{srv("do-nothing", "noop", 10000, 50, 1000, 20<<20), srv("mcpauthz", "mcpauthz", 3000, 320, 5000, 70<<20)}},
		{Name: "deny", Servers: []loadgen.Server{srv("do-nothing", "noop", 1, 1, 1, 1), srv("mcpauthz", "mcpauthz", 6000, 140, 1, 1)}},
		{Name: "forbidden", Servers: []loadgen.Server{srv("do-nothing", "noop", 1, 1, 1, 1), idle(srv("mcpauthz", "mcpauthz", 9000, 69, 1, 1), 42<<20)}},
		{Name: "tools1000", Servers: []loadgen.Server{srv("do-nothing", "noop", 1, 1, 1, 1), srv("mcpauthz 10 tools", "mcpauthz", 5000, 50, 1, 1), srv("mcpauthz 1000 tools", "mcpauthz", 4600, 54, 1, 1)}},
		{Name: "jwks50", Servers: []loadgen.Server{srv("do-nothing", "noop", 1, 1, 1, 1), srv("mcpauthz", "mcpauthz", 9000, 70, 1, 1)}},
		{Name: "listfilter", Servers: []loadgen.Server{srv("do-nothing", "noop", 1, 1, 1, 1), srv("mcpauthz list filter on", "mcpauthz", 9900, 60, 1, 1), srv("mcpauthz list filter off", "mcpauthz", 10000, 60, 1, 1)}},
	}
	got := map[string]string{}
	for _, tg := range evaluateTargets(ws) {
		got[tg.Name] = tg.Result + " " + tg.Value
	}
	want := map[string]string{
		"hot: checks/s vs do-nothing":                                 "PASS 95.0 % (9500 vs 10000)",
		"hot: server CPU per check vs do-nothing":                     "PASS 1.20× (60.0µs vs 50.0µs)",
		"hot: p99 vs do-nothing":                                      "FAIL 1.30× (1.30ms vs 1.00ms)",
		"forbidden: 403 server CPU per check vs the allow path (hot)": "FAIL 1.15× (69.0µs vs 60.0µs)",
		"deny: server CPU per forged-signature 401":                   "PASS 140µs",
		"cold: server CPU per check with a fresh RS256 token":         "FAIL 320µs (3000 checks/s)",
		"peak RSS of mcpauthz under load":                             "FAIL 70.0 MiB (cold, mcpauthz)",
		"idle RSS of mcpauthz (started, no check yet)":                "FAIL 42.0 MiB (forbidden, mcpauthz)",
		"tools1000: server CPU per check, 1000 tools vs 10 tools":     "PASS +8.0 % (54.0µs vs 50.0µs)",
		"jwks50: server CPU per check, 50 keys vs 1 key (hot)":        "FAIL +16.7 % (70.0µs vs 60.0µs)",
		"listfilter: checks/s with list filtering on vs off":          "PASS 99.0 % (9900 vs 10000)",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("targets %v", got)
	}
	for _, tg := range evaluateTargets(nil) {
		if tg.Result != "SKIP" || tg.Limit == "" {
			t.Errorf("with no workloads: %+v, want SKIP with its limit", tg)
		}
	}
}

func TestWritePolicy(t *testing.T) {
	for _, n := range []int{10, 1000} {
		dir, err := writePolicy(t.TempDir(), n)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dir, "mcp", "authz.rego")); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, "data.json"))
		if err != nil {
			t.Fatal(err)
		}
		var data struct {
			MCP struct {
				Config struct {
					OpenMethods []string `json:"open_methods"`
					Scopes      struct {
						Tools   map[string][]string `json:"tools"`
						Prompts map[string][]string `json:"prompts"`
					} `json:"scopes"`
				} `json:"config"`
			} `json:"mcp"`
		}
		if err := json.Unmarshal(b, &data); err != nil {
			t.Fatal(err)
		}
		c := data.MCP.Config
		tools, seen := 0, map[string]bool{}
		for _, names := range c.Scopes.Tools {
			for _, n := range names {
				seen[n] = true
			}
			tools += len(names)
		}
		if tools != n || len(seen) != n {
			t.Errorf("%d-tool data maps %d tools (%d distinct)", n, tools, len(seen))
		}
		if last := c.Scopes.Tools[toolsScope]; len(last) != toolsPerScope || last[len(last)-1] != toolsTool {
			t.Errorf("%d-tool data: %s → %v, want %d tools ending with %s", n, toolsScope, last, toolsPerScope, toolsTool)
		}
		if len(c.OpenMethods) == 0 || c.Scopes.Prompts == nil {
			t.Errorf("%d-tool data lost the rest of the default data", n)
		}
	}
	if _, err := writePolicy(t.TempDir(), 15); err == nil {
		t.Error("15 tools (not a multiple of 10) must fail")
	}
}

// TestWriteConfig: mcpauthz accepts every configuration the harness writes.
func TestWriteConfig(t *testing.T) {
	dir := t.TempDir()
	policyDir, err := writePolicy(dir, 10)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range []serverConfig{
		{grpcAddr: "127.0.0.1:1", httpAddr: "127.0.0.1:2", issuer: "http://127.0.0.1:3/main"},
		{grpcAddr: "127.0.0.1:1", httpAddr: "127.0.0.1:2", issuer: "http://127.0.0.1:3/main", policyDir: policyDir, noDecisionCache: true},
		{grpcAddr: "127.0.0.1:1", httpAddr: "127.0.0.1:2", issuer: "http://127.0.0.1:3/jwks50", policyDir: policyDir},
		{grpcAddr: "127.0.0.1:1", httpAddr: "127.0.0.1:2", issuer: "http://127.0.0.1:3/main", noListFilter: true},
	} {
		path := filepath.Join(dir, strconv.Itoa(i)+".yaml")
		if err := writeConfig(path, c); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(path)
		if err != nil {
			t.Fatalf("config %d: %v", i, err)
		}
		// What the harness writes, mcpauthz serve accepts.
		rt, err := app.Compile(cfg, app.Options{Observe: true})
		if err != nil {
			t.Fatalf("config %d does not compile: %v", i, err)
		}
		rt.Close()
		if cfg.Issuers[0].JWKSURI != c.issuer+"/jwks" || cfg.Log.Level != "" || cfg.Log.Decisions.AllowSampleRate != nil || cfg.GRPCAddr != c.grpcAddr ||
			(c.policyDir != "") != (len(cfg.Policy.Paths) == 1) || c.noDecisionCache != (cfg.Policy.DecisionCacheSize == -1) ||
			c.noListFilter != (cfg.ListFiltering.Enabled != nil && !*cfg.ListFiltering.Enabled) {
			t.Errorf("config %d read back as %+v", i, cfg)
		}
	}
}

func TestParseOptions(t *testing.T) {
	o, err := parseOptions(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.workloads, ",") != "hot,cold,deny,forbidden,tools1000,jwks50,listfilter" || o.rounds != 3 || o.duration != 10*time.Second || o.concurrency != 16 {
		t.Errorf("defaults: %+v", o)
	}
	for _, bad := range [][]string{{"--workloads", "hot,warm"}, {"--workloads", ""}, {"--rounds", "0"}, {"--duration", "-1s"}, {"--concurrency", "0"}, {"extra"}} {
		if _, err := parseOptions(bad, io.Discard); err == nil {
			t.Errorf("parseOptions(%q) succeeded", bad)
		}
	}
}

// TestHarness runs the whole harness with tiny rounds: builds mcpauthz,
// starts it and the do-nothing server, alternates, checks the answers and
// writes both reports.
func TestHarness(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs mcpauthz")
	}
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("needs /proc")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	jsonPath := filepath.Join(t.TempDir(), "report.json")
	var stdout, stderr strings.Builder
	code := run(ctx, []string{
		"--workloads", "hot,deny,forbidden,listfilter", "--rounds", "1", "--duration", "300ms", "--warmup", "100ms",
		"--concurrency", "2", "--conns", "1", "--json", jsonPath,
	}, &stdout, &stderr)
	t.Logf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	if code != 0 {
		t.Fatalf("exit status %d", code)
	}
	report := strings.Join(strings.Fields(stdout.String()), " ")
	for _, want := range []string{"hot do-nothing", "hot mcpauthz", "deny mcpauthz", "forbidden mcpauthz", "listfilter mcpauthz list filter off",
		"mcpauthz / do-nothing: throughput", "targets", "hot: checks/s vs do-nothing", "idle RSS"} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var rep loadgen.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Unexpected != 0 || len(rep.Workloads) != 4 || rep.Machine.Cores == 0 || rep.Machine.Revision == "" {
		t.Fatalf("report: unexpected %d, %d workloads, machine %+v", rep.Unexpected, len(rep.Workloads), rep.Machine)
	}
	want := map[string]string{"hot/do-nothing": "allow", "hot/mcpauthz": "allow", "deny/do-nothing": "allow", "deny/mcpauthz": "401",
		"forbidden/do-nothing": "allow", "forbidden/mcpauthz": "403",
		"listfilter/do-nothing": "allow", "listfilter/mcpauthz list filter on": "allow", "listfilter/mcpauthz list filter off": "allow"}
	for _, w := range rep.Workloads {
		for _, s := range w.Servers {
			key := w.Name + "/" + s.Name
			exp, ok := want[key]
			if !ok {
				t.Errorf("unexpected server %s", key)
				continue
			}
			if s.ChecksPerSec <= 0 || s.Latency.P99 <= 0 || s.PeakRSSBytes == 0 || len(s.Rounds) != 1 {
				t.Errorf("%s: %+v", key, s)
			}
			if (s.Kind == "mcpauthz") != (s.IdleRSSBytes > 0) {
				t.Errorf("%s: idle RSS %d (measured for mcpauthz only)", key, s.IdleRSSBytes)
			}
			if s.Answers[exp] == 0 || len(s.Answers) != 1 {
				t.Errorf("%s answered %v, want only %s", key, s.Answers, exp)
			}
		}
	}
	// Every child process is gone.
	if kids := childrenOf(os.Getpid()); len(kids) > 0 {
		t.Errorf("child processes still running: %v", kids)
	}
}

// childrenOf lists the processes whose parent is pid (from /proc/*/stat;
// the fourth field is the parent's pid).
func childrenOf(pid int) []string {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var kids []string
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		if f := strings.Fields(string(b[i+1:])); i > 0 && len(f) > 1 && f[1] == strconv.Itoa(pid) {
			kids = append(kids, string(b[:i+1]))
		}
	}
	return kids
}
