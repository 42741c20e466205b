// Package mcprpc parses the JSON-RPC body of an MCP Streamable HTTP POST for
// authorization, normalises the resource URIs in it, and cross-checks it
// against the MCP 2026-07-28 request metadata headers.
//
// The authorizer reads the body once and the MCP server reads the same bytes
// again with a different parser (JavaScript JSON.parse, Python json or
// pydantic_core, Go). Any input that the two read differently, and that looks
// allowed to the authorizer, is a bypass. Parse therefore accepts only a
// strict subset of JSON on which mainstream parsers agree, and rejects
// everything else; it never guesses. The same holds for the resource URIs
// policy prefix-matches: a URI that servers could resolve to another
// resource than its normal form names is rejected.
//
// The deliberate rejections of the whole request path, with their HTTP
// status, JSON-RPC code and reason, are tabled in docs/request-rejections.md.
//
// # What is parsed
//
// [CheckContentType] first decides whether the body may be parsed at all
// (application/json, with a UTF-8 charset if any). [Parse] then reads one
// JSON-RPC 2.0 message object, or a batch (a JSON array of message objects,
// Body.Batch set; whether a batch is allowed at all depends on the protocol
// version, see [BatchAllowed]). For each message it returns the [Kind]
// (request, notification, response), the raw id, the method and the fields
// policy keys on:
//
//	tools/call                              params.name → Tool, Name (1–128 of [A-Za-z0-9_.-]);
//	                                        params.arguments (object) → Arguments (raw)
//	prompts/get                             params.name → Prompt, Name; params.arguments → Arguments
//	resources/read, resources/subscribe,    params.uri → Name (as sent),
//	resources/unsubscribe                   ResourceURI (NormalizeURI)
//	completion/complete                     params.ref {type:"ref/prompt", name} → Prompt, or
//	                                        {type:"ref/resource", uri} → ResourceURI
//	                                        (NormalizeURITemplate)
//	subscriptions/listen                    params.notifications.resourceSubscriptions → ResourceURIs
//	                                        (NormalizeURI, each)
//	tasks/get, tasks/result, tasks/cancel,  params.taskId → TaskID, Name
//	tasks/update
//	every request and notification          params._meta["io.modelcontextprotocol/protocolVersion"]
//	                                        → MetaProtocolVersion
//
// Strings are the decoded JSON values (escapes resolved, so
// "tools\u002fcall" is "tools/call": policy never sees escapes). Message.ID
// and Message.Arguments are the exact bytes of the body and alias it. The id
// never influences anything but error bodies. Methods are not checked
// against a list: "Tools/Call" or "tools/call " are returned as sent and
// policy must deny unknown methods.
//
// Parsing is a single pass over jsontext tokens
// (github.com/go-json-experiment/json/jsontext, never encoding/json v1), with
// no reflection, no re-marshalling and no copies of raw values. Every value in
// the body, including the contents of arguments and of unknown members, goes
// through the same strictness checks. Parse is safe for concurrent use.
//
// # Strictness rules and why
//
// Each rule closes a parser differential: an input on which the authorizer
// and some MCP server would disagree.
//
//   - Duplicate object member names are rejected at every depth: gjson and
//     buger/jsonparser take the first, JS/Python/Go maps the last.
//   - Names equal under Unicode simple case folding (strings.EqualFold) are
//     duplicates too: "method"/"Method", "params"/"PARAMS", "paramſ" (U+017F)
//     and the Kelvin sign (U+212A). encoding/json v1 matches struct fields
//     case-insensitively with Unicode folding and lets the last duplicate win
//     (CVE-2026-27896 in the Go MCP SDK), so a Go server can read a
//     different member than the authorizer.
//   - A member whose name is a case variant of a member Parse reads is
//     rejected even when the exact name is absent: "PARAMS" or "Arguments"
//     alone would be decoded by Go v1 into the field Parse considers absent.
//     This applies to the message object, params, params._meta, params.ref
//     and params.notifications; tool arguments are not constrained.
//   - Object names with control characters ("name\u0000") are rejected: a
//     parser that truncates at NUL sees "name" (GHSA-q382-vc8q-7jhj).
//   - Exactly one JSON value; only JSON whitespace may follow it: json.Decoder
//     and gjson stop after the first value and act on it. Leading whitespace
//     is JSON whitespace only (no NBSP).
//   - No UTF-8 byte order mark (Request.json() and Python strip it, Go and
//     JSON.parse refuse it), no invalid UTF-8 (Go v1 and JS substitute
//     U+FFFD, Python and pydantic reject), no lone surrogate escapes (JS and
//     Python keep them, Go substitutes), no raw control characters in
//     strings, no comments, trailing commas, single quotes or NaN (Python
//     reads NaN).
//   - Nesting is capped at Options.MaxDepth, default 64: JavaScript accepts
//     any depth, pydantic stops at a few hundred levels, Go at 10000. Every
//     object and array counts; the top-level value is depth 1, so a batch
//     element is depth 2 and the arguments of a single tools/call depth 3.
//   - Numbers outside the float64 range (1e400) are rejected: Go rejects them
//     when decoding into any, JavaScript and Python produce Infinity.
//   - An empty body is an error, never "not an MCP call".
//   - jsonrpc must be the string "2.0". id must be a string, or a number that
//     is an integer in value ("1", "1.0", "1e2", "-0") no larger than 2^53 in
//     magnitude, never null: every SDK reads such a number as the same
//     integer (zod's z.number().int() and the Go SDK accept "1.0"), while
//     fractions are not ids and larger numbers are rounded by JavaScript and
//     overflow the Go SDK's int64, so the response would carry another id.
//     The id is kept as sent, for echoing.
//   - A message is a request (method, id), a notification (method, no id) or
//     a response (id and exactly one of result and error, no method);
//     anything else, including method together with result or error, is
//     invalid: zod's union may read it as either. method must be a non-empty
//     string without control characters ("tools/call\u0000" is not
//     truncated). params, when present, must be an object for every method.
//   - Batches: an empty array, nested arrays, non-object elements and more
//     than Options.MaxBatch (default 100) elements are invalid. Every element
//     is parsed and returned; the caller must authorize every one.
//
// Parse errors take precedence: the whole body is always checked, so a body
// with a semantic problem early and a syntax error later is a parse error.
// Otherwise the first semantic problem (in body order) is returned.
//
// # Resource URIs
//
// Policy allows resources by URI prefix ("file:///srv/data/"), so the URI it
// sees must name the resource the server will read. [NormalizeURI] returns
// that normal form, or rejects the URI (invalid_resource_uri when it is not
// a valid absolute URI, ambiguous_resource_uri when readers would resolve it
// differently); a URI is never matched as sent. The rules:
//
//   - Special schemes (http, https, ws, wss, ftp, file) are read the way the
//     WHATWG URL Standard reads them, which is what the TypeScript SDK
//     (new URL) and the Python SDK (pydantic AnyUrl) do: scheme and host
//     lower-cased, percent-escapes in the host decoded, default ports
//     dropped, an empty path becomes "/", "file:/p" and "file://localhost/p"
//     become "file:///p", IPv6 addresses are serialised in their shortest
//     form, and "." and ".." segments are resolved in every spelling ("%2e",
//     ".%2E", "%2e%2e"). The result equals the href of Node's URL for the
//     same input, up to the RFC 3986 normalisations below (tested against
//     Node.js in uri_node_test.go).
//   - Other schemes follow RFC 3986 §6.2.2: scheme and host lower-cased, dot
//     segments of paths that start with "/" resolved.
//   - For all schemes: percent-escapes of unreserved characters (letters,
//     digits, "-", ".", "_", "~") are decoded and other escapes get
//     upper-case hex digits;
//     non-ASCII characters and the characters RFC 3986 does not allow raw
//     (" < > [ ] ^ ` { | }, and # in a fragment; ' in the query of a special
//     URL, as WHATWG does) are percent-encoded. So "~", "%7e" and "%7E", or
//     "é" and "%C3%A9", are one string for policy, and a server that decodes
//     reads the same thing from each.
//
// Rejected, because the readings differ in a way that matters for prefix
// matching:
//
//   - a backslash anywhere: WHATWG reads "\" as "/" in special URLs, RFC 3986
//     readers (Go's net/url, file servers on Linux) as a file-name
//     character, so "..\..\etc" climbs for one and not the other;
//   - a percent-encoded slash or backslash (%2F, %5C) anywhere, and the
//     double encodings %252E, %252F, %255C: server code decodes them
//     (decodeURIComponent on a template variable) before resolving a path;
//   - "." or ".." pieces in a query, a fragment or a path without a leading
//     slash ("mem:secret/../public"): WHATWG keeps them, RFC 3986 resolves
//     rootless paths, and template expressions such as {+path} capture the
//     fragment (and, in older SDKs, the query) into a path variable;
//   - a ".." that climbs above the root, and empty segments ("//"): naive
//     path joining escapes a server's root with the former, file servers
//     merge the latter while URL-keyed servers do not;
//   - special schemes without exactly "//" before a non-empty host
//     ("http:evil/x", "https:/evil", "http:///evil"), which WHATWG still
//     reads as host evil, and file URIs without an absolute path;
//   - userinfo ("https://good@evil/");
//   - hosts that resolvers read as something else: IPv4 addresses not in
//     dotted-decimal form ("0x7f.1", "127.1", "1.2.3.04"), empty labels and
//     trailing dots, non-ASCII or percent-encoded non-ASCII names (IDNA
//     mapping differs between implementations; send xn-- labels), and xn--
//     labels that are not valid IDNA or contain joiners;
//   - Windows drive letters written "C|" or combined with ".." (WHATWG never
//     pops a drive letter and rewrites "|" to ":");
//   - control characters and white space, raw or percent-encoded (WHATWG
//     silently drops tabs and newlines), invalid escapes, invalid UTF-8,
//     invalid ports and IPv6 addresses, and relative references.
//
// The result is idempotent and contains no dot segment, no backslash and no
// encoded slash, backslash or dot (fuzzed by FuzzNormalizeURI). Path case is
// kept: on case-insensitive file systems, write allow rules, not deny rules.
// Policy prefixes must themselves be in normal form.
//
// The uri of a completion/complete ref/resource is a URI template (RFC
// 6570); [NormalizeURITemplate] applies the same rules and keeps brace
// expressions as they are. Message.Name, which the Mcp-Name header must
// mirror, is the URI as sent.
//
// # Errors
//
// Every error is an [*Error] whose Reason comes from a closed set (also
// returned by [Reasons]), with a fixed JSON-RPC Code per reason:
//
//	empty_body              -32700  empty or whitespace-only body
//	invalid_json            -32700  syntax error, BOM, truncation, lone surrogate, …
//	invalid_utf8            -32700  bytes that are not UTF-8
//	trailing_data           -32700  anything but whitespace after the JSON value
//	duplicate_key           -32700  duplicate member names, exact or case-folded
//	invalid_key             -32700  member name with a control character, or a
//	                                case variant of a member name Parse reads
//	too_deep                -32700  nesting deeper than MaxDepth
//	invalid_number          -32700  number outside the float64 range
//	invalid_batch           -32600  empty batch, nested array, non-object element
//	batch_too_large         -32600  more than MaxBatch elements
//	invalid_message         -32600  not a request, notification or response;
//	                                top-level scalar; a response in the 2026-07-28 era
//	invalid_jsonrpc         -32600  jsonrpc missing or not "2.0"
//	invalid_id              -32600  id not a string or an integer of at most 2^53
//	invalid_method          -32600  method not a non-empty string without controls
//	content_type            -32600  CheckContentType: not application/json, or a
//	                                charset other than UTF-8
//	invalid_params          -32602  params not an object, or a member the method
//	                                needs missing or malformed
//	invalid_tool_name       -32602  tools/call params.name missing or not 1–128 of
//	                                [A-Za-z0-9_.-] (homoglyphs, spaces, RTL overrides)
//	invalid_resource_uri    -32602  a resource URI that is not a valid absolute URI
//	ambiguous_resource_uri  -32602  a resource URI that readers would resolve differently
//	invalid_header          -32020  DecodeHeaderValue: malformed header value
//	header_mismatch         -32020  CheckHeaders: header missing or differs from body
//
// Parse errors never carry an id (JSON-RPC 2.0 §5: id is null when it cannot
// be detected). Other errors carry the message's id when it was valid.
// Messages never echo body content; header values echoed by CheckHeaders are
// sanitised and truncated to 64 bytes.
//
// # Headers (2026-07-28)
//
// MCP 2026-07-28 (SEP-2243) mirrors the method and the name in the Mcp-Method
// and Mcp-Name headers, which intermediaries may route on. Policy is evaluated
// on the body; [CheckHeaders] then rejects any request whose headers disagree
// with it, or whose MCP-Protocol-Version disagrees with the body's _meta
// protocolVersion. [DecodeHeaderValue] decodes the =?base64?…?= form of
// header values. [SupportedProtocolVersion] and [BatchAllowed] answer the
// per-version questions.
package mcprpc
