package deploy

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	securityv1beta1 "istio.io/api/security/v1beta1"
	corev1 "k8s.io/api/core/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

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
	sp := load[egSecurityPolicy](t, egDir+"/securitypolicy.yaml")
	ctp := load[egClientTrafficPolicy](t, egDir+"/clienttrafficpolicy.yaml")
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
	mcpRule := false
	for _, r := range hr.Spec.Rules {
		for _, m := range r.Matches {
			if m.Path != nil && m.Path.Value != nil && *m.Path.Value == "/mcp" {
				mcpRule = true
				if r.Timeouts == nil || gwDur(t, "MCP rule timeouts.request", r.Timeouts.Request) != 0 {
					t.Error("the MCP rule needs timeouts.request: 0s (SSE)")
				}
			}
		}
	}
	if !mcpRule {
		t.Error("no HTTPRoute rule for /mcp")
	}

	// SecurityPolicy → route, mcpauthz Service, ReferenceGrant.
	if sp.Metadata.Namespace != hr.Namespace || !slices.ContainsFunc(sp.Spec.TargetRefs, func(r gwapiv1.LocalPolicyTargetReferenceWithSectionName) bool {
		return r.Kind == "HTTPRoute" && string(r.Name) == hr.Name && r.Group == gwapiv1.GroupName
	}) {
		t.Error("the SecurityPolicy does not target the HTTPRoute")
	}
	ea := sp.Spec.ExtAuth
	if ea == nil || ea.GRPC == nil || len(ea.GRPC.BackendRefs) != 1 {
		t.Fatal("the SecurityPolicy needs extAuth.grpc with one backendRef")
	}
	br := ea.GRPC.BackendRefs[0]
	if string(br.Name) != svc || br.Namespace == nil || string(*br.Namespace) != ns || br.Port == nil || *br.Port != port {
		t.Errorf("extAuth backendRef %v, want Service %s/%s port %d", br, ns, svc, port)
	}
	granted := rg.Namespace == ns && slices.ContainsFunc(rg.Spec.From, func(f gwapiv1.ReferenceGrantFrom) bool {
		return f.Group == "gateway.envoyproxy.io" && f.Kind == "SecurityPolicy" && string(f.Namespace) == sp.Metadata.Namespace
	}) && slices.ContainsFunc(rg.Spec.To, func(to gwapiv1.ReferenceGrantTo) bool {
		return to.Group == "" && to.Kind == "Service" && (to.Name == nil || string(*to.Name) == svc)
	})
	if !granted {
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
		if !egOrigin.MatchString(o) {
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
	if ctp.Metadata.Namespace != gw.Namespace || !slices.ContainsFunc(ctp.Spec.TargetRefs, func(r gwapiv1.LocalPolicyTargetReferenceWithSectionName) bool {
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
}
