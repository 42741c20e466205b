package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	securityv1beta1 "istio.io/api/security/v1beta1"
	corev1 "k8s.io/api/core/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/mcpauthz/mcpauthz/extproc"
	"github.com/mcpauthz/mcpauthz/internal/envoycheck"
)

const (
	istioDir = "deploy/istio"
	egDir    = "deploy/envoy-gateway"
	minBody  = 64 << 10 // smallest body limit that fits real tool arguments
)

// identityHeaders are the headers mcpauthz sets upstream on allow.
var identityHeaders = []string{"x-mcp-subject", "x-mcp-client-id", "x-mcp-scopes", "x-mcp-issuer"}

// mcpauthzService returns the in-cluster DNS name and gRPC port of the
// example installation's Service.
func mcpauthzService(t *testing.T) (name, namespace string, port int32) {
	t.Helper()
	ns := load[kustomization](t, overlayDir+"/kustomization.yaml").Namespace
	for _, s := range loadAll[corev1.Service](t, baseDir+"/service.yaml") {
		if s.Name != "mcpauthz" {
			continue
		}
		for _, p := range s.Spec.Ports {
			if p.Name == "grpc-authz" {
				return s.Name, ns, p.Port
			}
		}
	}
	t.Fatal("no Service mcpauthz with port grpc-authz")
	return "", "", 0
}

