package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"

	"github.com/mcpauthz/mcpauthz/internal/devissuer"
	"github.com/mcpauthz/mcpauthz/internal/loadgen"
)

const modulePath = "github.com/mcpauthz/mcpauthz"

// server is one server under test in a workload.
type server struct {
	name, kind, expect string
	proc               *child
	idle               loadgen.Memory // right after start, before any load
	conns              []*grpc.ClientConn
	clients            []authv3.AuthorizationClient
	rounds             []*loadgen.RoundResult
}

func (s *server) close() {
	for _, c := range s.conns {
		c.Close()
	}
	if s.proc != nil {
		s.proc.stop()
	}
}

// variant is one mcpauthz configuration of a workload.
type variant struct {
	name            string
	tools           int // 0: the embedded default policy
	noDecisionCache bool
	noListFilter    bool // list_filtering.enabled: false
}

// workload describes the load and the mcpauthz servers it runs against.
type workload struct {
	name, desc string
	issuer     *devissuer.Issuer // the issuer mcpauthz trusts
	expect     string            // mcpauthz's expected outcome
	tool       string
	variants   []variant
	// tokens is the fixed pool the callers cycle through; nil for cold.
	tokens []string
}

type harness struct {
	o        *options
	root     string // the module root ("" outside it)
	tmp      string
	bin      string
	self     string
	fx       *fixtures
	children childSet
	problems []string
}

func (h *harness) progressf(format string, args ...any) {
	if h.o.progress != nil {
		fmt.Fprintf(h.o.progress, format+"\n", args...)
	}
}

// runHarness runs every selected workload. The report it returns (also
// with an error, then partial) is complete enough to print.
func runHarness(ctx context.Context, o *options) (*loadgen.Report, error) {
	started := time.Now()
	rep := &loadgen.Report{
		Started: started,
		Machine: loadgen.Machine{
			CPUModel: loadgen.CPUModel(), Cores: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0),
			GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH, Kernel: loadgen.KernelRelease(),
		},
		Settings: loadgen.Settings{
			Concurrency: o.concurrency, Connections: o.conns, Rounds: o.rounds,
			Duration: o.duration.String(), Warmup: o.warmup.String(), Workloads: o.workloads,
		},
	}
	rep.LoadBefore, _ = loadgen.LoadAverage()
	h := &harness{o: o}
	defer h.children.stopAll()
	err := h.run(ctx, rep)
	h.children.stopAll()
	if h.tmp != "" {
		os.RemoveAll(h.tmp)
	}
	rep.LoadAfter, _ = loadgen.LoadAverage()
	rep.Elapsed = time.Since(started).Round(time.Second).String()
	rep.Targets = evaluateTargets(rep.Workloads)
	for _, w := range rep.Workloads {
		for _, s := range w.Servers {
			rep.Unexpected += s.Unexpected
		}
	}
	if busy := max(rep.LoadBefore[0], rep.LoadAfter[0]); busy > 0.5*float64(rep.Machine.Cores) {
		rep.Problems = append(rep.Problems, fmt.Sprintf("the machine was busy (load average %.2f before, %.2f after, %d cores): other processes competed with the servers and the load generator for the CPU",
			rep.LoadBefore[0], rep.LoadAfter[0], rep.Machine.Cores))
	}
	rep.Problems = append(rep.Problems, h.problems...)
	if err != nil {
		rep.Problems = append(rep.Problems, "the run stopped early: "+err.Error())
	}
	return rep, err
}

