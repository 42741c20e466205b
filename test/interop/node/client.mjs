// The MCP client of the interop test: the official TypeScript SDK's Client
// and StreamableHTTPClientTransport, with an OAuthClientProvider whose
// "browser" is this script: it follows the authorization URL, fills in the
// authorization server's login and consent forms over HTTP, captures the code
// from the redirect to the (never listening) loopback redirect URI, and the
// scenario then calls transport.finishAuth(code), as an application does.
//
// The script drives one scenario step by step and records every HTTP
// exchange of each step: the SDK's own requests through the transport's
// fetch (MCP, protected resource metadata, authorization server metadata,
// registration, token) and the browser's. It prints JSON lines on stdout:
//
//   {"step":NAME,"ms":N,"error":"..."?,"result":{...},"exchanges":[...]}
//   {"sse":{"exchange":ID,"step":NAME,"event":...,"id":...,"message":{...}}}
//   {"sseEnd":{"exchange":ID,"step":NAME}}
//
// and stops at the first step that fails. The Go test (test/interop) makes
// the assertions. No token, code, verifier or refresh token is printed:
// access tokens appear decoded (header and claims, no signature), code
// verifiers as base64url(SHA-256), so PKCE can be checked without them.
//
// Usage: node client.mjs --url MCP_URL --scenario public|refresh [--scope S]
//          [--login NAME --password PW] [--other-resource URL] [--leeway S]
//          [--mint-other-audience JSON_ARGV]
//
// --scope is the client metadata's scope: what the SDK asks for when
// neither the challenge nor the protected resource metadata names any.
// --mint-other-audience is a command (a JSON array) that prints a token for
// the other resource, run with --client-id CLIENT_ID appended, for an
// authorization server that issues tokens for one resource only; without
// it the wrong-audience token is authorized at the server with the
// resource indicator --other-resource.
import { execFileSync } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import {
    UnauthorizedError,
    discoverAuthorizationServerMetadata,
    discoverOAuthProtectedResourceMetadata,
    exchangeAuthorization,
    startAuthorization
} from '@modelcontextprotocol/sdk/client/auth.js';
import { LoggingMessageNotificationSchema } from '@modelcontextprotocol/sdk/types.js';

const { values: args } = parseArgs({
    options: {
        url: { type: 'string' },
        scenario: { type: 'string' },
        scope: { type: 'string', default: '' },
        'mint-other-audience': { type: 'string', default: '' },
        login: { type: 'string', default: '' },
        password: { type: 'string', default: '' },
        'other-resource': { type: 'string', default: '' },
        leeway: { type: 'string', default: '1' },
        'redirect-port': { type: 'string', default: '1' }
    }
});
const MCP_URL = new URL(args.url);
const REDIRECT_URL = `http://127.0.0.1:${args['redirect-port']}/callback`;
const t0 = Date.now();

// --- Recording ---------------------------------------------------------------

let currentStep = 'setup';
let exchanges = [];
let nextExchange = 1;
// ended holds the exchanges whose event stream has ended.
const ended = new Set();
function out(line) {
    if (line.sseEnd) ended.add(line.sseEnd.exchange);
    process.stdout.write(JSON.stringify(line) + '\n');
}

const b64urlJSON = s => JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
const sha256 = s => createHash('sha256').update(s).digest('base64url');

// describeToken shows a JWT as its header and claims, anything else as its
// length only.
function describeToken(tok) {
    const parts = String(tok).split('.');
    if (parts.length === 3) {
        try {
            return { jwt: { header: b64urlJSON(parts[0]), claims: b64urlJSON(parts[1]) } };
        } catch {
            // not a JWT after all
        }
    }
    return { opaque: String(tok).length };
}

const REDACT = new Set(['code', 'refresh_token', 'client_secret', 'registration_access_token', 'password', 'id_token']);

function redactFields(obj) {
    const o = { ...obj };
    for (const k of Object.keys(o)) {
        if (k === 'access_token') {
            o[k] = describeToken(o[k]);
        } else if (k === 'code_verifier') {
            o[k] = { sha256: sha256(o[k]) };
        } else if (REDACT.has(k)) {
            o[k] = '<redacted>';
        }
    }
    return o;
}

