package policy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/print"
)

// The activation check. A policy can compile and still fail every request:
// two rules that give decision different values, a builtin that errors on
// the inputs it gets, a decision that is not a decision document. Such a
// policy would turn every check into a 503. So before a generation becomes
// current it must pass its own Rego tests (the test_ rules that ship with
// it, run by OPA's tester as "opa test" runs them) and a built-in set of
// representative inputs evaluated through the very queries requests use.
// A generation that fails either is refused: the last good one keeps
// serving. See rego/README.md, "Before a policy is activated".

// ActivationTimeout bounds the whole activation check of one generation:
// its Rego tests and the smoke inputs.
const ActivationTimeout = 30 * time.Second

// minSmokeEvalTimeout is the least time one smoke evaluation gets: a
// generation is checked while the process may be busy starting or serving,
// and a cold first evaluation must not refuse it.
const minSmokeEvalTimeout = time.Second

// The reasons a generation is refused (ActivationError.Reason): a closed
// set, safe as a metric label.
const (
	// RefusedTestFailed: a test_ rule of the policy is false or undefined.
	RefusedTestFailed = "test_failed"
	// RefusedTestError: a test_ rule failed with an error, or the tests do
	// not compile with the policy.
	RefusedTestError = "test_error"
	// RefusedEvalError: evaluating a smoke input failed (a conflict
	// between rules, a builtin error, a timeout).
	RefusedEvalError = "eval_error"
	// RefusedInvalidDecision: data.mcp.authz.decision is undefined for a
	// smoke input, or not a decision document.
	RefusedInvalidDecision = "invalid_decision"
	// RefusedInvalidVisibility: list visibility is not a set of strings for
	// a smoke list.
	RefusedInvalidVisibility = "invalid_visibility"
)

// ActivationReasons returns every value ActivationError.Reason takes, so
// that metrics can pre-create their series.
func ActivationReasons() []string {
	return []string{RefusedTestFailed, RefusedTestError, RefusedEvalError, RefusedInvalidDecision, RefusedInvalidVisibility}
}

// ActivationError is the error of a policy that compiled but failed its
// activation check; the policy was not made current.
type ActivationError struct {
	// Revision is the revision of the refused policy.
	Revision string
	// Problems lists every failure, tests first (sorted by location), then
	// smoke inputs in the order they ran. It is never empty.
	Problems []ActivationProblem
}

// ActivationProblem is one failed test or smoke input.
type ActivationProblem struct {
	// Reason is one of the Refused* constants.
	Reason string
	// Check names what failed: "test data.mcp.authz_test.test_x" or
	// `input "tools/call, scoped token"`.
	Check string
	// Location is the file:line OPA reports, "" when it gives none.
	Location string
	// Message says what went wrong.
	Message string

	more int    // identical problems of further smoke inputs
	err  error  // the evaluation error, if any
	file string // of Location, to sort by
	row  int
}

func (p ActivationProblem) String() string {
	var b strings.Builder
	if p.Location != "" {
		b.WriteString(p.Location + ": ")
	}
	b.WriteString(p.Check + ": " + p.Message)
	return b.String()
}

// Error lists every problem, one a line, after a line naming the
// revision.
func (e *ActivationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "policy: revision %s refused: it compiles but fails its activation check (%d problem", e.Revision, len(e.Problems))
	if len(e.Problems) != 1 {
		b.WriteByte('s')
	}
	b.WriteByte(')')
	for _, p := range e.Problems {
		b.WriteString("\n" + p.String())
	}
	return b.String()
}

// Reason is the reason of the first problem, one of ActivationReasons.
func (e *ActivationError) Reason() string {
	if len(e.Problems) == 0 {
		return RefusedEvalError
	}
	return e.Problems[0].Reason
}

// The outcomes of one load attempt (ReloadResult), a closed set for
// metrics and readiness.
const (
	ReloadSuccess = "success"
	ReloadError   = "error"   // unreadable, does not compile, download failed
	ReloadRefused = "refused" // compiles but fails the activation check
)

