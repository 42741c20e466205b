package extauthz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mcpauthz/mcpauthz/internal/config"
	"github.com/mcpauthz/mcpauthz/internal/jwtauth"
	"github.com/mcpauthz/mcpauthz/internal/mcprpc"
	"github.com/mcpauthz/mcpauthz/internal/prm"
	"github.com/mcpauthz/mcpauthz/policy"
)

// Authenticator verifies bearer tokens. Errors wrap jwtauth.ErrInvalidToken
// (answered 401) or jwtauth.ErrKeysUnavailable (answered 503).
type Authenticator interface {
	Verify(ctx context.Context, token string) (*jwtauth.Identity, error)
}

// Policy decides authorized requests. ScopesSupported and ScopePrefixes
// describe the scope vocabulary of the loaded policy; Revision identifies
// it, so that derived documents are rebuilt when it changes.
type Policy interface {
	Decide(ctx context.Context, req *policy.Request, tok *policy.Token, msgs []policy.MCP) ([]policy.Decision, error)
	Revision() string
	ScopesSupported() []string
	ScopePrefixes() []string
}

// Recorder observes every decision after it was made (metrics, decision
// log). It must not block.
type Recorder interface {
	Record(ctx context.Context, d *Decision)
}

// Options configure a Server.
type Options struct {
	Config        *config.Config
	Authenticator Authenticator
	Policy        Policy
	Logger        *slog.Logger
	// Recorders observe each decision, in order.
	Recorders []Recorder
}

// Server is the envoy.service.auth.v3.Authorization service.
type Server struct {
	authv3.UnimplementedAuthorizationServer

	cfg       *config.Config
	authn     Authenticator
	pol       Policy
	log       *slog.Logger
	recorders []Recorder
	shadow    bool

	loc            prm.Locations
	mcpPaths       map[string]bool
	allowedOrigins map[string]bool
	identity       config.IdentityHeaders
	parseOpts      mcprpc.Options

	// meta holds what derives from the policy revision: the metadata
	// document and the 401 scope list. Rebuilt when the revision changes.
	meta atomic.Pointer[metadata]

	// idCache holds the answer parts per verified identity (response.go).
	idMu    sync.RWMutex
	idCache map[string]*identity
}

type metadata struct {
	revision string
	document []byte
	scopes   []string        // advertised (scopes_supported, 401 challenge)
	known    map[string]bool // advertised ∪ policy scopes: relevant when granted
	prefixes []string        // policy scope prefixes: relevant when granted
}