func (h *harness) run(ctx context.Context, rep *loadgen.Report) error {
	var err error
	if h.tmp, err = os.MkdirTemp("", "mcpauthz-bench-"); err != nil {
		return err
	}
	if h.self, err = os.Executable(); err != nil {
		return err
	}
	root, rev := repoInfo(ctx)
	h.root = root
	rep.Machine.Revision = rev
	if h.o.mcpauthz != "" {
		h.bin = h.o.mcpauthz
		out, verr := exec.CommandContext(ctx, h.bin, "version").Output()
		rep.Machine.Binary = fmt.Sprintf("%s (%s)", h.bin, strings.TrimSpace(string(out)))
		if verr != nil {
			return fmt.Errorf("--mcpauthz %s: %w", h.bin, verr)
		}
	} else {
		if root == "" {
			return errors.New("not inside the mcpauthz module (go env GOMOD); run from the repository or give --mcpauthz PATH")
		}
		h.progressf("building mcpauthz (%s) ...", rev)
		if h.bin, err = build(ctx, root, h.tmp, "./cmd/mcpauthz", rev); err != nil {
			return err
		}
		rep.Machine.Binary = "built by the harness from " + root
	}
	if len(h.o.serverEnv) > 0 {
		rep.Machine.Binary += ", environment " + strings.Join(h.o.serverEnv, " ")
	}
	h.progressf("generating keys ...")
	if h.fx, err = newFixtures(ctx, h.tmp, h.o.workloads); err != nil {
		return fmt.Errorf("keys and JWKS server: %w", err)
	}
	defer h.fx.close()

	for _, name := range h.o.workloads {
		wl, err := h.workload(ctx, name)
		if err != nil {
			return err
		}
		res, err := h.runWorkload(ctx, wl)
		if res != nil {
			rep.Workloads = append(rep.Workloads, *res)
		}
		if err != nil {
			return fmt.Errorf("workload %s: %w", name, err)
		}
	}
	if h.o.cpuprofile != "" {
		res, err := h.profile(ctx)
		if res != nil {
			rep.Workloads = append(rep.Workloads, *res)
		}
		if err != nil {
			return fmt.Errorf("profile: %w", err)
		}
	}
	return nil
}

// workload prepares the named workload and its fixed token pool.
func (h *harness) workload(ctx context.Context, name string) (*workload, error) {
	fx := h.fx
	mcp := []variant{{name: "mcpauthz"}}
	var (
		wl  *workload
		err error
	)
	switch name {
	case "hot":
		wl = &workload{name: name, issuer: fx.main, expect: loadgen.OutcomeAllow, tool: hotTool, variants: mcp,
			desc: fmt.Sprintf("%d tokens (scope %s) reused, tools/call %s", h.o.hotTokens, hotScope, hotTool)}
		wl.tokens, err = mint(ctx, fx.main, h.o.hotTokens, "bench-agent", hotScope)
	case "cold":
		wl = &workload{name: name, issuer: fx.main, expect: loadgen.OutcomeAllow, tool: hotTool, variants: mcp,
			desc: "a fresh signed token on every request (pre-minted before each round), tools/call " + hotTool}
	case "deny":
		wl = &workload{name: name, issuer: fx.main, expect: "401", tool: hotTool, variants: mcp,
			desc: fmt.Sprintf("%d tokens signed by a key not in the JWKS, with the kid of the key that is: invalid signature, 401", denyTokens)}
		wl.tokens, err = mint(ctx, fx.forged, denyTokens, "bench-mallory", hotScope)
	case "forbidden":
		wl = &workload{name: name, issuer: fx.main, expect: "403", tool: hotTool, variants: mcp,
			desc: fmt.Sprintf("%d valid tokens with scope %s reused, tools/call %s: insufficient_scope, 403", h.o.hotTokens, otherScope, hotTool)}
		wl.tokens, err = mint(ctx, fx.main, h.o.hotTokens, "bench-agent", otherScope)
	case "listfilter":
		wl = &workload{name: name, issuer: fx.main, expect: loadgen.OutcomeAllow, tool: hotTool,
			variants: []variant{{name: "mcpauthz list filter on"}, {name: "mcpauthz list filter off", noListFilter: true}},
			desc:     fmt.Sprintf("the hot load against list filtering on (the default) and off; %d tokens with scope %s, tools/call %s", h.o.hotTokens, hotScope, hotTool)}
		wl.tokens, err = mint(ctx, fx.main, h.o.hotTokens, "bench-agent", hotScope)
	case "tools1000":
		wl = &workload{name: name, issuer: fx.main, expect: loadgen.OutcomeAllow, tool: toolsTool,
			variants: []variant{{name: "mcpauthz 10 tools", tools: 10}, {name: "mcpauthz 1000 tools", tools: 1000}},
			desc:     fmt.Sprintf("policy data mapping 10 vs 1000 tools (%d per scope); %d tokens with scope %s, tools/call %s", toolsPerScope, h.o.hotTokens, toolsScope, toolsTool)}
		wl.tokens, err = mint(ctx, fx.main, h.o.hotTokens, "bench-agent", toolsScope)
	case "jwks50":
		wl = &workload{name: name, issuer: fx.jwks50, expect: loadgen.OutcomeAllow, tool: hotTool, variants: mcp,
			desc: fmt.Sprintf("JWKS of %d RSA keys, %d tokens signed by the last one", jwksKeys, h.o.hotTokens)}
		wl.tokens, err = mint(ctx, fx.jwks50, h.o.hotTokens, "bench-agent", hotScope)
	default:
		return nil, fmt.Errorf("unknown workload %q", name)
	}
	return wl, err
}