func TestIstio(t *testing.T) {
	svc, ns, port := mcpauthzService(t)

	// meshConfig: the ext_authz provider.
	var values struct {
		MeshConfig json.RawMessage `json:"meshConfig"`
	}
	for _, d := range documents(t, istioDir+"/istiod-values.yaml") {
		if err := strict(d.raw, &values); err != nil {
			t.Fatal(err)
		}
	}
	var mesh meshv1alpha1.MeshConfig
	if err := protoJSONStrict(values.MeshConfig, &mesh); err != nil {
		t.Fatalf("meshConfig: %v", err)
	}
	var provider *meshv1alpha1.MeshConfig_ExtensionProvider
	for _, p := range mesh.GetExtensionProviders() {
		if p.GetEnvoyExtAuthzGrpc() != nil {
			provider = p
		}
	}
	if provider == nil {
		t.Fatal("no envoyExtAuthzGrpc extension provider")
	}
	g := provider.GetEnvoyExtAuthzGrpc()
	if want := fmt.Sprintf("%s.%s.svc.cluster.local", svc, ns); g.GetService() != want || g.GetPort() != uint32(port) {
		t.Errorf("provider points at %s:%d, the Service is %s:%d", g.GetService(), g.GetPort(), want, port)
	}
	if g.GetFailOpen() {
		t.Error("failOpen: true")
	}
	if g.GetStatusOnError() != "503" {
		t.Errorf("statusOnError %q, want \"503\"", g.GetStatusOnError())
	}
	if g.GetTimeout() == nil || g.GetTimeout().AsDuration() > 5*time.Second {
		t.Error("timeout unset (Istio's default is 600s) or above 5s")
	}
	if b := g.GetIncludeRequestBodyInCheck(); b == nil || !b.GetPackAsBytes() || b.GetAllowPartialMessage() || b.GetMaxRequestBytes() < minBody {
		t.Errorf("includeRequestBodyInCheck %v: want packAsBytes, no partial message, maxRequestBytes >= %d", b, minBody)
	}
	if g.GetClearRouteCache() {
		t.Error("clearRouteCache: true")
	}

	// AuthorizationPolicy: CUSTOM with that provider.
	var ap securityv1beta1.AuthorizationPolicy
	apo := loadIstio(t, istioDir+"/authorization-policy.yaml", &ap)
	if ap.GetAction() != securityv1beta1.AuthorizationPolicy_CUSTOM || ap.GetProvider().GetName() != provider.GetName() {
		t.Errorf("AuthorizationPolicy: action %v provider %q, want CUSTOM with %q", ap.GetAction(), ap.GetProvider().GetName(), provider.GetName())
	}
	if len(ap.GetRules()) == 0 {
		t.Error("AuthorizationPolicy without rules matches nothing for CUSTOM")
	}

	// EnvoyFilter: same workload; every patch is valid Envoy config.
	var ef networkingv1alpha3.EnvoyFilter
	efo := loadIstio(t, istioDir+"/envoyfilter-strip-identity-headers.yaml", &ef)
	if efo.Metadata.Namespace != apo.Metadata.Namespace || !mapsEqual(ef.GetWorkloadSelector().GetLabels(), ap.GetSelector().GetMatchLabels()) {
		t.Error("the EnvoyFilter and the AuthorizationPolicy select different workloads")
	}
	var removed []string
	underscores := false
	for i, cp := range ef.GetConfigPatches() {
		js, err := protojson.Marshal(cp.GetPatch().GetValue())
		if err != nil {
			t.Fatal(err)
		}
		where := fmt.Sprintf("configPatches[%d]", i)
		if cp.GetMatch().GetContext() != networkingv1alpha3.EnvoyFilter_SIDECAR_INBOUND {
			t.Errorf("%s: context %v, want SIDECAR_INBOUND (the MCP server's inbound traffic)", where, cp.GetMatch().GetContext())
		}
		switch op := cp.GetPatch().GetOperation(); {
		case cp.GetApplyTo() == networkingv1alpha3.EnvoyFilter_HTTP_FILTER && (op == networkingv1alpha3.EnvoyFilter_Patch_INSERT_FIRST || op == networkingv1alpha3.EnvoyFilter_Patch_INSERT_BEFORE):
			var hf hcmv3.HttpFilter
			if r, err := envoycheck.ValidateAs(t.Context(), js, &hf); err != nil {
				t.Errorf("%s: %v\n%v", where, err, r.Findings)
				continue
			}
			var hm headermutationv3.HeaderMutation
			if err := hf.GetTypedConfig().UnmarshalTo(&hm); err != nil {
				t.Errorf("%s: not a header_mutation filter: %v", where, err)
				continue
			}
			for _, m := range hm.GetMutations().GetRequestMutations() {
				removed = append(removed, m.GetRemove())
			}
		case cp.GetApplyTo() == networkingv1alpha3.EnvoyFilter_NETWORK_FILTER && op == networkingv1alpha3.EnvoyFilter_Patch_MERGE:
			var f listenerv3.Filter
			if r, err := envoycheck.DecodeAs(t.Context(), js, &f); err != nil {
				t.Errorf("%s: %v\n%v", where, err, r.Findings)
				continue
			}
			var h hcmv3.HttpConnectionManager
			if err := f.GetTypedConfig().UnmarshalTo(&h); err == nil &&
				h.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction() == corev3.HttpProtocolOptions_REJECT_REQUEST {
				underscores = true
			}
		default:
			t.Errorf("%s: %v %v is not checked by this test", where, cp.GetApplyTo(), op)
		}
	}
	for _, h := range identityHeaders {
		if !slices.Contains(removed, h) {
			t.Errorf("the EnvoyFilter does not strip %s", h)
		}
	}
	if !underscores {
		t.Error("the EnvoyFilter does not set headers_with_underscores_action: REJECT_REQUEST")
	}

	// The list filter: the filter of envoy/envoy.yaml (whose lints
	// internal/envoycheck runs), before the router and so after Istio's
	// ext_authz, calling Istio's cluster for the mcpauthz Service.
	var lf networkingv1alpha3.EnvoyFilter
	lfo := loadIstio(t, istioDir+"/envoyfilter-list-filter.yaml", &lf)
	if lfo.Metadata.Namespace != apo.Metadata.Namespace || !mapsEqual(lf.GetWorkloadSelector().GetLabels(), ap.GetSelector().GetMatchLabels()) {
		t.Error("the list filter EnvoyFilter and the AuthorizationPolicy select different workloads")
	}
	if len(lf.GetConfigPatches()) != 1 {
		t.Fatalf("the list filter EnvoyFilter has %d patches, want 1", len(lf.GetConfigPatches()))
	}
	cp := lf.GetConfigPatches()[0]
	hcmMatch := cp.GetMatch().GetListener().GetFilterChain().GetFilter()
	if cp.GetApplyTo() != networkingv1alpha3.EnvoyFilter_HTTP_FILTER || cp.GetMatch().GetContext() != networkingv1alpha3.EnvoyFilter_SIDECAR_INBOUND ||
		hcmMatch.GetName() != "envoy.filters.network.http_connection_manager" || hcmMatch.GetSubFilter().GetName() != "envoy.filters.http.router" ||
		cp.GetPatch().GetOperation() != networkingv1alpha3.EnvoyFilter_Patch_INSERT_BEFORE {
		t.Errorf("list filter patch %v: want HTTP_FILTER INSERT_BEFORE envoy.filters.http.router in SIDECAR_INBOUND (INSERT_FIRST would run it before ext_authz)", cp)
	}
	js, err := protojson.Marshal(cp.GetPatch().GetValue())
	if err != nil {
		t.Fatal(err)
	}
	var hf hcmv3.HttpFilter
	if r, err := envoycheck.ValidateAs(t.Context(), js, &hf); err != nil || len(r.Findings) > 0 {
		t.Fatalf("list filter patch: %v\n%v", err, r.Findings)
	}
	cluster := fmt.Sprintf("outbound|%d||%s.%s.svc.cluster.local", port, svc, ns)
	if n := bytes.Count(js, []byte(`"`+cluster+`"`)); n != 1 {
		t.Fatalf("the list filter patch names cluster %q %d times, want once (the mcpauthz Service's gRPC port)", cluster, n)
	}
	var asShipped hcmv3.HttpFilter
	if err := protojson.Unmarshal(bytes.Replace(js, []byte(`"`+cluster+`"`), []byte(`"mcpauthz"`), 1), &asShipped); err != nil {
		t.Fatal(err)
	}
	if shipped := shippedListFilter(t); !proto.Equal(&asShipped, shipped) {
		t.Errorf("the list filter patch differs from envoy/envoy.yaml's %q in more than its cluster:\n got %v\nwant %v", shipped.GetName(), &asShipped, shipped)
	}
}

