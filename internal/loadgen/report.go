package loadgen

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the whole result of a harness run; it is also the --json
// document.
type Report struct {
	Machine    Machine    `json:"machine"`
	Settings   Settings   `json:"settings"`
	Started    time.Time  `json:"started"`
	Elapsed    string     `json:"elapsed"`
	LoadBefore [3]float64 `json:"load_average_before"`
	LoadAfter  [3]float64 `json:"load_average_after"`
	Workloads  []Workload `json:"workloads"`
	Targets    []Target   `json:"targets"`
	// Unexpected counts the answers that were not the expected outcome,
	// over every workload and server; non-zero fails the run.
	Unexpected uint64 `json:"unexpected_answers"`
	// Problems are things that make the numbers less trustworthy (token
	// pool exhausted, a round that failed...).
	Problems []string `json:"problems,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUModel   string `json:"cpu_model"`
	Cores      int    `json:"cores"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	GoVersion  string `json:"go_version"`
	OS         string `json:"os"`
	Arch       string `json:"arch"`
	Kernel     string `json:"kernel,omitempty"`
	// Revision is the git revision of the mcpauthz tree ("-dirty" when it
	// has uncommitted changes).
	Revision string `json:"mcpauthz_revision"`
	// Binary is the mcpauthz binary measured ("built" when the harness
	// built it).
	Binary string `json:"mcpauthz_binary"`
}

// Settings are the load parameters.
type Settings struct {
	Concurrency int      `json:"concurrency"`
	Connections int      `json:"connections"`
	Rounds      int      `json:"rounds"`
	Duration    string   `json:"round_duration"`
	Warmup      string   `json:"warmup"`
	Workloads   []string `json:"workloads"`
}

// Workload is the result of one workload: every server it ran against, in
// the order they alternated.
type Workload struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Servers     []Server `json:"servers"`
	Ratios      []Ratio  `json:"ratios"`
	Notes       []string `json:"notes,omitempty"`
}

// Server is one server's aggregate over its rounds of a workload.
type Server struct {
	Name string `json:"name"`
	// Kind is "noop" (the do-nothing server) or "mcpauthz".
	Kind                string  `json:"kind"`
	ChecksPerSec        float64 `json:"checks_per_sec"`
	Latency             Latency `json:"latency_us"`
	CPUPerCheckUS       float64 `json:"server_cpu_per_check_us"`
	ClientCPUPerCheckUS float64 `json:"client_cpu_per_check_us"`
	PeakRSSBytes        uint64  `json:"peak_rss_bytes"`
	// IdleRSSBytes is the RSS of the started, connected server before any
	// check (0 when not measured).
	IdleRSSBytes uint64            `json:"idle_rss_bytes,omitempty"`
	Expect       string            `json:"expect"`
	Answers      map[string]uint64 `json:"answers"`
	Unexpected   uint64            `json:"unexpected"`
	Examples     []string          `json:"unexpected_examples,omitempty"`
	Rounds       []RoundSummary    `json:"rounds"`
}

// Latency is a client-side latency summary in microseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Mean float64 `json:"mean"`
	Max  float64 `json:"max"`
}

// RoundSummary is one measured round.
type RoundSummary struct {
	Checks           uint64  `json:"checks"`
	Seconds          float64 `json:"seconds"`
	ChecksPerSec     float64 `json:"checks_per_sec"`
	ServerCPUSeconds float64 `json:"server_cpu_seconds"`
	ClientCPUSeconds float64 `json:"client_cpu_seconds"`
	// Exhausted: the credentials ran out and the window was cut short.
	Exhausted bool `json:"credentials_exhausted,omitempty"`
}

// Ratio compares server Of with server To (Of / To).
type Ratio struct {
	Of          string  `json:"of"`
	To          string  `json:"to"`
	Throughput  float64 `json:"throughput"`
	CPUPerCheck float64 `json:"cpu_per_check"`
	P99         float64 `json:"p99"`
}

