package extauthz

import (
	"slices"
	"strconv"
	"strings"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mcpauthz/mcpauthz/internal/mcprpc"
	"github.com/mcpauthz/mcpauthz/internal/prm"
)

// respond turns a Decision into the CheckResponse Envoy acts on.
func (s *Server) respond(st *state, d *Decision) *authv3.CheckResponse {
	if d.Allowed && d.Reason == "policy_allow" && d.Identity != nil && len(d.upstream) == 0 && d.credential == nil && d.listMeta == nil {
		return s.sharedAllow(d)
	}
	if d.Allowed {
		return s.allowResponse(d)
	}
	parts := s.denialParts(d)
	return &authv3.CheckResponse{
		Status: parts.status,
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  parts.httpStatus,
			Headers: parts.headers,
			Body:    string(d.body),
		}},
		DynamicMetadata: parts.metadata,
	}
}

// denial is what a denial shares with every denial like it: all but the
// body, which echoes the request's JSON-RPC id. Each part is encoded once
// (grpcopts.Remember), so that a repeated denial costs about what a
// repeated allow does; never modified once stored.
type denial struct {
	status     *statuspb.Status
	httpStatus *typev3.HttpStatus
	headers    []*corev3.HeaderValueOption
	metadata   *structpb.Struct
}

// maxSharedDenials bounds the denials kept per identity.
const maxSharedDenials = 64

// denialParts returns the shared parts of d's denial, kept per identity (a
// 401 has none: the parts of "no identity" are shared by every caller).
// The key holds everything the parts are made of: the status, the
// outcome, reason, token result, MCP method and tool (the metadata), and
// the headers themselves.
func (s *Server) denialParts(d *Decision) *denial {
	hs := deniedHeaders(s.loc, d)
	if d.listMeta != nil {
		return s.newDenial(d, hs)
	}
	var b strings.Builder
	b.WriteString(strconv.Itoa(d.Status))
	for _, v := range []string{d.Outcome(), d.Reason, d.TokenResult, d.MCPMethod(), d.Tool()} {
		b.WriteString("\x00" + strconv.Itoa(len(v)) + ":" + v)
	}
	for _, h := range hs {
		b.WriteString("\x00" + strconv.Itoa(len(h[0])) + ":" + h[0] + strconv.Itoa(len(h[1])) + ":" + h[1])
	}
	key := b.String()
	p := s.identityParts(d.Identity)
	p.mu.Lock()
	parts, ok := p.denials[key]
	keep := !ok && !p.evicted && len(p.denials) < maxSharedDenials
	p.mu.Unlock()
	if ok {
		return parts
	}
	parts = s.newDenial(d, hs)
	if !keep {
		return parts
	}
	msgs := make([]proto.Message, 0, 3+len(parts.headers))
	msgs = append(msgs, parts.status, parts.httpStatus, parts.metadata)
	for _, h := range parts.headers {
		msgs = append(msgs, h)
	}
	share(s.answers, p, &p.denials, maxSharedDenials, key, parts, msgs...)
	return parts
}

func (s *Server) newDenial(d *Decision, hs [][2]string) *denial {
	return &denial{
		status:     &statuspb.Status{Code: int32(grpcCode(d.Status))},
		httpStatus: &typev3.HttpStatus{Code: typev3.StatusCode(d.Status)},
		headers:    headerOptions(hs),
		metadata:   s.dynamicMetadata(d),
	}
}

func (s *Server) allowResponse(d *Decision) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status:          &statuspb.Status{Code: int32(codes.OK)},
		HttpResponse:    &authv3.CheckResponse_OkResponse{OkResponse: s.okResponse(d)},
		DynamicMetadata: s.dynamicMetadata(d),
	}
}

// maxSharedAllows bounds the answers kept per identity (one per MCP method
// and tool it calls).
const maxSharedAllows = 64

// sharedAllow returns the allow of this identity for this method and tool,
// built and encoded once (grpcopts.Remember) and shared by every answer
// like it: an agent calling the same tools again is answered without
// building or marshalling a response. What it holds is only what the
// identity, the method, the tool and the outcome determine; answers with
// upstream headers, a credential or list metadata are built each time.
func (s *Server) sharedAllow(d *Decision) *authv3.CheckResponse {
	p := s.identityParts(d.Identity)
	key := d.Outcome() + "\x00" + d.MCPMethod() + "\x00" + d.Tool()
	p.mu.Lock()
	resp, ok := p.allows[key]
	keep := !ok && !p.evicted && len(p.allows) < maxSharedAllows
	p.mu.Unlock()
	if ok {
		return resp
	}
	resp = s.allowResponse(d)
	if keep {
		share(s.answers, p, &p.allows, maxSharedAllows, key, resp, resp)
	}
	return resp
}