// shippedListFilter is the list filter of envoy/envoy.yaml.
func shippedListFilter(t *testing.T) *hcmv3.HttpFilter {
	t.Helper()
	var bs bootstrapv3.Bootstrap
	if r, err := envoycheck.DecodeAs(t.Context(), readRoot(t, "envoy/envoy.yaml"), &bs); err != nil {
		t.Fatalf("envoy/envoy.yaml: %v\n%v", err, r.Findings)
	}
	for _, lis := range bs.GetStaticResources().GetListeners() {
		for _, fc := range lis.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var h hcmv3.HttpConnectionManager
				if f.GetTypedConfig().UnmarshalTo(&h) != nil {
					continue
				}
				for _, hf := range h.GetHttpFilters() {
					if hf.GetName() == "mcpauthz.list_filter" {
						return hf
					}
				}
			}
		}
	}
	t.Fatal("envoy/envoy.yaml has no http filter mcpauthz.list_filter")
	return nil
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) || len(a) == 0 {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

var (
	// gateway-api's Duration (GEP-2257) and Envoy Gateway's Origin patterns.
	gwDuration = regexp.MustCompile(`^([0-9]{1,5}(h|m|s|ms)){1,4}$`)
	egOrigin   = regexp.MustCompile(`^(\*|[A-Za-z][A-Za-z0-9+.-]*:\/\/(\*|(\*\.)?(([\w-]+\.?)+)?[\w-]+)(:\d{1,5})?)$`)
	egMethods  = []string{"GET", "POST", "DELETE"}
	corsAllow  = []string{"authorization", "content-type", "mcp-protocol-version", "mcp-session-id", "mcp-method", "mcp-name", "last-event-id"}
	corsExpose = []string{"mcp-session-id", "www-authenticate"}
)

func gwDur(t *testing.T, what string, d *gwapiv1.Duration) time.Duration {
	t.Helper()
	if d == nil {
		t.Errorf("%s: unset", what)
		return 0
	}
	if !gwDuration.MatchString(string(*d)) {
		t.Errorf("%s %q is not a Gateway API duration", what, *d)
	}
	v, _ := time.ParseDuration(string(*d))
	return v
}

func lower(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.ToLower(s)
	}
	return out
}