function describeURL(u) {
    const url = new URL(u);
    const query = redactFields(Object.fromEntries(url.searchParams));
    url.search = '';
    return { url: url.href, query };
}

const SHOWN_REQUEST_HEADERS = ['accept', 'content-type', 'mcp-session-id', 'mcp-protocol-version', 'last-event-id'];

function describeRequest(headers, body) {
    const r = { headers: {} };
    for (const h of SHOWN_REQUEST_HEADERS) {
        if (headers.has(h)) r.headers[h] = headers.get(h);
    }
    const auth = headers.get('authorization');
    if (auth) {
        const [scheme, ...rest] = auth.split(' ');
        r.authorization = { scheme, ...(scheme.toLowerCase() === 'bearer' ? describeToken(rest.join(' ')) : {}) };
    }
    if (body === undefined || body === null) return r;
    const text = body instanceof URLSearchParams ? body.toString() : String(body);
    const ct = headers.get('content-type') ?? (body instanceof URLSearchParams ? 'application/x-www-form-urlencoded' : '');
    if (ct.includes('json')) {
        r.body = JSON.parse(text);
    } else if (ct.includes('x-www-form-urlencoded')) {
        r.form = redactFields(Object.fromEntries(new URLSearchParams(text)));
    } else {
        r.bodyBytes = text.length;
    }
    return r;
}

function describeResponseBody(ct, text) {
    if (ct.includes('json')) {
        try {
            const v = JSON.parse(text);
            return v && typeof v === 'object' && !Array.isArray(v) ? redactFields(v) : v;
        } catch {
            return text;
        }
    }
    return text.length > 2000 ? `${text.slice(0, 2000)}…` : text;
}

// summarize reduces a JSON-RPC message on a stream to what the test reads.
function summarize(data) {
    try {
        const m = JSON.parse(data);
        const s = { jsonrpc: m.jsonrpc };
        for (const k of ['id', 'method', 'error']) if (k in m) s[k] = m[k];
        if ('result' in m) s.result = m.result;
        if (m.method === 'notifications/message') s.params = m.params;
        return s;
    } catch {
        return { raw: data };
    }
}

// recordSSE hands the SDK a copy of an event stream while parsing the other
// copy, so each event is reported as it arrives and the end of the stream is
// seen.
function recordSSE(resp, ex) {
    const [mine, theirs] = resp.body.tee();
    ex.sse = true;
    (async () => {
        const reader = mine.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        try {
            for (;;) {
                const { value, done } = await reader.read();
                if (done) break;
                buf += value.replace(/\r\n/g, '\n');
                let cut;
                while ((cut = buf.indexOf('\n\n')) >= 0) {
                    const raw = buf.slice(0, cut);
                    buf = buf.slice(cut + 2);
                    const ev = { exchange: ex.id, step: currentStep, ms: Date.now() - t0 };
                    const data = [];
                    for (const line of raw.split('\n')) {
                        const m = /^([^:]*):? ?(.*)$/.exec(line);
                        if (!m || m[1] === '') continue;
                        if (m[1] === 'data') data.push(m[2]);
                        else if (m[1] === 'event' || m[1] === 'id') ev[m[1]] = m[2];
                    }
                    if (data.length > 0 && data.join('') !== '') ev.message = summarize(data.join('\n'));
                    out({ sse: ev });
                }
            }
        } catch (err) {
            out({ sseEnd: { exchange: ex.id, step: currentStep, ms: Date.now() - t0, error: String(err) } });
            return;
        }
        out({ sseEnd: { exchange: ex.id, step: currentStep, ms: Date.now() - t0 } });
    })();
    return new Response(theirs, { status: resp.status, statusText: resp.statusText, headers: resp.headers });
}

function kindOf(url) {
    const u = new URL(url);
    if (u.origin !== MCP_URL.origin) return 'auth';
    return u.pathname.startsWith('/.well-known/') ? 'discovery' : 'mcp';
}

