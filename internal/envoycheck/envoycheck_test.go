package envoycheck

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// mutate replaces exactly one occurrence of old in base.
func mutate(t *testing.T, base []byte, old, new string) []byte {
	t.Helper()
	if n := bytes.Count(base, []byte(old)); n != 1 {
		t.Fatalf("mutation anchor %q occurs %d times in the base config, want 1", old, n)
	}
	return bytes.Replace(base, []byte(old), []byte(new), 1)
}

// lineOfText is the 1-based line of the first occurrence of s.
func lineOfText(t *testing.T, data []byte, s string) int {
	t.Helper()
	i := bytes.Index(data, []byte(s))
	if i < 0 {
		t.Fatalf("%q not found", s)
	}
	return bytes.Count(data[:i], []byte("\n")) + 1
}

const (
	hcmPath  = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
	authPath = hcmPath + ".http_filters[1].typed_config"
	vhPath   = hcmPath + ".route_config.virtual_hosts[0]"
	corsPath = vhPath + `.typed_per_filter_config["envoy.filters.http.cors"]`
	// listPath is the ext_proc configuration of the list filter: the
	// action of the composite filter's one matcher.
	listPath = hcmPath + ".http_filters[2].typed_config.xds_matcher.matcher_list.matchers[0].on_match.action.typed_config.typed_config.typed_config"
)

