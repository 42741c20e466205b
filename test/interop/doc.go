// Package interop is the end-to-end OAuth test of mcpauthz with real MCP
// clients: the official MCP TypeScript SDK (test/interop/node, pinned by
// its package-lock.json) as client and as MCP server, behind a front proxy
// (the Envoy stand-in of package standin, or a real Envoy in test/e2e) whose
// ext_authz filter calls a real `mcpauthz serve` process, with a real
// authorization server. `make test` runs it (`make test-interop` alone);
// without node or `npm ci` it is skipped, and fails under CI=true.
//
// # What runs
//
//	client.mjs (SDK Client + StreamableHTTPClientTransport, an OAuthClientProvider
//	  │          whose "browser" fills in the login and consent pages over HTTP)
//	  ├──► front (stand-in or Envoy, envoy/envoy.yaml) ──► upstream.mjs (SDK McpServer)
//	  │        └── ext_authz gRPC ──► mcpauthz serve (configured as docs/idp.md says)
//	  └──► authorization server (a row: oidc.mjs = oidc-provider; mcpauthz --dev later)
//
// Every process listens on 127.0.0.1 with an ephemeral port. mcpauthz is
// built by the test (with -race when the test has it) and started with
// --grpc-addr/--http-addr 127.0.0.1:0; its bound addresses are read from its
// "mcpauthz serving" log line.
//
// # The scenarios
//
// Two clients run at the same time against the same servers. "public" (a
// client without refresh tokens):
//
//   - connect: initialize without a token → 401 with resource_metadata and
//     scope → the protected resource metadata → the authorization server
//     metadata → dynamic registration → authorization with PKCE (S256),
//     state and the resource indicator → the browser's login and consent →
//     the code back → finishAuth: the code exchange with the verifier →
//     initialize, notifications/initialized, the GET stream;
//   - list_tools, get_weather (allowed), whoami (the MCP server sees
//     x-mcp-subject, -client-id, -scopes, -issuer and no Authorization);
//   - announce: a notification of the server's own travels on the GET
//     stream while it stays open;
//   - step_up: delete_file beyond the token's scopes → 403
//     insufficient_scope → the SDK authorizes again for the challenged
//     scopes → the retried call passes;
//   - wrong_audience: a token of the same authorization server for another
//     resource → 401 invalid_token (mcpauthz logs wrong_audience) → the SDK
//     authorizes again → the retried call passes;
//   - end_session: DELETE of the session → 200, and the GET stream ends.
//
// "refresh" (a client with refresh tokens and short-lived access tokens):
// connect; expiry: the access token expires → 401 invalid_token (mcpauthz
// logs expired) → the SDK refreshes, no browser → the retried call passes;
// step_up_holding_refresh_token: pins the TypeScript SDK 1.x's known dead
// end (typescript-sdk#2255: it refreshes, which cannot widen the scope, and
// gives up on the identical 403); end_session.
//
// client.mjs prints every HTTP exchange of each step as JSON (tokens decoded,
// never printed; the PKCE verifier as its SHA-256); this package asserts on
// them (the sequence of exchanges of every step, then statuses, challenges,
// bodies, tokens), on what mcpauthz decided for each request (the stand-in's
// record of checks and mcpauthz's decision log), and on every request the
// MCP server received. Each step is a subtest: a failure names it.
//
// # Timing
//
// Nothing sleeps for a fixed time. The expiry step waits until the token's
// own exp plus the issuer's leeway (1s) plus one second, computed from the
// token; the short-lived tokens live 5s, so the only time-sensitive window
// is connect finishing within 6s of its token exchange. Waits for the
// servers (readiness, the GET stream, the announcement) poll with
// deadlines; the whole run is bounded by a 2-minute context.
//
// # Rows
//
// The authorization server is a row (AuthServer). OIDCProvider runs now.
// DevServer, `mcpauthz serve --dev --dev-approve=auto` (internal/devauth),
// is skipped until the binary has the flags it needs: --dev-approve,
// --resource (the front's URL is only known at run time; the dev
// configuration's resource is fixed to http://localhost:10000/mcp) and
// --dev-token-ttl (short access tokens for the expiry case), and the dev
// issuer's leeway must then be 1s (it is the 60s default now). Its Start also
// assumes that `serve --dev` takes --dev-issuer-addr 127.0.0.1:0, that the
// development server is the protected resource metadata's
// authorization_servers[0], that it offers dynamic registration, PKCE,
// refresh tokens for clients registering the refresh_token grant, tokens
// for another resource indicator (or the row mints one with `mcpauthz
// token --aud`), and RFC 9068 tokens with sub dev-user. The issuer and the
// advertised scopes are read from the protected resource metadata.
package interop