// New builds a Server from a validated configuration.
func New(opts Options) (*Server, error) {
	cfg := opts.Config
	loc, err := prm.Locate(cfg.Resource)
	if err != nil {
		return nil, fmt.Errorf("extauthz: resource: %w", err)
	}
	s := &Server{
		cfg:            cfg,
		authn:          opts.Authenticator,
		pol:            opts.Policy,
		log:            opts.Logger,
		recorders:      opts.Recorders,
		shadow:         cfg.Shadow,
		loc:            loc,
		mcpPaths:       map[string]bool{},
		allowedOrigins: map[string]bool{},
		identity:       cfg.Upstream.IdentityHeaders,
		parseOpts:      mcprpc.Options{MaxDepth: cfg.MCP.MaxDepth, MaxBatch: cfg.MCP.MaxBatch},
		idCache:        map[string]*identity{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	for _, p := range cfg.MCP.Paths {
		s.mcpPaths[canonicalPath(p)] = true
	}
	for _, o := range cfg.MCP.AllowedOrigins {
		s.allowedOrigins[strings.ToLower(strings.TrimSuffix(o, "/"))] = true
	}
	return s, nil
}

// Metadata returns the protected resource metadata document for the current
// policy revision, and the well-known locations it is served at.
func (s *Server) Metadata() ([]byte, prm.Locations) {
	return s.metadata().document, s.loc
}

func (s *Server) metadata() *metadata {
	rev := s.pol.Revision()
	if m := s.meta.Load(); m != nil && m.revision == rev {
		return m
	}
	m := &metadata{revision: rev, prefixes: s.pol.ScopePrefixes(), known: map[string]bool{}}
	m.scopes = s.cfg.ScopesSupported
	if len(m.scopes) == 0 {
		m.scopes = s.pol.ScopesSupported()
	}
	m.scopes = slices.DeleteFunc(slices.Clone(m.scopes), func(sc string) bool { return sc == "offline_access" || !config.ValidScope(sc) })
	for _, sc := range m.scopes {
		m.known[sc] = true
	}
	for _, sc := range s.pol.ScopesSupported() {
		m.known[sc] = true
	}
	m.document = prm.Document{
		Resource:               s.cfg.Resource,
		AuthorizationServers:   s.cfg.AuthorizationServers,
		ScopesSupported:        m.scopes,
		BearerMethodsSupported: []string{"header"},
		ResourceName:           s.cfg.ResourceName,
		ResourceDocumentation:  s.cfg.ResourceDocumentation,
	}.Marshal()
	s.meta.Store(m)
	return m
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
	r := newHTTPRequest(req.GetAttributes().GetRequest().GetHttp())
	d = &Decision{RequestID: r.header("x-request-id"), HTTPMethod: r.method, Path: r.path}
	defer func() {
		if p := recover(); p != nil {
			s.log.ErrorContext(ctx, "panic in check", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			*d = Decision{RequestID: d.RequestID, HTTPMethod: r.method, Path: r.path}
			d.unavailable("internal_error", "panic: "+fmt.Sprint(p))
		}
		resp = s.respond(d)
		d.Duration = time.Since(start)
		rctx := context.WithoutCancel(ctx)
		for _, rec := range s.recorders {
			rec.Record(rctx, d)
		}
	}()
	s.decide(ctx, r, d)
	if ctx.Err() != nil && d.Status == 0 {
		// The caller gave up while we decided: never let a cancelled,
		// half-made evaluation read as an allow.
		d.unavailable("timeout", ctx.Err().Error())
	}
	return d, resp
}

// decide runs the decision ladder; see doc.go for the order and why.
func (s *Server) decide(ctx context.Context, r *httpRequest, d *Decision) {
	// 1. Protected resource metadata: public, answered directly.
	if strings.HasPrefix(r.path, prm.WellKnownPrefix) {
		s.decideMetadata(r, d)
		return
	}
	// 2. Origin (DNS rebinding defence) before anything else.
	origin := r.header("origin")
	if origin != "" && len(s.allowedOrigins) > 0 && !s.allowedOrigins[strings.ToLower(origin)] {
		d.deny(403, "forbidden_origin", "origin not allowed")
		d.body = rpcError(nil, mcprpc.CodeInvalidRequest, "Forbidden origin", false)
		return
	}
	// 3. CORS preflight carries no token and executes nothing upstream.
	if r.method == "OPTIONS" && origin != "" && r.header("access-control-request-method") != "" {
		d.allow("cors_preflight")
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
	// 4. Credentials: exactly one bearer token, in the header only.
	if r.hasQueryToken() {
		d.badCredentials("token_in_query", "access tokens must not be sent in the query string")
		return
	}
	if r.authorizations > 1 {
		d.badCredentials("multiple_authorization", "more than one Authorization header")
		return
	}
	token, err := jwtauth.ExtractBearer(r.header("authorization"))
	switch {
	case errors.Is(err, jwtauth.ErrNoBearer):
		d.unauthenticated("no_token", "", "")
		return
	case errors.Is(err, jwtauth.ErrMalformedHeader):
		d.badCredentials("multiple_authorization", "more than one credential in the Authorization header")
		return
	case err != nil:
		d.unauthenticated("invalid_token", errInvalidToken, jwtauth.Reason(err))
		return
	}
	id, err := s.authn.Verify(ctx, token)
	switch {
	case errors.Is(err, jwtauth.ErrKeysUnavailable):
		d.TokenResult = jwtauth.Reason(err)
		d.unavailable("keys_unavailable", d.TokenResult)
		return
	case err != nil:
		d.TokenResult = jwtauth.Reason(err)
		d.unauthenticated("invalid_token", errInvalidToken, d.TokenResult)
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
	d.Messages = msgs

	// 6. Policy.
	pstart := time.Now()
	decisions, err := s.pol.Decide(ctx, s.policyRequest(r), policyToken(id), policyMessages(msgs, version, r.header("mcp-session-id")))
	d.PolicyDuration = time.Since(pstart)
	if err != nil {
		d.unavailable("policy_error", err.Error())
		return
	}
	s.applyPolicy(d, decisions, id)
}

func (s *Server) decideMetadata(r *httpRequest, d *Decision) {
	if r.path != s.loc.PathForm && r.path != s.loc.RootForm {
		d.direct(404, "metadata_not_found", []byte(`{"error":"not_found","error_description":"no protected resource metadata at this path"}`))
		return
	}
	switch r.method {
	case "GET", "HEAD":
		d.direct(200, "metadata", s.metadata().document)
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

// transportProblem rejects request shapes MCP never uses and that let a
// request reach the upstream without the body being authorized: method
// overrides (H-04) and protocol upgrades (H-12).
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
	if !jsonContentType(r.header("content-type")) {
		d.deny(415, "content_type", "content type is not application/json")
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

// jsonContentType accepts application/json with at most a UTF-8 charset:
// every other type or charset could be read differently upstream (E-07,
// E-08).
func jsonContentType(ct string) bool {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return false
	}
	for k, v := range params {
		if k != "charset" || !strings.EqualFold(v, "utf-8") {
			return false
		}
	}
	return true
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

func policyToken(id *jwtauth.Identity) *policy.Token {
	return &policy.Token{
		Issuer:   id.Issuer,
		Subject:  id.Subject,
		ClientID: id.ClientID,
		Audience: id.Audience,
		Scopes:   id.Scopes,
		Claims:   id.Claims,
		Expiry:   id.Expiry,
	}
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
func (s *Server) applyPolicy(d *Decision, decisions []policy.Decision, id *jwtauth.Identity) {
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
			if i < len(d.Messages) {
				deniedID = d.Messages[i].ID
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
				if config.ValidUpstreamHeader(k) && validHeaderValue(v) {
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
	m := s.metadata()
	scopes := slices.Clone(required)
	for _, g := range id.Scopes {
		if m.known[g] || hasAnyPrefix(g, m.prefixes) {
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

// codeForbidden is the JSON-RPC error code of policy denials (an
// implementation-defined server error, JSON-RPC 2.0 §5.1).
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