// TestMutations changes envoy/envoy.yaml in one place per case and checks
// the finding that names the field.
func TestMutations(t *testing.T) {
	base := readFile(t, "../../envoy/envoy.yaml")
	cases := []struct {
		name, old, new string
		sev            Severity
		rule, path     string
		msg            string      // substring of the message
		lineOf         string      // the finding is on the line of this text in the mutated config
		more           [][2]string // further replacements (old, new), each of one occurrence
	}{
		{
			name: "unknown field inside an Any", old: "allow_partial_message: false", new: "allow_partial: false",
			sev: Error, rule: RuleSchema, path: authPath + ".with_request_body.allow_partial", msg: `unknown field "allow_partial"`, lineOf: "allow_partial:",
		},
		{
			name: "unknown top-level field", old: "per_connection_buffer_limit_bytes: 1048576", new: "per_connection_buffer_limit_byte: 1048576",
			sev: Error, rule: RuleSchema, path: "static_resources.listeners[0].per_connection_buffer_limit_byte", msg: "unknown field", lineOf: "per_connection_buffer_limit_byte:",
		},
		{
			name: "typo in @type", old: "ext_authz.v3.ExtAuthz\n", new: "ext_authz.v3.ExtAuth\n",
			sev: Error, rule: RuleSchema, path: authPath + ".@type", msg: `unknown type "envoy.extensions.filters.http.ext_authz.v3.ExtAuth"`, lineOf: "v3.ExtAuth\n",
		},
		{
			name: "enum name typo", old: "{ code: ServiceUnavailable }   # 503", new: "{ code: ServiceUnavailible }   # 503",
			sev: Error, rule: RuleSchema, path: authPath + ".status_on_error.code", msg: "invalid value for enum", lineOf: "ServiceUnavailible",
		},
		{
			name: "yaml-cpp reads plain 'on' as a boolean", old: "stat_prefix: mcp_ingress", new: "stat_prefix: on",
			sev: Error, rule: RuleSchema, path: hcmPath + ".stat_prefix", msg: "invalid value for string", lineOf: "stat_prefix: on",
		},
		{
			name: "undefined status code inside an Any", old: "{ code: ServiceUnavailable }   # 503", new: "{ code: 299 }   # 503",
			sev: Error, rule: RuleConstraint, path: authPath + ".status_on_error.code", msg: "defined enum values", lineOf: "code: 299",
		},
		{
			name: "max_request_bytes 0 inside an Any", old: "max_request_bytes: 1048576", new: "max_request_bytes: 0",
			sev: Error, rule: RuleConstraint, path: authPath + ".with_request_body.max_request_bytes", msg: "greater than 0", lineOf: "max_request_bytes: 0",
		},
		{
			name: "connect_timeout 0s", old: "connect_timeout: 5s", new: "connect_timeout: 0s",
			sev: Error, rule: RuleConstraint, path: "static_resources.clusters[0].connect_timeout", msg: "greater than 0s", lineOf: "connect_timeout: 0s",
		},
		{
			name: "negative route timeout", old: metadataRoute, new: strings.Replace(metadataRoute, "15s", "-5s", 1),
			sev: Error, rule: RuleDuration, path: vhPath + ".routes[2].route.timeout", msg: "negative duration -5s", lineOf: "timeout: -5s",
		},
		{
			name: "no transport_api_version", old: "transport_api_version: V3\n", new: "\n",
			sev: Error, rule: RuleTransport, path: authPath + ".transport_api_version", msg: "must be V3",
		},
		{
			name: "yaml-cpp reads plain 'yes' as true", old: "failure_mode_allow: false                       # fail closed", new: "failure_mode_allow: yes",
			sev: Error, rule: RuleFailOpen, path: authPath + ".failure_mode_allow", msg: "fail-open", lineOf: "failure_mode_allow: yes",
		},
		{
			name: "no with_request_body", old: "with_request_body:\n", new: "with_request_bodyx:\n",
			sev: Error, rule: RuleSchema, path: authPath + ".with_request_bodyx", msg: "unknown field",
		},
		{
			name: "http_service", old: "grpc_service:\n                envoy_grpc: { cluster_name: mcpauthz }\n                timeout: 1s",
			new: "http_service:\n                server_uri: { uri: http://mcpauthz:9191, cluster: mcpauthz, timeout: 1s }",
			sev: Error, rule: RuleExtAuthz, path: authPath + ".http_service", msg: "gRPC",
		},
		{
			name: "allowed_headers without authorization", old: "encode_raw_headers: true", new: "encode_raw_headers: true\n              allowed_headers: { patterns: [{ prefix: mcp- }, { exact: content-type }] }",
			sev: Error, rule: RuleHeaders, path: authPath + ".allowed_headers", msg: `"authorization" does not match`,
		},
		{
			name: "disallowed authorization", old: "encode_raw_headers: true", new: "encode_raw_headers: true\n              disallowed_headers: { patterns: [{ safe_regex: { regex: 'auth.*' } }] }",
			sev: Error, rule: RuleHeaders, path: authPath + ".disallowed_headers", msg: `"authorization" matches disallowed_headers`,
		},
		{
			name: "router first", old: "          - name: envoy.filters.http.router\n            typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }\n",
			new: "",
			sev: Error, rule: RuleFilterOrder, path: hcmPath + ".http_filters", msg: "no router filter",
		},
		{
			name: "deprecated cluster.http2_protocol_options", old: "    connect_timeout: 1s\n", new: "    connect_timeout: 1s\n    http2_protocol_options: {}\n",
			sev: Warning, rule: RuleDeprecated, path: "static_resources.clusters[1].http2_protocol_options", msg: "deprecated", lineOf: "http2_protocol_options: {}",
		},
		{
			name: "per-route disabled", old: metadataRoute,
			new: metadataRoute + "\n                typed_per_filter_config:\n                  envoy.filters.http.ext_authz:\n                    \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute\n                    disabled: true",
			sev: Warning, rule: RuleDisabled, path: vhPath + `.routes[2].typed_per_filter_config["envoy.filters.http.ext_authz"].disabled`, msg: "without authorization", lineOf: "disabled: true\n",
		},
		{
			name: "per-route config of the wrong type", old: metadataRoute,
			new: metadataRoute + "\n                typed_per_filter_config:\n                  envoy.filters.http.ext_authz:\n                    \"@type\": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
			sev: Error, rule: RulePerFilter, path: vhPath + `.routes[2].typed_per_filter_config["envoy.filters.http.ext_authz"]`, msg: "must be envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
		},
		{
			name: "ext_authz disabled by its own type on a route that answers itself", old: "\"@type\": type.googleapis.com/envoy.config.route.v3.FilterConfig\n                    disabled: true\n                  mcpauthz",
			new: "\"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute\n                    disabled: true\n                  mcpauthz",
			// no finding: nothing is forwarded there
		},
		{
			name: "list filter disabled on the MCP route", old: "                  max_stream_duration: { max_stream_duration: 3600s }\n",
			new: "                  max_stream_duration: { max_stream_duration: 3600s }\n                typed_per_filter_config:\n                  mcpauthz.list_filter:\n                    \"@type\": type.googleapis.com/envoy.config.route.v3.FilterConfig\n                    disabled: true\n",
			sev: Warning, rule: RuleDisabled, path: vhPath + `.routes[0].typed_per_filter_config["mcpauthz.list_filter"].disabled`, msg: "every item",
		},
		{
			name: "list filter disabled by ExtProcPerRoute", old: "                  max_stream_duration: { max_stream_duration: 3600s }\n",
			new: "                  max_stream_duration: { max_stream_duration: 3600s }\n                typed_per_filter_config:\n                  mcpauthz.list_filter:\n                    \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute\n                    disabled: true\n",
			sev: Warning, rule: RuleDisabled, path: vhPath + `.routes[0].typed_per_filter_config["mcpauthz.list_filter"].disabled`, msg: "every item",
		},
		{
			name: "catch-all route to the upstream", old: notFoundRoute, new: "              - match: { prefix: / }\n                route: { cluster: mcp_upstream, timeout: 15s }\n",
			sev: Warning, rule: RuleCatchAll, path: vhPath + ".routes[3].match", msg: `every path not matched before to cluster "mcp_upstream"`,
		},
		{
			name: "catch-all regex route", old: notFoundRoute, new: "              - match: { safe_regex: { regex: '/.*' } }\n                route: { cluster: mcp_upstream, timeout: 15s }\n",
			sev: Warning, rule: RuleCatchAll, path: vhPath + ".routes[3].match", msg: "every path",
		},
		{
			name: "catch-all route without ext_authz", old: notFoundRoute,
			new: "              - match: { prefix: \"\" }\n                route: { cluster: mcp_upstream, timeout: 15s }\n                typed_per_filter_config:\n                  envoy.filters.http.ext_authz:\n                    \"@type\": type.googleapis.com/envoy.config.route.v3.FilterConfig\n                    disabled: true\n",
			sev: Error, rule: RuleCatchAll, path: vhPath + ".routes[3].match", msg: "without a token",
		},
		{
			name: "forward_not_matching_preflights unset", old: "                  forward_not_matching_preflights: false\n", new: "",
			sev: Error, rule: RulePreflight, path: corsPath + ".forward_not_matching_preflights", msg: "Envoy's default is true",
		},
		{
			name: "list filter: response headers skipped", old: "response_header_mode: SEND", new: "response_header_mode: SKIP",
			sev: Error, rule: RuleExtProcMode, path: listPath + ".processing_mode.response_header_mode", msg: "refuses a body", lineOf: "response_header_mode: SKIP",
		},
		{
			name: "list filter: request body", old: "request_body_mode: NONE", new: "request_body_mode: STREAMED",
			sev: Error, rule: RuleExtProcMode, path: listPath + ".processing_mode.request_body_mode", msg: "refuses a request body", lineOf: "request_body_mode: STREAMED",
		},
		{
			name: "list filter: request headers by default", old: "                                request_header_mode: SKIP               # nothing of the request is needed\n", new: "",
			sev: Warning, rule: RuleExtProcMode, path: listPath + ".processing_mode.request_header_mode", msg: "unset (SEND)",
		},
		{
			name: "list filter: request trailers", old: "request_trailer_mode: SKIP", new: "request_trailer_mode: SEND",
			sev: Warning, rule: RuleExtProcMode, path: listPath + ".processing_mode.request_trailer_mode", msg: "no request trailers", lineOf: "request_trailer_mode: SEND",
		},
		{
			name: "list filter: writable ext_authz namespace", old: "                                  untyped: [envoy.filters.http.ext_authz]\n",
			new: "                                  untyped: [envoy.filters.http.ext_authz]\n                                receiving_namespaces:\n                                  untyped: [envoy.filters.http.ext_authz]\n",
			sev: Warning, rule: RuleExtProcMetadata, path: listPath + ".metadata_options.receiving_namespaces.untyped", msg: "authorization decision",
		},
		{
			name: "list filter: observability mode", old: "allow_mode_override: false", new: "observability_mode: true",
			sev: Error, rule: RuleFailOpen, path: listPath + ".observability_mode", msg: "unfiltered", lineOf: "observability_mode: true",
		},
		{
			name: "list filter: unknown cluster", old: "envoy_grpc: { cluster_name: mcpauthz }  # no timeout", new: "envoy_grpc: { cluster_name: mcpauthz_list }  # no timeout",
			sev: Error, rule: RuleCluster, path: listPath + ".grpc_service.envoy_grpc.cluster_name", msg: `list filter (ext_proc) cluster "mcpauthz_list" does not exist`,
		},
		{
			name: "list filter: no grpc_service", old: "                              grpc_service:\n                                envoy_grpc: { cluster_name: mcpauthz }  # no timeout: it would not bound the stream\n", new: "",
			sev: Error, rule: RuleExtProc, path: listPath, msg: "no grpc_service",
		},
		{
			name: "list filter: gated on something else", old: "path: [{ key: list_filter }]", new: "path: [{ key: mcp_method }]",
			sev: Info, rule: RuleExtProcGate, path: hcmPath + ".http_filters[2]", msg: "other than ext_authz's list_filter",
		},
		{
			name: "list filter: inverted gate", old: "value: { bool_match: true }", new: "value: { bool_match: true }\n                            invert: true",
			sev: Info, rule: RuleExtProcGate, path: hcmPath + ".http_filters[2]", msg: "other than ext_authz's list_filter",
		},
		{
			// The matcher list goes, its action becomes the matcher's
			// on_no_match (its children stay indented deeper, as YAML allows).
			name: "list filter: runs when nothing matches", old: between(t, base, "                matcher_list:\n", "                    on_match:\n"), new: "                on_no_match:\n",
			sev: Warning, rule: RuleExtProcGate, path: hcmPath + ".http_filters[2]", msg: "not gated",
		},
		{
			name: "list filter after the router", old: "          # 4. The router, always last.\n          - name: envoy.filters.http.router\n            typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }\n", new: "",
			more: [][2]string{{"          # 3. The mcpauthz list filter", "          - name: envoy.filters.http.router\n            typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }\n          # 3. The mcpauthz list filter"}},
			sev:  Error, rule: RuleFilterOrder, path: hcmPath + ".http_filters[2]", msg: "must be the last http filter",
		},
		{
			name: "no list filter", old: listFilterBlock(t, base), new: "",
			more: [][2]string{{"                  mcpauthz.list_filter:\n                    \"@type\": type.googleapis.com/envoy.config.route.v3.FilterConfig\n                    disabled: true\n", ""}},
			sev:  Info, rule: RuleExtProc, path: hcmPath + ".http_filters", msg: "no list filter",
		},
		{
			name: "another ext_proc filter", old: "path: [{ key: list_filter }]", new: "path: [{ key: mcp_method }]",
			more: [][2]string{
				{"envoy_grpc: { cluster_name: mcpauthz }  # no timeout", "envoy_grpc: { cluster_name: mcp_upstream }  # no timeout"},
				{"untyped: [envoy.filters.http.ext_authz]\n", "untyped: [envoy.filters.http.jwt_authn]\n"},
			},
			sev: Info, rule: RuleExtProc, path: listPath, msg: "not checked as mcpauthz's list filter",
		},
		{
			name: "unbounded stream", old: "                  max_stream_duration: { max_stream_duration: 3600s }\n", new: "",
			sev: Warning, rule: RuleSSE, path: vhPath + ".routes[0].route.max_stream_duration", msg: "outlives the token",
		},
		{
			name: "small body limit", old: "max_request_bytes: 1048576", new: "max_request_bytes: 4096",
			sev: Warning, rule: RuleBody, path: authPath + ".with_request_body.max_request_bytes", msg: "413",
		},
		{
			name: "body limit above the listener buffer", old: "max_request_bytes: 1048576", new: "max_request_bytes: 4194304",
			sev: Warning, rule: RuleBody, path: authPath + ".with_request_body.max_request_bytes", msg: "per_connection_buffer_limit_bytes (1048576)",
		},
		{
			name: "remove_on_match covers the identity headers", old: "              - remove: x-mcp-issuer\n", new: "              - remove_on_match: { key_matcher: { prefix: x-mcp- } }\n",
			// no identity finding: checked below by the "no finding" case list
		},
		{
			name: "clear_route_cache", old: "encode_raw_headers: true", new: "encode_raw_headers: true\n              clear_route_cache: true",
			sev: Warning, rule: RuleRouteCache, path: authPath + ".clear_route_cache", msg: "recomputed",
		},
		{
			name: "shadow mode", old: "encode_raw_headers: true", new: "encode_raw_headers: true\n              shadow_mode: true",
			sev: Warning, rule: RuleFailOpen, path: authPath + ".shadow_mode", msg: "never blocks",
		},
		{
			name: "runtime-disabled without deny_at_disable", old: "encode_raw_headers: true",
			new: "encode_raw_headers: true\n              filter_enabled: { default_value: { numerator: 100 }, runtime_key: authz.enabled }",
			sev: Warning, rule: RuleFailOpen, path: authPath + ".deny_at_disable", msg: "pass unauthorized",
		},
		{
			name: "TypedStruct", old: "typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }",
			new: "typed_config: { \"@type\": type.googleapis.com/xds.type.v3.TypedStruct, type_url: type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }",
			sev: Info, rule: RuleTypedStruct, path: hcmPath + ".http_filters[3].typed_config", msg: "not validated",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := mutate(t, base, c.old, c.new)
			for _, m := range c.more {
				data = mutate(t, data, m[0], m[1])
			}
			r, err := Validate(t.Context(), data)
			if c.rule == "" {
				if len(r.Findings) != 0 {
					t.Fatalf("want no findings, got:\n%s", dump(r))
				}
				return
			}
			if (err != nil) != (c.sev == Error) {
				t.Errorf("err = %v, want an error: %v", err, c.sev == Error)
			}
			var got *Finding
			for i, f := range r.Findings {
				if f.Rule == c.rule && f.Path == c.path && (got == nil || strings.Contains(f.Message, c.msg)) {
					got = &r.Findings[i]
				}
			}
			if got == nil {
				t.Fatalf("no %s finding at %s; got:\n%s", c.rule, c.path, dump(r))
			}
			if got.Severity != c.sev || !strings.Contains(got.Message, c.msg) {
				t.Errorf("got %v, want severity %v and a message containing %q", got, c.sev, c.msg)
			}
			if c.lineOf != "" {
				if want := lineOfText(t, data, c.lineOf); got.Line != want {
					t.Errorf("line %d, want %d (%q)", got.Line, want, c.lineOf)
				}
			} else if got.Line == 0 {
				t.Errorf("finding without a line: %v", got)
			}
		})
	}
}

