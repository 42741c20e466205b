package standin

import (
	"errors"
	"fmt"
	"strings"
	"time"

	xdsmatcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	matchingv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/matching/v3"
	compositev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/composite/v3"
	procv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	networkinputsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/matching/common_inputs/network/v3"
	metadatamatcherv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/matching/input_matchers/metadata/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
)

// ExtProcConfig is the ext_proc filter a composite filter creates when its
// matcher matches: the one shape the stand-in follows, a composite filter
// (ExtensionWithMatcher) whose single matcher tests a bool of the dynamic
// metadata and whose action is an ext_proc filter processing the response
// only (response headers SEND, response body FULL_DUPLEX_STREAMED, response
// trailers SEND).
type ExtProcConfig struct {
	// Name is the composite filter's name in the filter chain.
	Name string
	// MatchNamespace and MatchKey name the dynamic metadata the matcher
	// reads; the filter runs when that value is the bool MatchValue.
	MatchNamespace, MatchKey string
	MatchValue               bool
	// Cluster is the ext_proc grpc_service's cluster; it must be the
	// ext_authz filter's (the stand-in has one gRPC connection).
	Cluster string
	// ForwardingNamespaces are the dynamic metadata namespaces sent in
	// every message's metadata_context (forwarding_namespaces.untyped).
	ForwardingNamespaces []string
	// MessageTimeout bounds the wait for the response headers reply (Envoy
	// sets no timer on FULL_DUPLEX_STREAMED body messages); its expiry is
	// answered 504. Envoy's default is 200ms.
	MessageTimeout time.Duration
	// StatusOnError answers a failed stream before anything was sent
	// downstream (Envoy's default is 500).
	StatusOnError int
	// AllowContentLengthHeader keeps content-length (Envoy removes it at
	// header time in FULL_DUPLEX_STREAMED otherwise).
	AllowContentLengthHeader bool
}

const (
	defaultMessageTimeout       = 200 * time.Millisecond
	defaultExtProcStatusOnError = 500
)

var (
	extensionWithMatcherType = typeURL(&matchingv3.ExtensionWithMatcher{})
	compositeType            = typeURL(&compositev3.Composite{})
	executeFilterActionType  = typeURL(&compositev3.ExecuteFilterAction{})
	extProcType              = typeURL(&procv3.ExternalProcessor{})
	dynamicMetadataInputType = typeURL(&networkinputsv3.DynamicMetadataInput{})
	metadataMatcherType      = typeURL(&metadatamatcherv3.Metadata{})
)

// extProcFromHCM returns the composite ext_proc filter of hcm, nil when it
// has none, or an error for one the stand-in cannot follow.
func extProcFromHCM(hcm *hcmv3.HttpConnectionManager, authzCluster string) (*ExtProcConfig, error) {
	var found *ExtProcConfig
	for _, hf := range hcm.GetHttpFilters() {
		switch hf.GetTypedConfig().GetTypeUrl() {
		case extProcType:
			return nil, fmt.Errorf("filter %q: an ext_proc filter outside a composite filter is not supported by the stand-in", hf.GetName())
		case extensionWithMatcherType:
		default:
			continue
		}
		if found != nil {
			return nil, errors.New("more than one composite filter: not supported by the stand-in")
		}
		var ewm matchingv3.ExtensionWithMatcher
		if err := hf.GetTypedConfig().UnmarshalTo(&ewm); err != nil {
			return nil, err
		}
		c, err := compositeExtProc(&ewm)
		if err != nil {
			return nil, fmt.Errorf("filter %q: %w", hf.GetName(), err)
		}
		c.Name = hf.GetName()
		if c.Cluster != authzCluster {
			return nil, fmt.Errorf("filter %q: ext_proc cluster %q is not the ext_authz cluster %q: not supported by the stand-in", c.Name, c.Cluster, authzCluster)
		}
		found = c
	}
	return found, nil
}

func compositeExtProc(ewm *matchingv3.ExtensionWithMatcher) (*ExtProcConfig, error) {
	if ewm.GetExtensionConfig().GetTypedConfig().GetTypeUrl() != compositeType {
		return nil, errors.New("only envoy.filters.http.composite is supported as the matched extension")
	}
	if ewm.GetMatcher() != nil {
		return nil, errors.New("matcher (deprecated): only xds_matcher is supported by the stand-in")
	}
	m := ewm.GetXdsMatcher()
	ms := m.GetMatcherList().GetMatchers()
	if len(ms) != 1 || m.GetOnNoMatch() != nil {
		return nil, errors.New("only a matcher_list of one matcher without on_no_match is supported by the stand-in")
	}
	c := &ExtProcConfig{}
	if err := metadataPredicate(ms[0].GetPredicate(), c); err != nil {
		return nil, err
	}
	ep, err := executeExtProc(ms[0].GetOnMatch())
	if err != nil {
		return nil, err
	}
	if err := unsupportedExtProc(ep); err != nil {
		return nil, err
	}
	c.Cluster = ep.GetGrpcService().GetEnvoyGrpc().GetClusterName()
	c.ForwardingNamespaces = ep.GetMetadataOptions().GetForwardingNamespaces().GetUntyped()
	c.MessageTimeout = defaultMessageTimeout
	if t := ep.GetMessageTimeout(); t != nil {
		c.MessageTimeout = t.AsDuration()
	}
	c.StatusOnError = defaultExtProcStatusOnError
	if code := int(ep.GetStatusOnError().GetCode()); code >= 400 && code < 600 {
		c.StatusOnError = code // Envoy keeps only 4xx and 5xx
	}
	c.AllowContentLengthHeader = ep.GetAllowContentLengthHeader()
	return c, nil
}

