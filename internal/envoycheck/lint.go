package envoycheck

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mcpauthz/mcpauthz/internal/oauth"
)

// Type names the lints recognise filters by (filter names are free-form).
const (
	typeHCM            = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
	typeExtAuthz       = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
	typeExtAuthzRoute  = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
	typeRouter         = "envoy.extensions.filters.http.router.v3.Router"
	typeCORS           = "envoy.extensions.filters.http.cors.v3.Cors"
	typeCORSPolicy     = "envoy.extensions.filters.http.cors.v3.CorsPolicy"
	typeHeaderMutation = "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
	typeHeaderMutRoute = "envoy.extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute"
	typeFilterConfig   = "envoy.config.route.v3.FilterConfig"
	typeHTTPOptions    = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

// identityHeaders are the headers mcpauthz sets on the upstream request on
// allow (its defaults); a client must never be able to send them.
var identityHeaders = []string{"x-mcp-subject", "x-mcp-client-id", "x-mcp-scopes", "x-mcp-issuer", "x-mcp-actor"}

type filterKind int

const (
	kindOther filterKind = iota
	kindRouter
	kindExtAuthz
	kindCORS
	kindHeaderMutation
	kindExtProc    // an ext_proc filter
	kindListFilter // a filter that holds mcpauthz's list filter (set after classify)
)

func (k filterKind) String() string {
	return [...]string{"other", "router", "ext_authz", "cors", "header_mutation", "ext_proc", "list filter"}[k]
}

type httpFilter struct {
	name string
	kind filterKind
	path Path
	cfg  proto.Message // unpacked typed_config, nil when absent (ECDS)
	f    *hcmv3.HttpFilter
}

// typedStruct is xds.type.v3.TypedStruct and udpa.type.v1.TypedStruct.
type typedStruct interface{ GetTypeUrl() string }

type linter struct {
	*validator
	clusters        map[string]*clusterv3.Cluster
	clusterPaths    map[string]Path
	dynamicClusters bool
	extAuthz        int // ext_authz filters seen
	h2Checked       map[string]bool
}

func typeName(a *anypb.Any) string {
	u := a.GetTypeUrl()
	return u[strings.LastIndexByte(u, '/')+1:]
}

func unpack(a *anypb.Any) proto.Message {
	if a == nil {
		return nil
	}
	m, err := a.UnmarshalNew()
	if err != nil {
		return nil
	}
	return m
}

func (v *validator) lint(bs *bootstrapv3.Bootstrap) {
	l := &linter{validator: v, clusters: map[string]*clusterv3.Cluster{}, clusterPaths: map[string]Path{}, h2Checked: map[string]bool{}}
	l.admin(bs.GetAdmin(), Path{}.field("admin"))
	dyn := bs.GetDynamicResources()
	l.dynamicClusters = dyn.GetCdsConfig() != nil || dyn.GetCdsResourcesLocator() != ""
	sr := Path{}.field("static_resources")
	for i, c := range bs.GetStaticResources().GetClusters() {
		p := sr.field("clusters").index(i)
		if prev, dup := l.clusterPaths[c.GetName()]; dup {
			l.add(Error, RuleDuplicate, p.field("name"), "duplicate cluster name %q (also %s)", c.GetName(), prev)
			continue
		}
		l.clusters[c.GetName()] = c
		l.clusterPaths[c.GetName()] = p
	}
	listeners := map[string]bool{}
	for i, lis := range bs.GetStaticResources().GetListeners() {
		p := sr.field("listeners").index(i)
		if listeners[lis.GetName()] {
			l.add(Error, RuleDuplicate, p.field("name"), "duplicate listener name %q", lis.GetName())
		}
		listeners[lis.GetName()] = true
		for j, fc := range lis.GetFilterChains() {
			l.filterChain(lis, fc, p.field("filter_chains").index(j))
		}
		if fc := lis.GetDefaultFilterChain(); fc != nil {
			l.filterChain(lis, fc, p.field("default_filter_chain"))
		}
	}
	if l.extAuthz == 0 {
		sev, why := Error, "nothing sends requests to mcpauthz"
		if dyn.GetLdsConfig() != nil || dyn.GetLdsResourcesLocator() != "" {
			sev, why = Info, "listeners come from LDS and are not checked"
		}
		l.add(sev, RuleExtAuthz, Path{}, "no envoy.filters.http.ext_authz filter in any static listener: %s", why)
	}
}

func (l *linter) admin(a *bootstrapv3.Admin, p Path) {
	sa := a.GetAddress().GetSocketAddress()
	if sa == nil {
		return
	}
	host := sa.GetAddress()
	if oauth.IsLoopbackHost(host) {
		return
	}
	l.add(Warning, RuleAdmin, p.field("address").field("socket_address").field("address"),
		"the admin interface listens on %s: anyone who reaches it can change log levels, drain listeners and quit Envoy; bind it to 127.0.0.1", host)
}

func (l *linter) filterChain(lis *listenerv3.Listener, fc *listenerv3.FilterChain, p Path) {
	for k, f := range fc.GetFilters() {
		if typeName(f.GetTypedConfig()) != typeHCM {
			continue
		}
		if h, ok := unpack(f.GetTypedConfig()).(*hcmv3.HttpConnectionManager); ok {
			l.hcm(lis, h, p.field("filters").index(k).field("typed_config"))
		}
	}
}

// classify identifies the http filters by their config type (by their
// conventional name when the config comes from ECDS).
func classify(fs []*hcmv3.HttpFilter, p Path) []httpFilter {
	out := make([]httpFilter, len(fs))
	for i, f := range fs {
		hf := httpFilter{name: f.GetName(), path: p.index(i), f: f}
		t := ""
		if tc := f.GetTypedConfig(); tc != nil {
			t = typeName(tc)
			hf.cfg = unpack(tc)
			if ts, ok := hf.cfg.(typedStruct); ok {
				u := ts.GetTypeUrl()
				t = u[strings.LastIndexByte(u, '/')+1:]
			}
		} else if urls := f.GetConfigDiscovery().GetTypeUrls(); len(urls) > 0 {
			t = urls[0][strings.LastIndexByte(urls[0], '/')+1:]
		}
		switch {
		case t == typeRouter || t == "" && f.GetName() == "envoy.filters.http.router":
			hf.kind = kindRouter
		case t == typeExtAuthz || t == "" && f.GetName() == "envoy.filters.http.ext_authz":
			hf.kind = kindExtAuthz
		case t == typeCORS || t == "" && f.GetName() == "envoy.filters.http.cors":
			hf.kind = kindCORS
		case t == typeHeaderMutation:
			hf.kind = kindHeaderMutation
		case t == typeExtProc:
			hf.kind = kindExtProc
		}
		out[i] = hf
	}
	return out
}

// route is one route of an inline route configuration.
type route struct {
	r  *routev3.Route
	vh *routev3.VirtualHost
	p  Path
}

func (l *linter) hcm(lis *listenerv3.Listener, h *hcmv3.HttpConnectionManager, p Path) {
	fp := p.field("http_filters")
	filters := classify(h.GetHttpFilters(), fp)
	names := map[string]filterKind{}
	router, firstExt, lastExt, cors := -1, -1, -1, -1
	var exts []httpFilter
	for i, f := range filters {
		if _, dup := names[f.name]; dup {
			l.add(Error, RuleDuplicate, f.path.field("name"), "duplicate http filter name %q: per-route configuration cannot tell them apart", f.name)
		}
		names[f.name] = f.kind
		switch f.kind {
		case kindRouter:
			if router >= 0 {
				l.add(Error, RuleFilterOrder, f.path, "a second router filter: only the first one ever runs")
			} else {
				router = i
			}
		case kindExtAuthz:
			exts = append(exts, f)
			if firstExt < 0 {
				firstExt = i
			}
			lastExt = i
			if router >= 0 {
				l.add(Error, RuleFilterOrder, f.path, "ext_authz filter %q comes after the router: it never runs and requests are forwarded unauthorized", f.name)
			}
		case kindCORS:
			if cors < 0 {
				cors = i
			}
			if firstExt >= 0 {
				l.add(Error, RuleFilterOrder, f.path, "CORS filter %q comes after ext_authz %q: browser preflights (which carry no token) are denied before CORS can answer them, and 401s carry no CORS headers", f.name, filters[firstExt].name)
			}
		}
	}
	switch {
	case router < 0:
		l.add(Error, RuleFilterOrder, fp, "no router filter (envoy.extensions.filters.http.router.v3.Router): nothing forwards requests")
	case router != len(filters)-1:
		l.add(Error, RuleFilterOrder, filters[router].path, "the router filter must be the last http filter (Envoy rejects filters after the terminal filter)")
	}

	if len(exts) > 0 {
		l.extAuthz += len(exts)
		for _, f := range exts {
			l.extAuthzFilter(lis, f)
		}
		lists := l.listFilters(filters, lastExt, fp)
		for i := range lists {
			names[filters[i].name] = kindListFilter
		}
	}

	var routes []route
	rc := h.GetRouteConfig()
	rcp := p.field("route_config")
	if h.GetRds() != nil {
		l.add(Info, RuleCluster, p.field("rds"), "routes come from RDS: route-level checks are skipped")
	}
	vhNames := map[string]bool{}
	domains := map[string]string{}
	for i, vh := range rc.GetVirtualHosts() {
		vhp := rcp.field("virtual_hosts").index(i)
		if vhNames[vh.GetName()] {
			l.add(Error, RuleDuplicate, vhp.field("name"), "duplicate virtual host name %q", vh.GetName())
		}
		vhNames[vh.GetName()] = true
		for j, d := range vh.GetDomains() {
			if other, dup := domains[strings.ToLower(d)]; dup {
				l.add(Error, RuleDuplicate, vhp.field("domains").index(j), "domain %q is also served by virtual host %q (Envoy rejects duplicate domains)", d, other)
			}
			domains[strings.ToLower(d)] = vh.GetName()
		}
		vhForwards := slices.ContainsFunc(vh.GetRoutes(), func(r *routev3.Route) bool { return r.GetRoute() != nil })
		l.perFilter(vh.GetTypedPerFilterConfig(), vhp.field("typed_per_filter_config"), names, vhForwards)
		for j, r := range vh.GetRoutes() {
			rp := vhp.field("routes").index(j)
			routes = append(routes, route{r: r, vh: vh, p: rp})
			l.perFilter(r.GetTypedPerFilterConfig(), rp.field("typed_per_filter_config"), names, r.GetRoute() != nil)
			ra := r.GetRoute()
			if ra == nil {
				continue
			}
			if c := ra.GetCluster(); c != "" {
				l.clusterRef(c, rp.field("route").field("cluster"), "route")
			}
			for k, wc := range ra.GetWeightedClusters().GetClusters() {
				wp := rp.field("route").field("weighted_clusters").field("clusters").index(k)
				l.clusterRef(wc.GetName(), wp.field("name"), "weighted cluster")
				l.perFilter(wc.GetTypedPerFilterConfig(), wp.field("typed_per_filter_config"), names, true)
			}
		}
	}

	forwards := slices.ContainsFunc(routes, func(r route) bool { return r.r.GetRoute() != nil })
	if len(exts) == 0 {
		if forwards {
			l.add(Warning, RuleExtAuthz, fp, "this connection manager forwards requests without an ext_authz filter: they are not authorized by mcpauthz")
		}
		return
	}
	l.mcp(h, p, filters, firstExt, cors, routes)
	l.catchAll(filters, routes)
}

// clusterRef reports a reference to a cluster that does not exist.
func (l *linter) clusterRef(name string, p Path, what string) bool {
	if _, ok := l.clusters[name]; ok {
		return true
	}
	if l.dynamicClusters {
		return false
	}
	l.add(Error, RuleCluster, p, "%s cluster %q does not exist (static clusters: %s)", what, name, strings.Join(l.clusterNames(), ", "))
	return false
}

func (l *linter) clusterNames() []string {
	var out []string
	for n := range l.clusters {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// perFilter checks typed_per_filter_config: each key must name an http
// filter of this connection manager, with a config of the matching type.
// Disabling ext_authz or the list filter is flagged where requests are
// forwarded (forwards): a route that answers itself (direct_response,
// redirect) needs neither.
func (l *linter) perFilter(m map[string]*anypb.Any, p Path, names map[string]filterKind, forwards bool) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		kp := p.key(k)
		kind, ok := names[k]
		if !ok {
			var all []string
			for n := range names {
				all = append(all, n)
			}
			slices.Sort(all)
			l.add(Error, RulePerFilter, kp, "no http filter is named %q (filters: %s): this per-route configuration never applies", k, strings.Join(all, ", "))
			continue
		}
		a := m[k]
		cp := kp
		disabled := false
		if typeName(a) == typeFilterConfig {
			fc, _ := unpack(a).(*routev3.FilterConfig)
			disabled = fc.GetDisabled()
			a = fc.GetConfig()
			cp = kp.field("config")
		}
		t := typeName(a)
		want := map[filterKind]string{kindExtAuthz: typeExtAuthzRoute, kindCORS: typeCORSPolicy, kindHeaderMutation: typeHeaderMutRoute, kindExtProc: typeExtProcRoute}[kind]
		if a != nil && want != "" && t != want {
			l.add(Error, RulePerFilter, cp, "per-route config for %s filter %q must be %s, not %s", kind, k, want, t)
			continue
		}
		switch kind {
		case kindExtAuthz:
			if disabled && forwards {
				l.add(Warning, RuleDisabled, kp.field("disabled"), "ext_authz is disabled here: these requests reach the upstream without authorization")
			}
			if pr, ok := unpack(a).(*extauthzv3.ExtAuthzPerRoute); ok {
				l.extAuthzPerRoute(pr, cp, forwards)
			}
		case kindListFilter:
			if pr, ok := unpack(a).(*extprocv3.ExtProcPerRoute); ok && pr.GetDisabled() {
				disabled, kp = true, cp
			}
			if disabled && forwards {
				l.add(Warning, RuleDisabled, kp.field("disabled"), "the list filter %q is disabled here: list responses reach clients with every item, including those the caller may not use", k)
			}
		}
	}
}

func (l *linter) extAuthzPerRoute(pr *extauthzv3.ExtAuthzPerRoute, p Path, forwards bool) {
	if pr.GetDisabled() && forwards {
		l.add(Warning, RuleDisabled, p.field("disabled"), "ext_authz is disabled here: these requests reach the upstream without authorization")
	}
	cs := pr.GetCheckSettings()
	csp := p.field("check_settings")
	if cs.GetDisableRequestBodyBuffering() {
		l.add(Warning, RuleBody, csp.field("disable_request_body_buffering"), "the body is not sent here: mcpauthz cannot see the JSON-RPC method, tool or arguments")
	}
	if b := cs.GetWithRequestBody(); b != nil {
		l.body(b, csp.field("with_request_body"), nil)
	}
	if g := cs.GetGrpcService(); g != nil {
		l.grpcService(g, csp.field("grpc_service"))
	}
	if cs.GetHttpService() != nil {
		l.add(Error, RuleExtAuthz, csp.field("http_service"), "mcpauthz is a gRPC ext_authz service: http_service cannot reach it")
	}
}

func (l *linter) extAuthzFilter(lis *listenerv3.Listener, f httpFilter) {
	p := f.path.field("typed_config")
	if f.f.GetDisabled() {
		l.add(Warning, RuleDisabled, f.path.field("disabled"), "ext_authz filter %q is disabled by default: only routes that re-enable it are authorized", f.name)
	}
	ea, ok := f.cfg.(*extauthzv3.ExtAuthz)
	if !ok {
		l.add(Info, RuleExtAuthz, f.path, "ext_authz filter %q has no inline typed_config (ECDS?): not checked", f.name)
		return
	}
	if ea.GetTransportApiVersion() != corev3.ApiVersion_V3 {
		l.add(Error, RuleTransport, p.field("transport_api_version"), "must be V3 (is %s): Envoy refuses other versions for gRPC ext_authz when it creates the filter", ea.GetTransportApiVersion())
	}
	switch {
	case ea.GetGrpcService() != nil:
		l.grpcService(ea.GetGrpcService(), p.field("grpc_service"))
	case ea.GetHttpService() != nil:
		l.add(Error, RuleExtAuthz, p.field("http_service"), "mcpauthz is a gRPC ext_authz service: use grpc_service, http_service cannot reach it")
	default:
		l.add(Error, RuleExtAuthz, p, "no grpc_service: the filter has nothing to call")
	}
	if ea.GetFailureModeAllow() {
		l.add(Error, RuleFailOpen, p.field("failure_mode_allow"), "fail-open: when mcpauthz is unreachable or times out every request is allowed; set failure_mode_allow: false")
	}
	if (ea.GetFilterEnabled() != nil || ea.GetFilterEnabledMetadata() != nil) && !ea.GetDenyAtDisable().GetDefaultValue().GetValue() {
		l.add(Warning, RuleFailOpen, p.field("deny_at_disable"), "the filter can be disabled (filter_enabled / filter_enabled_metadata) and deny_at_disable is not true: disabled requests pass unauthorized")
	}
	if ea.GetShadowMode() {
		l.add(Warning, RuleFailOpen, p.field("shadow_mode"), "shadow mode never blocks a request: nothing is enforced")
	}
	switch code := ea.GetStatusOnError().GetCode(); {
	case ea.GetStatusOnError() == nil:
		l.add(Warning, RuleStatusOnError, p.field("status_on_error"), "unset: when mcpauthz fails clients get 403 Forbidden, indistinguishable from a denial; set {code: ServiceUnavailable}")
	case code < 500:
		l.add(Warning, RuleStatusOnError, p.field("status_on_error"), "%d on authorizer failure: clients cannot tell an outage from a denial; use 503 ServiceUnavailable", int(code))
	}
	if b := ea.GetWithRequestBody(); b == nil {
		l.add(Error, RuleBody, p.field("with_request_body"), "missing: mcpauthz never sees the JSON-RPC body, so it cannot tell the MCP method, tool or arguments")
	} else {
		l.body(b, p.field("with_request_body"), lis)
	}
	if ea.GetClearRouteCache() {
		l.add(Warning, RuleRouteCache, p.field("clear_route_cache"), "the route is recomputed after mcpauthz's header mutations: an allow for one route can land on another")
	}
	l.allowedHeaders(ea, p)
	if !ea.GetEncodeRawHeaders() {
		l.add(Info, RuleHeaders, p.field("encode_raw_headers"), "false: repeated headers reach mcpauthz joined with ',' and UTF-8-sanitized; true sends them as sent (mcpauthz accepts both)")
	}
	if !ea.GetValidateMutations() {
		l.add(Info, RuleHeaders, p.field("validate_mutations"), "false: an invalid header mutation is applied or dropped silently instead of failing with 500")
	}
}

// grpcService checks the ext_authz gRPC target: a cluster that exists (Envoy
// does not check: ext_authz creates its client with skip_cluster_check) and
// speaks HTTP/2, and a timeout.
func (l *linter) grpcService(g *corev3.GrpcService, p Path) {
	if g.GetTimeout() == nil {
		l.add(Warning, RuleTimeout, p.field("timeout"), "unset: the 200ms default is tight for a cold JWKS fetch or introspection; set e.g. 1s")
	}
	if g.GetGoogleGrpc() != nil {
		l.add(Info, RuleExtAuthz, p.field("google_grpc"), "google_grpc target %q is not checked", g.GetGoogleGrpc().GetTargetUri())
		return
	}
	l.grpcCluster(g.GetEnvoyGrpc().GetClusterName(), p.field("envoy_grpc").field("cluster_name"), "ext_authz")
}

// grpcCluster checks the cluster of an Envoy gRPC client (ext_authz or the
// list filter): it exists (Envoy does not check: both filters create their
// clients with skip_cluster_check) and speaks HTTP/2.
func (l *linter) grpcCluster(name string, p Path, what string) {
	if _, ok := l.clusters[name]; !ok {
		if l.dynamicClusters {
			l.add(Info, RuleCluster, p, "cluster %q is not static; assumed to come from CDS", name)
			return
		}
		l.add(Error, RuleCluster, p, "%s cluster %q does not exist (static clusters: %s): Envoy accepts this at load and then fails every call (status_on_error)", what, name, strings.Join(l.clusterNames(), ", "))
		return
	}
	if l.h2Checked[name] {
		return
	}
	l.h2Checked[name] = true
	if ok, why := http2(l.clusters[name]); !ok {
		l.add(Error, RuleHTTP2, l.clusterPaths[name], "%s cluster %q %s: gRPC needs HTTP/2, every call would fail; set typed_extension_protocol_options[%s].explicit_http_config.http2_protocol_options: {}", what, name, why, typeHTTPOptions)
	}
}

// http2 reports whether a cluster always speaks HTTP/2 upstream.
func http2(c *clusterv3.Cluster) (bool, string) {
	if c.GetHttp2ProtocolOptions() != nil { //nolint:staticcheck // the deprecated form still works
		return true, ""
	}
	for _, a := range c.GetTypedExtensionProtocolOptions() {
		o, ok := unpack(a).(*upstreamhttpv3.HttpProtocolOptions)
		if !ok {
			continue
		}
		switch {
		case o.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil:
			return true, ""
		case o.GetExplicitHttpConfig() != nil:
			return false, "is configured for HTTP/1.1"
		case o.GetUseDownstreamProtocolConfig() != nil:
			return false, "follows the downstream protocol (HTTP/1.1 clients make it HTTP/1.1)"
		case o.GetAutoConfig() != nil:
			if c.GetTransportSocket() == nil {
				return false, "uses auto_config without TLS (ALPN), which means HTTP/1.1"
			}
			return true, ""
		}
	}
	for _, hc := range c.GetHealthChecks() {
		if hc.GetGrpcHealthCheck() != nil {
			return false, "has no HTTP/2 protocol options (Envoy defaults to HTTP/1.1; here only its gRPC health check makes Envoy refuse the cluster at load)"
		}
	}
	return false, "has no HTTP/2 protocol options (Envoy defaults to HTTP/1.1 and does not reject this at load)"
}

// body checks BufferSettings: complete bodies, as bytes, big enough.
func (l *linter) body(b *extauthzv3.BufferSettings, p Path, lis *listenerv3.Listener) {
	if b.GetAllowPartialMessage() {
		l.add(Error, RuleBody, p.field("allow_partial_message"), "true: bodies over max_request_bytes reach mcpauthz truncated (and are denied as partial); with false Envoy answers 413 itself")
	}
	if !b.GetPackAsBytes() {
		l.add(Error, RuleBody, p.field("pack_as_bytes"), "false: the body is sent as a UTF-8-sanitized string (invalid bytes become '!'), so mcpauthz may judge a different body than the MCP server receives; set pack_as_bytes: true")
	}
	const minBody = 64 << 10
	if n := b.GetMaxRequestBytes(); n > 0 && n < minBody {
		l.add(Warning, RuleBody, p.field("max_request_bytes"), "%d bytes: tools/call requests with larger arguments get 413 from Envoy; 1048576 is a common size", n)
	}
	if lis == nil {
		return
	}
	limit := uint32(1 << 20) // Envoy's default per_connection_buffer_limit_bytes
	if lis.GetPerConnectionBufferLimitBytes() != nil {
		limit = lis.GetPerConnectionBufferLimitBytes().GetValue()
	}
	if b.GetMaxRequestBytes() > limit {
		l.add(Warning, RuleBody, p.field("max_request_bytes"), "%d exceeds the listener's per_connection_buffer_limit_bytes (%d): raise the listener limit too", b.GetMaxRequestBytes(), limit)
	}
}

// allowedHeaders makes sure the headers mcpauthz decides on reach it.
func (l *linter) allowedHeaders(ea *extauthzv3.ExtAuthz, p Path) {
	required := []string{"authorization", "content-type", "content-encoding", "origin", "mcp-protocol-version", "mcp-session-id", "mcp-method", "mcp-name"}
	for _, h := range required {
		sev := Warning
		if h == "authorization" {
			sev = Error
		}
		if al := ea.GetAllowedHeaders(); al != nil {
			if ok, known := matchAny(al.GetPatterns(), h); known && !ok {
				l.add(sev, RuleHeaders, p.field("allowed_headers"), "%q does not match allowed_headers: mcpauthz never sees it", h)
			}
		}
		if dl := ea.GetDisallowedHeaders(); dl != nil {
			if ok, _ := matchAny(dl.GetPatterns(), h); ok {
				l.add(sev, RuleHeaders, p.field("disallowed_headers"), "%q matches disallowed_headers: mcpauthz never sees it", h)
			}
		}
	}
}

// mcp holds the lints for a connection manager that calls mcpauthz: SSE-safe
// timeouts, identity-header stripping, CORS, logging.
func (l *linter) mcp(h *hcmv3.HttpConnectionManager, p Path, filters []httpFilter, firstExt, cors int, routes []route) {
	switch t := h.GetStreamIdleTimeout(); {
	case t == nil:
		l.add(Warning, RuleSSE, p.field("stream_idle_timeout"), "unset: the 5 minute default closes idle SSE streams; set it above the MCP server's keep-alive interval (e.g. 3600s)")
	case t.AsDuration() == 0:
		l.add(Info, RuleSSE, p.field("stream_idle_timeout"), "0s disables the idle timeout: abandoned streams stay open until max_stream_duration")
	}
	maxStream := h.GetCommonHttpProtocolOptions().GetMaxStreamDuration().AsDuration() > 0
	for _, r := range routes {
		ra := r.r.GetRoute()
		if ra == nil {
			continue
		}
		switch t := ra.GetTimeout(); {
		case t == nil:
			l.add(Warning, RuleSSE, r.p.field("route").field("timeout"), "unset: Envoy's 15s default cuts SSE responses and long tool calls; set timeout: 0s on MCP routes")
		case t.AsDuration() == 0 && !maxStream && ra.GetMaxStreamDuration().GetMaxStreamDuration().AsDuration() == 0:
			l.add(Warning, RuleSSE, r.p.field("route").field("max_stream_duration"), "timeout: 0s without max_stream_duration: an SSE stream outlives the token that opened it (ext_authz runs once per request); cap it, e.g. max_stream_duration: {max_stream_duration: 3600s}")
		}
	}

	switch a := h.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction(); a {
	case corev3.HttpProtocolOptions_REJECT_REQUEST, corev3.HttpProtocolOptions_DROP_HEADER:
	default:
		l.add(Warning, RuleUnderscores, p.field("common_http_protocol_options").field("headers_with_underscores_action"),
			"%s: a client header x_mcp_subject may reach upstreams that treat '_' as '-' as x-mcp-subject; use REJECT_REQUEST", a)
	}

	l.identity(h, p, filters, firstExt, routes)
	l.cors(filters, cors, routes, p)

	logged := false
	for _, al := range h.GetAccessLog() {
		if m := unpack(al.GetTypedConfig()); m != nil && strings.Contains(fmt.Sprint(m), "DYNAMIC_METADATA(envoy.filters.http.ext_authz") {
			logged = true
		}
	}
	if !logged {
		l.add(Info, RuleAccessLog, p.field("access_log"), "no access log records mcpauthz's decision: log %%DYNAMIC_METADATA(envoy.filters.http.ext_authz:decision)%% and :reason")
	}
	if !h.GetUseRemoteAddress().GetValue() {
		l.add(Info, RuleRemoteAddress, p.field("use_remote_address"), "not true: at the edge, x-forwarded-for is taken from the client as is")
	}
}

// identity checks that client-sent identity headers are removed before
// ext_authz runs, and that nothing removes mcpauthz's headers after it.
func (l *linter) identity(h *hcmv3.HttpConnectionManager, p Path, filters []httpFilter, firstExt int, routes []route) {
	var muts []headerMutation
	for _, e := range h.GetEarlyHeaderMutationExtensions() {
		muts = append(muts, earlyMutations(unpack(e.GetTypedConfig()))...)
	}
	for _, f := range filters[:firstExt] {
		if hm, ok := f.cfg.(*headermutationv3.HeaderMutation); ok && f.kind == kindHeaderMutation && !f.f.GetDisabled() {
			muts = append(muts, hm.GetMutations().GetRequestMutations()...)
		}
	}
	var missing []string
	for _, name := range identityHeaders {
		if !removes(muts, name) {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		l.add(Warning, RuleIdentity, p.field("early_header_mutation_extensions"),
			"client-sent identity headers are not removed before ext_authz: %s (use early_header_mutation_extensions or a header_mutation filter before ext_authz); mcpauthz overwrites them on allow, but strip them at the edge too", strings.Join(missing, ", "))
	}
	check := func(hs []string, hp Path) {
		for i, hname := range hs {
			if slices.Contains(identityHeaders, strings.ToLower(hname)) {
				l.add(Warning, RuleIdentity, hp.index(i), "%s is removed by the router, after ext_authz: this deletes the identity mcpauthz injected, not the client's; strip it with early_header_mutation_extensions instead", hname)
			}
		}
	}
	check(h.GetRouteConfig().GetRequestHeadersToRemove(), p.field("route_config").field("request_headers_to_remove"))
	seen := map[*routev3.VirtualHost]bool{}
	for _, r := range routes {
		if !seen[r.vh] {
			seen[r.vh] = true
			vhp := r.p[:len(r.p)-2] // strip .routes[j]
			check(r.vh.GetRequestHeadersToRemove(), vhp.field("request_headers_to_remove"))
		}
		check(r.r.GetRequestHeadersToRemove(), r.p.field("request_headers_to_remove"))
	}
}

// corsPolicy is the part of either CORS policy type the lints read.
type corsPolicy struct {
	methods, headers, expose string
	credentials, origins     bool
	forward                  *wrapperspb.BoolValue // forward_not_matching_preflights
	p                        Path
}

// mcpCORSHeaders must be allowed in preflights for browser MCP clients (P5).
var (
	mcpCORSHeaders = []string{"authorization", "content-type", "mcp-protocol-version", "mcp-session-id", "mcp-method", "mcp-name", "last-event-id"}
	mcpCORSExpose  = []string{"mcp-session-id", "www-authenticate"}
	mcpCORSMethods = []string{"GET", "POST", "DELETE"}
)

func (l *linter) cors(filters []httpFilter, cors int, routes []route, p Path) {
	if cors < 0 {
		l.add(Info, RuleCORS, p.field("http_filters"), "no CORS filter: browser-based MCP clients cannot connect; add envoy.filters.http.cors before ext_authz with a CorsPolicy if they should")
		return
	}
	name := filters[cors].name
	var policies []corsPolicy
	fromFilter := func(m map[string]*anypb.Any, pp Path) {
		if cp, ok := unpack(m[name]).(*corsv3.CorsPolicy); ok {
			policies = append(policies, corsPolicy{cp.GetAllowMethods(), cp.GetAllowHeaders(), cp.GetExposeHeaders(),
				cp.GetAllowCredentials().GetValue(), len(cp.GetAllowOriginStringMatch()) > 0, cp.GetForwardNotMatchingPreflights(),
				pp.field("typed_per_filter_config").key(name)})
		}
	}
	fromRoute := func(cp *routev3.CorsPolicy, pp Path) {
		if cp != nil {
			policies = append(policies, corsPolicy{cp.GetAllowMethods(), cp.GetAllowHeaders(), cp.GetExposeHeaders(),
				cp.GetAllowCredentials().GetValue(), len(cp.GetAllowOriginStringMatch()) > 0, cp.GetForwardNotMatchingPreflights(),
				pp.field("cors")})
		}
	}
	seen := map[*routev3.VirtualHost]bool{}
	for _, r := range routes {
		vhp := r.p[:len(r.p)-2]
		if !seen[r.vh] {
			seen[r.vh] = true
			fromFilter(r.vh.GetTypedPerFilterConfig(), vhp)
			fromRoute(r.vh.GetCors(), vhp) //nolint:staticcheck // still honoured
		}
		fromFilter(r.r.GetTypedPerFilterConfig(), r.p)
		fromRoute(r.r.GetRoute().GetCors(), r.p.field("route")) //nolint:staticcheck // still honoured
	}
	if len(policies) == 0 {
		l.add(Warning, RuleCORS, filters[cors].path, "CORS filter %q has no CorsPolicy on any virtual host or route: it does nothing; add one under typed_per_filter_config[%q]", name, name)
		return
	}
	for _, c := range policies {
		// A preflight carries no token. The CORS filter answers those of an
		// allowed origin itself; the others it forwards unless told not to,
		// through ext_authz (which lets a well-formed preflight to the MCP
		// path pass without a token) to the upstream.
		switch {
		case c.forward == nil:
			l.add(Error, RulePreflight, c.p.field("forward_not_matching_preflights"), "unset (Envoy's default is true): preflights from origins this policy does not allow are forwarded, without a token, to ext_authz and the upstream; set forward_not_matching_preflights: false so that Envoy answers every preflight itself")
		case c.forward.GetValue():
			l.add(Error, RulePreflight, c.p.field("forward_not_matching_preflights"), "true: preflights from origins this policy does not allow are forwarded, without a token, to ext_authz and the upstream; set it to false so that Envoy answers every preflight itself")
		}
		if !c.origins {
			l.add(Warning, RuleCORS, c.p.field("allow_origin_string_match"), "no allowed origins: every cross-origin request is refused")
		}
		if m := missingTokens(c.methods, mcpCORSMethods, false, false); len(m) > 0 {
			l.add(Warning, RuleCORS, c.p.field("allow_methods"), "missing %s: browser MCP clients need GET (SSE), POST and DELETE (session end)", strings.Join(m, ", "))
		}
		if m := missingTokens(c.headers, mcpCORSHeaders, true, !c.credentials); len(m) > 0 {
			l.add(Warning, RuleCORS, c.p.field("allow_headers"), "missing %s: browsers refuse MCP requests carrying them", strings.Join(m, ", "))
		}
		if m := missingTokens(c.expose, mcpCORSExpose, true, !c.credentials); len(m) > 0 {
			l.add(Warning, RuleCORS, c.p.field("expose_headers"), "missing %s: browser clients cannot read the session id or the 401 challenge", strings.Join(m, ", "))
		}
	}
}

// missingTokens returns the required entries absent from a comma-separated
// list. A "*" covers everything except Authorization when wildcardOK (the
// Fetch standard never lets "*" cover Authorization).
func missingTokens(list string, required []string, fold, wildcardOK bool) []string {
	have := map[string]bool{}
	for _, t := range strings.Split(list, ",") {
		t = strings.TrimSpace(t)
		if fold {
			t = strings.ToLower(t)
		}
		have[t] = true
	}
	var out []string
	for _, r := range required {
		if have[r] || (wildcardOK && have["*"] && r != "authorization") {
			continue
		}
		out = append(out, r)
	}
	return out
}

// catchAll flags a route that forwards every path to an upstream. The MCP
// server is then reachable at every endpoint it has, and only mcpauthz's
// policy (which denies requests outside its MCP paths) keeps the others
// closed; a policy edit that allows too much, or an upstream that treats a
// path mcpauthz does not recognise as MCP, opens them. Route exactly the
// MCP path(s) and the metadata paths, and answer everything else with a
// direct_response. Without ext_authz on that route, every path is open.
func (l *linter) catchAll(filters []httpFilter, routes []route) {
	var authz []httpFilter
	for _, f := range filters {
		if f.kind == kindExtAuthz {
			authz = append(authz, f)
		}
	}
	for _, r := range routes {
		ra := r.r.GetRoute()
		if ra == nil || !matchesEveryPath(r.r.GetMatch()) {
			continue
		}
		target := routeTarget(ra)
		if !authorized(r, authz) {
			l.add(Error, RuleCatchAll, r.p.field("match"), "forwards every path to %s without ext_authz: every endpoint of the upstream is reachable without a token; route only the MCP and metadata paths, and answer the rest with a direct_response 404", target)
			continue
		}
		l.add(Warning, RuleCatchAll, r.p.field("match"), "forwards every path not matched before to %s: every endpoint of the upstream is reachable, closed only by mcpauthz's policy; route only the MCP path(s) and /.well-known/oauth-protected-resource[/mcp], and answer the rest with a direct_response 404 that disables ext_authz (see envoy/envoy.yaml)", target)
	}
}

// matchesEveryPath reports whether a route match accepts any path: prefix
// "" or "/", or a regex that matches "/", "/admin" and "/a/b.c" alike.
func matchesEveryPath(m *routev3.RouteMatch) bool {
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		return ps.Prefix == "" || ps.Prefix == "/"
	case *routev3.RouteMatch_SafeRegex:
		re, err := regexp.Compile(`^(?:` + ps.SafeRegex.GetRegex() + `)$`)
		if err != nil {
			return false
		}
		for _, probe := range []string{"/", "/admin", "/a/b.c"} {
			if !re.MatchString(probe) {
				return false
			}
		}
		return true
	}
	return false
}

func routeTarget(ra *routev3.RouteAction) string {
	switch {
	case ra.GetCluster() != "":
		return fmt.Sprintf("cluster %q", ra.GetCluster())
	case ra.GetWeightedClusters() != nil:
		var names []string
		for _, c := range ra.GetWeightedClusters().GetClusters() {
			names = append(names, c.GetName())
		}
		return fmt.Sprintf("clusters %q", names)
	case ra.GetClusterHeader() != "":
		return fmt.Sprintf("the cluster named by header %q", ra.GetClusterHeader())
	}
	return "its upstream"
}

// authorized reports whether some ext_authz filter runs on route r: its
// most specific per-filter config (route, then virtual host) does not
// disable it, and without one the filter is not disabled by default.
func authorized(r route, authz []httpFilter) bool {
	for _, f := range authz {
		on := !f.f.GetDisabled()
		for _, m := range []map[string]*anypb.Any{r.vh.GetTypedPerFilterConfig(), r.r.GetTypedPerFilterConfig()} {
			if a, ok := m[f.name]; ok {
				on = !disables(a)
			}
		}
		if on {
			return true
		}
	}
	return false
}

// disables reports whether a per-filter config turns ext_authz off.
func disables(a *anypb.Any) bool {
	switch c := unpack(a).(type) {
	case *routev3.FilterConfig:
		if c.GetDisabled() {
			return true
		}
		return c.GetConfig() != nil && disables(c.GetConfig())
	case *extauthzv3.ExtAuthzPerRoute:
		return c.GetDisabled()
	}
	return false
}