// Target is one of the performance targets.
type Target struct {
	Name    string `json:"name"`
	Result  string `json:"result"` // PASS, FAIL or SKIP
	Value   string `json:"value"`
	Limit   string `json:"limit"`
	Comment string `json:"comment,omitempty"`
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// Summarize aggregates the rounds of one server: checks/s is the total
// checks over the total window, CPU per check the total CPU over the
// total checks, and the latency quantiles come from the merged
// histogram.
func Summarize(name, kind, expect string, rounds []*RoundResult, mem Memory) Server {
	s := Server{Name: name, Kind: kind, Expect: expect, PeakRSSBytes: mem.PeakRSS, Answers: map[string]uint64{}}
	var h Histogram
	var window, scpu, ccpu time.Duration
	for _, r := range rounds {
		s.Unexpected += r.Unexpected
		s.Examples = addAnswers(s.Answers, s.Examples, r.Answers, r.Examples)
		if r.Latency == nil {
			continue
		}
		h.Merge(r.Latency)
		window += r.Window
		scpu += r.ServerCPU
		ccpu += r.ClientCPU
		s.Rounds = append(s.Rounds, RoundSummary{
			Checks: r.Checks, Seconds: r.Window.Seconds(), ChecksPerSec: r.Rate(),
			ServerCPUSeconds: r.ServerCPU.Seconds(), ClientCPUSeconds: r.ClientCPU.Seconds(),
			Exhausted: r.Exhausted,
		})
	}
	if n := h.Count(); n > 0 {
		s.ChecksPerSec = float64(n) / window.Seconds()
		s.CPUPerCheckUS = us(scpu) / float64(n)
		s.ClientCPUPerCheckUS = us(ccpu) / float64(n)
		s.Latency = Latency{
			P50: us(h.Quantile(0.50)), P99: us(h.Quantile(0.99)), P999: us(h.Quantile(0.999)),
			Mean: us(h.Mean()), Max: us(h.Max()),
		}
	}
	return s
}

// Compare returns of / to.
func Compare(of, to Server) Ratio {
	return Ratio{
		Of: of.Name, To: to.Name,
		Throughput:  div(of.ChecksPerSec, to.ChecksPerSec),
		CPUPerCheck: div(of.CPUPerCheckUS, to.CPUPerCheckUS),
		P99:         div(of.Latency.P99, to.Latency.P99),
	}
}

// div is a / b, or 0 (shown as n/a) when b is 0: JSON has no NaN.
func div(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// spread is (max - min) / mean of the per-round rates, in percent.
func spread(rs []RoundSummary) string {
	if len(rs) < 2 {
		return "-"
	}
	lo, hi, sum := math.Inf(1), math.Inf(-1), 0.0
	for _, r := range rs {
		lo, hi, sum = math.Min(lo, r.ChecksPerSec), math.Max(hi, r.ChecksPerSec), sum+r.ChecksPerSec
	}
	mean := sum / float64(len(rs))
	if mean == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*(hi-lo)/mean)
}

// FormatLatency prints microseconds with three significant digits in ms
// or µs.
func FormatLatency(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v >= 1000:
		return sig3(v/1000) + "ms"
	default:
		return sig3(v) + "µs"
	}
}

