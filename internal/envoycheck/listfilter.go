package envoycheck

import (
	"slices"
	"strings"

	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	networkinputsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/matching/common_inputs/network/v3"
	metadatamatcherv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/matching/input_matchers/metadata/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// The list filter is mcpauthz's ext_proc service (package extproc): it
// removes from list responses the items the caller may not use. ext_authz
// marks the requests it applies to with dynamic metadata list_filter: true
// in its own namespace; a composite filter gated on that key runs ext_proc
// only for them.
const (
	extAuthzNamespace = "envoy.filters.http.ext_authz" // hard-coded in Envoy, whatever the filter's name
	keyListFilter     = "list_filter"

	typeExtProc      = "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
	typeExtProcRoute = "envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute"
	typeWithMatcher  = "envoy.extensions.common.matching.v3.ExtensionWithMatcher"
	typeComposite    = "envoy.extensions.filters.http.composite.v3.Composite"
)

// extProcUse is one ext_proc configuration inside an http filter: the
// filter itself, or an action of a matcher that wraps it.
type extProcUse struct {
	filter int // index into the connection manager's filters
	ep     *extprocv3.ExternalProcessor
	p      Path // the ExternalProcessor's own path
	// gated: the filter runs only for requests a matcher selects.
	// listGate: that matcher is ext_authz's list_filter: true.
	gated, listGate bool
}

// findExtProc collects every ExternalProcessor below m (Anys unpacked),
// noting whether a matcher's on_match guards it. An on_no_match action runs
// for everything the predicates did not select, so it adds no gate.
func findExtProc(m protoreflect.Message, p Path, gated, listGate bool, filter int, out *[]extProcUse) {
	md := m.Descriptor()
	switch name := string(md.FullName()); {
	case name == "google.protobuf.Any":
		a, ok := m.Interface().(*anypb.Any)
		if !ok {
			return
		}
		if inner := unpack(a); inner != nil {
			findExtProc(inner.ProtoReflect(), p, gated, listGate, filter, out)
		}
		return
	case name == typeExtProc:
		if ep, ok := m.Interface().(*extprocv3.ExternalProcessor); ok {
			*out = append(*out, extProcUse{filter: filter, ep: ep, p: p, gated: gated, listGate: listGate})
		}
		return
	case name == typeWithMatcher:
		// A matcher around a plain extension (not the composite filter)
		// can only skip it (SkipFilter): whatever it selects, it is a gate.
		ext := m.Get(md.Fields().ByName("extension_config")).Message()
		if typeName(anyField(ext, "typed_config")) != typeComposite &&
			(m.Has(md.Fields().ByName("xds_matcher")) || m.Has(md.Fields().ByName("matcher"))) {
			gated = true
		}
	case strings.HasSuffix(name, ".Matcher.MatcherList.FieldMatcher"):
		pred := m.Get(md.Fields().ByName("predicate")).Message()
		findExtProc(m.Get(md.Fields().ByName("on_match")).Message(), p.field("on_match"), true, listGate || isListGate(pred), filter, out)
		return
	case strings.HasSuffix(name, ".Matcher.MatcherTree"):
		gated = true
	case name == "google.protobuf.Struct", name == "google.protobuf.Value", name == "google.protobuf.ListValue":
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind {
			return true
		}
		fp := p.field(string(fd.Name()))
		switch {
		case fd.IsList():
			for i := 0; i < v.List().Len(); i++ {
				findExtProc(v.List().Get(i).Message(), fp.index(i), gated, listGate, filter, out)
			}
		case fd.IsMap():
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
					findExtProc(mv.Message(), fp.key(k.String()), gated, listGate, filter, out)
					return true
				})
			}
		default:
			findExtProc(v.Message(), fp, gated, listGate, filter, out)
		}
		return true
	})
}

// anyField returns the Any in field name of m, or nil.
func anyField(m protoreflect.Message, name string) *anypb.Any {
	fd := m.Descriptor().Fields().ByName(protoreflect.Name(name))
	if fd == nil || !m.Has(fd) {
		return nil
	}
	a, _ := m.Get(fd).Message().Interface().(*anypb.Any)
	return a
}

