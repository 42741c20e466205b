// Package standin is a stand-in for Envoy in tests: an HTTP/1.1 front proxy
// with Envoy's ext_authz HTTP filter, calling mcpauthz over a real gRPC
// connection, in front of one MCP server. There is no Envoy binary on the
// machines the tests run on; test/e2e runs the same flows through a real
// Envoy where one is installed.
//
// It is configured from an Envoy bootstrap (LoadConfig reads
// envoy/envoy.yaml), so it behaves as the shipped configuration does, and it
// refuses settings it does not implement rather than ignoring them.
//
// # Request flow
//
// As in Envoy, each request is one Stream through a chain of Filters:
//
//  1. The connection manager: headers with "_" rejected with 400
//     (headers_with_underscores_action), %2F and %5C in the path rejected
//     with 400, dot segments removed and slashes merged (normalize_path,
//     merge_slashes), the early header mutations' removals applied
//     (identity headers a client must not send), x-request-id,
//     x-forwarded-proto and x-forwarded-for (use_remote_address) set.
//  2. Decoding, in chain order. The ext_authz filter buffers a body
//     (with_request_body) up to max_request_bytes; a longer one is answered
//     413 without a check unless allow_partial_message. Requests without a
//     body (GET streams, DELETE) are checked on their headers alone. The
//     CheckRequest is the one Envoy sends: attributes.request.http with
//     method, path (with the query), host, scheme, protocol, size, the body
//     in raw_body (pack_as_bytes) or body, and the lowercased headers with
//     the pseudo-headers :authority, :path, :method and :scheme, either as
//     the headers map (repeated headers joined with ",", values UTF-8
//     sanitised) or as header_map (encode_raw_headers); a client's own
//     x-envoy-auth-partial-body is dropped and the filter's is added when a
//     body was buffered; attributes.source and destination carry the
//     downstream socket's addresses. The call has the configured timeout.
//     An OK answer's header mutations are applied (each append_action, the
//     deprecated append, headers_to_remove, query parameters); a denial is
//     answered with its status (403 when unset), headers and body; a failed
//     or timed-out call, or an error_response, with status_on_error, unless
//     failure_mode_allow.
//  3. The router: the request goes to the upstream with its body streamed
//     (only what ext_authz buffered is held), the :authority kept.
//  4. Encoding, in reverse chain order. The list filter (a composite
//     filter whose matcher tests a bool of ext_authz's dynamic metadata,
//     list_filter: true, and whose action is an ext_proc filter) opens an
//     ext_proc stream over the same gRPC connection for a matching
//     request and processes the response in FULL_DUPLEX_STREAMED mode as
//     Envoy does (ExtProc documents the conversation); every other
//     response passes untouched. Then the ext_authz filter adds the OK
//     answer's response_headers_to_add. The response body streams: every
//     write is flushed at once, so SSE events and long-lived GET streams
//     reach the client as they are sent.
//
// Every check is recorded with its CheckRequest, CheckResponse (dynamic
// metadata included) and outcome (Proxy.Checks), every ext_proc
// conversation with its messages and outcome (Proxy.Exchanges). A response-phase filter,
// such as an ext_proc stand-in, is added with New's extra factories: it sees
// the request after ext_authz and the response before ext_authz.
//
// # What it does not follow
//
// HTTP/2 and HTTP/3 downstream, TLS, the CORS filter (preflights reach
// ext_authz and the upstream like any request), the access log, routing
// (every path goes to the one upstream, paths Envoy answers itself with a
// direct_response included; per-route ext_authz settings are refused on
// routes that forward), the header order of the wire (headers are sent sorted by name),
// percent-encoding normalisation, Envoy's own response headers (server,
// x-envoy-upstream-service-time), retries, timeouts other than the check's,
// stream and connection limits, health checking of the mcpauthz cluster,
// and mutations of pseudo-headers by the OK answer (answered 500). Of
// ext_proc: request processing, processing modes other than the one above,
// failure_mode_allow, attributes, mutation rules, received metadata, and
// the fail-open of a processor that ends its stream with OK (the stand-in
// fails closed and records it). Settings of the ext_authz and ext_proc
// filters that are not listed above are refused by LoadConfig.
package standin
