package extauthz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mcpauthz/mcpauthz/extproc"
	"github.com/mcpauthz/mcpauthz/internal/mcprpc"
	"github.com/mcpauthz/mcpauthz/internal/oauth"
	"github.com/mcpauthz/mcpauthz/internal/prm"
	"github.com/mcpauthz/mcpauthz/policy"
)

// Server is the envoy.service.auth.v3.Authorization service.
type Server struct {
	authv3.UnimplementedAuthorizationServer

	authn     Authenticator
	log       *slog.Logger
	recorders []Recorder
	tracer    trace.Tracer // nil: no tracing
	shadow    bool

	resource       string
	doc            prm.Document // without scopes_supported (per generation)
	configScopes   []string     // Options.ScopesSupported
	loc            prm.Locations
	mcpPaths       map[string]bool
	allowedOrigins map[string]bool
	identity       IdentityHeaders
	forwardToken   bool
	listFilter     bool
	credentials    map[string]CredentialSource
	credHeaders    map[string]bool // the headers of every credential source
	parseOpts      mcprpc.Options

	// state is everything that changes with the policy; a Check loads it
	// once (see SetPolicy).
	state atomic.Pointer[state]

	// answers holds the answer parts per verified identity (response.go).
	answers *answerCache
}

// state is one policy generation with what derives from it, computed when
// the generation is published, never on the request path.
type state struct {
	policy   Policy // nil until SetPolicy
	revision string
	document []byte          // the protected resource metadata
	scopes   []string        // advertised (scopes_supported, 401 challenge)
	known    map[string]bool // advertised ∪ policy scopes: relevant when granted
	prefixes []string        // policy scope prefixes: relevant when granted
	baseline []string        // asked for in every 401 challenge
}

// New builds a Server from opts (see Options for defaults and validation).
// It decides nothing but 503 until SetPolicy publishes a policy.
func New(opts Options) (*Server, error) {
	opts.applyDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	loc, err := prm.Locate(opts.Resource)
	if err != nil {
		return nil, fmt.Errorf("resource: %w", err)
	}
	s := &Server{
		authn:     opts.Authenticator,
		log:       opts.Logger,
		recorders: opts.Recorders,
		tracer:    opts.Tracer,
		shadow:    opts.Shadow,
		resource:  opts.Resource,
		doc: prm.Document{
			Resource:               opts.Resource,
			AuthorizationServers:   opts.AuthorizationServers,
			BearerMethodsSupported: []string{"header"},
			ResourceName:           opts.ResourceName,
			ResourceDocumentation:  opts.ResourceDocumentation,
		},
		configScopes:   opts.ScopesSupported,
		loc:            loc,
		mcpPaths:       map[string]bool{},
		allowedOrigins: map[string]bool{},
		identity:       opts.Upstream.IdentityHeaders,
		forwardToken:   opts.Upstream.ForwardToken,
		listFilter:     opts.ListFilter,
		credentials:    opts.Credentials,
		credHeaders:    map[string]bool{},
		parseOpts:      mcprpc.Options{MaxDepth: opts.MCP.MaxDepth, MaxBatch: opts.MCP.MaxBatch},
		answers:        newAnswerCache(opts.AnswerCacheSize, opts.AnswerCacheBytes),
	}
	for _, p := range opts.MCP.Paths {
		s.mcpPaths[canonicalPath(p)] = true
	}
	for _, o := range opts.MCP.AllowedOrigins {
		s.allowedOrigins[strings.ToLower(strings.TrimSuffix(o, "/"))] = true
	}
	for _, src := range opts.Credentials {
		s.credHeaders[src.Header()] = true
	}
	s.SetPolicy(nil)
	return s, nil
}

// SetPolicy publishes p (a new policy generation) together with what
// derives from it: the scopes advertised in the metadata and in 401
// challenges, the scopes still relevant in a step-up challenge, and the
// metadata document. Checks that started before keep the state they
// loaded, so no decision mixes two generations. A nil p makes every
// policy decision a 503.
func (s *Server) SetPolicy(p Policy) {
	st := &state{policy: p, known: map[string]bool{}}
	var policyScopes []string
	if p != nil {
		st.revision = p.Revision()
		policyScopes = p.ScopesSupported()
		st.prefixes = p.ScopePrefixes()
		st.baseline = challengeable(p.BaselineScopes())
	}
	st.scopes = s.configScopes
	if len(st.scopes) == 0 {
		st.scopes = policyScopes
	}
	st.scopes = challengeable(st.scopes)
	for _, sc := range st.scopes {
		st.known[sc] = true
	}
	for _, sc := range policyScopes {
		st.known[sc] = true
	}
	doc := s.doc
	doc.ScopesSupported = st.scopes
	st.document = doc.Marshal()
	s.state.Store(st)
}