// startServers starts the do-nothing server and the workload's mcpauthz
// servers and connects to each.
func (h *harness) startServers(ctx context.Context, wl *workload) ([]*server, error) {
	var servers []*server
	fail := func(err error) ([]*server, error) {
		for _, s := range servers {
			s.close()
		}
		return nil, err
	}
	p, addr, err := startListeningChild(ctx, "do-nothing server", h.self, []string{"--addr", "127.0.0.1:0"}, []string{roleEnv + "=noop"})
	if err != nil {
		return fail(err)
	}
	h.children.add(p)
	noop := &server{name: "do-nothing", kind: "noop", expect: loadgen.OutcomeAllow, proc: p}
	servers = append(servers, noop)
	if err := h.connect(ctx, noop, addr); err != nil {
		return fail(err)
	}
	for i, v := range wl.variants {
		dir := filepath.Join(h.tmp, wl.name+"-"+strconv.Itoa(i))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fail(err)
		}
		policyDir := ""
		if v.tools > 0 {
			if policyDir, err = writePolicy(dir, v.tools); err != nil {
				return fail(err)
			}
		}
		p, addr, err := startMCPAuthz(ctx, v.name, h.bin, h.o.serverEnv, func(grpcAddr, httpAddr string) (string, error) {
			path := filepath.Join(dir, "mcpauthz.yaml")
			return path, writeConfig(path, serverConfig{grpcAddr: grpcAddr, httpAddr: httpAddr, issuer: wl.issuer.URL, policyDir: policyDir, noDecisionCache: v.noDecisionCache, noListFilter: v.noListFilter})
		})
		if err != nil {
			return fail(err)
		}
		h.children.add(p)
		s := &server{name: v.name, kind: "mcpauthz", expect: wl.expect, proc: p}
		servers = append(servers, s)
		if err := h.connect(ctx, s, addr); err != nil {
			return fail(err)
		}
		// Ready (the policy compiled, the keys fetched) and connected, no
		// check yet: what an idle replica holds.
		if s.idle, err = loadgen.ReadMemory(p.pid()); err != nil {
			return fail(err)
		}
	}
	return servers, nil
}

func (h *harness) connect(ctx context.Context, s *server, addr string) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conns, err := loadgen.Dial(cctx, addr, h.o.conns)
	if err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	s.conns = conns
	for _, c := range conns {
		s.clients = append(s.clients, authv3.NewAuthorizationClient(c))
	}
	return nil
}

// round runs one round against s.
func (h *harness) round(ctx context.Context, s *server, wl *workload, warmup, duration time.Duration, auth func(int, uint64) (string, bool)) (*loadgen.RoundResult, error) {
	prefix, suffix := toolCall(wl.tool)
	res, err := loadgen.Run(ctx, loadgen.Round{
		Clients: s.clients, Concurrency: h.o.concurrency, Warmup: warmup, Duration: duration,
		Template: checkTemplate(), BodyPrefix: prefix, BodySuffix: suffix,
		Authorization: auth, Expect: s.expect, ServerPID: s.proc.pid(),
	})
	if !s.proc.alive() {
		return res, s.proc.failure()
	}
	return res, err
}