func sig3(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

// FormatBytes prints a size in MiB.
func FormatBytes(b uint64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

func formatRatio(v float64) string {
	if v == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", v)
}

func formatAnswers(m map[string]uint64) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// WriteText writes the human-readable report.
func WriteText(w io.Writer, r *Report) error {
	var b strings.Builder
	m, s := r.Machine, r.Settings
	fmt.Fprintf(&b, "mcpauthz-bench: closed-loop ext_authz load, %d callers over %d HTTP/2 connections, %d × %s measured rounds per server (after %s warm-up each), servers alternating\n",
		s.Concurrency, s.Connections, s.Rounds, s.Duration, s.Warmup)
	fmt.Fprintf(&b, "machine: %s, %d cores, GOMAXPROCS %d, %s %s/%s, kernel %s\n", m.CPUModel, m.Cores, m.GOMAXPROCS, m.GoVersion, m.OS, m.Arch, m.Kernel)
	fmt.Fprintf(&b, "mcpauthz: revision %s, binary %s\n", m.Revision, m.Binary)
	fmt.Fprintf(&b, "load average: before %.2f %.2f %.2f, after %.2f %.2f %.2f; started %s, took %s\n\n",
		r.LoadBefore[0], r.LoadBefore[1], r.LoadBefore[2], r.LoadAfter[0], r.LoadAfter[1], r.LoadAfter[2],
		r.Started.UTC().Format(time.RFC3339), r.Elapsed)

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tserver\tchecks/s\tround spread\tp50\tp99\tp99.9\tserver CPU/check\tclient CPU/check\tidle RSS\tpeak RSS\t")
	for _, wl := range r.Workloads {
		for _, sv := range wl.Servers {
			idle := "-"
			if sv.IdleRSSBytes > 0 {
				idle = FormatBytes(sv.IdleRSSBytes)
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
				wl.Name, sv.Name, sv.ChecksPerSec, spread(sv.Rounds),
				FormatLatency(sv.Latency.P50), FormatLatency(sv.Latency.P99), FormatLatency(sv.Latency.P999),
				FormatLatency(sv.CPUPerCheckUS), FormatLatency(sv.ClientCPUPerCheckUS), idle, FormatBytes(sv.PeakRSSBytes))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	b.WriteString("\nratios:\n")
	for _, wl := range r.Workloads {
		for _, ra := range wl.Ratios {
			fmt.Fprintf(&b, "  %-10s %s / %s: throughput %s, CPU per check %s, p99 %s\n",
				wl.Name, ra.Of, ra.To, formatRatio(ra.Throughput), formatRatio(ra.CPUPerCheck), formatRatio(ra.P99))
		}
	}

	b.WriteString("\nanswers (every answer, warm-up included):\n")
	for _, wl := range r.Workloads {
		for _, sv := range wl.Servers {
			mark := "ok"
			if sv.Unexpected > 0 {
				mark = fmt.Sprintf("UNEXPECTED %d (want %s)", sv.Unexpected, sv.Expect)
			}
			fmt.Fprintf(&b, "  %-10s %-22s %s: %s\n", wl.Name, sv.Name, mark, formatAnswers(sv.Answers))
			for _, e := range sv.Examples {
				fmt.Fprintf(&b, "      e.g. %s\n", e)
			}
		}
	}

	var notes []string
	for _, wl := range r.Workloads {
		for _, n := range wl.Notes {
			notes = append(notes, wl.Name+": "+n)
		}
	}
	if len(notes) > 0 {
		b.WriteString("\nnotes:\n")
		for _, n := range notes {
			fmt.Fprintf(&b, "  %s\n", n)
		}
	}

	if len(r.Targets) > 0 {
		b.WriteString("\ntargets (from the issue; informative, they do not fail the run):\n")
		for _, t := range r.Targets {
			fmt.Fprintf(&b, "  %-4s  %-52s %s (limit %s)", t.Result, t.Name, t.Value, t.Limit)
			if t.Comment != "" {
				fmt.Fprintf(&b, " — %s", t.Comment)
			}
			b.WriteString("\n")
		}
	}
	if len(r.Problems) > 0 || r.Unexpected > 0 {
		b.WriteString("\n")
		if r.Unexpected > 0 {
			fmt.Fprintf(&b, "!!! %d UNEXPECTED ANSWERS: the load was not answered as the workload requires; the numbers above are not valid.\n", r.Unexpected)
		}
		for _, p := range r.Problems {
			fmt.Fprintf(&b, "!!! %s\n", p)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
