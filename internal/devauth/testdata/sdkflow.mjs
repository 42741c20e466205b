// The MCP TypeScript SDK's OAuth client (auth() of @modelcontextprotocol/sdk)
// against the development authorization server: discovery from the
// protected resource metadata, dynamic registration, authorization with
// PKCE and resource, consent (the page's form is posted when the server
// shows one), token exchange, refresh, and a step-up to more scopes.
// Run by TestTypeScriptSDK, which serves MCP_URL's metadata; it prints one
// JSON object.
//
// The SDK is the one the repository pins once, in test/interop/node
// (SDK_PACKAGE_DIR, installed by `npm ci` there): resolved from that
// package, not from this script's directory.
import { createRequire } from 'node:module';
import { join } from 'node:path';

const require = createRequire(join(process.env.SDK_PACKAGE_DIR, 'package.json'));
const { auth } = require('@modelcontextprotocol/sdk/client/auth.js');

const serverUrl = process.env.MCP_URL;
const redirectUrl = 'http://127.0.0.1:8976/callback';
const st = {};

// approve answers the consent page, ticking every box.
async function approve(page, pageUrl) {
  const hidden = Object.fromEntries([...page.matchAll(/<input type="hidden" name="([a-z_]+)" value="([^"]*)">/g)].map(m => [m[1], m[2]]));
  const action = page.match(/<form method="post" action="([^"]+)">/)[1];
  const form = new URLSearchParams({ ...hidden, decision: 'approve' });
  for (const m of page.matchAll(/<input type="checkbox" name="scope" value="([^"]*)" checked>/g)) form.append('scope', m[1]);
  return fetch(new URL(action, pageUrl), { method: 'POST', body: form, redirect: 'manual' });
}

const provider = {
  get redirectUrl() { return redirectUrl; },
  get clientMetadata() {
    return { client_name: 'TypeScript SDK', redirect_uris: [redirectUrl], grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'], token_endpoint_auth_method: 'none' };
  },
  state() { return 'sdk-' + Math.random().toString(36).slice(2); },
  clientInformation() { return st.client; },
  saveClientInformation(c) { st.client = c; },
  tokens() { return st.tokens; },
  saveTokens(t) { st.tokens = t; },
  async redirectToAuthorization(url) {
    let r = await fetch(url, { redirect: 'manual', headers: { accept: 'text/html' } });
    st.consentPage = r.status === 200;
    if (st.consentPage) r = await approve(await r.text(), url);
    const loc = new URL(r.headers.get('location'));
    if (loc.searchParams.get('error')) throw new Error('authorization error: ' + loc);
    if (loc.searchParams.get('iss') === null) throw new Error('no iss in ' + loc);
    st.code = loc.searchParams.get('code');
  },
  saveCodeVerifier(v) { st.verifier = v; },
  codeVerifier() { return st.verifier; },
  saveDiscoveryState(s) { st.discovery = s; },
  discoveryState() { return st.discovery; },
  invalidateCredentials(what) { if (what === 'all' || what === 'tokens') st.tokens = undefined; },
};

const out = {};
out.start = await auth(provider, { serverUrl, scope: 'tools:get_weather' });
out.consentPage = st.consentPage;
out.exchange = await auth(provider, { serverUrl, authorizationCode: st.code });
out.first = st.tokens;
// With a refresh token, the next auth() refreshes.
out.refresh = await auth(provider, { serverUrl });
out.refreshed = st.tokens;
// Step-up after a 403: the transport drops the tokens when the scope grows
// and authorizes again.
st.tokens = undefined;
out.stepUpStart = await auth(provider, { serverUrl, scope: 'tools:get_weather tools:delete_file' });
out.stepUpExchange = await auth(provider, { serverUrl, authorizationCode: st.code });
out.stepUp = st.tokens;
out.clientId = st.client.client_id;
console.log(JSON.stringify(out));