// ReloadResults returns every value ReloadResult takes.
func ReloadResults() []string { return []string{ReloadSuccess, ReloadError, ReloadRefused} }

// ReloadResult classifies the error Options.OnReload receives.
func ReloadResult(err error) string {
	var ae *ActivationError
	switch {
	case err == nil:
		return ReloadSuccess
	case errors.As(err, &ae):
		return ReloadRefused
	default:
		return ReloadError
	}
}

// isTestModule reports whether a module (named by its file or bundle path)
// holds tests: those run in the activation check and are never part of the
// compiled decision.
func isTestModule(name string) bool { return strings.HasSuffix(name, "_test.rego") }

// splitTests separates the test modules from the policy's.
func splitTests(modules map[string]*ast.Module) (policy, tests map[string]*ast.Module) {
	policy = make(map[string]*ast.Module, len(modules))
	for name, m := range modules {
		if isTestModule(name) {
			if tests == nil {
				tests = map[string]*ast.Module{}
			}
			tests[name] = m
			continue
		}
		policy[name] = m
	}
	return policy, tests
}

// hasTestRules reports whether any module has a rule "opa test" would run.
func hasTestRules(modules map[string]*ast.Module) bool {
	for _, m := range modules {
		for _, r := range m.Rules {
			for _, t := range r.Head.Ref().GroundPrefix() {
				var name string
				switch v := t.Value.(type) {
				case ast.Var:
					name = string(v)
				case ast.String:
					name = string(v)
				}
				if strings.HasPrefix(name, tester.TestPrefix) || strings.HasPrefix(name, tester.SkipTestPrefix) {
					return true
				}
			}
		}
	}
	return false
}

// checkActivation runs the activation check of g: the Rego tests found in
// policy and tests (all modules of the source, as "opa test" would see
// them) against store, then the smoke inputs. evalTimeout is the engine's
// evaluation bound. It returns an *ActivationError listing every problem,
// or the error of ctx if ctx ended first.
func checkActivation(ctx context.Context, g *Generation, policy, tests map[string]*ast.Module, store storage.Store, evalTimeout time.Duration) error {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, ActivationTimeout)
	defer cancel()

	var problems []ActivationProblem
	if len(tests) > 0 || hasTestRules(policy) {
		all := make(map[string]*ast.Module, len(policy)+len(tests))
		for name, m := range policy {
			all[name] = m
		}
		for name, m := range tests {
			all[name] = m
		}
		problems = testProblems(ctx, all, store)
	}
	problems = append(problems, smoke(ctx, g, max(evalTimeout, minSmokeEvalTimeout))...)
	if err := parent.Err(); err != nil {
		return fmt.Errorf("policy: activation check: %w", err)
	}
	if len(problems) == 0 {
		return nil
	}
	return &ActivationError{Revision: g.revision, Problems: problems}
}