// recordingFetch is the fetch the SDK uses for everything (transport and
// OAuth). Requests to the MCP server carry x-interop-step, so the proxy's
// records can be matched to steps.
async function recordingFetch(input, init = {}) {
    const url = input instanceof Request ? input.url : String(input);
    const method = (init.method ?? 'GET').toUpperCase();
    const headers = new Headers(init.headers);
    const kind = kindOf(url);
    if (kind !== 'auth') headers.set('x-interop-step', `${args.scenario}/${currentStep}`);
    const ex = { id: nextExchange++, kind, method, ...describeURL(url), request: describeRequest(headers, init.body), ms: Date.now() - t0 };
    exchanges.push(ex);
    const resp = await fetch(url, { ...init, headers });
    ex.status = resp.status;
    ex.responseHeaders = Object.fromEntries([...resp.headers.entries()].filter(([k]) => k !== 'date'));
    const ct = resp.headers.get('content-type') ?? '';
    if (ct.startsWith('text/event-stream') && resp.body) {
        return recordSSE(resp, ex);
    }
    const text = await resp.clone().text();
    if (text !== '') ex.body = describeResponseBody(ct, text);
    return resp;
}

// --- The browser --------------------------------------------------------------

// parseForm reads the first form of a page: its action, method and fields
// (text and hidden inputs with their values, checked checkboxes).
function parseForm(html) {
    const f = /<form\b([^>]*)>([\s\S]*?)<\/form>/i.exec(html);
    if (!f) return undefined;
    const attr = (s, name) => new RegExp(`\\b${name}\\s*=\\s*"([^"]*)"`, 'i').exec(s)?.[1];
    const unescape = s => s?.replace(/&#(\d+);/g, (_, n) => String.fromCharCode(Number(n))).replace(/&quot;/g, '"').replace(/&amp;/g, '&');
    const fields = [];
    for (const m of f[2].matchAll(/<input\b([^>]*)>/gi)) {
        const name = unescape(attr(m[1], 'name'));
        if (!name) continue;
        const type = (attr(m[1], 'type') ?? 'text').toLowerCase();
        if ((type === 'checkbox' || type === 'radio') && !/\bchecked\b/i.test(m[1])) continue;
        fields.push({ name, type, value: unescape(attr(m[1], 'value')) ?? '' });
    }
    for (const m of f[2].matchAll(/<button\b([^>]*)>/gi)) {
        const name = unescape(attr(m[1], 'name'));
        if (name) fields.push({ name, type: 'submit', value: unescape(attr(m[1], 'value')) ?? '' });
    }
    return { action: unescape(attr(f[1], 'action')) ?? '', method: (attr(f[1], 'method') ?? 'get').toUpperCase(), fields };
}

class Browser {
    #cookies = new Map();

    #cookieHeader(url) {
        const host = new URL(url).host;
        const jar = this.#cookies.get(host);
        return jar && jar.size > 0 ? [...jar].map(([k, v]) => `${k}=${v}`).join('; ') : undefined;
    }

    #store(url, resp) {
        const host = new URL(url).host;
        const jar = this.#cookies.get(host) ?? new Map();
        for (const c of resp.headers.getSetCookie()) {
            const [pair] = c.split(';');
            const i = pair.indexOf('=');
            jar.set(pair.slice(0, i).trim(), pair.slice(i + 1).trim());
        }
        this.#cookies.set(host, jar);
    }

    // authorize follows an authorization URL to the redirect back to the
    // client, submitting every form on the way (login fields filled in), and
    // returns the code. The state must come back unchanged.
    async authorize(authorizationURL, redirectURL, state) {
        let url = String(authorizationURL);
        let method = 'GET';
        let body;
        for (let hop = 0; hop < 20; hop++) {
            if (url.startsWith(redirectURL)) {
                const back = new URL(url);
                exchanges.push({ id: nextExchange++, kind: 'callback', ...describeURL(url), ms: Date.now() - t0 });
                if (back.searchParams.get('error')) {
                    throw new Error(`authorization failed: ${back.searchParams.get('error')}: ${back.searchParams.get('error_description')}`);
                }
                if (back.searchParams.get('state') !== state) {
                    throw new Error('authorization: state mismatch');
                }
                return back.searchParams.get('code');
            }
            const headers = new Headers();
            const cookie = this.#cookieHeader(url);
            if (cookie) headers.set('cookie', cookie);
            if (body) headers.set('content-type', 'application/x-www-form-urlencoded');
            const ex = { id: nextExchange++, kind: 'browser', method, ...describeURL(url), ms: Date.now() - t0 };
            if (body) ex.form = redactFields(Object.fromEntries(body));
            exchanges.push(ex);
            const resp = await fetch(url, { method, headers, body, redirect: 'manual' });
            this.#store(url, resp);
            ex.status = resp.status;
            const location = resp.headers.get('location');
            if (resp.status >= 300 && resp.status < 400 && location) {
                await resp.body?.cancel();
                url = new URL(location, url).href;
                ex.location = describeURL(url);
                method = 'GET';
                body = undefined;
                continue;
            }
            const text = await resp.text();
            const form = resp.status === 200 ? parseForm(text) : undefined;
            if (!form) {
                throw new Error(`authorization: ${resp.status} at ${url} without a form to submit: ${text.slice(0, 300)}`);
            }
            ex.page = /<title>([^<]*)<\/title>/i.exec(text)?.[1] ?? '';
            ex.formFields = form.fields.map(f => (f.type === 'checkbox' ? `${f.name}=${f.value}` : f.name));
            const data = new URLSearchParams();
            for (const f of form.fields) {
                if (f.name === 'login' || f.name === 'username') data.append(f.name, args.login);
                else if (f.type === 'password') data.append(f.name, args.password);
                else data.append(f.name, f.value);
            }
            url = new URL(form.action || url, url).href;
            method = form.method;
            if (method === 'GET') {
                const u = new URL(url);
                u.search = data.toString();
                url = u.href;
                body = undefined;
            } else {
                body = data;
            }
        }
        throw new Error('authorization: too many redirects');
    }
}