// Anchors in envoy/envoy.yaml.
const (
	metadataRoute = "- match: { path: /.well-known/oauth-protected-resource }\n                route: { cluster: mcp_upstream, timeout: 15s }"
	notFoundRoute = `              - match: { prefix: / }
                direct_response:
                  status: 404
                  body: { inline_string: '{"error":"not_found"}' }
                response_headers_to_add:
                - header: { key: content-type, value: application/json }
                  append_action: OVERWRITE_IF_EXISTS_OR_ADD
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
                    disabled: true
                  mcpauthz.list_filter:
                    "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
                    disabled: true
`
)

// between returns the text of base from the start of from to the end of to.
func between(t *testing.T, base []byte, from, to string) string {
	t.Helper()
	s := string(base)
	i := strings.Index(s, from)
	j := strings.Index(s[max(i, 0):], to)
	if i < 0 || j < 0 {
		t.Fatalf("%q … %q not in the base config", from, to)
	}
	return s[i : i+j+len(to)]
}

// listFilterBlock is the list filter's entry in the http filters of base,
// its comment included.
func listFilterBlock(t *testing.T, base []byte) string {
	t.Helper()
	s := string(base)
	i := strings.Index(s, "          # 3. The mcpauthz list filter")
	j := strings.Index(s, "          # 4. The router")
	if i < 0 || j < i {
		t.Fatal("no list filter block in the base config")
	}
	return s[i:j]
}