// testProblems runs the test_ rules of modules with OPA's tester, compiled
// as the policy is (Rego v1, print, type-check annotations, no rule
// clashing with data) against the policy's own data.
func testProblems(ctx context.Context, modules map[string]*ast.Module, store storage.Store) []ActivationProblem {
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return []ActivationProblem{{Reason: RefusedTestError, Check: "tests", Message: err.Error()}}
	}
	defer store.Abort(ctx, txn)
	compiler := ast.NewCompiler().
		WithDefaultRegoVersion(ast.RegoV1).
		WithEnablePrintStatements(true).
		WithUseTypeCheckAnnotations(true).
		WithPathConflictsCheck(storage.NonEmpty(ctx, store, txn)).
		SetErrorLimit(0)
	// One test at a time: a reload must not take the CPUs checks run on.
	ch, err := tester.NewRunner().
		SetCompiler(compiler).
		SetStore(store).
		SetModules(modules).
		SetDefaultRegoVersion(ast.RegoV1).
		SetParallel(1).
		// No per-test bound of its own (the tester's default is 5s): a
		// slow machine must not refuse a good policy; the whole check is
		// bounded by ActivationTimeout.
		SetTimeout(ActivationTimeout).
		CapturePrintOutput(true).
		RunTests(ctx, txn)
	if err != nil {
		var out []ActivationProblem
		for _, e := range flatten(err) {
			p := ActivationProblem{Reason: RefusedTestError, Check: "tests do not compile with the policy", Message: e.Error()}
			var ae *ast.Error
			if errors.As(e, &ae) && ae.Location != nil {
				p.Location, p.Message = ae.Location.String(), ae.Code+": "+ae.Message
			}
			out = append(out, p)
		}
		return out
	}
	var out []ActivationProblem
	for r := range ch { // drained to the end: the runner's goroutines exit
		if r.Skip || r.Pass() {
			continue
		}
		p := ActivationProblem{Reason: RefusedTestFailed, Check: "test " + r.Package + "." + r.Name, Message: "failed"}
		if r.Location != nil {
			p.Location, p.file, p.row = r.Location.String(), r.Location.File, r.Location.Row
		}
		if r.Error != nil {
			p.Reason = RefusedTestError
			p.Message = errorMessage(r.Error)
		} else if r.FailedAt != nil && r.FailedAt.Location != nil {
			p.Message = "failed at " + r.FailedAt.Location.String()
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b ActivationProblem) int {
		return cmp.Or(strings.Compare(a.file, b.file), cmp.Compare(a.row, b.row), strings.Compare(a.Check, b.Check))
	})
	return out
}

// errorMessage is the message of a test's evaluation error, with where in
// the policy it happened (the problem's Location is the test's own).
func errorMessage(err error) string {
	var te *topdown.Error
	if errors.As(err, &te) {
		loc := ""
		if te.Location != nil {
			loc = " (" + te.Location.String() + ")"
		}
		return te.Code + ": " + te.Message + loc
	}
	return err.Error()
}

// smokeCase is one representative request: one evaluation per message, or
// one without input.mcp when msgs is nil.
type smokeCase struct {
	name string
	req  *Request
	tok  *Token
	msgs []MCP
}

// smokeRequest is the HTTP request the smoke inputs are sent with.
func smokeRequest() *Request {
	return &Request{
		Method: "POST",
		Path:   "/mcp",
		Host:   "mcp.example.com",
		Headers: map[string]string{
			"accept":               "application/json, text/event-stream",
			"content-type":         "application/json",
			"mcp-protocol-version": "2025-11-25",
			"mcp-session-id":       "mcpauthz-activation-check",
		},
		Query: map[string][]string{},
	}
}

// smokeTokens are the callers: one granted every scope the policy
// advertises (and every tool, prompt and resource), one granted nothing (a
// step-up), one without identity claims, and an agent acting for a user.
func smokeTokens(g *Generation) []struct {
	name string
	tok  *Token
} {
	scopes := append(slices.Clone(g.scopesSupported), "tools:*", "prompts:*", "resources:*")
	slices.Sort(scopes)
	scopes = slices.Compact(scopes)
	claims := func(sub, scope string) jsontext.Value {
		return jsontext.Value(fmt.Sprintf(`{"iss":"https://as.example.com","sub":%q,"aud":"https://mcp.example.com/mcp","client_id":"mcpauthz-check","jti":"mcpauthz-activation-check","iat":1767225600,"exp":1767229200,"scope":%q}`, sub, scope))
	}
	tok := func(sub string, scopes []string) *Token {
		return &Token{
			Issuer: "https://as.example.com", Subject: sub, ClientID: "mcpauthz-check",
			Audience: []string{"https://mcp.example.com/mcp"}, Scopes: scopes,
			Claims: claims(sub, strings.Join(scopes, " ")),
		}
	}
	agent := tok("user-1", scopes)
	agent.Azp = "mcpauthz-agent"
	agent.Actors = []Actor{{Subject: "mcpauthz-agent", Issuer: "https://as.example.com", ClientID: "mcpauthz-agent"}}
	agent.MayAct = jsontext.Value(`{"client_id":"mcpauthz-agent"}`)
	return []struct {
		name string
		tok  *Token
	}{
		{"scoped token", tok("user-1", scopes)},
		{"token without scopes", tok("user-1", nil)},
		{"anonymous token", &Token{Audience: []string{}, Scopes: nil, Claims: jsontext.Value(`{}`)}},
		{"delegated token", agent},
	}
}

