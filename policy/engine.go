package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/print"

	"github.com/mcpauthz/mcpauthz/internal/problem"
)

// The documents the engine reads. See rego/README.md for the contract.
const (
	decisionQuery        = "data.mcp.authz.decision"
	scopesSupportedQuery = "data.mcp.authz.scopes_supported"
	scopePrefixesQuery   = "data.mcp.authz.scope_prefixes"
	baselineScopesQuery  = "data.mcp.authz.baseline_scopes"
	knownToolsQuery      = "data.mcp.authz.known_tools"
)

// DefaultEvalTimeout bounds one evaluation when Options.EvalTimeout is zero.
const DefaultEvalTimeout = 100 * time.Millisecond

var (
	// ErrNotReady is returned by Decide before a policy has been loaded.
	ErrNotReady = errors.New("policy: no policy loaded")
	// ErrInvalidDecision is wrapped by the error of Decide when
	// data.mcp.authz.decision is undefined or not a decision document.
	ErrInvalidDecision = errors.New("invalid decision")
)

// Options configures an Engine. The zero value is usable.
type Options struct {
	// Logger receives load, reload and print() output; nil discards it.
	Logger *slog.Logger
	// EvalTimeout bounds one evaluation (one JSON-RPC message); zero selects
	// DefaultEvalTimeout, a negative value disables the bound (the caller's
	// ctx still applies).
	EvalTimeout time.Duration
	// OnReload, if set, is called after every Load attempt, including those
	// made by Watch, and after every bundle RunBundle receives or fails to
	// receive (not after a 304 Not Modified, except the first after failed
	// polls, which reports the active bundle as current again): with the
	// new revision and nil on success, or with the revision of the files or
	// bundle it tried ("" if they could not be read or downloaded) and the
	// error, an *ActivationError when the policy compiled but failed its
	// activation check (see ReloadResult). Watch also reports a success
	// when the files return to the serving content after a failed change.
	// It runs synchronously while loads are serialised; keep it cheap.
	OnReload func(revision string, err error)
	// OnActivate, if set, is called with every generation that becomes
	// current, in the order they are published, before any Decide can
	// use it. It runs synchronously while loads are serialised: derive
	// what depends on the policy here, and keep it cheap.
	OnActivate func(*Generation)
	// DecisionCacheSize bounds the decision cache (see cache.go) by
	// entries: zero selects DefaultDecisionCacheSize, -1 disables it. The
	// list-visibility cache (see visible.go) has the same bounds, and is
	// disabled with it.
	DecisionCacheSize int
	// DecisionCacheBytes bounds the memory of the decision cache's entries
	// (and, separately, of the visibility cache's): zero selects
	// DefaultDecisionCacheBytes.
	DecisionCacheBytes int
	// Now is the clock that expires cached decisions and stamps
	// LastReload; nil means time.Now.
	Now func() time.Time
}

// Validate reports every problem of o as a *problem.Error
// ("decision_cache_size", "decision_cache_bytes"). New assumes valid
// options.
func (o Options) Validate() error {
	var errs problem.List
	if o.DecisionCacheSize < -1 || o.DecisionCacheSize > 10_000_000 {
		errs.Add("decision_cache_size", "must be -1 (disabled), 0 (default %d) or a size up to 10000000", DefaultDecisionCacheSize)
	}
	if o.DecisionCacheBytes != 0 && (o.DecisionCacheBytes < 4096 || o.DecisionCacheBytes > 1<<34) {
		errs.Add("decision_cache_bytes", "must be 0 (default %d) or from 4096 to %d bytes", DefaultDecisionCacheBytes, int64(1)<<34)
	}
	return errs.Err()
}

