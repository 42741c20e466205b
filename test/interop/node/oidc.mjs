// The authorization server of the interop test: oidc-provider configured the
// way docs/idp.md ("oidc-provider (Node.js)") tells a user to, for an MCP
// server behind Envoy and mcpauthz:
//
//   - dynamic client registration (RFC 7591), no initial access token, and
//     the registered scope not used as an allow-list (see below);
//   - PKCE required for every client (S256 only: oidc-provider offers no other);
//   - resource indicators (RFC 8707) with JWT access tokens (RFC 9068,
//     typ at+jwt) whose audience is the MCP resource, and the tools:* scopes
//     the resource knows (the only scopes it knows besides OpenID's);
//   - a default scope, openid, for an authorization request without scope
//     (which oidc-provider would otherwise end with access_denied): the
//     token for the resource then has no scope (see below);
//   - refresh tokens for clients registered with the refresh_token grant;
//     those clients get short-lived access tokens (--short-ttl) so that the
//     expiry case takes seconds;
//   - a login page (account alice) and a consent page listing the scopes,
//     which the test client fills in over HTTP like a browser would.
//
// Usage: node oidc.mjs --resource URL [--other-resource URL] [--short-ttl S]
// Prints one JSON line {"ready":true,"issuer":...} on stdout when listening on
// 127.0.0.1 (an ephemeral port); exits when stdin closes.
import http from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

const { values: args } = parseArgs({
    options: {
        resource: { type: 'string' },
        'other-resource': { type: 'string' },
        'short-ttl': { type: 'string', default: '3' },
        'long-ttl': { type: 'string', default: '600' }
    }
});
if (!args.resource) {
    console.error('oidc.mjs: --resource is required');
    process.exit(2);
}

// The one account of the test, and the scopes the MCP resource knows.
const ACCOUNT = { login: 'alice', password: 'alice-password' };
const TOOL_SCOPES = ['tools:announce', 'tools:delete_file', 'tools:get_weather', 'tools:whoami', 'tools:*'];

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), alg: 'RS256', use: 'sig', kid: 'interop-rs256' };