// fixedPool cycles through tokens; caller c starts at its own offset.
func fixedPool(tokens []string) func(int, uint64) (string, bool) {
	n := uint64(len(tokens))
	return func(c int, seq uint64) (string, bool) { return tokens[(uint64(c)+seq)%n], true }
}

// onceEach hands out every token once, then reports exhaustion; with wrap
// it starts over instead (for the do-nothing server, which verifies
// nothing).
func onceEach(tokens []string, wrap bool) func(int, uint64) (string, bool) {
	var next atomic.Uint64
	n := uint64(len(tokens))
	return func(int, uint64) (string, bool) {
		i := next.Add(1) - 1
		if i >= n {
			if !wrap {
				return "", false
			}
			i %= n
		}
		return tokens[i], true
	}
}

func (h *harness) runWorkload(ctx context.Context, wl *workload) (*loadgen.Workload, error) {
	h.progressf("[%s] starting the servers ...", wl.name)
	servers, err := h.startServers(ctx, wl)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, s := range servers {
			s.close()
		}
	}()
	out := &loadgen.Workload{Name: wl.name, Description: wl.desc}
	cold := newColdPools(h, wl, servers)
	for r := range h.o.rounds {
		for _, s := range servers {
			var auth func(int, uint64) (string, bool)
			if wl.tokens != nil {
				auth = fixedPool(wl.tokens)
			} else if auth, err = cold.before(ctx, s, r); err != nil {
				break
			}
			var res *loadgen.RoundResult
			res, err = h.round(ctx, s, wl, h.o.warmup, h.o.duration, auth)
			if res != nil {
				s.rounds = append(s.rounds, res)
			}
			if err != nil {
				break
			}
			cold.after(s, r, res)
			h.progressf("[%s] round %d/%d %-20s %8.0f checks/s  p99 %-8s  server CPU/check %-8s  %s",
				wl.name, r+1, h.o.rounds, s.name, res.Rate(), loadgen.FormatLatency(us(res.Latency.Quantile(0.99))),
				loadgen.FormatLatency(us(res.ServerCPU)/float64(max(res.Checks, 1))), unexpectedNote(res))
		}
		if err != nil {
			break
		}
	}
	out.Notes = append(out.Notes, cold.notes...)
	var noop loadgen.Server
	for _, s := range servers {
		mem, merr := loadgen.ReadMemory(s.proc.pid())
		if merr != nil && err == nil {
			err = fmt.Errorf("%s: %w", s.name, merr)
		}
		sum := loadgen.Summarize(s.name, s.kind, s.expect, s.rounds, mem)
		sum.IdleRSSBytes = s.idle.RSS
		out.Servers = append(out.Servers, sum)
		if s.kind == "noop" {
			noop = sum
		} else {
			out.Ratios = append(out.Ratios, loadgen.Compare(sum, noop))
		}
	}
	if (wl.name == "tools1000" || wl.name == "listfilter") && len(out.Servers) == 3 {
		out.Ratios = append(out.Ratios, loadgen.Compare(out.Servers[2], out.Servers[1]))
	}
	return out, err
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func unexpectedNote(r *loadgen.RoundResult) string {
	if r.Unexpected == 0 {
		return ""
	}
	return fmt.Sprintf("!!! %d UNEXPECTED answers, e.g. %s", r.Unexpected, strings.Join(r.Examples, "; "))
}

// coldHeadroom multiplies the expected number of checks of a cold round.
const coldHeadroom = 1.5

// coldPools pre-mints a fresh token for every check of the cold workload.
// Minting (an RSA signature, ~1-2 ms of CPU) is far slower than checking,
// so tokens are minted between rounds, enough for the round: the rate is
// first measured in a short calibration burst against mcpauthz, then
// taken from the previous rounds, times coldHeadroom. A round whose pool
// runs out is cut short (and reported). The do-nothing server verifies
// nothing, so its rounds reuse the last pool, wrapping around.
type coldPools struct {
	h       *harness
	wl      *workload
	servers []*server
	enabled bool
	pool    []string
	rate    float64
	notes   []string
}

func newColdPools(h *harness, wl *workload, servers []*server) *coldPools {
	return &coldPools{h: h, wl: wl, servers: servers, enabled: wl.tokens == nil}
}