// --- The OAuthClientProvider --------------------------------------------------

class TestProvider {
    #client;
    #tokens;
    #verifier;
    #state;
    code;

    constructor({ grantTypes, clientName, browser }) {
        this.grantTypes = grantTypes;
        this.clientName = clientName;
        this.browser = browser;
    }

    get redirectUrl() {
        return REDIRECT_URL;
    }

    get clientMetadata() {
        return {
            client_name: this.clientName,
            redirect_uris: [REDIRECT_URL],
            grant_types: this.grantTypes,
            response_types: ['code'],
            token_endpoint_auth_method: 'none',
            application_type: 'native',
            ...(args.scope ? { scope: args.scope } : {})
        };
    }

    state() {
        this.#state = randomUUID();
        return this.#state;
    }

    clientInformation() {
        return this.#client;
    }

    saveClientInformation(info) {
        this.#client = info;
    }

    tokens() {
        return this.#tokens;
    }

    // A client that did not register the refresh_token grant does not keep
    // a refresh token that a server hands out anyway (the development
    // server issues one with every code): without one, the SDK answers a
    // challenge by authorizing again, as such a client must.
    saveTokens(tokens) {
        if (!this.grantTypes.includes('refresh_token')) {
            const { refresh_token: _dropped, ...rest } = tokens;
            tokens = rest;
        }
        this.#tokens = tokens;
    }

    saveCodeVerifier(v) {
        this.#verifier = v;
    }

    codeVerifier() {
        return this.#verifier;
    }

    invalidateCredentials(scope) {
        if (scope === 'all' || scope === 'client') this.#client = undefined;
        if (scope === 'all' || scope === 'tokens') this.#tokens = undefined;
        if (scope === 'all' || scope === 'verifier') this.#verifier = undefined;
    }