// smokeMessages are one message of every kind and of every method family
// the default policy distinguishes.
func smokeMessages(g *Generation) []MCP {
	const v = "2025-11-25"
	id := jsontext.Value(`1`)
	tools := []string{"mcpauthz_check_tool"}
	if len(g.tools) > 0 {
		tools = append(tools, g.tools[0])
	}
	msgs := []MCP{
		{ProtocolVersion: "", Kind: "request", ID: id, Method: "initialize", Arguments: nil},
		{ProtocolVersion: v, Kind: "notification", Method: "notifications/initialized"},
		{ProtocolVersion: v, Kind: "notification", Method: "notifications/cancelled"},
		{ProtocolVersion: v, Kind: "request", ID: id, Method: "ping"},
		{ProtocolVersion: v, Kind: "request", ID: id, Method: "tools/list"},
		{ProtocolVersion: v, Kind: "request", ID: id, Method: "prompts/list"},
		{ProtocolVersion: v, Kind: "request", ID: id, Method: "resources/list"},
		{ProtocolVersion: v, Kind: "request", ID: jsontext.Value(`"p-1"`), Method: "prompts/get", Prompt: "mcpauthz_check_prompt", Arguments: jsontext.Value(`{"topic":"x"}`)},
		{ProtocolVersion: v, Kind: "request", ID: id, Method: "resources/read", ResourceURI: "file:///srv/mcpauthz/check.txt"},
		{ProtocolVersion: v, Kind: "request", ID: id, Method: "resources/subscribe", ResourceURI: "file:///srv/mcpauthz/check.txt"},
		{ProtocolVersion: v, Kind: "request", ID: id, Method: "subscriptions/listen", ResourceURIs: []string{"file:///srv/mcpauthz/check.txt"}},
		{ProtocolVersion: v, Kind: "request", ID: id, Method: "completion/complete", Prompt: "mcpauthz_check_prompt"},
		{ProtocolVersion: v, Kind: "request", ID: id, Method: "tasks/get", TaskID: "task-1"},
		{ProtocolVersion: v, Kind: "request", ID: id, Method: "mcpauthz/unknown_method"},
		{ProtocolVersion: v, Kind: "response", ID: id},
		{ProtocolVersion: v, Kind: "stream"},
		{ProtocolVersion: v, Kind: "session_end"},
	}
	for _, t := range tools {
		msgs = append(msgs, MCP{ProtocolVersion: v, Kind: "request", ID: id, Method: "tools/call", Tool: t, Arguments: jsontext.Value(`{"query":"x","limit":1}`)})
	}
	return msgs
}