// Engine evaluates the Rego policy. It is safe for concurrent use: Decide
// runs lock-free against an immutable compiled generation, which Load and
// Watch replace atomically.
type Engine struct {
	logger     *slog.Logger
	timeout    time.Duration
	onReload   func(string, error)
	onActivate func(*Generation)
	cacheMax   int
	cacheBytes int
	now        func() time.Time

	// Evictions of the decision and visibility caches, across
	// generations (each has caches of its own).
	decisionEvictions   atomic.Uint64
	visibilityEvictions atomic.Uint64

	loadMu     sync.Mutex // serialises Load so generations are published in order
	gen        atomic.Pointer[Generation]
	readyCh    chan struct{} // closed at the first activation
	lastReload atomic.Pointer[Reload]
}

// Reload is the outcome of one load attempt: a Load, a change Watch saw, a
// bundle RunBundle received or failed to receive. See Engine.LastReload.
type Reload struct {
	// Time is when the attempt ended.
	Time time.Time
	// Revision is the revision of what was tried ("" if it could not be
	// read or downloaded); on success, the revision that now serves.
	Revision string
	// Err is nil on success; an *ActivationError when the policy compiled
	// but failed its activation check.
	Err error
}

// Result is ReloadSuccess, ReloadError or ReloadRefused.
func (r Reload) Result() string { return ReloadResult(r.Err) }

// Generation is one compiled policy with everything read from it at load
// time. It is never modified once published, so a request that holds one
// decides against exactly one policy.
type Generation struct {
	timeout time.Duration
	now     func() time.Time

	query           rego.PreparedEvalQuery
	visible         visibility // see visible.go
	itemSets        *itemSets  // input.list.items of recent lists
	visibleErr      error      // why visible could not be prepared
	sum             [32]byte
	revision        string
	scopesSupported []string
	scopePrefixes   []string
	baselineScopes  []string
	tools           []string
	plan            cachePlan
	cache           *decisionCache        // nil: decisions are not cached
	visCache        *boundedCache[[]byte] // nil: visibility is not cached; bit i: item i visible
}