func (c *coldPools) before(ctx context.Context, s *server, round int) (func(int, uint64) (string, bool), error) {
	h := c.h
	if c.pool == nil {
		// Calibrate against mcpauthz (after a short warm-up) with a pool
		// that also serves the first do-nothing round.
		n := max(4000, 200*h.o.concurrency)
		h.progressf("[%s] minting %d tokens to calibrate ...", c.wl.name, n)
		pool, err := mint(ctx, c.wl.issuer, n, "bench-cold-calibration", hotScope)
		if err != nil {
			return nil, err
		}
		var m *server
		for _, sv := range c.servers {
			if sv.kind == "mcpauthz" {
				m = sv
			}
		}
		if m == nil {
			return nil, errors.New("cold: no mcpauthz server")
		}
		const calWarmup = 300 * time.Millisecond
		res, err := h.round(ctx, m, c.wl, calWarmup, 3*time.Second, onceEach(pool, false))
		if res != nil {
			// The calibration's answers count for correctness, not in the
			// measurements.
			m.rounds = append(m.rounds, &loadgen.RoundResult{Answers: res.Answers, Unexpected: res.Unexpected, Examples: res.Examples})
		}
		switch {
		case errors.Is(err, loadgen.ErrExhaustedInWarmup):
			c.rate = float64(n) / calWarmup.Seconds()
		case err != nil:
			return nil, fmt.Errorf("calibration: %w", err)
		default:
			c.rate = res.Rate()
		}
		c.pool = pool
		note := ""
		if res != nil {
			note = unexpectedNote(res)
		}
		h.progressf("[%s] calibration: mcpauthz %.0f checks/s with a fresh token per check %s", c.wl.name, c.rate, note)
	}
	if s.kind == "noop" {
		return onceEach(c.pool, true), nil
	}
	need := int(math.Ceil(c.rate*(h.o.warmup+h.o.duration).Seconds()*coldHeadroom)) + 4*h.o.concurrency
	if need > h.o.coldMax {
		c.notes = append(c.notes, fmt.Sprintf("round %d: %d tokens needed, capped at --cold-max-tokens %d", round+1, need, h.o.coldMax))
		need = h.o.coldMax
	}
	c.pool = nil // let the previous pool go before minting the next
	t0 := time.Now()
	h.progressf("[%s] minting %d fresh tokens for %s round %d (at %.0f checks/s + %.0f%%) ...", c.wl.name, need, s.name, round+1, c.rate, 100*(coldHeadroom-1))
	pool, err := mint(ctx, c.wl.issuer, need, fmt.Sprintf("bench-cold-r%d", round), hotScope)
	if err != nil {
		return nil, err
	}
	h.progressf("[%s] minted in %s", c.wl.name, time.Since(t0).Round(100*time.Millisecond))
	c.pool = pool
	return onceEach(pool, false), nil
}

func (c *coldPools) after(s *server, round int, res *loadgen.RoundResult) {
	if !c.enabled || s.kind == "noop" {
		return
	}
	c.rate = max(c.rate, res.Rate())
	if res.Exhausted {
		msg := fmt.Sprintf("round %d: the pool of %d fresh tokens ran out %.1fs into the %s window: the window was cut short there (the numbers remain valid, over a shorter window)",
			round+1, len(c.pool), res.ExhaustedAfter.Seconds(), c.h.o.duration)
		c.notes = append(c.notes, msg)
		c.h.problems = append(c.h.problems, "cold "+msg)
	}
}

