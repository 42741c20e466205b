// Package mcprpc parses the JSON-RPC body of an MCP Streamable HTTP POST for
// authorization, and cross-checks it against the MCP 2026-07-28 request
// metadata headers.
//
// The authorizer reads the body once and the MCP server reads the same bytes
// again with a different parser (JavaScript JSON.parse, Python json or
// pydantic_core, Go). Any input that the two read differently, and that looks
// allowed to the authorizer, is a bypass. Parse therefore accepts only a
// strict subset of JSON on which mainstream parsers agree, and rejects
// everything else; it never guesses.
//
// # What is parsed
//
// [Parse] reads one JSON-RPC 2.0 message object, or a batch (a JSON array of
// message objects, Body.Batch set; whether a batch is allowed at all depends
// on the protocol version, see [BatchAllowed]). For each message it returns
// the [Kind] (request, notification, response), the raw id, the method and
// the fields policy keys on:
//
//	tools/call                              params.name → Tool, Name (1–128 of [A-Za-z0-9_.-]);
//	                                        params.arguments (object) → Arguments (raw)
//	prompts/get                             params.name → Prompt, Name; params.arguments → Arguments
//	resources/read, resources/subscribe,    params.uri → Name (as sent),
//	resources/unsubscribe                   ResourceURI (NormalizeURI)
//	completion/complete                     params.ref {type:"ref/prompt", name} → Prompt, or
//	                                        {type:"ref/resource", uri} → ResourceURI
//	subscriptions/listen                    params.notifications.resourceSubscriptions → ResourceURIs
//	tasks/get, tasks/result, tasks/cancel,  params.taskId → TaskID, Name
//	tasks/update
//	every request and notification          params._meta["io.modelcontextprotocol/protocolVersion"]
//	                                        → MetaProtocolVersion
//
// Strings are the decoded JSON values (escapes resolved, so
// "tools\u002fcall" is "tools/call"; P-09). Message.ID and Message.Arguments
// are the exact bytes of the body and alias it. The id never influences
// anything but error bodies (P-19, P-20). Methods are not checked against a
// list: "Tools/Call" or "tools/call " are returned as sent and policy must
// deny unknown methods (M-02).
//
// Parsing is a single pass over jsontext tokens
// (github.com/go-json-experiment/json/jsontext, never encoding/json v1), with
// no reflection, no re-marshalling and no copies of raw values. Every value in
// the body, including the contents of arguments and of unknown members, goes
// through the same strictness checks. Parse is safe for concurrent use.
//
// # Strictness rules and why
//
// The rules below close the differentials catalogued in rows P and M of the
// mcpauthz security cases:
//
//   - Duplicate object member names are rejected at every depth (P-01, P-02):
//     gjson and buger/jsonparser take the first, JS/Python/Go maps the last.
//   - Names equal under Unicode simple case folding (strings.EqualFold) are
//     duplicates too: "method"/"Method", "params"/"PARAMS", "paramſ" (U+017F)
//     and the Kelvin sign (U+212A) (P-03..P-06, P-08). encoding/json v1
//     matches struct fields case-insensitively with Unicode folding and lets
//     the last duplicate win (CVE-2026-27896 in the Go MCP SDK), so a Go
//     server can read a different member than the authorizer.
//   - A member whose name is a case variant of a member Parse reads is
//     rejected even when the exact name is absent: "PARAMS" or "Arguments"
//     alone would be decoded by Go v1 into the field Parse considers absent.
//     This applies to the message object, params, params._meta, params.ref
//     and params.notifications; tool arguments are not constrained.
//   - Object names with control characters ("name\u0000") are rejected (P-07,
//     GHSA-q382-vc8q-7jhj: a parser that truncates at NUL sees "name").
//   - Exactly one JSON value; only JSON whitespace may follow it (P-10, P-11:
//     json.Decoder and gjson stop after the first value). Leading whitespace
//     is JSON whitespace only (P-29, P-30).
//   - No UTF-8 byte order mark (P-13: Request.json() and Python strip it),
//     no invalid UTF-8 (P-14..P-16: Go v1 and JS substitute U+FFFD), no lone
//     surrogate escapes (P-17), no raw control characters in strings (P-26),
//     no comments, trailing commas, single quotes or NaN (P-18, P-23..P-25).
//   - Nesting is capped at Options.MaxDepth, default 64 (P-21, P-22). Every
//     object and array counts; the top-level value is depth 1, so a batch
//     element is depth 2 and the arguments of a single tools/call depth 3.
//   - Numbers outside the float64 range (1e400) are rejected (P-19): Go
//     rejects them when decoding into any, JavaScript and Python produce
//     Infinity.
//   - An empty body is an error (E-09), never "not an MCP call".
//   - jsonrpc must be the string "2.0" (M-06); id must be a string or an
//     integer -?(0|[1-9][0-9]*), never null, a fraction or an exponent
//     (M-05); a message is a request (method, id), a notification (method, no
//     id) or a response (id and exactly one of result and error, no method);
//     anything else, including method together with result or error, is
//     invalid (M-11). method must be a non-empty string without control
//     characters (P-27). params, when present, must be an object for every
//     method (M-07).
//   - Batches: an empty array, nested arrays, non-object elements and more
//     than Options.MaxBatch (default 100) elements are invalid (M-03). Every
//     element is parsed and returned; the caller must authorize every one.
//
// Parse errors take precedence: the whole body is always checked, so a body
// with a semantic problem early and a syntax error later is a parse error.
// Otherwise the first semantic problem (in body order) is returned.
//
// # Errors
//
// Every error is an [*Error] whose Reason comes from a closed set (also
// returned by [Reasons]), with a fixed JSON-RPC Code per reason:
//
//	empty_body         -32700  empty or whitespace-only body
//	invalid_json       -32700  syntax error, BOM, truncation, lone surrogate, …
//	invalid_utf8       -32700  bytes that are not UTF-8
//	trailing_data      -32700  anything but whitespace after the JSON value
//	duplicate_key      -32700  duplicate member names, exact or case-folded
//	invalid_key        -32700  member name with a control character, or a
//	                           case variant of a member name Parse reads
//	too_deep           -32700  nesting deeper than MaxDepth
//	invalid_number     -32700  number outside the float64 range
//	invalid_batch      -32600  empty batch, nested array, non-object element
//	batch_too_large    -32600  more than MaxBatch elements
//	invalid_message    -32600  not a request, notification or response;
//	                           top-level scalar; a response in the 2026-07-28 era
//	invalid_jsonrpc    -32600  jsonrpc missing or not "2.0"
//	invalid_id         -32600  id of the wrong type
//	invalid_method     -32600  method not a non-empty string without controls
//	invalid_params     -32602  params not an object, or a member the method
//	                           needs missing or malformed
//	invalid_tool_name  -32602  tools/call params.name missing or not 1–128 of
//	                           [A-Za-z0-9_.-] (homoglyphs, spaces, RTL overrides; M-08)
//	invalid_header     -32020  DecodeHeaderValue: malformed header value
//	header_mismatch    -32020  CheckHeaders: header missing or differs from body
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
// with it (M-12), or whose MCP-Protocol-Version disagrees with the body's
// _meta protocolVersion (M-13). [DecodeHeaderValue] decodes the =?base64?…?=
// form of header values. [SupportedProtocolVersion] and [BatchAllowed] answer
// the per-version questions.
//
// # Resource URIs
//
// [NormalizeURI] brings resource URIs to the RFC 3986 syntax-based normal
// form (case of scheme and host, percent-encoding, dot segments) so that
// prefix rules cannot be evaded with "..", "%2e%2e" or upper-case hosts.
package mcprpc