func dump(r Report) string {
	var b strings.Builder
	for _, f := range r.Findings {
		b.WriteString("  " + f.String() + "\n")
	}
	return b.String()
}

// TestBrokenCopies: each shipped config has a deliberately broken copy in
// testdata; it must fail, with exactly these findings (rule at path).
func TestBrokenCopies(t *testing.T) {
	type want struct {
		sev        Severity
		rule, path string
	}
	cases := map[string][]want{
		"testdata/broken-envoy.yaml": {
			{Error, RulePerFilter, vhPath + `.typed_per_filter_config["envoy.filters.http.corz"]`},
			{Error, RuleCluster, vhPath + ".routes[0].route.cluster"},
			{Warning, RuleCatchAll, vhPath + ".routes[3].match"},
			{Error, RuleTransport, hcmPath + ".http_filters[0].typed_config.transport_api_version"},
			{Error, RuleDuration, hcmPath + ".http_filters[0].typed_config.grpc_service.timeout"},
			{Error, RuleFailOpen, hcmPath + ".http_filters[0].typed_config.failure_mode_allow"},
			{Error, RuleBody, hcmPath + ".http_filters[0].typed_config.with_request_body.allow_partial_message"},
			{Error, RuleBody, hcmPath + ".http_filters[0].typed_config.with_request_body.pack_as_bytes"},
			{Error, RuleFilterOrder, hcmPath + ".http_filters[1]"},
			{Warning, RuleCORS, hcmPath + ".http_filters[1]"},
			{Warning, RuleExtProcTimeout, listPath + ".message_timeout"},
			{Error, RuleFailOpen, listPath + ".failure_mode_allow"},
			{Warning, RuleExtProcMode, listPath + ".processing_mode.request_header_mode"},
			{Error, RuleExtProcMode, listPath + ".processing_mode.response_body_mode"},
			{Error, RuleExtProcMetadata, listPath + ".metadata_options.forwarding_namespaces.untyped"},
			{Error, RuleHTTP2, "static_resources.clusters[1]"},
		},
		"testdata/broken-envoy-tls.yaml": {
			{Warning, RuleAdmin, "admin.address.socket_address.address"},
			{Warning, RuleSSE, hcmPath + ".stream_idle_timeout"},
			{Warning, RuleUnderscores, hcmPath + ".common_http_protocol_options.headers_with_underscores_action"},
			{Warning, RuleIdentity, hcmPath + ".early_header_mutation_extensions"},
			{Warning, RuleIdentity, hcmPath + ".route_config.request_headers_to_remove[0]"},
			{Warning, RuleCORS, corsPath + ".allow_methods"},
			{Warning, RuleCORS, corsPath + ".allow_headers"},
			{Error, RulePreflight, corsPath + ".forward_not_matching_preflights"},
			{Warning, RuleSSE, vhPath + ".routes[0].route.timeout"},
			{Error, RuleCatchAll, vhPath + ".routes[3].match"},
			{Warning, RuleDisabled, vhPath + `.routes[3].typed_per_filter_config["envoy.filters.http.ext_authz"].disabled`},
			{Warning, RuleDisabled, vhPath + `.routes[3].typed_per_filter_config["mcpauthz.list_filter"].disabled`},
			{Error, RuleFilterOrder, hcmPath + ".http_filters[1]"},
			{Warning, RuleExtProcGate, hcmPath + ".http_filters[1]"},
			{Error, RuleExtProcMode, hcmPath + ".http_filters[1].typed_config.processing_mode.response_trailer_mode"},
			{Warning, RuleStatusOnError, hcmPath + ".http_filters[2].typed_config.status_on_error"},
			{Error, RuleCluster, hcmPath + ".http_filters[2].typed_config.grpc_service.envoy_grpc.cluster_name"},
			{Error, RuleConstraint, hcmPath + ".http_filters[2].typed_config.with_request_body.max_request_bytes"},
			{Error, RuleConstraint, "static_resources.clusters[0].connect_timeout"},
			{Error, RuleDuplicate, "static_resources.clusters[2].name"},
			{Error, RuleHTTP2, "static_resources.clusters[3]"},
		},
	}
	for file, wants := range cases {
		t.Run(file, func(t *testing.T) {
			data := readFile(t, file)
			r, err := Validate(t.Context(), data)
			if err == nil {
				t.Fatalf("broken config passed:\n%s", dump(r))
			}
			seen := map[want]bool{}
			for _, f := range r.Findings {
				w := want{f.Severity, f.Rule, f.Path}
				seen[w] = true
				if f.Line == 0 || f.Path == "" || f.Message == "" {
					t.Errorf("finding without line, path or message: %v", f)
				}
			}
			for _, w := range wants {
				if !seen[w] {
					t.Errorf("missing %v %s at %s", w.sev, w.rule, w.path)
				}
				delete(seen, w)
			}
			for w := range seen {
				t.Errorf("unexpected %v %s at %s", w.sev, w.rule, w.path)
			}
			if t.Failed() {
				t.Logf("findings:\n%s", dump(r))
			}
		})
	}
}