// challengeable keeps the scopes a resource server may advertise or ask
// for: valid scope tokens, and never offline_access (MCP 2026-07-28: refresh
// is between the client and its authorization server). The result is
// sorted and without duplicates.
func challengeable(scopes []string) []string {
	out := slices.DeleteFunc(slices.Clone(scopes), func(sc string) bool { return sc == "offline_access" || !oauth.ValidScope(sc) })
	slices.Sort(out)
	return slices.Compact(out)
}

// Metadata returns the protected resource metadata document for the current
// policy, and the well-known locations it is served at.
func (s *Server) Metadata() ([]byte, prm.Locations) {
	return s.state.Load().document, s.loc
}

// Check implements the Authorization service. Every decision, including
// "cannot decide", is a CheckResponse; an error is returned only for a
// request without HTTP attributes, which cannot be interpreted at all.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (resp *authv3.CheckResponse, err error) {
	h := req.GetAttributes().GetRequest().GetHttp()
	if h == nil {
		return nil, status.Error(codes.InvalidArgument, "check request carries no HTTP request attributes")
	}
	_, resp = s.Evaluate(ctx, req)
	return resp, nil
}

// Evaluate decides one CheckRequest and returns the decision with the
// response Envoy gets. It is the code path of both the gRPC service and
// `mcpauthz check`.
func (s *Server) Evaluate(ctx context.Context, req *authv3.CheckRequest) (d *Decision, resp *authv3.CheckResponse) {
	start := time.Now()
	st := s.state.Load() // one policy generation for the whole decision
	r := newHTTPRequest(req.GetAttributes().GetRequest().GetHttp())
	d = &Decision{RequestID: r.header("x-request-id"), HTTPMethod: r.method, Path: r.path}
	ctx, span := s.startCheck(ctx, r)
	defer func() {
		if p := recover(); p != nil {
			s.log.ErrorContext(ctx, "panic in check", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			*d = Decision{RequestID: d.RequestID, HTTPMethod: r.method, Path: r.path}
			d.unavailable("internal_error", "panic: "+fmt.Sprint(p))
		}
		resp = s.respond(st, d)
		d.Duration = time.Since(start)
		endCheck(span, d)
		rctx := context.WithoutCancel(ctx)
		for _, rec := range s.recorders {
			rec.Record(rctx, d)
		}
	}()
	s.decide(ctx, st, r, d)
	if err := ctx.Err(); err != nil && d.Allowed {
		// The caller gave up while we decided: never let a cancelled,
		// half-made evaluation read as an allow.
		d.unavailable("timeout", err.Error())
	}
	return d, resp
}

// decide runs the decision ladder; see doc.go for the order and why.
func (s *Server) decide(ctx context.Context, st *state, r *httpRequest, d *Decision) {
	// 1. Protected resource metadata: public, answered directly.
	if strings.HasPrefix(r.path, prm.WellKnownPrefix) {
		s.decideMetadata(st, r, d)
		return
	}
	// 2. Origin (DNS rebinding defence) before anything else.
	origin := r.header("origin")
	if origin != "" && len(s.allowedOrigins) > 0 && !s.allowedOrigins[strings.ToLower(origin)] {
		d.deny(403, "forbidden_origin", "origin not allowed")
		d.body = rpcError(nil, mcprpc.CodeInvalidRequest, "Forbidden origin", false)
		return
	}
	isMCP := s.mcpPaths[canonicalPath(r.path)]
	if isMCP {
		if reason := transportProblem(r); reason != "" {
			d.deny(400, reason, "request shape not allowed on an MCP endpoint")
			d.body = rpcError(nil, mcprpc.CodeInvalidRequest, "Bad Request", true)
			return
		}
	}
	// 3. A CORS preflight carries no token. Only a real one passes without:
	// to an MCP endpoint, and nothing an upstream could act on (no body, and
	// the transport checks above have refused overrides and upgrades).
	// Every other OPTIONS needs a token like any request.
	if isMCP && isPreflight(r, origin) {
		d.allow("cors_preflight")
		return
	}
	// 4. Credentials: exactly one bearer token, in the header only.
	if r.hasURLToken() {
		d.badCredentials("token_in_query", "access tokens must not be sent in the URL (query or path parameters)")
		return
	}
	if r.authorizations > 1 {
		d.badCredentials("multiple_authorization", "more than one Authorization header")
		return
	}
	token, err := extractBearer(r.header("authorization"))
	switch {
	case errors.Is(err, errNoBearer):
		d.unauthenticated("no_token", "", "", s.challengeScopes(ctx, st, r, isMCP))
		return
	case errors.Is(err, errMalformedHeader):
		d.badCredentials("multiple_authorization", "more than one credential in the Authorization header")
		return
	case err != nil:
		d.unauthenticated("invalid_token", errInvalidToken, "malformed_token", s.challengeScopes(ctx, st, r, isMCP))
		return
	}
	tctx, tspan := s.child(ctx, TokenSpan)
	id, err := s.authn.Authenticate(tctx, token)
	endToken(tspan, err)
	if err != nil {
		te, ok := err.(*TokenError)
		if !ok {
			te = &TokenError{Reason: "invalid_token", Err: err}
		}
		d.TokenResult = te.Reason
		if te.Unavailable {
			d.unavailable("keys_unavailable", d.TokenResult)
		} else {
			d.unauthenticated("invalid_token", errInvalidToken, d.TokenResult, s.challengeScopes(ctx, st, r, isMCP))
		}
		return
	}
	d.Identity, d.TokenResult = id, "valid"

	// 5. The MCP message(s), strictly.
	var msgs []mcprpc.Message
	version := r.header("mcp-protocol-version")
	if isMCP {
		var ok bool
		if msgs, ok = s.readMCP(r, version, d); !ok {
			return
		}
	}
	d.messages = msgs

	// 6. Policy.
	if st.policy == nil {
		d.unavailable("policy_error", "no policy loaded")
		return
	}
	pstart := time.Now()
	preq, ptok := s.policyRequest(r), policyToken(id)
	pctx, pspan := s.child(ctx, PolicySpan)
	decisions, err := st.policy.Decide(pctx, preq, ptok, policyMessages(msgs, version, r.header("mcp-session-id")))
	d.PolicyDuration = time.Since(pstart)
	endPolicy(pspan, len(msgs), err)
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		// The evaluation ran out of time: its own bound or the caller's.
		d.unavailable("timeout", err.Error())
		return
	case err != nil:
		d.unavailable("policy_error", err.Error())
		return
	}
	s.applyPolicy(st, d, decisions, id)
	if d.Allowed {
		s.upstreamCredential(ctx, d, decisions, token, id)
	}
	if d.Allowed && s.listFilter {
		s.recordLists(d, preq, ptok, version)
	}
}