// deniedHeaders are the response headers of a denial (or of an answer
// mcpauthz gives itself, such as the metadata document).
func deniedHeaders(loc prm.Locations, d *Decision) [][2]string {
	var hs [][2]string
	if d.challenge != nil {
		c := *d.challenge
		c.ResourceMetadata = loc.MetadataURL
		hs = append(hs, [2]string{"www-authenticate", c.String()})
	}
	if d.body != nil || d.Status == 200 {
		hs = append(hs, [2]string{"content-type", "application/json"})
	}
	if !d.isDirect {
		hs = append(hs, [2]string{"cache-control", "no-store"})
	}
	return append(hs, d.headers...)
}

// okResponse sets the identity headers (overwriting anything a client sent),
// removes the ones it cannot set, and removes the client's token unless
// forwarding is configured.
//
// Without an upstream credential, every header a configured credential goes
// into is removed too, so that a client cannot send its own. With one, its
// header is set and not removed (Envoy applies removals after it sets
// headers), whatever the client sent in it.
func (s *Server) okResponse(d *Decision) *authv3.OkHttpResponse {
	parts := s.identityParts(d.Identity)
	if len(d.upstream) == 0 && d.credential == nil {
		return &authv3.OkHttpResponse{Headers: parts.headers, HeadersToRemove: parts.remove}
	}
	set := slices.Clone(parts.set)
	for _, h := range d.upstream {
		if !isIdentityHeader(s.identity, h[0]) && !s.credHeaders[h[0]] {
			set = append(set, h)
		}
	}
	remove := parts.remove
	if c := d.credential; c != nil {
		set = append(set, [2]string{c.Header, c.Value})
		remove = slices.DeleteFunc(slices.Clone(remove), func(h string) bool { return h == c.Header })
	}
	return &authv3.OkHttpResponse{Headers: headerOptions(set), HeadersToRemove: remove}
}

// identity is what an allowed answer carries for one identity: the identity
// headers and the headers to remove, built once and shared (read-only) by
// every answer for the same identity, as are the access-log values.
type identity struct {
	set      [][2]string
	headers  []*corev3.HeaderValueOption
	remove   []string
	subject  *structpb.Value
	clientID *structpb.Value

	// size is the estimate of the memory of the parts, counted by the
	// answer cache while it keeps this identity (evicted false).
	size int

	mu         sync.Mutex
	allows     map[string]*authv3.CheckResponse // see sharedAllow; never modified once stored
	denials    map[string]*denial               // see denialParts
	remembered []proto.Message                  // the parts whose encoding the codec keeps
	evicted    bool                             // no longer in the answer cache
}

func (s *Server) identityParts(id *Identity) *identity {
	var sub, client, scopes, iss, actor string
	if id != nil {
		sub, client, iss = id.Subject, id.ClientID, id.Issuer
		scopes = strings.Join(id.Scopes, " ")
		actor = actorChain(id.Actors)
	}
	// Length-prefixed, so that no two identities share a key whatever
	// bytes their claims hold.
	key := strconv.Itoa(len(sub)) + ":" + sub + strconv.Itoa(len(client)) + ":" + client +
		strconv.Itoa(len(iss)) + ":" + iss + strconv.Itoa(len(actor)) + ":" + actor + scopes
	if p, ok := s.answers.get(key); ok {
		return p
	}
	p := &identity{subject: structpb.NewStringValue(sub), clientID: structpb.NewStringValue(client)}
	put := func(name, value string) {
		if name == "" {
			return
		}
		if value != "" && validHeaderValue(value) {
			p.set = append(p.set, [2]string{name, value})
		} else {
			p.remove = append(p.remove, name)
		}
	}
	ih := s.identity
	put(ih.Subject, sub)
	put(ih.ClientID, client)
	put(ih.Scopes, scopes)
	put(ih.Issuer, iss)
	put(ih.Actor, actor)
	if !s.forwardToken {
		p.remove = append(p.remove, "authorization")
	}
	for h := range s.credHeaders {
		if h != "authorization" { // forwarded or removed as configured above
			p.remove = append(p.remove, h)
		}
	}
	slices.Sort(p.remove)
	p.remove = slices.Compact(p.remove)
	p.headers = headerOptions(slices.Clone(p.set))
	msgs := []proto.Message{p.subject, p.clientID}
	for _, h := range p.headers {
		msgs = append(msgs, h)
	}
	p.size = partBytes(len(key), msgs...)
	for _, h := range p.remove {
		p.size += len(h) + 16
	}
	return s.answers.add(key, p)
}

