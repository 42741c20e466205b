// The MCP server of the interop test, behind Envoy (or its stand-in) and
// mcpauthz: the official TypeScript SDK's McpServer over Streamable HTTP,
// stateful (Mcp-Session-Id, a GET stream per session, DELETE ends a session).
//
// Tools:
//   get_weather {city}   text
//   delete_file {path}   text
//   whoami               the HTTP request headers this server received, as JSON
//                        (an Authorization value shown as its length and a
//                        SHA-256 prefix only)
//   announce {message}   sends a logging notification that belongs to no
//                        request, so it travels on the session's GET stream
//
// Every HTTP request it receives is also reported on stdout as one JSON line
// {"request":{"method","path","headers"}}, so the test can check what reached
// the upstream (identity headers, no Authorization) for every request, GET
// streams and DELETEs included.
//
// Usage: node upstream.mjs [--json]. With --json the transport answers
// POSTs with a JSON body (enableJsonResponse), else with an SSE stream (the
// SDK's default). Prints {"ready":true,"addr":"127.0.0.1:PORT"}
// first; exits when stdin closes.
import http from 'node:http';
import { createHash, randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';

import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';

// shown replaces a credential by its length and a SHA-256 prefix: what
// reaches the upstream is printed and returned, a token must not be, yet the
// test must tell which token arrived.
const { values: flags } = parseArgs({ options: { json: { type: 'boolean', default: false } } });

function shown(headers) {
    const h = { ...headers };
    if (h.authorization !== undefined) {
        const sum = createHash('sha256').update(h.authorization).digest('hex').slice(0, 16);
        h.authorization = `<${Buffer.byteLength(h.authorization)} bytes sha256:${sum}>`;
    }
    return h;
}

function newServer() {
    const server = new McpServer({ name: 'interop-upstream', version: '1.0.0' }, { capabilities: { logging: {} } });
    server.registerTool('get_weather', {
        description: 'The weather in a city',
        inputSchema: { city: z.string() }
    }, async ({ city }) => ({ content: [{ type: 'text', text: `Sunny in ${city}` }] }));
    server.registerTool('delete_file', {
        description: 'Delete a file',
        inputSchema: { path: z.string() }
    }, async ({ path }) => ({ content: [{ type: 'text', text: `Deleted ${path}` }] }));
    server.registerTool('whoami', {
        description: 'The request headers this server received'
    }, async extra => ({ content: [{ type: 'text', text: JSON.stringify(shown(extra.requestInfo?.headers ?? {})) }] }));
    server.registerTool('announce', {
        description: 'Send a notification on the GET stream',
        inputSchema: { message: z.string() }
    }, async ({ message }) => {
        await server.server.sendLoggingMessage({ level: 'info', logger: 'announce', data: message });
        return { content: [{ type: 'text', text: 'Announced' }] };
    });
    return server;
}

const transports = new Map();

function jsonError(res, status, message) {
    res.statusCode = status;
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32000, message }, id: null }));
}

async function handle(req, res) {
    const path = req.url.split('?')[0];
    process.stdout.write(JSON.stringify({ request: { method: req.method, path, headers: shown(req.headers) } }) + '\n');
    if (path !== '/mcp') {
        return jsonError(res, 404, 'Not found');
    }
    let body;
    if (req.method === 'POST') {
        const chunks = [];
        for await (const c of req) chunks.push(c);
        try {
            body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
            return jsonError(res, 400, 'Parse error');
        }
    }
    const sid = req.headers['mcp-session-id'];
    let transport = sid ? transports.get(sid) : undefined;
    if (!transport) {
        if (sid) {
            return jsonError(res, 404, 'Session not found');
        }
        if (req.method !== 'POST' || !isInitializeRequest(body)) {
            return jsonError(res, 400, 'No session');
        }
        transport = new StreamableHTTPServerTransport({
            sessionIdGenerator: () => randomUUID(),
            enableJsonResponse: flags.json,
            onsessioninitialized: id => transports.set(id, transport)
        });
        transport.onclose = () => transports.delete(transport.sessionId);
        await newServer().connect(transport);
    }
    await transport.handleRequest(req, res, body);
}

const server = http.createServer((req, res) => {
    handle(req, res).catch(err => {
        console.error('upstream:', err);
        if (!res.headersSent) {
            jsonError(res, 500, 'Internal error');
        } else {
            res.end();
        }
    });
});
await new Promise(resolve => server.listen(0, '127.0.0.1', resolve));
process.stdout.write(JSON.stringify({ ready: true, addr: `127.0.0.1:${server.address().port}` }) + '\n');
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