// upstreamCredential gets the credential the policy chose for the MCP
// server (decision.upstream_credential): every message that names one must
// name the same, configured source. A failure is a 503: the request is
// never forwarded without its credential, and never with the client's
// token instead.
func (s *Server) upstreamCredential(ctx context.Context, d *Decision, decisions []policy.Decision, token string, id *Identity) {
	var name string
	var scopes []string
	for _, pd := range decisions {
		switch {
		case pd.UpstreamCredential == "":
		case name == "":
			name, scopes = pd.UpstreamCredential, pd.UpstreamScopes
		case pd.UpstreamCredential != name:
			d.unavailable("policy_error", "the messages of the request chose different upstream credentials")
			return
		}
	}
	if name == "" {
		return
	}
	src, ok := s.credentials[name]
	if !ok {
		d.unavailable("policy_error", "the policy chose upstream credential "+strconv.Quote(name)+", which is not configured")
		return
	}
	d.UpstreamCredential = name
	cctx, cspan := s.child(ctx, CredentialSpan)
	c, err := src.Credential(cctx, CredentialRequest{Token: token, Identity: id, Scopes: scopes})
	if err != nil {
		reason := "unavailable"
		if r, ok := err.(interface{ Reason() string }); ok {
			reason = r.Reason()
		}
		endCredential(cspan, name, reason)
		d.unavailable("upstream_credential_unavailable", name+": "+reason)
		return
	}
	endCredential(cspan, name, "")
	d.credential = &c
}