// New returns an Engine without a policy; call Load before Decide.
func New(opts Options) *Engine {
	e := &Engine{
		logger:     opts.Logger,
		timeout:    opts.EvalTimeout,
		onReload:   opts.OnReload,
		onActivate: opts.OnActivate,
		cacheMax:   opts.DecisionCacheSize,
		cacheBytes: opts.DecisionCacheBytes,
		now:        opts.Now,
		readyCh:    make(chan struct{}),
	}
	if e.cacheMax == 0 {
		e.cacheMax = DefaultDecisionCacheSize
	}
	if e.cacheBytes == 0 {
		e.cacheBytes = DefaultDecisionCacheBytes
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.logger == nil {
		e.logger = slog.New(slog.DiscardHandler)
	}
	if e.timeout == 0 {
		e.timeout = DefaultEvalTimeout
	}
	return e
}

// Load reads, compiles, prepares and checks (its Rego tests and the smoke
// inputs, see activation.go) the policy of src and makes it the current
// one. On any error the current policy stays in place and the error lists
// every problem found, Rego errors with their file:line; a policy that
// compiles but fails the check gives an *ActivationError. Loading files
// identical to the current policy keeps it (and reports success).
func (e *Engine) Load(ctx context.Context, src Source) error {
	snap, err := readSource(src, true)
	if err != nil {
		e.reloaded("", err)
		return err
	}
	return e.loadSnapshot(ctx, src, snap)
}

func (e *Engine) loadSnapshot(ctx context.Context, src Source, snap *snapshot) error {
	return e.publish(ctx, snap.sum, snap.revision(), func() (*Generation, error) {
		return build(ctx, src, snap, e.logger, e.timeout)
	}, "policy loaded", slog.Int("files", len(snap.files)))
}

// publish makes the generation mk builds current, unless the content
// identified by sum is that of the current generation, which it keeps. It
// reports the outcome to OnReload: with the new (or kept) revision, or with
// revision, the revision of the rejected content, and the error. Both local
// files (Load, Watch) and bundles (RunBundle) go through it, so publication
// is serialised across them.
func (e *Engine) publish(ctx context.Context, sum [32]byte, revision string, mk func() (*Generation, error), msg string, attrs ...slog.Attr) error {
	e.loadMu.Lock()
	defer e.loadMu.Unlock()
	if cur := e.gen.Load(); cur != nil && cur.sum == sum {
		// Same content, same policy: keep the compiled generation.
		e.reloaded(cur.revision, nil)
		return nil
	}
	g, err := mk()
	if err != nil {
		e.reloaded(revision, err)
		return err
	}
	g.timeout, g.now = e.timeout, e.now
	cacheAttr := slog.String("decision_cache", "off: "+g.plan.why)
	if g.plan.cacheable && e.cacheMax > 0 {
		g.cache = newBoundedCache[Decision](e.cacheMax, e.cacheBytes, &e.decisionEvictions)
		g.visCache = newBoundedCache[[]byte](e.cacheMax, e.cacheBytes, &e.visibilityEvictions)
		cacheAttr = slog.String("decision_cache", "on: "+g.plan.describe())
	}
	if e.onActivate != nil {
		e.onActivate(g)
	}
	first := e.gen.Swap(g) == nil
	if first {
		close(e.readyCh)
	}
	e.logger.LogAttrs(ctx, slog.LevelInfo, msg, append([]slog.Attr{slog.String("revision", g.revision), cacheAttr}, attrs...)...)
	e.reloaded(g.revision, nil)
	return nil
}

func (e *Engine) reloaded(revision string, err error) {
	e.lastReload.Store(&Reload{Time: e.now(), Revision: revision, Err: err})
	if e.onReload != nil {
		e.onReload(revision, err)
	}
}

// Compile checks the policy of src exactly as Load would, without making it
// current. Use it to validate configuration.
func Compile(ctx context.Context, src Source) error {
	snap, err := readSource(src, true)
	if err != nil {
		return err
	}
	_, err = build(ctx, src, snap, slog.New(slog.DiscardHandler), DefaultEvalTimeout)
	return err
}

// Ready reports whether a policy has been loaded (by Load, or by RunBundle's
// first activation). Once true it stays true.
func (e *Engine) Ready() bool { return e.gen.Load() != nil }

// ReadyChan is closed when the first policy becomes current.
func (e *Engine) ReadyChan() <-chan struct{} { return e.readyCh }

// WaitReady blocks until a policy is loaded or ctx is done.
func (e *Engine) WaitReady(ctx context.Context) error {
	select {
	case <-e.readyCh:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// LastReload returns the outcome of the last load attempt, and false
// before the first. Unlike Revision, which names what serves, it tells
// whether the last change was taken: after a refused or broken change the
// last good policy keeps serving, and LastReload says why the change did
// not.
func (e *Engine) LastReload() (Reload, bool) {
	r := e.lastReload.Load()
	if r == nil {
		return Reload{}, false
	}
	return *r, true
}

// CacheStats describes one of the engine's caches.
type CacheStats struct {
	// Entries and Bytes are the current generation's (Bytes as estimated
	// when the entries were stored).
	Entries, Bytes int
	// Evictions counts the entries dropped to stay within the bounds,
	// across generations, since New.
	Evictions uint64
}

// DecisionCacheStats describes the decision cache.
func (e *Engine) DecisionCacheStats() CacheStats {
	st := CacheStats{Evictions: e.decisionEvictions.Load()}
	if g := e.gen.Load(); g != nil && g.cache != nil {
		st.Entries, st.Bytes = g.cache.len(), g.cache.size()
	}
	return st
}

// VisibilityCacheStats describes the list-visibility cache.
func (e *Engine) VisibilityCacheStats() CacheStats {
	st := CacheStats{Evictions: e.visibilityEvictions.Load()}
	if g := e.gen.Load(); g != nil && g.visCache != nil {
		st.Entries, st.Bytes = g.visCache.len(), g.visCache.size()
	}
	return st
}

// Current returns the current generation, nil before the first load.
func (e *Engine) Current() *Generation { return e.gen.Load() }

// Revision identifies the current policy: for local files, the first 12
// hex digits of a SHA-256 over the policy files' names and contents; for a
// bundle, its manifest's revision or, if that is empty, the first 12 hex
// digits of a SHA-256 over its content. It is "" before the first
// successful Load or bundle activation.
func (e *Engine) Revision() string { return e.gen.Load().Revision() }

// ScopesSupported returns data.mcp.authz.scopes_supported of the current
// policy, read once at load time; it is empty if the policy does not define
// it. The caller owns the returned slice.
func (e *Engine) ScopesSupported() []string { return e.gen.Load().ScopesSupported() }

// ScopePrefixes returns data.mcp.authz.scope_prefixes of the current policy,
// read once at load time; it is empty if the policy does not define it. The
// caller owns the returned slice.
func (e *Engine) ScopePrefixes() []string { return e.gen.Load().ScopePrefixes() }

// Tools returns data.mcp.authz.known_tools of the current policy: the tool
// names its data names literally (the only values the metrics' tool label
// takes). It is empty if the policy does not define it.
func (e *Engine) Tools() []string { return e.gen.Load().Tools() }

// Revision identifies the generation (see Engine.Revision); "" for nil.
func (g *Generation) Revision() string {
	if g == nil {
		return ""
	}
	return g.revision
}

// ScopesSupported is data.mcp.authz.scopes_supported of the generation,
// empty if the policy does not define it. The caller owns the slice.
func (g *Generation) ScopesSupported() []string {
	if g == nil {
		return nil
	}
	return clone(g.scopesSupported)
}

// ScopePrefixes is data.mcp.authz.scope_prefixes of the generation, empty
// if the policy does not define it. The caller owns the slice.
func (g *Generation) ScopePrefixes() []string {
	if g == nil {
		return nil
	}
	return clone(g.scopePrefixes)
}

// BaselineScopes is data.mcp.authz.baseline_scopes of the generation: the
// scopes every client needs, asked for in every 401 challenge. The caller
// owns the slice.
func (g *Generation) BaselineScopes() []string {
	if g == nil {
		return nil
	}
	return clone(g.baselineScopes)
}

// Tools is data.mcp.authz.known_tools of the generation: the tool names its
// data names literally. The caller owns the slice.
func (g *Generation) Tools() []string {
	if g == nil {
		return nil
	}
	return clone(g.tools)
}

func clone(s []string) []string {
	if s == nil {
		return nil
	}
	return append([]string(nil), s...)
}

// build compiles a snapshot into a generation. It never touches the engine.
func build(ctx context.Context, src Source, snap *snapshot, logger *slog.Logger, evalTimeout time.Duration) (*Generation, error) {
	sfs := &snapshotFS{base: src.FS, files: snap.files, read: map[string]bool{}}
	res, err := loader.NewFileLoader().
		WithFS(sfs).
		WithRegoVersion(ast.RegoV1).
		WithProcessAnnotation(true).
		Filtered(src.Paths, newFilter(true))
	if err != nil {
		return nil, fmt.Errorf("policy: %w", errors.Join(flatten(err)...))
	}
	if err := sfs.complete(); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return newGeneration(ctx, res.ParsedModules(), res.Documents, snap.sum, snap.revision(), logger, evalTimeout)
}

// newGeneration compiles parsed modules and data documents into a
// generation: the one compile path for local files and bundles. It checks
// that data.mcp.authz.decision is defined, prepares it, reads
// scopes_supported and scope_prefixes, and runs the activation check (see
// activation.go) with the modules' tests. Test modules (*_test.rego) are
// compiled for the check only, never into the decision. sum identifies the
// content (see Engine.publish) and revision names it; evalTimeout is the
// engine's evaluation bound. It never touches the engine.
func newGeneration(ctx context.Context, modules map[string]*ast.Module, docs map[string]any, sum [32]byte, revision string, logger *slog.Logger, evalTimeout time.Duration) (*Generation, error) {
	modules, tests := splitTests(modules)
	store := inmem.NewFromObjectWithOpts(docs, inmem.OptReturnASTValuesOnRead(true))
	compiler, err := compile(ctx, store, modules)
	if err != nil {
		return nil, err
	}
	if len(compiler.GetRules(ast.MustParseRef(decisionQuery))) == 0 {
		return nil, fmt.Errorf("policy: no rule defines %s", decisionQuery)
	}

	hook := printHook{logger: logger}
	g := &Generation{sum: sum, revision: revision, itemSets: new(itemSets)}
	g.query, err = rego.New(
		rego.ParsedQuery(ast.MustParseBody(decisionQuery)),
		rego.Compiler(compiler),
		rego.Store(store),
		rego.StoreReadAST(true),
		rego.GenerateJSON(rawValue),
		rego.EnablePrintStatements(true),
		rego.PrintHook(hook),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("policy: prepare %s: %w", decisionQuery, errors.Join(flatten(err)...))
	}
	g.visible, err = prepareVisible(ctx, modules, store, func(c *ast.Compiler) bool {
		return len(c.GetRules(ast.MustParseRef(ownVisibleQuery))) > 0 || hasDocument(docs, "mcp", "authz", "visible")
	},
		rego.StoreReadAST(true),
		rego.GenerateJSON(rawValue),
		rego.EnablePrintStatements(true),
		rego.PrintHook(hook),
	)
	if err != nil {
		// Calls can still be decided (or fail on their own): only list
		// filtering is impossible, and it fails closed (see Visible).
		g.visibleErr = fmt.Errorf("policy: list visibility cannot be decided with this policy: %w", errors.Join(flatten(err)...))
		logger.LogAttrs(ctx, slog.LevelWarn, "policy loaded without list visibility", slog.String("revision", revision), slog.Any("error", g.visibleErr))
	}
	if g.scopesSupported, err = readStrings(ctx, compiler, store, scopesSupportedQuery); err != nil {
		return nil, err
	}
	if g.scopePrefixes, err = readStrings(ctx, compiler, store, scopePrefixesQuery); err != nil {
		return nil, err
	}
	if g.baselineScopes, err = readStrings(ctx, compiler, store, baselineScopesQuery); err != nil {
		return nil, err
	}
	if g.tools, err = readStrings(ctx, compiler, store, knownToolsQuery); err != nil {
		return nil, err
	}
	g.plan = planCache(compiler.Modules)
	if err := g.plan.resolvePreds(ctx, compiler, store); err != nil {
		return nil, err
	}
	if slices.Contains(g.plan.fields, fTokClaims) && !g.plan.claimsWhole {
		g.plan.memo = newBoundedCache[[]byte](claimsMemoSize, claimsMemoSize*(entryOverhead+64), nil)
	}
	if err := checkActivation(ctx, g, modules, tests, store, evalTimeout); err != nil {
		return nil, err
	}
	return g, nil
}

// compile compiles the modules as Rego v1, reporting every error, including
// rules that clash with documents of the data files.
func compile(ctx context.Context, store storage.Store, modules map[string]*ast.Module) (*ast.Compiler, error) {
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	defer store.Abort(ctx, txn)
	c := ast.NewCompiler().
		WithDefaultRegoVersion(ast.RegoV1).
		WithEnablePrintStatements(true).
		WithUseTypeCheckAnnotations(true).
		WithPathConflictsCheck(storage.NonEmpty(ctx, store, txn)).
		SetErrorLimit(0)
	c.Compile(modules)
	if c.Failed() {
		errs := make([]error, 0, len(c.Errors))
		for _, e := range c.Errors {
			errs = append(errs, e)
		}
		return nil, fmt.Errorf("policy: %w", errors.Join(errs...))
	}
	return c, nil
}

// readStrings evaluates a metadata rule that must be an array (or set) of
// strings; an undefined or empty rule yields nil.
func readStrings(ctx context.Context, c *ast.Compiler, store storage.Store, query string) ([]string, error) {
	rs, err := rego.New(
		rego.ParsedQuery(ast.MustParseBody(query)),
		rego.Compiler(c),
		rego.Store(store),
		rego.StoreReadAST(true),
		rego.GenerateJSON(rawValue),
	).Eval(ctx)
	if err != nil {
		return nil, fmt.Errorf("policy: evaluate %s: %w", query, err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil, nil
	}
	v, _ := rs[0].Expressions[0].Value.(ast.Value)
	out, err := stringList(v)
	if err != nil {
		return nil, fmt.Errorf("policy: %s: %w", query, err)
	}
	return out, nil
}

// rawValue is the result converter: results stay ast.Values and are turned
// into Go values by the engine, without an intermediate JSON-like form.
func rawValue(t *ast.Term, _ *rego.EvalContext) (any, error) { return t.Value, nil }

// printHook sends print() output of the policy to the debug log.
type printHook struct{ logger *slog.Logger }

func (h printHook) Print(pctx print.Context, msg string) error {
	ctx := pctx.Context
	if ctx == nil {
		ctx = context.Background()
	}
	attrs := []slog.Attr{slog.String("message", msg)}
	if pctx.Location != nil {
		attrs = append(attrs, slog.String("location", pctx.Location.String()))
	}
	h.logger.LogAttrs(ctx, slog.LevelDebug, "policy print", attrs...)
	return nil
}

// Decide evaluates the current generation (see Generation.Decide); it
// returns ErrNotReady before a policy has been loaded.
func (e *Engine) Decide(ctx context.Context, req *Request, tok *Token, msgs []MCP) ([]Decision, error) {
	return e.gen.Load().Decide(ctx, req, tok, msgs)
}

// Decide evaluates data.mcp.authz.decision once per message of msgs, with
// input.request and input.token built from req and tok, and returns one
// Decision per message in order. With no messages it evaluates once without
// input.mcp (a request to a non-MCP path). A nil req or tok leaves the
// corresponding input document out. A nil generation returns ErrNotReady.
//
// Any error (no policy loaded, an evaluation error or timeout, an undefined
// or malformed decision, input that cannot be converted) means no decision
// could be made; the caller must fail closed. An evaluation during which
// the evaluation timeout or ctx ended fails with an error wrapping
// ctx.Err() (context.DeadlineExceeded or context.Canceled), whatever OPA
// returned.
func (g *Generation) Decide(ctx context.Context, req *Request, tok *Token, msgs []MCP) ([]Decision, error) {
	if g == nil {
		return nil, ErrNotReady
	}
	d := decider{g: g, req: req, tok: tok}
	if g.cache != nil && tok != nil && tok.Expiry > 0 {
		// Cached decisions never outlive the token they were made for.
		if now := g.now().Unix(); now < tok.Expiry {
			d.cache, d.now = g.cache, now
		}
	}
	if len(msgs) == 0 {
		dec, err := d.decide(ctx, nil)
		if err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
		return []Decision{dec}, nil
	}
	out := make([]Decision, len(msgs))
	for i := range msgs {
		var err error
		if out[i], err = d.decide(ctx, &msgs[i]); err != nil {
			return nil, fmt.Errorf("policy: message %d: %w", i, err)
		}
	}
	return out, nil
}

// decider evaluates the messages of one request against one generation. It
// converts input.request and input.token to AST values once, and only when
// an evaluation is needed (a cache miss).
type decider struct {
	g     *Generation
	req   *Request
	tok   *Token
	cache *decisionCache // nil: do not use the cache
	now   int64
	buf   []byte
	pairs [][2]*ast.Term // input.request and input.token, once built
	built bool
}

func (d *decider) decide(ctx context.Context, m *MCP) (Decision, error) {
	var key [2]uint64
	if d.cache != nil {
		key, d.buf = d.cache.key(&d.g.plan, d.buf, d.req, d.tok, m)
		if dec, ok := d.cache.get(key, d.now); ok {
			return dec, nil
		}
	}
	if !d.built {
		d.built = true
		if d.req != nil {
			d.pairs = append(d.pairs, [2]*ast.Term{keyRequest, ast.NewTerm(requestValue(d.req))})
		}
		if d.tok != nil {
			v, err := tokenValue(d.tok)
			if err != nil {
				return Decision{}, fmt.Errorf("input.token: %w", err)
			}
			d.pairs = append(d.pairs, [2]*ast.Term{keyToken, ast.NewTerm(v)})
		}
	}
	pairs := d.pairs
	if m != nil {
		v, err := mcpValue(m)
		if err != nil {
			return Decision{}, fmt.Errorf("input.mcp: %w", err)
		}
		pairs = append(slices.Clip(pairs), [2]*ast.Term{keyMCP, ast.NewTerm(v)})
	}
	dec, err := d.g.eval(ctx, ast.NewObject(pairs...))
	if err != nil {
		return Decision{}, err
	}
	if d.cache != nil {
		d.cache.put(key, dec, d.tok.Expiry, decisionSize(&dec))
	}
	return dec, nil
}

// eval runs one evaluation under the engine's timeout.
func (g *Generation) eval(ctx context.Context, input ast.Value) (d Decision, err error) {
	if err := ctx.Err(); err != nil {
		return Decision{}, fmt.Errorf("evaluate: %w", err)
	}
	if g.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.timeout)
		defer cancel()
	}
	rs, err := safeEval(func() (rego.ResultSet, error) {
		return evalQuery(ctx, &g.query, rego.EvalParsedInput(input))
	})
	if err = cutShort(ctx, err); err != nil {
		return Decision{}, fmt.Errorf("evaluate: %w", err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return Decision{}, fmt.Errorf("%w: %s is undefined", ErrInvalidDecision, decisionQuery)
	}
	v, _ := rs[0].Expressions[0].Value.(ast.Value)
	d, err = decisionFromValue(v)
	if err != nil {
		return Decision{}, fmt.Errorf("%w: %w", ErrInvalidDecision, err)
	}
	d.Revision = g.revision
	return d, nil
}

// cutShort classifies how an evaluation under ctx ended. One during which
// ctx ended (the evaluation timeout or the caller's) is a timeout whatever
// OPA returned, wrapping ctx.Err(): OPA notices the end of ctx from a
// goroutine of its own, which a loaded machine may run late, and in the
// meantime builtins fail on the expired context. A failed builtin makes
// its expression undefined, not the evaluation fail, so the result may be
// a decision the policy would not have made with the time to finish (an
// undefined decision, or a deny rule that did not fire). An OPA
// cancellation without ctx ending is a timeout too.
func cutShort(ctx context.Context, err error) error {
	switch cerr := ctx.Err(); {
	case cerr != nil && err != nil:
		return fmt.Errorf("%w: %w", cerr, err)
	case cerr != nil:
		return fmt.Errorf("%w: the evaluation ran out of time", cerr)
	case topdown.IsCancel(err):
		return fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	}
	return err
}

// noMetrics is passed to every evaluation: OPA otherwise makes a metrics
// object (three maps) per evaluation and times the query, and the engine
// never reads them.
var noMetrics = metrics.NoOp()

// evalQuery evaluates pq without the per-evaluation extras of OPA the
// engine does not use: metrics, and the goroutine OPA starts for each
// evaluation to watch ctx (a callback registered on ctx cancels it
// instead).
func evalQuery(ctx context.Context, pq *rego.PreparedEvalQuery, opts ...rego.EvalOption) (rego.ResultSet, error) {
	c := topdown.NewCancel()
	stop := context.AfterFunc(ctx, c.Cancel)
	defer stop()
	return pq.Eval(ctx, append(opts, rego.EvalMetrics(noMetrics), rego.EvalExternalCancel(c))...)
}

// safeEval turns a panic during evaluation into an error: a policy or OPA
// bug must cost one request, not the process.
func safeEval(f func() (rego.ResultSet, error)) (rs rego.ResultSet, err error) {
	defer func() {
		if r := recover(); r != nil {
			rs, err = nil, fmt.Errorf("panic during evaluation: %v", r)
		}
	}()
	return f()
}