// profile runs one round of the --profile-workload (hot by default)
// against the in-process mcpauthz with the CPU profiler on.
func (h *harness) profile(ctx context.Context) (*loadgen.Workload, error) {
	name := cmp.Or(h.o.profileLoad, "hot")
	switch name {
	case "hot", "deny", "forbidden": // one server, a fixed token pool
	default:
		return nil, fmt.Errorf("--profile-workload %q: want hot, deny or forbidden", name)
	}
	wl, err := h.workload(ctx, name)
	if err != nil {
		return nil, err
	}
	profile, err := filepath.Abs(h.o.cpuprofile)
	if err != nil {
		return nil, err
	}
	addrs, err := freeLoopbackAddrs(2)
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(h.tmp, "inproc.yaml")
	if err := writeConfig(cfg, serverConfig{grpcAddr: addrs[0], httpAddr: addrs[1], issuer: wl.issuer.URL}); err != nil {
		return nil, err
	}
	if h.root == "" {
		return nil, errors.New("--cpuprofile builds ./cmd/mcpauthz-bench/inproc: run from the mcpauthz module")
	}
	h.progressf("[profile] building the in-process mcpauthz ...")
	bin, err := build(ctx, h.root, h.tmp, "./cmd/mcpauthz-bench/inproc", "")
	if err != nil {
		return nil, err
	}
	h.progressf("[profile] %s workload against the in-process mcpauthz, CPU profile to %s ...", name, profile)
	p, addr, err := startListeningChild(ctx, "in-process mcpauthz", bin, []string{"--config", cfg, "--cpuprofile", profile}, nil)
	if err != nil {
		return nil, err
	}
	h.children.add(p)
	s := &server{name: "mcpauthz in-process", kind: "mcpauthz-inproc", expect: wl.expect, proc: p}
	defer s.close()
	if err := h.connect(ctx, s, addr); err != nil {
		return nil, err
	}
	res, err := h.round(ctx, s, wl, h.o.warmup, h.o.duration, fixedPool(wl.tokens))
	if res != nil {
		s.rounds = append(s.rounds, res)
	}
	mem, _ := loadgen.ReadMemory(p.pid())
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
	p.stop() // SIGTERM: the profile is written
	out := &loadgen.Workload{
		Name: "profile", Description: name + ", against an in-process mcpauthz with the CPU profiler on",
		Servers: []loadgen.Server{loadgen.Summarize(s.name, s.kind, s.expect, s.rounds, mem)},
		Notes:   []string{"CPU profile written to " + profile + " (go tool pprof -top -cum " + profile + ")"},
	}
	return out, err
}

// repoInfo returns the module root (when the working directory is inside
// the mcpauthz module) and its git revision.
func repoInfo(ctx context.Context) (root, rev string) {
	rev = "unknown"
	out, err := exec.CommandContext(ctx, goCmd(), "env", "GOMOD").Output()
	if err != nil {
		return "", rev
	}
	gomod := strings.TrimSpace(string(out))
	b, err := os.ReadFile(gomod)
	if err != nil || !bytes.HasPrefix(b, []byte("module "+modulePath+"\n")) {
		return "", rev
	}
	root = filepath.Dir(gomod)
	if out, err := exec.CommandContext(ctx, "git", "-C", root, "rev-parse", "--short=12", "HEAD").Output(); err == nil {
		rev = strings.TrimSpace(string(out))
		if st, err := exec.CommandContext(ctx, "git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
			rev += "-dirty"
		}
	}
	return root, rev
}

func goCmd() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}

// serverTags are the build tags of the server binary `make build` and the
// container image build: the slim build, without `serve --dev`'s
// authorization server and `validate --envoy`.
const serverTags = "mcpauthz_slim"

// build builds the main package pkg of the module at root into dir, as
// `make build` does (static, trimmed paths, the server's build tags) but
// keeping the symbol table; rev, if set, is the version mcpauthz reports.
func build(ctx context.Context, root, dir, pkg, rev string) (string, error) {
	out := filepath.Join(dir, filepath.Base(pkg))
	args := []string{"build", "-trimpath", "-tags", serverTags, "-o", out}
	if rev != "" {
		args = append(args, "-ldflags", "-X main.version="+rev)
	}
	cmd := exec.CommandContext(ctx, goCmd(), append(args, pkg)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, stderr.String())
	}
	return out, nil
}

// writeReports prints the table and writes the JSON report.
func writeReports(rep *loadgen.Report, o *options, stdout io.Writer) error {
	if err := loadgen.WriteText(stdout, rep); err != nil {
		return err
	}
	if o.jsonPath == "" {
		return nil
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(o.jsonPath, append(b, '\n'), 0o644)
}