// isListGate reports whether a matcher predicate selects exactly what
// ext_authz marked list_filter: true (alone, or and-ed with more): the
// DynamicMetadataInput of ext_authz's namespace at [list_filter], matched
// by the metadata matcher with bool_match true, not inverted. It reads
// both matcher APIs (xds.type.matcher.v3 and the deprecated
// envoy.config.common.matcher.v3) by field name.
func isListGate(pred protoreflect.Message) bool {
	get := func(m protoreflect.Message, name string) (protoreflect.Message, bool) {
		fd := m.Descriptor().Fields().ByName(protoreflect.Name(name))
		if fd == nil || fd.Message() == nil || !m.Has(fd) {
			return nil, false
		}
		return m.Get(fd).Message(), true
	}
	if sp, ok := get(pred, "single_predicate"); ok {
		in, ok1 := get(sp, "input")
		cm, ok2 := get(sp, "custom_match")
		if !ok1 || !ok2 {
			return false
		}
		return metadataInputIsListFilter(anyField(in, "typed_config")) && metadataMatchIsTrue(anyField(cm, "typed_config"))
	}
	if am, ok := get(pred, "and_matcher"); ok {
		l := am.Get(am.Descriptor().Fields().ByName("predicate")).List()
		for i := 0; i < l.Len(); i++ {
			if isListGate(l.Get(i).Message()) {
				return true
			}
		}
	}
	return false
}

func metadataInputIsListFilter(a *anypb.Any) bool {
	in, ok := unpack(a).(*networkinputsv3.DynamicMetadataInput)
	return ok && in.GetFilter() == extAuthzNamespace && len(in.GetPath()) == 1 && in.GetPath()[0].GetKey() == keyListFilter
}

func metadataMatchIsTrue(a *anypb.Any) bool {
	mm, ok := unpack(a).(*metadatamatcherv3.Metadata)
	return ok && !mm.GetInvert() && mm.GetValue().GetBoolMatch()
}

// listFilters finds the ext_proc filters of a connection manager and lints
// those that are mcpauthz's list filter: gated on list_filter, calling an
// ext_authz cluster (mcpauthz serves both on one port), or reading
// ext_authz's namespace. lastExt is the index of the last ext_authz filter.
// It returns the indexes of the http filters that hold a list filter.
func (l *linter) listFilters(filters []httpFilter, lastExt int, p Path) map[int]bool {
	var uses []extProcUse
	authzClusters := map[string]bool{}
	for i, f := range filters {
		if f.cfg == nil {
			continue
		}
		if ea, ok := f.cfg.(*extauthzv3.ExtAuthz); ok && f.kind == kindExtAuthz {
			authzClusters[ea.GetGrpcService().GetEnvoyGrpc().GetClusterName()] = true
			continue
		}
		findExtProc(f.cfg.ProtoReflect(), f.path.field("typed_config"), false, false, i, &uses)
	}
	held := map[int]bool{}
	for _, u := range uses {
		cluster := u.ep.GetGrpcService().GetEnvoyGrpc().GetClusterName()
		if !u.listGate && !authzClusters[cluster] && !slices.Contains(u.ep.GetMetadataOptions().GetForwardingNamespaces().GetUntyped(), extAuthzNamespace) {
			l.add(Info, RuleExtProc, u.p, "ext_proc filter in %q neither calls mcpauthz (cluster %q is not an ext_authz cluster) nor reads ext_authz's metadata: not checked as mcpauthz's list filter", filters[u.filter].name, cluster)
			continue
		}
		held[u.filter] = true
		l.listFilter(filters[u.filter], u, lastExt)
	}
	if len(held) == 0 {
		l.add(Info, RuleExtProc, p, "no list filter: tools/list, prompts/list and resources lists reach clients with every item, including those the caller may not use; add mcpauthz's ext_proc list filter after ext_authz (see envoy/envoy.yaml)")
	}
	return held
}