let handler = (_req, res) => {
    res.statusCode = 503;
    res.end();
};
const server = http.createServer((req, res) => handler(req, res));
await new Promise(resolve => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

function resourceServer(audience, client) {
    const refreshable = client.grantTypeAllowed('refresh_token');
    return {
        scope: TOOL_SCOPES.join(' '),
        audience,
        accessTokenFormat: 'jwt',
        accessTokenTTL: Number(refreshable ? args['short-ttl'] : args['long-ttl']),
        jwt: { sign: { alg: 'RS256' } }
    };
}

const provider = new Provider(issuer, {
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    scopes: ['openid', 'offline_access', ...TOOL_SCOPES],
    findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    pkce: { required: () => true },
    // Refresh tokens for every client that registered the grant, not only
    // for offline_access (MCP clients ask for the challenged scopes only).
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    features: {
        devInteractions: { enabled: false },
        registration: { enabled: true },
        resourceIndicators: {
            enabled: true,
            defaultResource: async (_ctx, _client, oneOf) => oneOf,
            useGrantedResource: async () => true,
            getResourceServerInfo: async (_ctx, indicator, client) => {
                if (indicator === args.resource || (args['other-resource'] && indicator === args['other-resource'])) {
                    return resourceServer(indicator, client);
                }
                throw new errors.InvalidTarget();
            }
        }
    }
});

const escapeHTML = s => String(s).replace(/[&<>"']/g, c => `&#${c.charCodeAt(0)};`);

function page(res, title, body) {
    res.statusCode = 200;
    res.setHeader('Content-Type', 'text/html; charset=utf-8');
    res.setHeader('Cache-Control', 'no-store');
    res.end(`<!doctype html><html><head><title>${escapeHTML(title)}</title></head><body>${body}</body></html>`);
}

async function readForm(req) {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

// interaction serves the login and consent pages of one authorization
// request (GET /interaction/:uid) and takes their answers (POST
// /interaction/:uid/login, /interaction/:uid/confirm).
async function interaction(req, res, uid, action) {
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== uid) {
        res.statusCode = 400;
        return res.end('interaction mismatch');
    }
    const { prompt, params, session, grantId } = details;
    if (req.method === 'GET' && !action) {
        if (prompt.name === 'login') {
            const failed = details.lastSubmission?.loginFailed ? '<p role="alert">Wrong login or password.</p>' : '';
            return page(res, 'Sign in', `${failed}<form method="post" action="/interaction/${uid}/login">
<input name="login" autocomplete="username"><input type="password" name="password" autocomplete="current-password">
<button type="submit">Sign in</button></form>`);
        }
        const client = await provider.Client.find(params.client_id);
        const wanted = Object.entries(prompt.details.missingResourceScopes ?? {});
        const items = wanted.flatMap(([resource, scopes]) => scopes.map(s =>
            `<li><label><input type="checkbox" name="scope" value="${escapeHTML(`${resource} ${s}`)}" checked> ${escapeHTML(s)} on ${escapeHTML(resource)}</label></li>`));
        return page(res, 'Allow access', `<p>${escapeHTML(client?.clientName ?? params.client_id)} asks for:</p>
<form method="post" action="/interaction/${uid}/confirm"><ul>${items.join('')}</ul><button type="submit">Allow</button></form>`);
    }
    if (req.method === 'POST' && action === 'login' && prompt.name === 'login') {
        const form = await readForm(req);
        if (form.get('login') !== ACCOUNT.login || form.get('password') !== ACCOUNT.password) {
            await provider.interactionResult(req, res, { loginFailed: true });
            res.statusCode = 303;
            res.setHeader('Location', `/interaction/${uid}`);
            return res.end();
        }
        return provider.interactionFinished(req, res, { login: { accountId: ACCOUNT.login } }, { mergeWithLastSubmission: false });
    }
    if (req.method === 'POST' && action === 'confirm' && prompt.name === 'consent') {
        const form = await readForm(req);
        const grant = grantId
            ? await provider.Grant.find(grantId)
            : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
        if (prompt.details.missingOIDCScope) {
            grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
        }
        // Only what the user left checked is granted.
        const granted = new Map();
        for (const v of form.getAll('scope')) {
            const [resource, scope] = v.split(' ');
            if (prompt.details.missingResourceScopes?.[resource]?.includes(scope)) {
                granted.set(resource, [...(granted.get(resource) ?? []), scope]);
            }
        }
        for (const [resource, scopes] of granted) {
            grant.addResourceScope(resource, scopes.join(' '));
        }
        return provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
    }
    res.statusCode = 405;
    res.end();
}

// MCP clients register with the scope of their first challenge (the
// TypeScript SDK puts it in the registration request). oidc-provider treats a
// registered scope as the only scopes the client may ever ask for, which
// makes every step-up fail with invalid_scope; so registrations are taken
// without it. What a client gets stays decided by consent and by mcpauthz.
provider.use(async (ctx, next) => {
    if (ctx.method === 'POST' && ctx.path === '/reg' && ctx.is('application/json')) {
        const chunks = [];
        for await (const c of ctx.req) chunks.push(c);
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
        delete body.scope;
        ctx.req.body = body;
    }
    await next();
});

// An authorization request without scope gets the server's default scope
// (RFC 6749 §3.3 lets a server choose one, or refuse): MCP clients send none
// when neither the challenge nor the protected resource metadata names a
// scope, which is what mcpauthz's challenge for initialize does by default.
// oidc-provider refuses an authorization that grants no scope at all (access
// denied: "no scope was granted"), so such a request is taken as a sign-in,
// openid; the access token for the MCP resource then carries no scope.
provider.use(async (ctx, next) => {
    if (ctx.method === 'GET' && ctx.path === '/auth' && ctx.query.scope === undefined) {
        ctx.query = { ...ctx.query, scope: 'openid' };
    }
    await next();
});

const providerCallback = provider.callback();
handler = (req, res) => {
    const m = /^\/interaction\/([\w-]+)(?:\/(login|confirm))?$/.exec(req.url.split('?')[0]);
    if (!m) {
        return providerCallback(req, res);
    }
    interaction(req, res, m[1], m[2]).catch(err => {
        console.error('interaction failed:', err);
        if (!res.headersSent) {
            res.statusCode = 500;
        }
        res.end();
    });
};

provider.on('server_error', (_ctx, err) => console.error('oidc-provider server_error:', err));

process.stdout.write(JSON.stringify({ ready: true, issuer, login: ACCOUNT.login, password: ACCOUNT.password }) + '\n');
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