// recordLists puts what the ext_proc list filter needs into the answer's
// dynamic metadata when the allowed request holds list requests: the list
// requests, and the policy input they were allowed with, so that the
// response is filtered for the same caller without a second token check.
// Envoy runs the filter only for requests that carry it.
func (s *Server) recordLists(d *Decision, preq *policy.Request, ptok *policy.Token, version string) {
	var lists []extproc.ListRequest
	for _, m := range d.messages {
		if m.Kind == mcprpc.KindRequest && extproc.KindOf(m.Method) != "" {
			lists = append(lists, extproc.ListRequest{Method: m.Method, ID: m.ID})
		}
	}
	if len(lists) == 0 {
		return
	}
	in, err := policy.InputJSON(preq, ptok)
	if err != nil {
		// The policy just decided with this input: this cannot happen; if
		// it does, the list must not pass unfiltered.
		d.unavailable("internal_error", "list filter input: "+err.Error())
		return
	}
	d.listMeta = extproc.EncodeListMetadata(extproc.ListContext{
		ProtocolVersion: version,
		PolicyRevision:  d.PolicyRevision,
		Requests:        lists,
		Input:           in,
	})
}

// anonymous is the token a 401's scopes are decided for: no scope at all,
// and an expiry that lets the policy's decision cache keep the answers (they
// depend on the request only).
var anonymous = &policy.Token{Claims: []byte("{}"), Expiry: math.MaxInt64}

// challengeScopes are the scopes a 401 asks for: what this very request
// needs, as the policy decides it for a token without any scope (the
// required_scopes of each message it would deny), and the policy's
// baseline scopes. A request the policy cannot judge (not an MCP POST, a
// body that does not parse) gets the baseline scopes only, and so does an
// open method. The client asks its authorization server for exactly these,
// so they must be scopes that server knows: never mcpauthz's examples.
func (s *Server) challengeScopes(ctx context.Context, st *state, r *httpRequest, isMCP bool) []string {
	if st.policy == nil || !isMCP || r.method != "POST" || len(r.body) == 0 || mcprpc.CheckContentType(r.header("content-type")) != nil {
		return st.baseline
	}
	body, err := mcprpc.Parse(r.body, s.parseOpts)
	if err != nil {
		return st.baseline
	}
	version := r.header("mcp-protocol-version")
	decisions, err := st.policy.Decide(ctx, s.policyRequest(r), anonymous, policyMessages(body.Messages, version, r.header("mcp-session-id")))
	if err != nil {
		return st.baseline
	}
	scopes := slices.Clone(st.baseline)
	for _, pd := range decisions {
		if !pd.Allow {
			scopes = append(scopes, pd.RequiredScopes...)
		}
	}
	return challengeable(scopes)
}

func (s *Server) decideMetadata(st *state, r *httpRequest, d *Decision) {
	if r.path != s.loc.PathForm && r.path != s.loc.RootForm {
		d.direct(404, "metadata_not_found", []byte(`{"error":"not_found","error_description":"no protected resource metadata at this path"}`))
		return
	}
	switch r.method {
	case "GET", "HEAD":
		d.direct(200, "metadata", st.document)
		if r.method == "HEAD" {
			d.body = nil
		}
	case "OPTIONS":
		d.direct(204, "metadata_preflight", nil)
	default:
		d.direct(405, "metadata_method", []byte(`{"error":"method_not_allowed"}`))
		d.headers = append(d.headers, [2]string{"allow", "GET, HEAD, OPTIONS"})
	}
	d.headers = append(d.headers,
		[2]string{"access-control-allow-origin", "*"},
		[2]string{"access-control-allow-methods", "GET, HEAD, OPTIONS"},
		[2]string{"access-control-allow-headers", "mcp-protocol-version"},
	)
	if d.Status == 200 {
		d.headers = append(d.headers, [2]string{"cache-control", "public, max-age=300"})
	}
}

// isPreflight reports whether r is a CORS preflight as browsers send it:
// OPTIONS with Origin and Access-Control-Request-Method, and no body at
// all (neither bytes nor a length or transfer coding announcing some).
func isPreflight(r *httpRequest, origin string) bool {
	if r.method != "OPTIONS" || origin == "" || r.header("access-control-request-method") == "" {
		return false
	}
	if cl, ok := r.headers["content-length"]; ok && cl != "0" {
		return false
	}
	if _, ok := r.headers["transfer-encoding"]; ok {
		return false
	}
	return len(r.body) == 0 && r.size <= 0
}

// transportProblem rejects request shapes MCP never uses and that let a
// request reach the upstream without its body being authorized: a method
// override header (a POST the server would treat as another method) and a
// protocol upgrade (a tunnel no later request check sees into).
func transportProblem(r *httpRequest) string {
	for _, h := range []string{"x-http-method-override", "x-http-method", "x-method-override"} {
		if _, ok := r.headers[h]; ok {
			return "method_override"
		}
	}
	if _, ok := r.headers["upgrade"]; ok || r.method == "CONNECT" {
		return "upgrade"
	}
	return ""
}