// metadataPredicate reads a single predicate on a dynamic metadata bool.
func metadataPredicate(p *xdsmatcherv3.Matcher_MatcherList_Predicate, c *ExtProcConfig) error {
	sp := p.GetSinglePredicate()
	if sp == nil || sp.GetInput().GetTypedConfig().GetTypeUrl() != dynamicMetadataInputType ||
		sp.GetCustomMatch().GetTypedConfig().GetTypeUrl() != metadataMatcherType {
		return errors.New("only a single_predicate with a dynamic_metadata input and a metadata_matcher is supported by the stand-in")
	}
	var in networkinputsv3.DynamicMetadataInput
	if err := sp.GetInput().GetTypedConfig().UnmarshalTo(&in); err != nil {
		return err
	}
	var mm metadatamatcherv3.Metadata
	if err := sp.GetCustomMatch().GetTypedConfig().UnmarshalTo(&mm); err != nil {
		return err
	}
	if len(in.GetPath()) != 1 || in.GetPath()[0].GetKey() == "" {
		return errors.New("only a dynamic_metadata path of one key is supported by the stand-in")
	}
	if _, isBool := mm.GetValue().GetMatchPattern().(*matcherv3.ValueMatcher_BoolMatch); !isBool || mm.GetInvert() {
		return errors.New("only a metadata_matcher with bool_match, not inverted, is supported by the stand-in")
	}
	c.MatchNamespace, c.MatchKey, c.MatchValue = in.GetFilter(), in.GetPath()[0].GetKey(), mm.GetValue().GetBoolMatch()
	return nil
}

func executeExtProc(om *xdsmatcherv3.Matcher_OnMatch) (*procv3.ExternalProcessor, error) {
	a := om.GetAction()
	if a.GetTypedConfig().GetTypeUrl() != executeFilterActionType {
		return nil, errors.New("only an ExecuteFilterAction on_match is supported by the stand-in")
	}
	var efa compositev3.ExecuteFilterAction
	if err := a.GetTypedConfig().UnmarshalTo(&efa); err != nil {
		return nil, err
	}
	if efa.GetDynamicConfig() != nil || efa.GetFilterChain() != nil || efa.GetFilterChainName() != "" || efa.GetSamplePercent() != nil {
		return nil, errors.New("ExecuteFilterAction: only typed_config is supported by the stand-in")
	}
	if efa.GetTypedConfig().GetTypedConfig().GetTypeUrl() != extProcType {
		return nil, errors.New("ExecuteFilterAction: only an ext_proc filter is supported by the stand-in")
	}
	var ep procv3.ExternalProcessor
	if err := efa.GetTypedConfig().GetTypedConfig().UnmarshalTo(&ep); err != nil {
		return nil, err
	}
	return &ep, nil
}

// unsupportedExtProc rejects ext_proc settings the stand-in does not
// implement.
func unsupportedExtProc(ep *procv3.ExternalProcessor) error {
	var bad []string
	check := func(set bool, field string) {
		if set {
			bad = append(bad, field)
		}
	}
	pm := ep.GetProcessingMode()
	check(pm.GetRequestHeaderMode() != procv3.ProcessingMode_SKIP || pm.GetRequestBodyMode() != procv3.ProcessingMode_NONE ||
		pm.GetRequestTrailerMode() != procv3.ProcessingMode_SKIP, "request processing (only request_header_mode SKIP, request_body_mode NONE, request_trailer_mode SKIP)")
	check(pm.GetResponseHeaderMode() != procv3.ProcessingMode_SEND || pm.GetResponseBodyMode() != procv3.ProcessingMode_FULL_DUPLEX_STREAMED ||
		pm.GetResponseTrailerMode() != procv3.ProcessingMode_SEND, "response processing (only response headers SEND, body FULL_DUPLEX_STREAMED, trailers SEND)")
	check(ep.GetGrpcService().GetEnvoyGrpc() == nil, "grpc_service without envoy_grpc")
	check(len(ep.GetGrpcService().GetInitialMetadata()) > 0, "grpc_service.initial_metadata")
	check(ep.GetFailureModeAllow(), "failure_mode_allow")
	check(len(ep.GetRequestAttributes())+len(ep.GetResponseAttributes()) > 0, "request_attributes / response_attributes")
	check(ep.GetMutationRules() != nil, "mutation_rules")
	check(ep.GetForwardRules() != nil, "forward_rules")
	check(ep.GetFilterMetadata() != nil, "filter_metadata")
	check(ep.GetDisableImmediateResponse(), "disable_immediate_response")
	check(ep.GetObservabilityMode(), "observability_mode")
	check(ep.GetSendBodyWithoutWaitingForHeaderResponse(), "send_body_without_waiting_for_header_response")
	check(len(ep.GetAllowedOverrideModes()) > 0, "allowed_override_modes")
	check(ep.GetProcessingRequestModifier() != nil || ep.GetOnProcessingResponse() != nil, "processing_request_modifier / on_processing_response")
	mo := ep.GetMetadataOptions()
	check(len(mo.GetForwardingNamespaces().GetTyped()) > 0, "metadata_options.forwarding_namespaces.typed")
	check(mo.GetReceivingNamespaces() != nil, "metadata_options.receiving_namespaces")
	check(mo.GetClusterMetadataForwardingNamespaces() != nil, "metadata_options.cluster_metadata_forwarding_namespaces")
	if len(bad) > 0 {
		return fmt.Errorf("ext_proc settings not supported by the stand-in: %s", strings.Join(bad, ", "))
	}
	return nil
}

func typeURL(m proto.Message) string {
	return "type.googleapis.com/" + string(m.ProtoReflect().Descriptor().FullName())
}
