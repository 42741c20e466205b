// Package interop is the end-to-end OAuth test of mcpauthz with real MCP
// clients: the official MCP TypeScript SDK (test/interop/node, pinned by
// its package-lock.json) as client and as MCP server, behind a front proxy
// (the Envoy stand-in of package standin, or a real Envoy in test/e2e) whose
// ext_authz filter calls a real `mcpauthz serve` process, with a real
// authorization server. `make test` runs it (`make test-interop` alone);
// without node or `npm ci` it is skipped, and fails under CI=true.
// test/interop/node is the repository's one Node package: internal/devauth's
// TestTypeScriptSDK loads the same pinned SDK from it.
//
// # What runs
//
//	client.mjs (SDK Client + StreamableHTTPClientTransport, an OAuthClientProvider
//	  │          whose "browser" fills in the login and consent pages over HTTP)
//	  ├──► front (stand-in or Envoy, envoy/envoy.yaml) ──► upstream.mjs (SDK McpServer)
//	  │        └── ext_authz gRPC ──► mcpauthz serve
//	  └──► authorization server (a row: oidc.mjs = oidc-provider, or mcpauthz --dev)
//
// Every process listens on 127.0.0.1 with an ephemeral port. mcpauthz is
// built by the test (with -race when the test has it) and started with
// --grpc-addr/--http-addr 127.0.0.1:0 (and --dev-issuer-addr 127.0.0.1:0);
// its bound addresses are read from the file of its --addr-file.
//
// mcpauthz runs on its defaults: the embedded policy, which maps no scope
// names, and no scopes_supported, so the protected resource metadata
// advertises none and every 401 names the scopes of the request it answers
// (none for initialize and the other open methods, tools:T for a tools/call
// of T), a 403 the tool's scope plus the granted ones. The test derives
// every expected scope from the requests and from what each client asks for
// by itself (clientScopes): the public client's metadata names the tools it
// wants; the refreshing client names none and logs in without scope.
//
// # The scenarios
//
// Two clients run at the same time against the same servers. "public" (a
// client that registers no refresh_token grant, and keeps no refresh token
// a server hands out anyway):
//
//   - connect: initialize without a token → 401 with resource_metadata and
//     no scope → the protected resource metadata (no scopes_supported) →
//     the authorization server metadata → dynamic registration with the
//     client's scope → authorization with PKCE (S256), state, the resource
//     indicator and that scope → the browser's login and consent → the
//     code back → finishAuth: the code exchange with the verifier →
//     initialize, notifications/initialized, the GET stream;
//   - list_tools, get_weather (allowed), whoami (the MCP server sees
//     x-mcp-subject, -client-id, -scopes, -issuer and no Authorization);
//   - announce: a notification of the server's own travels on the GET
//     stream while it stays open;
//   - step_up: delete_file beyond the token's scopes → 403
//     insufficient_scope naming tools:delete_file and the granted scopes →
//     the SDK authorizes again for exactly those → the retried call passes;
//   - wrong_audience: a token of the same authorization server for another
//     resource → 401 invalid_token naming tools:get_weather (mcpauthz
//     reports wrong_audience) → the SDK authorizes again for that scope →
//     the retried call passes;
//   - end_session: DELETE of the session → 200, and the GET stream ends.
//
// "refresh" (a client with refresh tokens and short-lived access tokens,
// and no scope of its own): connect, authorizing without a scope parameter
// and getting a token without scope; expiry: the access token expires →
// tools/list gets 401 invalid_token without scope (mcpauthz reports
// expired) → the SDK refreshes, no browser → the retried call passes;
// step_up_holding_refresh_token: pins the TypeScript SDK 1.x's known dead
// end (typescript-sdk#2255: it refreshes, which cannot widen the scope, and
// gives up on the identical 403 naming tools:delete_file); end_session.
//
// "probes" then sends three requests of its own for the 401s the SDK does
// not reach: a tools/call without a token and with a bad token (both name
// tools:get_weather; only the second has error="invalid_token", and the
// body of the first has no error code), and initialize with a bad token
// (no scope).
//
// client.mjs prints every HTTP exchange of each step as JSON (tokens decoded,
// never printed; the PKCE verifier as its SHA-256); this package asserts on
// them (the sequence of exchanges of every step, then statuses, challenges,
// bodies, tokens), on what mcpauthz decided for each request (the stand-in's
// record of checks, with the token verdict of the check's dynamic metadata,
// and mcpauthz's decision log, JSON or text), and on every request the MCP
// server received. Each step is a subtest: a failure names it.
//
// The shipped Envoy configuration runs mcpauthz's list filter (ext_proc) on
// list responses, so tools/list shows each client the tools its token's
// scope can call. TestListFiltering checks that on its own: the official
// SDK client (node/list.mjs, a static bearer token) lists the tools through
// the stand-in with a tools:get_weather token (get_weather only) and a
// tools:* token (all four), against the MCP server answering with SSE and
// with JSON (upstream.mjs --json), and its tools/call answer passes
// unchanged.
//
// # Timing
//
// Nothing sleeps for a fixed time. The expiry step waits until the token's
// own exp plus the issuer's leeway (1s) plus one second, computed from the
// token. The only time-sensitive windows: in the oidc-provider row the
// short-lived tokens live 5s, so connect must finish within 6s of its token
// exchange; the development server gives every token the same lifetime
// (--dev-token-ttl 10s), so each of the public client's tokens must last
// through its steps (well under a second each here; a token that expires
// early is reported as such). Waits for the servers (readiness, the
// addresses file, the GET stream, the announcement) poll with deadlines;
// the whole run is bounded by a 2-minute context.
//
// # Rows
//
// The authorization server is a row (AuthServer):
//
//   - OIDCProvider: oidc-provider, configured as docs/idp.md's oidc-provider
//     section says (including its default scope for requests without one),
//     and mcpauthz configured with that section's issuer entry and no
//     scopes_supported. It issues tokens for another resource indicator
//     too, which is how the wrong-audience token is obtained.
//   - DevServer: `mcpauthz serve --dev --dev-approve=auto --resource URL
//     --dev-token-ttl 10s` (internal/devauth): no pages (automatic approval
//     for the loopback redirect URI), RFC 9068 tokens for dev-user, refresh
//     tokens with every code (the public client drops them), and tokens for
//     its one resource only, so the wrong-audience token is minted with the
//     same key and issuer by `mcpauthz token --dev-dir DIR --aud URL
//     --client-id ID` (Deployment.MintOtherAudience).
package interop