func isIdentityHeader(ih IdentityHeaders, name string) bool {
	return name != "" && (name == ih.Subject || name == ih.ClientID || name == ih.Scopes || name == ih.Issuer || name == ih.Actor)
}

// actorChain renders a delegation chain for the actor header: each actor
// by client_id, or sub when it has none, the current actor first.
func actorChain(actors []Actor) string {
	var b strings.Builder
	for i, a := range actors {
		if i > 0 {
			b.WriteString(", ")
		}
		if a.ClientID != "" {
			b.WriteString(a.ClientID)
		} else {
			b.WriteString(a.Subject)
		}
	}
	return b.String()
}

// validUpstreamHeader reports whether name may be set on the upstream
// request by mcpauthz: a lowercase RFC 9110 token that is not a
// pseudo-header and not a header Envoy or the transport owns (setting
// those could smuggle a second request or redirect the first).
func validUpstreamHeader(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	switch name {
	case "host", "authorization", "cookie", "content-length", "content-type", "content-encoding", "transfer-encoding", "connection", "upgrade", "te", "keep-alive", "proxy-authorization", "x-request-id":
		return false
	}
	return !strings.HasPrefix(name, "x-envoy-")
}

// headerOptions sorts headers by name (stable responses, stable goldens) and
// marks each OVERWRITE_IF_EXISTS_OR_ADD: the one append action that
// replaces a client-sent value on every Envoy version (the deprecated
// append field and the default action have changed meaning over time).
func headerOptions(hs [][2]string) []*corev3.HeaderValueOption {
	if len(hs) == 0 {
		return nil
	}
	slices.SortStableFunc(hs, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	out := make([]*corev3.HeaderValueOption, len(hs))
	for i, h := range hs {
		out[i] = &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: h[0], Value: h[1]},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}
	}
	return out
}

// grpcCode is the gRPC status of a denied response. Envoy only
// distinguishes OK from the rest; the codes make Envoy's and gRPC's own
// statistics readable.
func grpcCode(httpStatus int) codes.Code {
	switch {
	case httpStatus == 401:
		return codes.Unauthenticated
	case httpStatus == 404:
		return codes.NotFound
	case httpStatus == 503:
		return codes.Unavailable
	case httpStatus >= 400 && httpStatus < 500 && httpStatus != 403:
		return codes.InvalidArgument
	default:
		return codes.PermissionDenied
	}
}

// dynamicMetadata is emitted under envoy.filters.http.ext_authz for access
// logs, e.g. %DYNAMIC_METADATA(envoy.filters.http.ext_authz:reason)%.
// Values from closed sets are shared, immutable protos.
func (s *Server) dynamicMetadata(d *Decision) *structpb.Struct {
	f := make(map[string]*structpb.Value, 6)
	f["decision"] = closedValue(d.Outcome())
	f["reason"] = closedValue(d.Reason)
	if m := d.MCPMethod(); m != "" {
		if mcprpc.KnownMethod(m) {
			f["mcp_method"] = closedValue(m)
		} else {
			f["mcp_method"] = structpb.NewStringValue(m)
		}
	}
	if t := d.Tool(); t != "" {
		f["tool"] = structpb.NewStringValue(t)
	}
	if id := d.Identity; id != nil {
		p := s.identityParts(id)
		f["subject"] = p.subject
		if id.ClientID != "" {
			f["client_id"] = p.clientID
		}
	}
	if d.TokenResult != "" && d.TokenResult != "valid" {
		// The precise cause of a 401, for Envoy's access log (a closed set).
		f["token_result"] = closedValue(d.TokenResult)
	}
	if d.listMeta != nil {
		for k, v := range d.listMeta.Fields {
			f[k] = v
		}
	}
	return &structpb.Struct{Fields: f}
}

// closedValues holds the shared proto values of closed-set strings
// (outcomes, reasons, MCP methods); they are never modified once stored.
var closedValues sync.Map // string → *structpb.Value

func closedValue(v string) *structpb.Value {
	if pv, ok := closedValues.Load(v); ok {
		return pv.(*structpb.Value)
	}
	pv, _ := closedValues.LoadOrStore(v, structpb.NewStringValue(v))
	return pv.(*structpb.Value)
}