// TestRootOnlyValidateMisses shows why the walk unpacks every Any: PGV's
// ValidateAll on the bootstrap does not see into typed_config.
func TestRootOnlyValidateMisses(t *testing.T) {
	data := mutate(t, readFile(t, "../../envoy/envoy.yaml"), "max_request_bytes: 1048576", "max_request_bytes: 0")
	doc, fs, _ := parseYAML(t.Context(), data, defaultLimits)
	if len(fs) > 0 {
		t.Fatal(fs)
	}
	var bs bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(doc.json, &bs); err != nil {
		t.Fatal(err)
	}
	if err := bs.ValidateAll(); err != nil {
		t.Fatalf("PGV now looks inside Any (%v): the recursion may be redundant", err)
	}
	if _, err := Validate(t.Context(), data); err == nil || !strings.Contains(err.Error(), "max_request_bytes") {
		t.Fatalf("Validate missed max_request_bytes: 0: %v", err)
	}
}

func TestYAML(t *testing.T) {
	cases := []struct {
		name, in string
		json     string // expected JSON, or
		err      string // expected finding message substring
		line     int
	}{
		{name: "yaml-cpp booleans", in: "a: yes\nb: Off\nc: TRUE\nd: 'yes'\ne: YeS\n", json: `{"a":true,"b":false,"c":true,"d":"yes","e":"YeS"}`},
		{name: "numbers and nulls", in: "a: 10\nb: 0x10\nc: 1.5\nd: .inf\ne: ~\nf: \"10\"\ng: 1e3\n", json: `{"a":10,"b":16,"c":1.5,"d":"Infinity","e":null,"f":"10","g":1000}`},
		{name: "anchors", in: "a: &x {b: 1}\nc: *x\n", json: `{"a":{"b":1},"c":{"b":1}}`},
		{name: "block scalars are strings", in: "a: |\n  true\n", json: `{"a":"true\n"}`},
		{name: "duplicate key", in: "a: 1\nb: 2\na: 3\n", err: `duplicate key "a" (first on line 1)`, line: 3},
		{name: "two documents", in: "a: 1\n---\nb: 2\n", err: "2 YAML documents", line: 3},
		{name: "syntax", in: "a: 1\n b: 2\n", err: "mapping values are not allowed", line: 2},
		{name: "empty", in: "# nothing\n", err: "empty configuration"},
		{name: "not a mapping", in: "- a\n", err: "not a YAML mapping", line: 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			doc, fs, _ := parseYAML(t.Context(), []byte(c.in), defaultLimits)
			if c.err != "" {
				if len(fs) != 1 || !strings.Contains(fs[0].Message, c.err) || fs[0].Line != c.line || fs[0].Rule != RuleYAML {
					t.Fatalf("got %v, want %q on line %d", fs, c.err, c.line)
				}
				return
			}
			if len(fs) > 0 {
				t.Fatal(fs)
			}
			if string(doc.json) != c.json {
				t.Fatalf("got %s, want %s", doc.json, c.json)
			}
			if !json.Valid(doc.json) {
				t.Fatal("invalid JSON")
			}
		})
	}
}