    // The "browser" step, done before auth() returns 'REDIRECT'.
    async redirectToAuthorization(url) {
        this.code = await this.browser.authorize(url, REDIRECT_URL, this.#state);
    }

    takeCode() {
        const c = this.code;
        this.code = undefined;
        if (!c) throw new Error('no authorization code was captured');
        return c;
    }

    accessTokenClaims() {
        return describeToken(this.#tokens?.access_token).jwt?.claims;
    }
}

// --- Scenario helpers ---------------------------------------------------------

const notifications = [];

function newClient() {
    const client = new Client({ name: 'mcpauthz-interop', version: '1.0.0' });
    client.setNotificationHandler(LoggingMessageNotificationSchema, n => {
        notifications.push({ step: currentStep, params: n.params });
    });
    return client;
}

function newTransport(provider) {
    return new StreamableHTTPClientTransport(MCP_URL, { authProvider: provider, fetch: recordingFetch });
}

async function until(what, cond, ms = 5000) {
    const deadline = Date.now() + ms;
    while (!cond()) {
        if (Date.now() > deadline) throw new Error(`timed out after ${ms}ms waiting for ${what}`);
        await new Promise(r => setTimeout(r, 20));
    }
}

// connect runs the first connection: it must end in UnauthorizedError after
// the browser step, then finishAuth and a fresh transport connect.
async function connect(provider) {
    const first = newClient();
    const t1 = newTransport(provider);
    let unauthorized = false;
    try {
        await first.connect(t1);
    } catch (err) {
        if (!(err instanceof UnauthorizedError)) throw err;
        unauthorized = true;
    }
    if (!unauthorized) throw new Error('connect succeeded without authorization');
    await t1.finishAuth(provider.takeCode());
    await t1.close();
    const client = newClient();
    const transport = newTransport(provider);
    await client.connect(transport);
    // The SDK opens the GET stream after notifications/initialized.
    await until('the GET stream', () => exchanges.some(e => e.method === 'GET' && e.kind === 'mcp' && e.status !== undefined));
    return {
        client,
        transport,
        result: {
            firstConnect: 'UnauthorizedError',
            server: client.getServerVersion(),
            protocolVersion: transport.protocolVersion,
            sessionId: transport.sessionId,
            granted: provider.tokens()?.scope,
            refreshToken: provider.tokens()?.refresh_token !== undefined
        }
    };
}

const text = r => r.content?.map(c => c.text).join('');

async function callExpectingReauthorization(client, transport, provider, params) {
    try {
        const r = await client.callTool(params);
        return { firstAttempt: 'succeeded', text: text(r), isError: r.isError };
    } catch (err) {
        if (!(err instanceof UnauthorizedError)) throw err;
    }
    await transport.finishAuth(provider.takeCode());
    const r = await client.callTool(params);
    return { firstAttempt: 'UnauthorizedError', text: text(r), isError: r.isError ?? false, granted: provider.tokens()?.scope };
}

async function endSession(transport) {
    const getStream = exchangesSoFar.find(e => e.method === 'GET' && e.kind === 'mcp' && e.sse);
    await transport.terminateSession();
    await until('the end of the GET stream', () => getStream === undefined || ended.has(getStream.id));
    return { sessionId: transport.sessionId ?? null, getStreamEnded: getStream ? ended.has(getStream.id) : false };
}

// exchangesSoFar lets later steps find earlier exchanges.
const exchangesSoFar = [];

let failed = false;
async function step(name, fn) {
    if (failed) return undefined;
    currentStep = name;
    exchanges = [];
    const started = Date.now();
    let result;
    let error;
    try {
        result = await fn();
    } catch (err) {
        error = `${err?.constructor?.name ?? 'Error'}: ${err?.message ?? String(err)}`;
        failed = true;
    }
    // A step returns its result, or {result, ...} when it also hands objects
    // (client, transport) to later steps.
    const line = { step: name, ms: Date.now() - started, result: result?.result ?? result, exchanges };
    if (error) line.error = error;
    exchangesSoFar.push(...exchanges);
    out(line);
    return result;
}

// --- Scenarios ------------------------------------------------------------------

const browser = new Browser();

async function publicClient() {
    const provider = new TestProvider({ grantTypes: ['authorization_code'], clientName: 'interop public client', browser });
    const c = await step('connect', () => connect(provider));
    if (!c) return;
    const { client, transport } = c;
    await step('list_tools', async () => ({ tools: (await client.listTools()).tools.map(t => t.name).sort() }));
    await step('get_weather', async () => {
        const r = await client.callTool({ name: 'get_weather', arguments: { city: 'Paris' } });
        return { text: text(r), isError: r.isError ?? false };
    });
    await step('whoami', async () => {
        const r = await client.callTool({ name: 'whoami', arguments: {} });
        return { headers: JSON.parse(text(r)), token: provider.accessTokenClaims() };
    });
    await step('announce', async () => {
        const message = `hello ${randomUUID()}`;
        const r = await client.callTool({ name: 'announce', arguments: { message } });
        await until('the announcement', () => notifications.some(n => n.params?.data === message));
        return { text: text(r), message, notification: notifications.find(n => n.params?.data === message) };
    });
    await step('step_up', () => callExpectingReauthorization(client, transport, provider, { name: 'delete_file', arguments: { path: '/tmp/x' } }));
    await step('wrong_audience', async () => {
        // A token of the same authorization server for another resource, got
        // the way any client gets one (or minted with the server's key), then
        // presented to this server.
        const clientInformation = provider.clientInformation();
        let tokens;
        if (args['mint-other-audience']) {
            const [cmd, ...argv] = JSON.parse(args['mint-other-audience']);
            const token = execFileSync(cmd, [...argv, '--client-id', clientInformation.client_id], { encoding: 'utf8' }).trim();
            tokens = { access_token: token, token_type: 'Bearer' };
        } else {
            const prm = await discoverOAuthProtectedResourceMetadata(MCP_URL, {}, recordingFetch);
            const as = prm.authorization_servers[0];
            const metadata = await discoverAuthorizationServerMetadata(as, { fetchFn: recordingFetch });
            const other = new URL(args['other-resource']);
            const state = randomUUID();
            const { authorizationUrl, codeVerifier } = await startAuthorization(as, {
                metadata, clientInformation, redirectUrl: REDIRECT_URL, scope: 'tools:get_weather', state, resource: other
            });
            const code = await browser.authorize(authorizationUrl, REDIRECT_URL, state);
            tokens = await exchangeAuthorization(as, {
                metadata, clientInformation, authorizationCode: code, codeVerifier, redirectUri: REDIRECT_URL, resource: other, fetchFn: recordingFetch
            });
        }
        provider.saveTokens({ ...tokens, issuer: provider.tokens()?.issuer });
        const wrong = provider.accessTokenClaims();
        const r = await callExpectingReauthorization(client, transport, provider, { name: 'get_weather', arguments: { city: 'Oslo' } });
        return { wrongToken: wrong, ...r };
    });
    await step('end_session', () => endSession(transport));
    await client.close();
}

async function refreshingClient() {
    const provider = new TestProvider({ grantTypes: ['authorization_code', 'refresh_token'], clientName: 'interop refreshing client', browser });
    const c = await step('connect', () => connect(provider));
    if (!c) return;
    const { client, transport } = c;
    await step('expiry', async () => {
        const before = provider.accessTokenClaims();
        // Past exp plus mcpauthz's leeway, with one second to spare.
        const wait = (before.exp + Number(args.leeway) + 1) * 1000 - Date.now();
        if (wait > 0) await new Promise(r => setTimeout(r, wait));
        // tools/list: an open method, which the client's token without scope
        // may call.
        const r = await client.listTools();
        const after = provider.accessTokenClaims();
        return { tools: r.tools.map(t => t.name).sort(), waitedMs: Math.max(0, Math.round(wait)), before, after };
    });
    await step('step_up_holding_refresh_token', async () => {
        try {
            const r = await client.callTool({ name: 'delete_file', arguments: { path: '/tmp/y' } });
            return { outcome: 'succeeded', text: text(r) };
        } catch (err) {
            return { outcome: err?.constructor?.name ?? 'Error', code: err?.code, message: err?.message };
        }
    });
    await step('end_session', () => endSession(transport));
    await client.close();
}

const scenarios = { public: publicClient, refresh: refreshingClient };
if (!scenarios[args.scenario]) {
    console.error(`client.mjs: unknown --scenario ${args.scenario}`);
    process.exit(2);
}
try {
    await scenarios[args.scenario]();
} catch (err) {
    out({ step: 'driver', error: String(err?.stack ?? err), exchanges: [] });
    failed = true;
}
process.exit(failed ? 1 : 0);