// readMCP classifies an MCP endpoint request and parses its body. It returns
// false when it has already decided (a denial).
func (s *Server) readMCP(r *httpRequest, version string, d *Decision) ([]mcprpc.Message, bool) {
	if version != "" && !mcprpc.SupportedProtocolVersion(version) {
		d.deny(400, "unsupported_protocol_version", "unsupported MCP-Protocol-Version")
		d.body = rpcError(nil, mcprpc.CodeUnsupportedProtocolVersion, "Unsupported protocol version", true)
		return nil, false
	}
	switch r.method {
	case "GET":
		return []mcprpc.Message{{Kind: mcprpc.KindStream}}, true
	case "DELETE":
		return []mcprpc.Message{{Kind: mcprpc.KindSessionEnd}}, true
	case "POST":
	default:
		d.deny(405, "method_not_allowed", "method not allowed on an MCP endpoint")
		d.body = rpcError(nil, mcprpc.CodeInvalidRequest, "Method not allowed", true)
		d.headers = append(d.headers, [2]string{"allow", "GET, POST, DELETE"})
		return nil, false
	}
	if p := r.header("x-envoy-auth-partial-body"); p != "" && p != "false" {
		d.deny(413, "partial_body", "Envoy forwarded a truncated body")
		d.body = rpcError(nil, mcprpc.CodeInvalidRequest, "Request body too large", true)
		return nil, false
	}
	if cl, err := strconv.ParseInt(r.header("content-length"), 10, 64); err == nil && cl > int64(len(r.body)) || r.size > int64(len(r.body)) {
		if len(r.body) == 0 {
			// Envoy is not configured to send the body (with_request_body):
			// a configuration error, so fail closed as "cannot decide".
			d.unavailable("body_not_forwarded", "request has a body but Envoy did not forward it")
			return nil, false
		}
		d.deny(413, "partial_body", "body shorter than announced")
		d.body = rpcError(nil, mcprpc.CodeInvalidRequest, "Request body too large", true)
		return nil, false
	}
	if enc := r.header("content-encoding"); enc != "" && !strings.EqualFold(enc, "identity") {
		d.deny(415, "content_encoding", "encoded bodies cannot be authorized")
		d.body = rpcError(nil, mcprpc.CodeInvalidRequest, "Unsupported Content-Encoding", true)
		return nil, false
	}
	if err := mcprpc.CheckContentType(r.header("content-type")); err != nil {
		var perr *mcprpc.Error
		errors.As(err, &perr)
		d.deny(415, perr.Reason, perr.Message)
		d.body = rpcError(nil, mcprpc.CodeInvalidRequest, "Unsupported Content-Type", true)
		return nil, false
	}
	body, err := mcprpc.Parse(r.body, s.parseOpts)
	if err != nil {
		var perr *mcprpc.Error
		if !errors.As(err, &perr) {
			perr = &mcprpc.Error{Reason: "invalid_json", Code: mcprpc.CodeParseError, Message: err.Error()}
		}
		d.deny(400, perr.Reason, perr.Message)
		d.body = rpcError(perr.ID, perr.Code, rpcMessage(perr.Code), true)
		return nil, false
	}
	if body.Batch && !mcprpc.BatchAllowed(version) {
		d.deny(400, "batch_not_allowed", "JSON-RPC batches are not allowed in protocol version "+version)
		d.body = rpcError(nil, mcprpc.CodeInvalidRequest, "Batches are not supported", true)
		return nil, false
	}
	hdr := mcprpc.Headers{ProtocolVersion: version}
	hdr.Method, hdr.HasMethod = r.headers["mcp-method"]
	hdr.Name, hdr.HasName = r.headers["mcp-name"]
	if body.Batch && (hdr.HasMethod || hdr.HasName) {
		d.deny(400, "header_mismatch", "Mcp-Method/Mcp-Name sent with a batch")
		d.body = rpcError(nil, mcprpc.CodeHeaderMismatch, "Header mismatch: Mcp-Method and Mcp-Name cannot describe a batch", true)
		return nil, false
	}
	if !body.Batch {
		if err := mcprpc.CheckHeaders(hdr, body.Messages[0]); err != nil {
			var perr *mcprpc.Error
			errors.As(err, &perr)
			d.deny(400, perr.Reason, perr.Message)
			d.body = rpcError(perr.ID, perr.Code, perr.Message, true)
			return nil, false
		}
	}
	return body.Messages, true
}

