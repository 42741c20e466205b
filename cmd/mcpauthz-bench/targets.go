package main

import (
	"fmt"
	"math"

	"github.com/mcpauthz/mcpauthz/internal/loadgen"
)

// The targets.
const (
	targetHotThroughput = 0.90     // mcpauthz checks/s ≥ 90 % of the do-nothing server's
	targetHotCPU        = 1.3      // server CPU per check ≤ 1.3× the do-nothing server's
	targetHotP99        = 1.2      // p99 ≤ 1.2× the do-nothing server's
	targetColdRate      = 3500     // checks/s with a fresh RS256 token per check
	targetRSS           = 64 << 20 // peak RSS under load
	targetToolsSpread   = 0.10     // 1000-tool checks/s within 10 % of 10-tool
)

func find(ws []loadgen.Workload, workload, server string) (loadgen.Server, bool) {
	for _, w := range ws {
		if w.Name != workload {
			continue
		}
		for _, s := range w.Servers {
			if s.Name == server && s.ChecksPerSec > 0 {
				return s, true
			}
		}
	}
	return loadgen.Server{}, false
}

func passFail(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

// evaluateTargets checks the measured workloads against the issue's
// targets; a target whose workload did not run is SKIP.
func evaluateTargets(ws []loadgen.Workload) []loadgen.Target {
	var ts []loadgen.Target
	skip := func(name, limit, why string) {
		ts = append(ts, loadgen.Target{Name: name, Result: "SKIP", Value: "-", Limit: limit, Comment: why})
	}

	noop, okN := find(ws, "hot", "do-nothing")
	hot, okH := find(ws, "hot", "mcpauthz")
	const (
		nThr = "hot: checks/s vs do-nothing"
		nCPU = "hot: server CPU per check vs do-nothing"
		nP99 = "hot: p99 vs do-nothing"
	)
	if okN && okH {
		r := loadgen.Compare(hot, noop)
		ts = append(ts,
			loadgen.Target{Name: nThr, Result: passFail(r.Throughput >= targetHotThroughput),
				Value: fmt.Sprintf("%.1f %% (%.0f vs %.0f)", 100*r.Throughput, hot.ChecksPerSec, noop.ChecksPerSec), Limit: "≥ 90 %"},
			loadgen.Target{Name: nCPU, Result: passFail(r.CPUPerCheck > 0 && r.CPUPerCheck <= targetHotCPU),
				Value: fmt.Sprintf("%.2f× (%s vs %s)", r.CPUPerCheck, loadgen.FormatLatency(hot.CPUPerCheckUS), loadgen.FormatLatency(noop.CPUPerCheckUS)), Limit: "≤ 1.3×"},
			loadgen.Target{Name: nP99, Result: passFail(r.P99 > 0 && r.P99 <= targetHotP99),
				Value: fmt.Sprintf("%.2f× (%s vs %s)", r.P99, loadgen.FormatLatency(hot.Latency.P99), loadgen.FormatLatency(noop.Latency.P99)), Limit: "≤ 1.2×"},
		)
	} else {
		skip(nThr, "≥ 90 %", "the hot workload did not run")
		skip(nCPU, "≤ 1.3×", "the hot workload did not run")
		skip(nP99, "≤ 1.2×", "the hot workload did not run")
	}

	const nCold = "cold: checks/s with a fresh RS256 token per check"
	if cold, ok := find(ws, "cold", "mcpauthz"); ok {
		ts = append(ts, loadgen.Target{Name: nCold, Result: passFail(cold.ChecksPerSec >= targetColdRate),
			Value: fmt.Sprintf("%.0f", cold.ChecksPerSec), Limit: "≥ 3500"})
	} else {
		skip(nCold, "≥ 3500", "the cold workload did not run")
	}

	const nRSS = "peak RSS of mcpauthz under load"
	var peak uint64
	var where string
	for _, w := range ws {
		for _, s := range w.Servers {
			if s.Kind == "mcpauthz" && s.PeakRSSBytes > peak {
				peak, where = s.PeakRSSBytes, w.Name+", "+s.Name
			}
		}
	}
	if peak > 0 {
		ts = append(ts, loadgen.Target{Name: nRSS, Result: passFail(peak <= targetRSS),
			Value: fmt.Sprintf("%s (%s)", loadgen.FormatBytes(peak), where), Limit: "≤ 64 MiB"})
	} else {
		skip(nRSS, "≤ 64 MiB", "no mcpauthz server ran")
	}

	const nTools = "tools1000: checks/s 1000 tools vs 10 tools"
	t10, ok10 := find(ws, "tools1000", "mcpauthz 10 tools")
	t1000, ok1000 := find(ws, "tools1000", "mcpauthz 1000 tools")
	if ok10 && ok1000 {
		d := t1000.ChecksPerSec/t10.ChecksPerSec - 1
		ts = append(ts, loadgen.Target{Name: nTools, Result: passFail(math.Abs(d) <= targetToolsSpread),
			Value: fmt.Sprintf("%+.1f %% (%.0f vs %.0f)", 100*d, t1000.ChecksPerSec, t10.ChecksPerSec), Limit: "within ±10 %"})
	} else {
		skip(nTools, "within ±10 %", "the tools1000 workload did not run")
	}
	return ts
}