func TestPathAndLine(t *testing.T) {
	p := Path{}.field("static_resources").field("listeners").index(0).field("typed_per_filter_config").key("envoy.filters.http.cors").field("allow_methods")
	if got, want := p.String(), `static_resources.listeners[0].typed_per_filter_config["envoy.filters.http.cors"].allow_methods`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	doc, fs, _ := parseYAML(t.Context(), []byte("staticResources:\n  listeners:\n  - name: a\n    typed_per_filter_config:\n      envoy.filters.http.cors:\n        allowMethods: GET\n"), defaultLimits)
	if fs != nil {
		t.Fatal(fs)
	}
	if got := doc.lineOf(p); got != 6 {
		t.Errorf("line %d, want 6 (JSON names are matched too)", got)
	}
	if got := doc.lineOf(Path{}.field("static_resources").field("listeners").index(0).field("absent")); got != 3 {
		t.Errorf("absent field: line %d, want 3 (its parent)", got)
	}
}

// TestValidateAs covers fragments, as in an Istio EnvoyFilter patch.
func TestValidateAs(t *testing.T) {
	good := `name: strip
typed_config:
  "@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation
  mutations: { request_mutations: [ { remove: x-mcp-subject } ] }
`
	if r, err := ValidateAs(t.Context(), []byte(good), &hcmv3.HttpFilter{}); err != nil {
		t.Fatalf("%v\n%s", err, dump(r))
	}
	bad := strings.Replace(good, "request_mutations", "request_mutation", 1)
	if _, err := ValidateAs(t.Context(), []byte(bad), &hcmv3.HttpFilter{}); err == nil || !strings.Contains(err.Error(), `unknown field "request_mutation"`) {
		t.Fatalf("err = %v", err)
	}
	partial := "common_http_protocol_options: { headers_with_underscores_action: REJECT_REQUEST }\n"
	if _, err := DecodeAs(t.Context(), []byte(partial), &hcmv3.HttpConnectionManager{}); err != nil {
		t.Fatal(err)
	}
	if _, err := ValidateAs(t.Context(), []byte(partial), &hcmv3.HttpConnectionManager{}); err == nil {
		t.Fatal("a partial connection manager passed the constraints (stat_prefix is required)")
	}
}

