// Package extauthz is the Envoy external authorization (ext_authz) gRPC
// service of mcpauthz: envoy.service.auth.v3.Authorization/Check.
//
// # Request flow
//
// Envoy sends one CheckRequest per HTTP request, with the lowercased headers
// (pseudo-headers included; or the raw header_map when encode_raw_headers is
// on) and, for POSTs, the buffered body in raw_body (pack_as_bytes) or body.
// Server.Check reads them once into an httpRequest and walks a fixed ladder;
// the first rung that decides ends the walk:
//
//  1. GET/HEAD of the protected resource metadata path (RFC 9728, path form
//     and root form) → 200 with the document, answered directly: meshes
//     need no extra route. Other well-known paths → JSON 404.
//  2. Origin present and not in mcp.allowed_origins → 403 with a JSON-RPC
//     error without id (DNS rebinding defence, MCP transports).
//  3. CORS preflight to an MCP endpoint (OPTIONS with Origin and
//     Access-Control-Request-Method, without a body: no bytes, no
//     Content-Length but 0, no Transfer-Encoding) → allowed without a
//     token. Any other OPTIONS (another path, a body) goes on to the token
//     checks like every request. Envoy's CORS filter answers preflights
//     before they get here; this serves deployments without it.
//  4. MCP endpoint with a method-override header or an upgrade → 400
//     (checked before rung 3, so a preflight carries neither).
//  5. Token in the query string, or several Authorization values → 400
//     invalid_request. No bearer token → 401 with a challenge without error.
//     A token that fails verification → 401 error="invalid_token" with a
//     generic description (the precise cause is in the log and in
//     `mcpauthz check`). No keys to verify with → 503.
//  6. On an MCP endpoint: GET is a stream and DELETE a session end (no body);
//     other methods but POST → 405. A POST body that Envoy truncated → 413;
//     an encoded body or a type other than application/json → 415; a body
//     that is not strict JSON-RPC (package mcprpc) → 400 with a JSON-RPC
//     error; a batch outside protocol 2025-03-26 → 400; 2026-07-28 headers
//     (Mcp-Method, Mcp-Name, MCP-Protocol-Version) that do not match the
//     body → 400 with JSON-RPC error -32020.
//  7. Policy (one evaluation per message; a batch is allowed only if every
//     element is). Evaluation error → 503 policy_error; an evaluation that
//     runs out of time (policy.eval_timeout, or the caller's deadline) →
//     503 timeout. A denial that scopes can fix →
//     403 error="insufficient_scope" with scope = required scopes ∪ the
//     granted scopes the policy still knows, sorted. Any other denial → 403
//     with a JSON-RPC error echoing the request id.
//  8. Allow → OK: identity headers set with OVERWRITE_IF_EXISTS_OR_ADD (and
//     removed when there is no value, so a client cannot supply them), and
//     the client's Authorization removed unless upstream.forward_token.
//
// # Fail closed
//
// Every outcome, including "cannot decide" (no keys, policy error, timeout,
// a panic), is a CheckResponse with an explicit HTTP status; Check returns a
// gRPC error only for a CheckRequest without HTTP attributes. So a denial
// can never turn into an allow through Envoy's failure_mode_allow.
//
// # Status mapping
//
//	HTTP  gRPC status        Reason (metric label)
//	200   OK                 cors_preflight, policy_allow
//	200   PERMISSION_DENIED  metadata (direct answer: never forwarded)
//	400   INVALID_ARGUMENT   token_in_query, multiple_authorization, invalid_json, duplicate_key, ... (mcprpc reasons), batch_not_allowed, header_mismatch, unsupported_protocol_version, method_override, upgrade
//	401   UNAUTHENTICATED    no_token, invalid_token
//	403   PERMISSION_DENIED  forbidden_origin, insufficient_scope, policy_deny
//	404   NOT_FOUND          metadata_not_found
//	405   INVALID_ARGUMENT   method_not_allowed, metadata_method
//	413   INVALID_ARGUMENT   partial_body
//	415   INVALID_ARGUMENT   content_type, content_encoding
//	503   UNAVAILABLE        keys_unavailable, policy_error, timeout, body_not_forwarded, internal_error
//
// # Concurrency
//
// Server is immutable after New except for its policy state: a policy
// generation together with everything derived from it (the scopes
// advertised in the metadata and 401 challenges, the scopes still relevant
// in a step-up challenge, the metadata document). SetPolicy computes that
// state off the request path and publishes it behind one atomic pointer;
// a Check loads it once, so one decision never mixes two generations.
//
// # Using the package from other programs
//
// The package depends on nothing internal to mcpauthz in its API: New takes
// Options; a caller supplies an Authenticator (returning *Identity or a
// *TokenError), a Policy per generation (policy.Generation implements it),
// and Recorders that read each *Decision. mcpauthz itself wires its token
// verifier and policy engine in internal/app.
package extauthz
