package envoycheck

import (
	"slices"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	// The extension types a typed_config may name resolve only when their
	// Go package is linked. These are the ones an MCP front proxy uses, plus
	// common neighbours (the list filter: composite, ExtensionWithMatcher,
	// ext_proc, the dynamic metadata input and its matcher); a type outside
	// this list is reported as unknown.
	// (xds/type/v3, TypedStruct, is linked by go-control-plane anyway.)
	_ "github.com/cncf/xds/go/xds/type/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/common/matching/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/gzip/decompressor/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/matcher/action/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/buffer/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/composite/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/decompressor/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/health_check/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/mcp/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/proxy_protocol/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/http/early_header_mutation/header_mutation/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/matching/common_inputs/network/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/matching/input_matchers/metadata/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/regex_engines/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// knownTypes are the extension configuration types the validator links, by
// full name (a typed_config's @type is type.googleapis.com/ + the name).
var knownTypes = []protoreflect.FullName{
	"envoy.extensions.access_loggers.file.v3.FileAccessLog",
	"envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
	"envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
	"envoy.extensions.common.matching.v3.ExtensionWithMatcher",
	"envoy.extensions.common.matching.v3.ExtensionWithMatcherPerRoute",
	"envoy.extensions.compression.gzip.decompressor.v3.Gzip",
	"envoy.extensions.filters.common.matcher.action.v3.SkipFilter",
	"envoy.extensions.filters.http.buffer.v3.Buffer",
	"envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
	"envoy.extensions.filters.http.composite.v3.Composite",
	"envoy.extensions.filters.http.composite.v3.CompositePerRoute",
	"envoy.extensions.filters.http.composite.v3.ExecuteFilterAction",
	"envoy.extensions.filters.http.cors.v3.Cors",
	"envoy.extensions.filters.http.cors.v3.CorsPolicy",
	"envoy.extensions.filters.http.decompressor.v3.Decompressor",
	"envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
	"envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
	"envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
	"envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
	"envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
	"envoy.extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute",
	"envoy.extensions.filters.http.health_check.v3.HealthCheck",
	"envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
	"envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig",
	"envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
	"envoy.extensions.filters.http.mcp.v3.Mcp",
	"envoy.extensions.filters.http.mcp.v3.McpOverride",
	"envoy.extensions.filters.http.rbac.v3.RBAC",
	"envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
	"envoy.extensions.filters.http.router.v3.Router",
	"envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol",
	"envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
	"envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
	"envoy.extensions.matching.common_inputs.network.v3.DynamicMetadataInput",
	"envoy.extensions.matching.input_matchers.metadata.v3.Metadata",
	"envoy.extensions.regex_engines.v3.GoogleRE2",
	"envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
	"envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
	"envoy.config.route.v3.FilterConfig",
	"xds.type.v3.TypedStruct",
}

// KnownTypes lists the typed_config types the validator can check, by full
// proto name. Configurations that use any other extension fail with an
// "unknown type" finding; add the extension's package to this file's
// imports (and to knownTypes) to support it.
func KnownTypes() []string {
	out := make([]string, len(knownTypes))
	for i, n := range knownTypes {
		out[i] = string(n)
	}
	slices.Sort(out)
	return out
}

// resolvable reports whether a full type name resolves (for tests).
func resolvable(name protoreflect.FullName) bool {
	_, err := protoregistry.GlobalTypes.FindMessageByName(name)
	return err == nil
}
