// Package envoycheck validates Envoy bootstrap configurations for mcpauthz
// without an Envoy binary.
//
// Validate reads YAML (or JSON) and reports findings, each with a severity, a
// rule name, a field path with proto field names and the YAML line:
//
//  1. yaml: YAML syntax, duplicate keys, one document only. Scalars are
//     converted as Envoy's yaml-cpp loader converts them (plain yes/on/off
//     are booleans, quoted scalars are strings). Bounds come first (see
//     Limits below): a file too large, or whose aliases would expand it
//     beyond the bounds, is one finding and is never expanded.
//  2. schema: strict protojson into envoy.config.bootstrap.v3.Bootstrap:
//     unknown fields, unknown @type (every extension a typed_config may name
//     must be linked; see KnownTypes), wrong value types, unknown enum names.
//  3. constraint: protoc-gen-validate rules of every message, including the
//     ones packed in an Any (PGV's own ValidateAll never looks inside an
//     Any, so max_request_bytes: 0 inside ext_authz passes a root-only check).
//  4. duration: negative durations, which Envoy rejects ("Expected positive
//     duration") and PGV mostly does not check.
//  5. deprecated: deprecated fields and enum values (warning);
//     disallowed-by-default ones (error: Envoy rejects them).
//
// Then lints Envoy does not make, or makes only at request time:
//
//   - cluster-ref: route, weighted, ext_authz and list filter clusters exist
//     (ext_authz and ext_proc create their gRPC clients with
//     skip_cluster_check, so Envoy accepts a typo and fails every call at
//     runtime);
//   - http2-cluster: the ext_authz and list filter clusters speak HTTP/2
//     (Envoy accepts an HTTP/1.1 cluster and every call fails);
//   - filter-order: the router is last and present, ext_authz comes before
//     it, CORS comes before ext_authz, the list filter after it;
//   - transport-api: ext_authz transport_api_version is V3;
//   - per-filter-config: typed_per_filter_config keys name an http filter of
//     the connection manager, with a config type that fits the filter;
//   - duplicate-name: listeners, clusters, http filters, virtual hosts,
//     domains;
//   - admin: the admin interface is bound to loopback;
//   - ext-authz: some listener calls mcpauthz, over gRPC; connection
//     managers that forward without ext_authz are flagged.
//
// And the MCP lints, for every connection manager with ext_authz:
//
//   - fail-open: failure_mode_allow false, no runtime/metadata disabling
//     without deny_at_disable, no shadow_mode;
//   - request-body: with_request_body set, allow_partial_message false,
//     pack_as_bytes true, a size fit for tool arguments and within the
//     listener's buffer limit; per-route body buffering not disabled;
//   - status-on-error: 503 rather than the default 403;
//   - authz-timeout: an explicit gRPC timeout (the default is 200 ms);
//   - allowed-headers: Authorization and the MCP headers reach mcpauthz;
//   - authz-disabled: disabling ext_authz or the list filter on a route that
//     forwards is flagged (a direct_response route needs neither);
//   - route-cache: clear_route_cache is flagged;
//   - sse-timeouts: route timeout set (0s for streams), stream idle timeout
//     set, and unbounded streams capped by max_stream_duration so that they
//     re-authenticate;
//   - identity-headers: x-mcp-subject, x-mcp-client-id, x-mcp-scopes,
//     x-mcp-issuer and x-mcp-actor removed before ext_authz, and not by
//     request_headers_to_remove (which runs after it);
//   - underscores: headers_with_underscores_action rejects or drops;
//   - cors: a CorsPolicy that allows the MCP headers and methods and exposes
//     Mcp-Session-Id and WWW-Authenticate;
//   - cors-preflight: forward_not_matching_preflights false (error otherwise:
//     Envoy's default forwards the preflights of other origins, without a
//     token, towards the upstream);
//   - catch-all-route: a route that forwards every path (prefix "/", or a
//     regex matching any path) is a warning, since every endpoint of the
//     upstream is then closed only by mcpauthz's policy; an error when
//     ext_authz does not run on it;
//   - access-log, remote-address: advice (info).
//
// And the lints of the list filter, mcpauthz's ext_proc service: every
// ExternalProcessor in an http filter, directly or as the action of a
// matcher (the composite filter), that is gated on ext_authz's list_filter
// metadata, calls an ext_authz cluster or reads ext_authz's namespace (any
// other ext_proc is noted and not checked):
//
//   - ext-proc: present (info when absent: lists then reach clients with
//     every item), and a gRPC service;
//   - ext-proc-gate: it runs only for the requests a matcher selects
//     (warning when ungated: every response opens a stream); info when the
//     gate is not list_filter: true;
//   - fail-open: failure_mode_allow and observability_mode are false;
//   - ext-proc-metadata: forwarding_namespaces.untyped has
//     envoy.filters.http.ext_authz, receiving_namespaces does not;
//   - ext-proc-mode: response headers SEND, response body
//     FULL_DUPLEX_STREAMED with response trailers SEND, request body NONE
//     (errors: the processor refuses anything else); request headers and
//     trailers SKIP (warnings: it answers them unchanged, for a round trip);
//   - ext-proc-timeout: message_timeout set.
//
// # Limits and cancellation
//
// A configuration file is input like any other: `mcpauthz validate --envoy`
// runs in CI on files from pull requests. YAML aliases let a few hundred
// bytes stand for billions of nodes ("billion laughs"), so before anything
// is expanded Validate refuses files larger than MaxConfigBytes (2 MiB),
// measures the node tree as it would be expanded without expanding it
// (every anchored node once), and refuses more than MaxNodes (500 000) nodes
// or MaxExpandedBytes (16 MiB) of scalars after expansion, alias cycles and
// nesting deeper than 200 levels. The findings name the alias that
// contributed most. Envoy bootstraps are typically 10–100 KiB with a few
// thousand nodes; a 2 MiB bootstrap validates in about a second.
//
// Every entry point takes a context and returns promptly once it is done,
// with an error wrapping ctx.Err() and no report: the YAML decoder reads
// through a reader that fails once ctx is done, and the measuring,
// converting and walking phases check ctx as they go. protojson decoding
// cannot be interrupted; the bounds keep it to a fraction of a second.
//
// What only Envoy can check: whether an extension is compiled into that
// binary, version-exact field support beyond the linked API (the
// go-control-plane envoy module in go.mod; see APIVersion), RE2 compilation
// details, certificate files, factory-time checks of extension configs,
// runtime-guarded deprecations. Run `envoy --mode validate` where Envoy is
// available.
package envoycheck
