package main

import (
	"fmt"
	"math"

	"github.com/mcpauthz/mcpauthz/internal/loadgen"
)

// The targets of the performance issues (#12, and #11 for list filtering).
const (
	targetHotThroughput = 0.90     // mcpauthz checks/s ≥ 90 % of the do-nothing server's
	targetHotCPU        = 1.3      // server CPU per check ≤ 1.3× the do-nothing server's
	targetHotP99        = 1.2      // p99 ≤ 1.2× the do-nothing server's
	targetForbidden     = 1.10     // 403 CPU per check ≤ 1.1× the allow path's
	targetForgedCPU     = 150      // µs of server CPU per forged-signature 401
	targetColdCPU       = 300      // µs of server CPU per check with a fresh RS256 token
	targetRSS           = 64 << 20 // peak RSS under load
	targetIdleRSS       = 40 << 20 // RSS of a started server before any check
	targetFlat          = 0.10     // 1000 vs 10 tools, 50 vs 1 keys: CPU per check within ±10 %
	targetListFilter    = 0.98     // checks/s with list filtering on ≥ 98 % of off
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

// evaluateTargets checks the measured workloads against the targets; a
// target whose workload did not run is SKIP.
func evaluateTargets(ws []loadgen.Workload) []loadgen.Target {
	var ts []loadgen.Target
	add := func(name string, ok bool, value, limit string) {
		ts = append(ts, loadgen.Target{Name: name, Result: passFail(ok), Value: value, Limit: limit})
	}
	skip := func(name, limit, why string) {
		ts = append(ts, loadgen.Target{Name: name, Result: "SKIP", Value: "-", Limit: limit, Comment: why})
	}
	cpu := loadgen.FormatLatency

	noop, okN := find(ws, "hot", "do-nothing")
	hot, okH := find(ws, "hot", "mcpauthz")
	const (
		nThr = "hot: checks/s vs do-nothing"
		nCPU = "hot: server CPU per check vs do-nothing"
		nP99 = "hot: p99 vs do-nothing"
	)
	if okN && okH {
		r := loadgen.Compare(hot, noop)
		add(nThr, r.Throughput >= targetHotThroughput, fmt.Sprintf("%.1f %% (%.0f vs %.0f)", 100*r.Throughput, hot.ChecksPerSec, noop.ChecksPerSec), "≥ 90 %")
		add(nCPU, r.CPUPerCheck > 0 && r.CPUPerCheck <= targetHotCPU, fmt.Sprintf("%.2f× (%s vs %s)", r.CPUPerCheck, cpu(hot.CPUPerCheckUS), cpu(noop.CPUPerCheckUS)), "≤ 1.3×")
		add(nP99, r.P99 > 0 && r.P99 <= targetHotP99, fmt.Sprintf("%.2f× (%s vs %s)", r.P99, cpu(hot.Latency.P99), cpu(noop.Latency.P99)), "≤ 1.2×")
	} else {
		skip(nThr, "≥ 90 %", "the hot workload did not run")
		skip(nCPU, "≤ 1.3×", "the hot workload did not run")
		skip(nP99, "≤ 1.2×", "the hot workload did not run")
	}

	const nForbidden = "forbidden: 403 server CPU per check vs the allow path (hot)"
	if f, ok := find(ws, "forbidden", "mcpauthz"); ok && okH && hot.CPUPerCheckUS > 0 {
		r := f.CPUPerCheckUS / hot.CPUPerCheckUS
		add(nForbidden, r <= targetForbidden, fmt.Sprintf("%.2f× (%s vs %s)", r, cpu(f.CPUPerCheckUS), cpu(hot.CPUPerCheckUS)), "≤ 1.10×")
	} else {
		skip(nForbidden, "≤ 1.10×", "the forbidden or hot workload did not run")
	}

	const nDeny = "deny: server CPU per forged-signature 401"
	if d, ok := find(ws, "deny", "mcpauthz"); ok {
		add(nDeny, d.CPUPerCheckUS <= targetForgedCPU, cpu(d.CPUPerCheckUS), "≤ 150µs")
	} else {
		skip(nDeny, "≤ 150µs", "the deny workload did not run")
	}

	const nCold = "cold: server CPU per check with a fresh RS256 token"
	if cold, ok := find(ws, "cold", "mcpauthz"); ok {
		add(nCold, cold.CPUPerCheckUS <= targetColdCPU, fmt.Sprintf("%s (%.0f checks/s)", cpu(cold.CPUPerCheckUS), cold.ChecksPerSec), "≤ 300µs")
	} else {
		skip(nCold, "≤ 300µs", "the cold workload did not run")
	}

	const (
		nRSS  = "peak RSS of mcpauthz under load"
		nIdle = "idle RSS of mcpauthz (started, no check yet)"
	)
	var peak, idle uint64
	var where, idleWhere string
	for _, w := range ws {
		for _, s := range w.Servers {
			if s.Kind != "mcpauthz" {
				continue
			}
			if s.PeakRSSBytes > peak {
				peak, where = s.PeakRSSBytes, w.Name+", "+s.Name
			}
			if s.IdleRSSBytes > idle {
				idle, idleWhere = s.IdleRSSBytes, w.Name+", "+s.Name
			}
		}
	}
	if peak > 0 {
		add(nRSS, peak <= targetRSS, fmt.Sprintf("%s (%s)", loadgen.FormatBytes(peak), where), "≤ 64 MiB")
	} else {
		skip(nRSS, "≤ 64 MiB", "no mcpauthz server ran")
	}
	if idle > 0 {
		add(nIdle, idle <= targetIdleRSS, fmt.Sprintf("%s (%s)", loadgen.FormatBytes(idle), idleWhere), "≤ 40 MiB")
	} else {
		skip(nIdle, "≤ 40 MiB", "no mcpauthz server ran")
	}

	flat := func(name string, of, to loadgen.Server, okOf, okTo bool, why string) {
		if !okOf || !okTo || to.CPUPerCheckUS == 0 {
			skip(name, "within ±10 %", why)
			return
		}
		d := of.CPUPerCheckUS/to.CPUPerCheckUS - 1
		add(name, math.Abs(d) <= targetFlat, fmt.Sprintf("%+.1f %% (%s vs %s)", 100*d, cpu(of.CPUPerCheckUS), cpu(to.CPUPerCheckUS)), "within ±10 %")
	}
	t10, ok10 := find(ws, "tools1000", "mcpauthz 10 tools")
	t1000, ok1000 := find(ws, "tools1000", "mcpauthz 1000 tools")
	flat("tools1000: server CPU per check, 1000 tools vs 10 tools", t1000, t10, ok1000, ok10, "the tools1000 workload did not run")
	j50, okJ := find(ws, "jwks50", "mcpauthz")
	flat("jwks50: server CPU per check, 50 keys vs 1 key (hot)", j50, hot, okJ, okH, "the jwks50 or hot workload did not run")

	const nList = "listfilter: checks/s with list filtering on vs off"
	on, okOn := find(ws, "listfilter", "mcpauthz list filter on")
	off, okOff := find(ws, "listfilter", "mcpauthz list filter off")
	if okOn && okOff {
		r := on.ChecksPerSec / off.ChecksPerSec
		add(nList, r >= targetListFilter, fmt.Sprintf("%.1f %% (%.0f vs %.0f)", 100*r, on.ChecksPerSec, off.ChecksPerSec), "≥ 98 %")
	} else {
		skip(nList, "≥ 98 %", "the listfilter workload did not run")
	}
	return ts
}