func TestEnvoyGateway(t *testing.T) {
	svc, ns, port := mcpauthzService(t)
	gw := load[gwapiv1.Gateway](t, egDir+"/gateway.yaml")
	hr := load[gwapiv1.HTTPRoute](t, egDir+"/httproute.yaml")
	sp := load[egv1a1.SecurityPolicy](t, egDir+"/securitypolicy.yaml")
	ctp := load[egv1a1.ClientTrafficPolicy](t, egDir+"/clienttrafficpolicy.yaml")
	eep := load[egv1a1.EnvoyExtensionPolicy](t, egDir+"/envoyextensionpolicy.yaml")
	rg := load[gwapiv1.ReferenceGrant](t, egDir+"/referencegrant.yaml")

	// Route → Gateway listener.
	if len(hr.Spec.ParentRefs) == 0 || string(hr.Spec.ParentRefs[0].Name) != gw.Name {
		t.Fatal("the HTTPRoute is not attached to the Gateway")
	}
	pr := hr.Spec.ParentRefs[0]
	if pr.SectionName == nil || !slices.ContainsFunc(gw.Spec.Listeners, func(l gwapiv1.Listener) bool {
		return l.Name == *pr.SectionName && l.Protocol == gwapiv1.HTTPSProtocolType
	}) {
		t.Error("the HTTPRoute's sectionName is not an HTTPS listener of the Gateway")
	}
	// Only the MCP path and the metadata paths are routed, exactly: every
	// other path gets Envoy's 404 and reaches neither mcpauthz nor the MCP
	// server.
	var routed []string
	for _, r := range hr.Spec.Rules {
		for _, m := range r.Matches {
			if m.Path == nil || m.Path.Type == nil || *m.Path.Type != gwapiv1.PathMatchExact || m.Path.Value == nil ||
				m.Method != nil || len(m.Headers) > 0 || len(m.QueryParams) > 0 {
				t.Errorf("HTTPRoute match %+v: want a bare Exact path match", m)
				continue
			}
			routed = append(routed, *m.Path.Value)
			if *m.Path.Value == "/mcp" && (r.Timeouts == nil || gwDur(t, "MCP rule timeouts.request", r.Timeouts.Request) != 0) {
				t.Error("the MCP rule needs timeouts.request: 0s (SSE)")
			}
		}
	}
	slices.Sort(routed)
	if want := []string{"/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp", "/mcp"}; !slices.Equal(routed, want) {
		t.Errorf("HTTPRoute routes %v, want exactly %v", routed, want)
	}

	// SecurityPolicy → route, mcpauthz Service, ReferenceGrant.
	targetsRoute := func(ns string, refs []gwapiv1.LocalPolicyTargetReferenceWithSectionName) bool {
		return ns == hr.Namespace && slices.ContainsFunc(refs, func(r gwapiv1.LocalPolicyTargetReferenceWithSectionName) bool {
			return r.Kind == "HTTPRoute" && string(r.Name) == hr.Name && r.Group == gwapiv1.GroupName && r.SectionName == nil
		})
	}
	if !targetsRoute(sp.Namespace, sp.Spec.TargetRefs) {
		t.Error("the SecurityPolicy does not target the whole HTTPRoute")
	}
	ea := sp.Spec.ExtAuth
	if ea == nil || ea.GRPC == nil || len(ea.GRPC.BackendRefs) != 1 {
		t.Fatal("the SecurityPolicy needs extAuth.grpc with one backendRef")
	}
	br := ea.GRPC.BackendRefs[0]
	if string(br.Name) != svc || br.Namespace == nil || string(*br.Namespace) != ns || br.Port == nil || *br.Port != port {
		t.Errorf("extAuth backendRef %v, want Service %s/%s port %d", br, ns, svc, port)
	}
	granted := func(kind, from string) bool {
		return rg.Namespace == ns && slices.ContainsFunc(rg.Spec.From, func(f gwapiv1.ReferenceGrantFrom) bool {
			return f.Group == "gateway.envoyproxy.io" && string(f.Kind) == kind && string(f.Namespace) == from
		}) && slices.ContainsFunc(rg.Spec.To, func(to gwapiv1.ReferenceGrantTo) bool {
			return to.Group == "" && to.Kind == "Service" && (to.Name == nil || string(*to.Name) == svc)
		})
	}
	if !granted("SecurityPolicy", sp.Namespace) {
		t.Error("no ReferenceGrant lets the SecurityPolicy reach the mcpauthz Service in another namespace")
	}
	if ea.FailOpen == nil || *ea.FailOpen {
		t.Error("extAuth.failOpen must be false, explicitly")
	}
	if ea.StatusOnError == nil || *ea.StatusOnError != 503 || !egStatusOnError[*ea.StatusOnError] {
		t.Error("extAuth.statusOnError must be 503")
	}
	if d := gwDur(t, "extAuth.timeout", ea.Timeout); d <= 0 || d > 5*time.Second {
		t.Errorf("extAuth.timeout %v: want (0, 5s] (Envoy Gateway's default is 10s)", d)
	}
	if ea.BodyToExtAuth == nil || ea.BodyToExtAuth.MaxRequestBytes < minBody {
		t.Errorf("extAuth.bodyToExtAuth.maxRequestBytes must be >= %d", minBody)
	}

	// CORS in front of ext_authz.
	cors := sp.Spec.CORS
	if cors == nil {
		t.Fatal("no CORS policy")
	}
	for _, o := range cors.AllowOrigins {
		if !egOrigin.MatchString(string(o)) {
			t.Errorf("CORS origin %q does not match the CRD's pattern", o)
		}
	}
	for want, have := range map[*[]string][]string{&egMethods: cors.AllowMethods, &corsAllow: lower(cors.AllowHeaders), &corsExpose: lower(cors.ExposeHeaders)} {
		for _, w := range *want {
			if !slices.Contains(have, w) {
				t.Errorf("CORS: %s missing from %v", w, have)
			}
		}
	}
	gwDur(t, "cors.maxAge", cors.MaxAge)

	// ClientTrafficPolicy on the Gateway: identity headers, underscores,
	// stream idle timeout, buffer for the body.
	if ctp.Namespace != gw.Namespace || !slices.ContainsFunc(ctp.Spec.TargetRefs, func(r gwapiv1.LocalPolicyTargetReferenceWithSectionName) bool {
		return r.Kind == "Gateway" && string(r.Name) == gw.Name
	}) {
		t.Error("the ClientTrafficPolicy does not target the Gateway")
	}
	h := ctp.Spec.Headers
	if h == nil || h.EarlyRequestHeaders == nil {
		t.Fatal("no headers.earlyRequestHeaders")
	}
	for _, id := range identityHeaders {
		if !slices.Contains(lower(h.EarlyRequestHeaders.Remove), id) {
			t.Errorf("earlyRequestHeaders does not remove %s", id)
		}
	}
	if a := h.WithUnderscoresAction; a == nil || (*a != "RejectRequest" && *a != "DropHeader") {
		t.Error("headers.withUnderscoresAction must be RejectRequest or DropHeader")
	}
	if ctp.Spec.Timeout == nil || ctp.Spec.Timeout.HTTP == nil || gwDur(t, "timeout.http.streamIdleTimeout", ctp.Spec.Timeout.HTTP.StreamIdleTimeout) < 10*time.Minute {
		t.Error("timeout.http.streamIdleTimeout must be at least 10m (SSE)")
	}
	if c := ctp.Spec.Connection; c == nil || c.BufferLimit == nil || c.BufferLimit.Value() < int64(ea.BodyToExtAuth.MaxRequestBytes) {
		t.Error("connection.bufferLimit must hold bodyToExtAuth.maxRequestBytes (the default is 32 KiB)")
	}
	// One path, one decision: slashes merged, escaped slashes refused
	// (Envoy Gateway's default unescapes and redirects).
	if ps := ctp.Spec.Path; ps == nil || ps.EscapedSlashesAction == nil || *ps.EscapedSlashesAction != egv1a1.RejectRequestAction ||
		(ps.DisableMergeSlashes != nil && *ps.DisableMergeSlashes) {
		t.Error("path: want escapedSlashesAction: RejectRequest and slashes merged")
	}

	// EnvoyExtensionPolicy: the list filter on the same route, calling the
	// same Service, in the modes the processor requires, fail closed.
	if !targetsRoute(eep.Namespace, eep.Spec.TargetRefs) || eep.Spec.TargetRef != nil || len(eep.Spec.TargetSelectors) > 0 {
		t.Error("the EnvoyExtensionPolicy does not target exactly the whole HTTPRoute")
	}
	if !granted("EnvoyExtensionPolicy", eep.Namespace) {
		t.Error("no ReferenceGrant lets the EnvoyExtensionPolicy reach the mcpauthz Service in another namespace")
	}
	if len(eep.Spec.ExtProc) != 1 || len(eep.Spec.Wasm)+len(eep.Spec.Lua) > 0 {
		t.Fatal("the EnvoyExtensionPolicy needs exactly one extProc and nothing else")
	}
	ep := eep.Spec.ExtProc[0]
	if len(ep.BackendRefs) != 1 || ep.BackendRef != nil {
		t.Fatal("extProc needs exactly one backendRef (backendRefs)")
	}
	if b := ep.BackendRefs[0]; !reflect.DeepEqual(b.BackendObjectReference, br.BackendObjectReference) || b.Weight != nil || b.Fallback != nil {
		t.Errorf("extProc backendRef %v, want the ext_authz backend %v (mcpauthz serves both on one port)", b.BackendObjectReference, br.BackendObjectReference)
	}
	pm := ep.ProcessingMode
	switch {
	case pm == nil || pm.Response == nil || pm.Response.Body == nil || *pm.Response.Body != egv1a1.FullDuplexStreamedExtBodyProcessingMode:
		t.Error("extProc.processingMode.response.body must be FullDuplexStreamed (response headers, body and trailers: what the processor requires)")
	case pm.Request != nil:
		t.Error("extProc.processingMode.request must be absent (request headers SKIP, body NONE)")
	case pm.AllowModeOverride:
		t.Error("extProc.processingMode.allowModeOverride: the processor never overrides")
	}
	if ep.FailOpen == nil || *ep.FailOpen {
		t.Error("extProc.failOpen must be false, explicitly")
	}
	if ep.ShadowMode != nil && *ep.ShadowMode {
		t.Error("extProc.shadowMode never filters a response")
	}
	if ep.StatusOnError == nil || *ep.StatusOnError != 503 || !egStatusOnError[*ep.StatusOnError] {
		t.Error("extProc.statusOnError must be 503")
	}
	if d := gwDur(t, "extProc.messageTimeout", ep.MessageTimeout); d <= 0 || d > 5*time.Second {
		t.Errorf("extProc.messageTimeout %v: want (0, 5s] (Envoy Gateway's default is 200ms)", d)
	}
	if md := ep.Metadata; md == nil || !slices.Equal(md.AccessibleNamespaces, []string{extproc.MetadataNamespace}) || len(md.WritableNamespaces) > 0 {
		t.Errorf("extProc.metadata %+v: want accessibleNamespaces [%s] and no writableNamespaces", md, extproc.MetadataNamespace)
	}
}
