// A one-shot MCP client for the list filtering test: the official
// TypeScript SDK's Client and StreamableHTTPClientTransport with a static
// bearer token (the environment variable MCP_TOKEN, so that it appears in no
// process listing), which initializes, lists the tools, calls get_weather
// and prints one JSON line:
//
//   {"tools":[NAME...],"call":CALL_RESULT,"contentTypes":{"tools/list":CT,"tools/call":CT}}
//
// contentTypes are the Content-Type headers of the responses to those
// POSTs, so the test can tell a JSON answer from an SSE one.
//
// Usage: MCP_TOKEN=... node list.mjs --url MCP_URL
import { parseArgs } from 'node:util';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const { values: args } = parseArgs({ options: { url: { type: 'string' } } });
const token = process.env.MCP_TOKEN;
if (!args.url || !token) {
    console.error('usage: MCP_TOKEN=... node list.mjs --url MCP_URL');
    process.exit(2);
}

const contentTypes = {};
async function recordingFetch(url, init) {
    const res = await fetch(url, init);
    if (init?.method === 'POST' && typeof init.body === 'string') {
        const msg = JSON.parse(init.body);
        if (msg.method === 'tools/list' || msg.method === 'tools/call') {
            contentTypes[msg.method] = res.headers.get('content-type');
        }
    }
    return res;
}

const transport = new StreamableHTTPClientTransport(new URL(args.url), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
    fetch: recordingFetch
});
const client = new Client({ name: 'interop-list', version: '1.0.0' });
await client.connect(transport);
const { tools } = await client.listTools();
const call = await client.callTool({ name: 'get_weather', arguments: { city: 'Paris' } });
process.stdout.write(JSON.stringify({ tools: tools.map(t => t.name), call, contentTypes }) + '\n');
await client.close();