func TestKnownTypesResolve(t *testing.T) {
	for _, n := range knownTypes {
		if !resolvable(n) {
			t.Errorf("%s is listed but its package is not linked", n)
		}
	}
}

func TestNoExtAuthz(t *testing.T) {
	cfg := `static_resources:
  listeners:
  - name: l
    address: { socket_address: { address: 0.0.0.0, port_value: 1 } }
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: x
          route_config: { virtual_hosts: [ { name: v, domains: ["*"], routes: [ { match: { prefix: / }, route: { cluster: c } } ] } ] }
          http_filters: [ { name: r, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } } ]
  clusters:
  - { name: c, connect_timeout: 1s }
`
	r, err := Validate(t.Context(), []byte(cfg))
	if err == nil {
		t.Fatal("a config without ext_authz passed")
	}
	var rules []string
	for _, f := range r.Findings {
		rules = append(rules, f.Severity.String()+" "+f.Rule)
	}
	if got, want := strings.Join(rules, ","), "error ext-authz,warning ext-authz"; got != want {
		t.Errorf("got %s, want %s\n%s", got, want, dump(r))
	}
}

// TestJSONInput: Envoy also reads JSON bootstraps; JSON is YAML.
func TestJSONInput(t *testing.T) {
	doc, fs, _ := parseYAML(t.Context(), readFile(t, "../../envoy/envoy.yaml"), defaultLimits)
	if fs != nil {
		t.Fatal(fs)
	}
	if r, err := Validate(t.Context(), doc.json); err != nil || len(r.Findings) != 0 {
		t.Fatalf("%v\n%s", err, dump(r))
	}
	bad := bytes.Replace(doc.json, []byte(`"pack_as_bytes":true`), []byte(`"pack_as_bytes":false`), 1)
	if _, err := Validate(t.Context(), bad); err == nil || !strings.Contains(err.Error(), "line 1: error: "+authPath+".with_request_body.pack_as_bytes") {
		t.Fatalf("err = %v", err)
	}
}