func rpcMessage(code int) string {
	switch code {
	case mcprpc.CodeParseError:
		return "Parse error"
	case mcprpc.CodeInvalidParams:
		return "Invalid params"
	case mcprpc.CodeHeaderMismatch:
		return "Header mismatch"
	case mcprpc.CodeUnsupportedProtocolVersion:
		return "Unsupported protocol version"
	default:
		return "Invalid Request"
	}
}

func (s *Server) policyRequest(r *httpRequest) *policy.Request {
	q, _ := r.queryValues()
	return &policy.Request{
		Method:  r.method,
		Path:    r.path,
		Host:    r.host,
		Headers: r.headers, // the policy engine drops credential headers
		Query:   q,
	}
}

func policyToken(id *Identity) *policy.Token {
	t := &policy.Token{
		Issuer:   id.Issuer,
		Subject:  id.Subject,
		ClientID: id.ClientID,
		Azp:      id.Azp,
		Audience: id.Audience,
		Scopes:   id.Scopes,
		MayAct:   id.MayAct,
		Claims:   id.Claims,
		Expiry:   id.Expiry,
	}
	if len(id.Actors) > 0 {
		t.Actors = make([]policy.Actor, len(id.Actors))
		for i, a := range id.Actors {
			t.Actors[i] = policy.Actor(a)
		}
	}
	return t
}

func policyMessages(msgs []mcprpc.Message, version, session string) []policy.MCP {
	out := make([]policy.MCP, len(msgs))
	for i, m := range msgs {
		out[i] = policy.MCP{
			ProtocolVersion: version,
			SessionID:       session,
			Kind:            string(m.Kind),
			ID:              m.ID,
			Method:          m.Method,
			Tool:            m.Tool,
			Prompt:          m.Prompt,
			Arguments:       m.Arguments,
			ResourceURI:     m.ResourceURI,
			ResourceURIs:    m.ResourceURIs,
			TaskID:          m.TaskID,
		}
	}
	return out
}

// applyPolicy folds the per-message decisions into one: every message must
// be allowed. A denial that more scope can fix for every denied message is a
// step-up challenge; any other denial is final.
func (s *Server) applyPolicy(st *state, d *Decision, decisions []policy.Decision, id *Identity) {
	if len(decisions) > 0 {
		d.PolicyRevision = decisions[0].Revision
	}
	var required []string
	var denied *policy.Decision
	var deniedID []byte
	stepUp := true
	for i := range decisions {
		pd := &decisions[i]
		if pd.Allow {
			continue
		}
		if pd.Shadow || s.shadow {
			d.ShadowDenials = append(d.ShadowDenials, pd.Reason)
			continue
		}
		if denied == nil {
			denied = pd
			if i < len(d.messages) {
				deniedID = d.messages[i].ID
			}
		}
		if len(pd.RequiredScopes) == 0 {
			stepUp = false
		}
		required = append(required, pd.RequiredScopes...)
	}
	if denied == nil {
		d.allow("policy_allow")
		d.PolicyReason = firstReason(decisions)
		for _, pd := range decisions {
			for k, v := range pd.Headers {
				if validUpstreamHeader(k) && validHeaderValue(v) {
					d.upstream = append(d.upstream, [2]string{k, v})
				}
			}
		}
		return
	}
	d.PolicyReason = denied.Reason
	if !stepUp {
		d.deny(403, "policy_deny", "denied by policy")
		d.body = rpcError(deniedID, codeForbidden, "Forbidden", true)
		return
	}
	scopes := slices.Clone(required)
	for _, g := range id.Scopes {
		if st.known[g] || hasAnyPrefix(g, st.prefixes) {
			scopes = append(scopes, g)
		}
	}
	slices.Sort(scopes)
	scopes = slices.Compact(scopes)
	d.deny(403, "insufficient_scope", "token lacks a required scope")
	d.RequiredScopes = scopes
	d.challenge = &Challenge{Error: errInsufficientScope, Scopes: scopes, ResourceMetadata: s.loc.MetadataURL}
	d.body = rpcError(deniedID, codeForbidden, "Insufficient scope", true)
}

// codeForbidden is the JSON-RPC error code of policy denials (in the range
// JSON-RPC 2.0 reserves for implementation-defined server errors).
const codeForbidden = -32001

func firstReason(ds []policy.Decision) string {
	for _, d := range ds {
		if d.Reason != "" {
			return d.Reason
		}
	}
	return ""
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if p != "" && strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return len(v) <= 8192
}