// smoke evaluates the smoke inputs through the generation's own decision
// and visibility queries, each bounded by evalTimeout, and reports every
// evaluation error, builtin error (which the policy's rules would
// otherwise silently turn into undefined) and malformed decision or
// visibility. A denial is fine: the policy may deny anything.
func smoke(ctx context.Context, g *Generation, evalTimeout time.Duration) []ActivationProblem {
	var cases []smokeCase
	for _, t := range smokeTokens(g) {
		for _, m := range smokeMessages(g) {
			name := m.Method
			if name == "" {
				name = m.Kind
			}
			if m.Tool != "" {
				name += " " + m.Tool
			}
			cases = append(cases, smokeCase{name: name + ", " + t.name, req: smokeRequest(), tok: t.tok, msgs: []MCP{m}})
		}
	}
	tok := smokeTokens(g)[0].tok
	cases = append(cases,
		smokeCase{name: "a request to a non-MCP path", req: &Request{Method: "GET", Path: "/healthz", Host: "mcp.example.com", Headers: map[string]string{}, Query: map[string][]string{}}, tok: tok},
		smokeCase{name: "a batch of tools/call and ping (2025-03-26)", req: smokeRequest(), tok: tok, msgs: []MCP{
			{ProtocolVersion: "2025-03-26", Kind: "request", ID: jsontext.Value(`1`), Method: "tools/call", Tool: "mcpauthz_check_tool", Arguments: jsontext.Value(`{}`)},
			{ProtocolVersion: "2025-03-26", Kind: "request", ID: jsontext.Value(`2`), Method: "ping"},
		}},
	)

	checks := make([]func() (ActivationProblem, bool), 0, len(cases)+8)
	for _, c := range cases {
		checks = append(checks, func() (ActivationProblem, bool) { return smokeDecide(ctx, g, c, evalTimeout) })
	}
	if g.visibleErr == nil {
		for _, t := range smokeTokens(g)[:2] {
			for _, kind := range []string{ListTools, ListPrompts, ListResources, ListResourceTemplates} {
				checks = append(checks, func() (ActivationProblem, bool) { return smokeVisible(ctx, g, t.name, t.tok, kind, evalTimeout) })
			}
		}
	}
	var out []ActivationProblem
	same := map[string]int{} // problem text without the input → index in out
	for i, check := range checks {
		p, ok := check()
		if ok {
			continue
		}
		if errors.Is(p.err, context.DeadlineExceeded) {
			// A policy this slow would time out on the others too; do not
			// spend the check's whole budget proving it.
			if rest := len(checks) - i - 1; rest > 0 {
				p.Message += fmt.Sprintf(" (%d more inputs not evaluated)", rest)
			}
			out = append(out, p)
			break
		}
		// The same fault usually fails every input: report it once, with
		// how many inputs it failed.
		key := p.Reason + "\x00" + p.Location + "\x00" + p.Message
		if j, seen := same[key]; seen {
			out[j].more++
			continue
		}
		same[key] = len(out)
		out = append(out, p)
	}
	for i := range out {
		if n := out[i].more; n > 0 {
			out[i].Check += fmt.Sprintf(" and %d more", n)
		}
	}
	return out
}

// smokeDecide evaluates one smoke case as Decide would, without the
// decision cache.
func smokeDecide(ctx context.Context, g *Generation, c smokeCase, evalTimeout time.Duration) (ActivationProblem, bool) {
	p := ActivationProblem{Check: fmt.Sprintf("input %q", c.name)}
	tv, err := tokenValue(c.tok)
	if err != nil {
		p.Reason, p.Message = RefusedEvalError, err.Error()
		return p, false
	}
	base := [][2]*ast.Term{{keyRequest, ast.NewTerm(requestValue(c.req))}, {keyToken, ast.NewTerm(tv)}}
	inputs := []ast.Value{ast.NewObject(base...)}
	if len(c.msgs) > 0 {
		inputs = inputs[:0]
		for i := range c.msgs {
			mv, err := mcpValue(&c.msgs[i])
			if err != nil {
				p.Reason, p.Message = RefusedEvalError, err.Error()
				return p, false
			}
			inputs = append(inputs, ast.NewObject(append(slices.Clone(base), [2]*ast.Term{keyMCP, ast.NewTerm(mv)})...))
		}
	}
	for _, in := range inputs {
		var berrs []topdown.Error
		rs, err := bounded(ctx, evalTimeout, func(ctx context.Context) (rego.ResultSet, error) {
			return g.query.Eval(ctx, rego.EvalParsedInput(in), rego.EvalBuiltinErrorList(&berrs), rego.EvalPrintHook(discardPrint{}))
		})
		if problem, ok := evalProblem(p, err, berrs); !ok {
			return problem, false
		}
		if len(rs) == 0 || len(rs[0].Expressions) == 0 {
			p.Reason, p.Message = RefusedInvalidDecision, decisionQuery+" is undefined"
			return p, false
		}
		v, _ := rs[0].Expressions[0].Value.(ast.Value)
		if _, err := decisionFromValue(v); err != nil {
			p.Reason, p.Message = RefusedInvalidDecision, err.Error()
			return p, false
		}
	}
	return p, true
}