// listFilter lints one ext_proc configuration of the list filter.
func (l *linter) listFilter(f httpFilter, u extProcUse, lastExt int) {
	ep, p := u.ep, u.p
	if u.filter < lastExt {
		l.add(Error, RuleFilterOrder, f.path, "list filter %q comes before ext_authz: the list_filter metadata it depends on does not exist yet when it runs, so lists reach clients unfiltered; put it after ext_authz, before the router", f.name)
	}
	switch {
	case !u.gated:
		l.add(Warning, RuleExtProcGate, f.path, "list filter %q is not gated: every response of every request opens an ext_proc stream to mcpauthz (which passes it through); wrap it in a composite filter that matches ext_authz's dynamic metadata list_filter: true", f.name)
	case !u.listGate:
		l.add(Info, RuleExtProcGate, f.path, "list filter %q is gated on something other than ext_authz's list_filter: true: make sure the gate selects every list request mcpauthz allows, or their lists reach clients unfiltered", f.name)
	}
	if ep.GetFailureModeAllow() {
		l.add(Error, RuleFailOpen, p.field("failure_mode_allow"), "fail-open: when mcpauthz is unreachable the list reaches the client unfiltered, with every item; set failure_mode_allow: false")
	}
	if ep.GetObservabilityMode() {
		l.add(Error, RuleFailOpen, p.field("observability_mode"), "observability mode never changes a response: lists reach clients unfiltered (mcpauthz refuses the stream)")
	}
	ns := p.field("metadata_options")
	if !slices.Contains(ep.GetMetadataOptions().GetForwardingNamespaces().GetUntyped(), extAuthzNamespace) {
		l.add(Error, RuleExtProcMetadata, ns.field("forwarding_namespaces").field("untyped"),
			"does not forward %s: the list filter cannot tell which requests are list requests or who the caller is, and refuses every list (JSON-RPC error); set metadata_options.forwarding_namespaces.untyped: [%s]", extAuthzNamespace, extAuthzNamespace)
	}
	if slices.Contains(ep.GetMetadataOptions().GetReceivingNamespaces().GetUntyped(), extAuthzNamespace) {
		l.add(Warning, RuleExtProcMetadata, ns.field("receiving_namespaces").field("untyped"),
			"lets the processor write ext_authz's namespace, which carries the authorization decision; the list filter writes no metadata: remove it")
	}
	l.processingMode(ep.GetProcessingMode(), p.field("processing_mode"))
	if ep.GetMessageTimeout() == nil {
		l.add(Warning, RuleExtProcTimeout, p.field("message_timeout"), "unset: the 200ms default bounds the reply to the response headers; set it explicitly (e.g. 1s). FULL_DUPLEX_STREAMED body messages have no timer; mcpauthz bounds its own work (list_filtering.policy_timeout)")
	}
	gp := p.field("grpc_service")
	switch g := ep.GetGrpcService(); {
	case g == nil:
		l.add(Error, RuleExtProc, p, "no grpc_service: mcpauthz's list filter is a gRPC service (http_service cannot reach it)")
	case g.GetGoogleGrpc() != nil:
		l.add(Info, RuleExtProc, gp.field("google_grpc"), "google_grpc target %q is not checked", g.GetGoogleGrpc().GetTargetUri())
	default:
		l.grpcCluster(g.GetEnvoyGrpc().GetClusterName(), gp.field("envoy_grpc").field("cluster_name"), "list filter (ext_proc)")
	}
}

// processingMode checks the modes the list filter is written for. It needs
// the response headers (SEND) and the whole response body as a full-duplex
// stream with trailers (FULL_DUPLEX_STREAMED, trailers SEND, which Envoy
// requires for that mode); it refuses any other response body mode and any
// request body. It answers request headers and trailers unchanged if they
// are sent, at the cost of one round trip before the request goes on.
func (l *linter) processingMode(pm *extprocv3.ProcessingMode, p Path) {
	const (
		send, skip = extprocv3.ProcessingMode_SEND, extprocv3.ProcessingMode_SKIP
		fullDuplex = extprocv3.ProcessingMode_FULL_DUPLEX_STREAMED
	)
	if m := pm.GetResponseBodyMode(); m != fullDuplex {
		l.add(Error, RuleExtProcMode, p.field("response_body_mode"), "%s: the list filter accepts only FULL_DUPLEX_STREAMED (an SSE list event spans chunks and other events must not wait) and refuses the stream otherwise (status_on_error)", m)
	}
	if m := pm.GetResponseTrailerMode(); pm.GetResponseBodyMode() == fullDuplex && m != send {
		l.add(Error, RuleExtProcMode, p.field("response_trailer_mode"), "%s: FULL_DUPLEX_STREAMED needs response_trailer_mode: SEND (Envoy rejects the filter otherwise)", m)
	}
	if pm.GetResponseHeaderMode() == skip {
		l.add(Error, RuleExtProcMode, p.field("response_header_mode"), "SKIP: the list filter decides from the response headers (status, content type) and refuses a body that comes without them")
	}
	if m := pm.GetRequestBodyMode(); m != extprocv3.ProcessingMode_NONE {
		l.add(Error, RuleExtProcMode, p.field("request_body_mode"), "%s: the list filter reads responses only and refuses a request body; set NONE", m)
	}
	if m := pm.GetRequestHeaderMode(); m != skip {
		name := m.String()
		if m == extprocv3.ProcessingMode_DEFAULT {
			name = "unset (SEND)"
		}
		l.add(Warning, RuleExtProcMode, p.field("request_header_mode"), "%s: the list filter needs nothing of the request (ext_authz's metadata carries it) and answers the headers unchanged, one more round trip per list request; set SKIP", name)
	}
	if pm.GetRequestTrailerMode() == send {
		l.add(Warning, RuleExtProcMode, p.field("request_trailer_mode"), "SEND: the list filter needs no request trailers; set SKIP")
	}
}
