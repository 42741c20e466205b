package extproc

import (
	"os"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	matchingv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/matching/v3"
	compositev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/composite/v3"
	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	networkinputsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/matching/common_inputs/network/v3"
	metadatamatcherv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/matching/input_matchers/metadata/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/mcpauthz/mcpauthz/internal/envoycheck"
)

// TestEnvoyConfig validates the shipped Envoy configuration (strict schema,
// constraints inside every Any, mcpauthz's lints) and checks that its list
// filter is the configuration the processor is written for.
func TestEnvoyConfig(t *testing.T) {
	data, err := os.ReadFile("../envoy/envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r, err := envoycheck.Validate(t.Context(), data)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range r.Findings {
		if f.Severity >= envoycheck.Warning {
			t.Errorf("finding: %s", f)
		}
	}
	var bs bootstrapv3.Bootstrap
	if _, err := envoycheck.DecodeAs(t.Context(), data, &bs); err != nil {
		t.Fatal(err)
	}
	hcm := &hcmv3.HttpConnectionManager{}
	unpack(t, bs.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig(), hcm)
	var names []string
	var ewm *matchingv3.ExtensionWithMatcher
	for _, f := range hcm.GetHttpFilters() {
		names = append(names, f.GetName())
		if f.GetName() == "mcpauthz.list_filter" {
			ewm = &matchingv3.ExtensionWithMatcher{}
			unpack(t, f.GetTypedConfig(), ewm)
		}
	}
	if got := strings.Join(names, ","); got != "envoy.filters.http.cors,envoy.filters.http.ext_authz,mcpauthz.list_filter,envoy.filters.http.router" {
		t.Fatalf("filter order %s: the list filter must come after ext_authz, before the router", got)
	}
	m := ewm.GetXdsMatcher().GetMatcherList().GetMatchers()[0]
	sp := m.GetPredicate().GetSinglePredicate()
	in := &networkinputsv3.DynamicMetadataInput{}
	unpack(t, sp.GetInput().GetTypedConfig(), in)
	if in.GetFilter() != MetadataNamespace || len(in.GetPath()) != 1 || in.GetPath()[0].GetKey() != KeyListFilter {
		t.Errorf("gate input %v", in)
	}
	mm := &metadatamatcherv3.Metadata{}
	unpack(t, sp.GetCustomMatch().GetTypedConfig(), mm)
	if !mm.GetValue().GetBoolMatch() || mm.GetInvert() {
		t.Errorf("gate matcher %v", mm)
	}
	action := &compositev3.ExecuteFilterAction{}
	unpack(t, m.GetOnMatch().GetAction().GetTypedConfig(), action)
	ep := &procv3.ExternalProcessor{}
	unpack(t, action.GetTypedConfig().GetTypedConfig(), ep)
	pm := ep.GetProcessingMode()
	switch {
	case ep.GetFailureModeAllow():
		t.Error("failure_mode_allow must be false")
	case pm.GetRequestHeaderMode() != procv3.ProcessingMode_SKIP || pm.GetRequestBodyMode() != procv3.ProcessingMode_NONE:
		t.Error("the request phase must be off")
	case pm.GetResponseHeaderMode() != procv3.ProcessingMode_SEND || pm.GetResponseBodyMode() != procv3.ProcessingMode_FULL_DUPLEX_STREAMED ||
		pm.GetResponseTrailerMode() != procv3.ProcessingMode_SEND:
		t.Error("the response must be headers SEND, body FULL_DUPLEX_STREAMED, trailers SEND")
	case len(ep.GetMetadataOptions().GetForwardingNamespaces().GetUntyped()) != 1 ||
		ep.GetMetadataOptions().GetForwardingNamespaces().GetUntyped()[0] != MetadataNamespace:
		t.Error("ext_authz's namespace must be forwarded")
	case ep.GetMetadataOptions().GetReceivingNamespaces() != nil:
		t.Error("the processor writes no metadata")
	case ep.GetAllowContentLengthHeader() || ep.GetObservabilityMode() || ep.GetSendBodyWithoutWaitingForHeaderResponse():
		t.Error("unexpected option")
	}
	if ep.GetGrpcService().GetEnvoyGrpc().GetClusterName() != "mcpauthz" {
		t.Errorf("cluster %q", ep.GetGrpcService().GetEnvoyGrpc().GetClusterName())
	}
}

func unpack(t *testing.T, a *anypb.Any, m proto.Message) {
	t.Helper()
	if err := a.UnmarshalTo(m); err != nil {
		t.Fatalf("%s: %v", a.GetTypeUrl(), err)
	}
}