// smokeVisible decides the visibility of a list of each kind as the list
// filter would.
func smokeVisible(ctx context.Context, g *Generation, tokName string, tok *Token, kind string, evalTimeout time.Duration) (ActivationProblem, bool) {
	p := ActivationProblem{Check: fmt.Sprintf("list %q", kind+", "+tokName)}
	in, err := InputJSON(smokeRequest(), tok)
	if err != nil {
		p.Reason, p.Message = RefusedEvalError, err.Error()
		return p, false
	}
	items := map[string][]string{
		ListTools:             append([]string{"mcpauthz_check_tool"}, g.tools...),
		ListPrompts:           {"mcpauthz_check_prompt"},
		ListResources:         {"file:///srv/mcpauthz/check.txt"},
		ListResourceTemplates: {"file:///srv/mcpauthz/"},
	}[kind]
	q := ListQuery{Input: in, ProtocolVersion: "2025-11-25", Kind: kind, Items: items}
	var berrs []topdown.Error
	_, err = bounded(ctx, evalTimeout, func(ctx context.Context) ([]bool, error) {
		return g.visibleWith(ctx, q, rego.EvalBuiltinErrorList(&berrs), rego.EvalPrintHook(discardPrint{}))
	})
	if errors.Is(err, ErrInvalidVisibility) {
		p.Reason, p.Message = RefusedInvalidVisibility, err.Error()
		return p, false
	}
	return evalProblem(p, err, berrs)
}

// evalProblem fills p from an evaluation error or the first builtin
// error; ok when there was neither.
func evalProblem(p ActivationProblem, err error, berrs []topdown.Error) (ActivationProblem, bool) {
	berrs = slices.DeleteFunc(berrs, environmental)
	switch {
	case err != nil:
		p.Reason, p.err = RefusedEvalError, err
		var te *topdown.Error
		if errors.As(err, &te) && te.Location != nil {
			p.Location, p.Message = te.Location.String(), te.Code+": "+te.Message
		} else {
			p.Message = err.Error()
		}
		return p, false
	case len(berrs) > 0:
		p.Reason = RefusedEvalError
		p.Message = berrs[0].Code + ": " + berrs[0].Message
		if berrs[0].Location != nil {
			p.Location = berrs[0].Location.String()
		}
		return p, false
	}
	return p, true
}

// bounded runs one smoke evaluation under its own timeout, turning a
// panic into an error as Decide does.
func bounded[T any](ctx context.Context, timeout time.Duration, f func(context.Context) (T, error)) (out T, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic during evaluation: %v", r)
		}
	}()
	out, err = f(ctx)
	if err != nil && ctx.Err() != nil {
		// OPA's cancellation error does not wrap the context's.
		err = fmt.Errorf("timed out after %v (%w): %v", timeout, ctx.Err(), err)
	}
	return out, err
}

// environmental reports whether a builtin error comes from a
// non-deterministic builtin: an unreachable service at the moment of the
// check says nothing about the policy, and must not refuse it. Builtin
// errors name their builtin first ("http.send: ...").
func environmental(e topdown.Error) bool {
	name, _, ok := strings.Cut(e.Message, ": ")
	if !ok {
		return false
	}
	b := ast.BuiltinMap[name]
	return nondeterministic[name] || b != nil && b.Nondeterministic
}

// discardPrint drops print() output of smoke evaluations: their inputs are
// made up, and would only confuse whoever reads the debug log.
type discardPrint struct{}

func (discardPrint) Print(print.Context, string) error { return nil }
