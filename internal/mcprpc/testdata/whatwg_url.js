// Reads a JSON array of strings on stdin and writes, for each, what the
// WHATWG URL parser of this Node.js makes of it: {"href": "..."} or
// {"error": "..."}. Used by TestNormalizeURIAgainstWHATWG (uri_node_test.go).
'use strict';

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
  const out = JSON.parse(input).map((s) => {
    try {
      return { href: new URL(s).href };
    } catch (e) {
      return { error: e.code || String(e) };
    }
  });
  process.stdout.write(JSON.stringify({ node: process.version, results: out }));
});
