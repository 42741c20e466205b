// Command mcpauthz-bench is the closed-loop load harness of mcpauthz: in one
// invocation on one machine it compares mcpauthz with a do-nothing ext_authz
// server under the same Envoy-shaped load, and prints checks/s, latency
// quantiles, server CPU per check and peak RSS for each, with the ratios and
// the performance targets.
//
// Usage:
//
//	go run ./cmd/mcpauthz-bench [flags]      (or: make bench-load BENCH_ARGS='...')
//
// The harness builds mcpauthz with `go build` into a temporary directory
// (or runs --mcpauthz PATH), starts it with a generated configuration, and
// starts the do-nothing server as a separate process (this same binary,
// hidden subcommand "noop"), so that both are measured the same way: CPU
// from /proc/<pid>/stat over the measured window, peak RSS from VmHWM.
// Rounds alternate (do-nothing, mcpauthz, do-nothing, mcpauthz...) under the
// same closed-loop gRPC load: --concurrency callers over --conns HTTP/2
// connections, each sending the next check as soon as the previous answer
// arrives. It serves its own JWKS on 127.0.0.1 and listens on 127.0.0.1
// only; it stops by itself and stops its child processes on exit.
//
// Workloads (--workloads, default all):
//
//	hot        8 tokens (scope tools:get_weather) reused, as real agents do
//	cold       a fresh signed token on every request (pre-minted before each round)
//	deny       invalid signatures: a key not in the JWKS, with a kid that is (401)
//	forbidden  valid tokens whose scope grants another tool (403 insufficient_scope)
//	tools1000  policy data with 1000 tools mapped to scopes, against the same with 10
//	           (both with the decision cache off: every check evaluates the policy)
//	jwks50     a JWKS of 50 RSA keys; tokens signed by the last one
//	listfilter the hot load against list filtering on (the default) and off
//
// Every answer is checked (allowed, or 401 for deny); any unexpected answer
// makes the exit status 1. The targets are printed as PASS/FAIL lines and
// do not change the exit status.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

// roleEnv makes the process the harness's do-nothing server whatever its
// arguments; the harness re-executes itself with it, which also works for
// the test binary.
const roleEnv = "MCPAUTHZ_BENCH_ROLE"

var allWorkloads = []string{"hot", "cold", "deny", "forbidden", "tools1000", "jwks50", "listfilter"}

type options struct {
	mcpauthz    string
	workloads   []string
	rounds      int
	duration    time.Duration
	warmup      time.Duration
	concurrency int
	conns       int
	jsonPath    string
	hotTokens   int
	coldMax     int
	cpuprofile  string
	profileLoad string   // the workload of the profiled round
	serverEnv   []string // added to mcpauthz's environment (--mcpauthz-env)
	// progress receives one line per round (stderr).
	progress io.Writer
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var code int
	if role := os.Getenv(roleEnv); role != "" {
		code = runRole(ctx, role, os.Args[1:], os.Stdout, os.Stderr)
	} else {
		code = run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	}
	stop()
	os.Exit(code)
}

// runRole runs a child server role.
func runRole(ctx context.Context, role string, args []string, stdout, stderr io.Writer) int {
	switch role {
	case "noop":
		return runNoop(ctx, args, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "mcpauthz-bench: unknown role %q\n", role)
		return 2
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "noop" {
		return runRole(ctx, args[0], args[1:], stdout, stderr)
	}
	o, err := parseOptions(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	rep, err := runHarness(ctx, o)
	if rep != nil && len(rep.Workloads) > 0 {
		if werr := writeReports(rep, o, stdout); werr != nil {
			fmt.Fprintln(stderr, "mcpauthz-bench:", werr)
			return 1
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "mcpauthz-bench:", err)
		return 1
	}
	if rep.Unexpected > 0 {
		fmt.Fprintf(stderr, "mcpauthz-bench: FAILED: %d unexpected answers\n", rep.Unexpected)
		return 1
	}
	return 0
}

func parseOptions(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("mcpauthz-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{progress: stderr}
	var workloads string
	fs.StringVar(&o.mcpauthz, "mcpauthz", "", "mcpauthz binary to measure (default: go build ./cmd/mcpauthz into a temporary directory)")
	fs.StringVar(&workloads, "workloads", strings.Join(allWorkloads, ","), "comma-separated workloads: "+strings.Join(allWorkloads, ", "))
	fs.IntVar(&o.rounds, "rounds", 3, "measured rounds per server and workload (servers alternate round by round)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured duration of one round")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "warm-up before each round, not measured")
	fs.IntVar(&o.concurrency, "concurrency", 16, "closed-loop callers (checks in flight)")
	fs.IntVar(&o.conns, "conns", 4, "HTTP/2 connections the callers share (Envoy keeps one per worker)")
	fs.StringVar(&o.jsonPath, "json", "", "also write the machine-readable report to this file")
	fs.IntVar(&o.hotTokens, "hot-tokens", 8, "distinct tokens reused by the hot, tools1000 and jwks50 workloads")
	fs.IntVar(&o.coldMax, "cold-max-tokens", 200000, "cap on the tokens pre-minted for one cold round (a round that runs out is cut short and reported)")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "after the workloads, run one round (--profile-workload) against an in-process mcpauthz (./cmd/mcpauthz-bench/inproc: the components of serve) and write its CPU profile here")
	fs.Func("mcpauthz-env", "`KEY=VALUE` added to the environment of the mcpauthz servers only, e.g. GOMEMLIMIT=48MiB (repeatable)", func(kv string) error {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fmt.Errorf("%q: want KEY=VALUE", kv)
		}
		o.serverEnv = append(o.serverEnv, kv)
		return nil
	})
	fs.StringVar(&o.profileLoad, "profile-workload", "hot", "the workload of the --cpuprofile round: hot, deny or forbidden")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: mcpauthz-bench [flags]\n\nClosed-loop load comparison of mcpauthz against a do-nothing ext_authz server.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return nil, errors.New("usage")
	}
	var bad []string
	for _, w := range strings.Split(workloads, ",") {
		w = strings.TrimSpace(w)
		switch {
		case w == "":
		case !slices.Contains(allWorkloads, w):
			bad = append(bad, fmt.Sprintf("unknown workload %q (want %s)", w, strings.Join(allWorkloads, ", ")))
		case !slices.Contains(o.workloads, w):
			o.workloads = append(o.workloads, w)
		}
	}
	if len(o.workloads) == 0 {
		bad = append(bad, "no workload selected")
	}
	if o.rounds < 1 || o.rounds > 100 {
		bad = append(bad, "--rounds must be between 1 and 100")
	}
	if o.duration <= 0 || o.duration > 10*time.Minute {
		bad = append(bad, "--duration must be positive and at most 10m")
	}
	if o.warmup < 0 || o.warmup > time.Minute {
		bad = append(bad, "--warmup must be between 0 and 1m")
	}
	if o.concurrency < 1 || o.concurrency > 4096 {
		bad = append(bad, "--concurrency must be between 1 and 4096")
	}
	if o.conns < 1 || o.conns > 64 {
		bad = append(bad, "--conns must be between 1 and 64")
	}
	if o.hotTokens < 1 || o.hotTokens > 1000 {
		bad = append(bad, "--hot-tokens must be between 1 and 1000")
	}
	if o.coldMax < 1000 {
		bad = append(bad, "--cold-max-tokens must be at least 1000")
	}
	if len(bad) > 0 {
		for _, b := range bad {
			fmt.Fprintln(stderr, "mcpauthz-bench:", b)
		}
		return nil, errors.New("usage")
	}
	return o, nil
}
