// Package extproc filters MCP list responses per caller: an Envoy external
// processor (envoy.service.ext_proc.v3.ExternalProcessor) that removes from
// tools/list, prompts/list, resources/list and resources/templates/list
// results every item the caller could not use. ext_authz cannot change a
// response; this service, served next to it, can.
//
// # Flow
//
//  1. ext_authz (package extauthz) allows a request that holds list
//     requests and adds to its dynamic metadata (namespace
//     envoy.filters.http.ext_authz) list_filter: true and mcpauthz_list:
//     the list requests (method, raw JSON-RPC id), the protocol version,
//     the policy revision and the call policy's input (request and token).
//     [EncodeListMetadata] builds those fields; [ParseMetadata] reads them.
//  2. Envoy's composite filter matches list_filter and only then creates
//     the ext_proc filter, so every other request opens no stream at all.
//     ext_proc forwards the namespace on every message (metadata_context).
//  3. [Server.Process] gets the response headers. It passes the response
//     unchanged when ext_authz did not ask for filtering, the status is not
//     2xx, or the content type is neither JSON nor an event stream. It
//     filters application/json (the whole body, buffered to end of stream)
//     and text/event-stream event by event: an event is held only until
//     its blank line arrives, then leaves at once, so a long stream is
//     never buffered and other events are not delayed. Event data that is
//     not a JSON object or array passes; data that is must be strict
//     JSON-RPC.
//  4. For every JSON-RPC result response whose id is one of the list
//     requests (compared by value: "\u0061" is "a", 1e0 is 1), the items
//     are read, items the call path would refuse anyway (a tool name
//     outside 1–128 of A-Z a-z 0-9 _ - ., a prompt name with control
//     characters, a URI with spaces) are removed, and the [Policy] decides
//     the rest in one evaluation per list. A result whose id matches no
//     list request but that carries a list member (tools, prompts,
//     resources, resourceTemplates) is filtered as that kind, so an id the
//     server re-encoded unexpectedly cannot carry a list past the filter.
//  5. Removed items are cut out of the array with their separators; every
//     other byte is kept: jsonrpc, id, nextCursor, _meta, unknown members,
//     item order, the bytes of kept items and the white space before them,
//     other responses of a batch, error responses, notifications and
//     requests. A response with nothing removed is returned byte for byte.
//     In an event stream only the data lines of a changed event are
//     rewritten ("data: " lines at the place of the first, split where the
//     JSON had line breaks); its id, event, retry and comment lines stay.
//
// # Processing mode
//
// The processor requires (and checks protocol_config for) request_header
// SKIP, request_body NONE, response_header SEND, response_body
// FULL_DUPLEX_STREAMED and response_trailer SEND. Why FULL_DUPLEX_STREAMED
// for both JSON and SSE, rather than BUFFERED switched to a streamed mode
// with mode_override:
//
//   - One list-result event of a stream spans body chunks at arbitrary
//     bytes, and other events must leave as soon as they are complete:
//     that needs any number of replies per chunk, which only
//     FULL_DUPLEX_STREAMED allows. STREAMED would need undocumented
//     hold-back tricks that break with trailers.
//   - Switching to FULL_DUPLEX_STREAMED by mode_override hits open Envoy
//     bugs (a skipped first chunk; a hang on an empty chunked body).
//   - Envoy's per-message timer does not run on FULL_DUPLEX_STREAMED body
//     messages, so a long event stream is not cut by message_timeout; the
//     processor bounds its own waiting (Options.PolicyTimeout).
//
// The price: mode_override is ignored in this mode, so a response that
// turns out to need no filtering (non-2xx, another content type) cannot
// skip the processor; its chunks are returned as they come, without a
// copy. The composite gate keeps that to list requests.
//
// Content-Length: in FULL_DUPLEX_STREAMED Envoy removes it when it sends
// the headers (unless allow_content_length_header is set), and the
// response goes out chunked (HTTP/1) or without a length (HTTP/2). The
// processor also removes it in its header reply for every response it
// filters, so that a deployment with allow_content_length_header cannot
// send a stale length. For responses it passes through it leaves the
// header alone (Envoy still strips it unless allow_content_length_header).
//
// # State machine
//
// One stream is one HTTP response. The first message must be
// response_headers (answered with a headers response); then response_body
// chunks, answered with streamed_response bodies: passed through at once,
// accumulated to end_of_stream (JSON), or per completed event (SSE). The
// last streamed_response carries end_of_stream, or, when Envoy sends
// trailers, the body is completed with end_of_stream false and then the
// trailers are answered. A repeated final chunk is ignored. Request
// headers or trailers, if a deployment sends them, are answered unchanged.
// A response body before the headers, a second set of headers, a request
// body or another body mode end the stream with a gRPC error, which Envoy
// turns into status_on_error. Process never ends the stream with OK by
// itself; Envoy's half-close and reset (codes.Canceled) are a normal end.
//
// # Fail closed
//
// A list the processor cannot filter is never sent unfiltered. The client
// gets, for the list request's id, the JSON-RPC error
//
//	{"jsonrpc":"2.0","id":<id>,"error":{"code":-32603,"message":"Internal error"}}
//
// in place of that response (in a batch, in place of that element; in an
// event stream, as that event's data), with a [Reason] for the log and the
// metrics:
//
//	missing_metadata  no ext_authz namespace: every result response of the
//	                  body is refused (each with its own id)
//	bad_metadata      mcpauthz_list malformed or of another version; or two
//	                  list requests of different methods with one id
//	bad_body          not strict JSON (duplicate names, invalid UTF-8, data
//	                  after the value), not JSON-RPC, member names equal
//	                  under case folding in a message, result or item, a
//	                  case variant of a member clients read ("Tools",
//	                  "Name"), a list that is not an array of objects, an
//	                  item without its string name/uri/uriTemplate
//	policy_error      the policy failed, panicked or answered for the wrong
//	                  number of items
//	timeout           the policy did not answer within PolicyTimeout, or
//	                  ran out of its own evaluation time
//	too_large         a JSON body or one event over MaxBufferedBytes
//	content_encoding  a compressed list response
//
// When a whole body (or event) cannot be read, the error is sent for every
// list request not answered yet (as an array when there are several, or
// with a null id when none is left). Bodies the processor cannot read at
// all, because the content type is ambiguous, the body is encoded or too
// large, are replaced by an ImmediateResponse (HTTP 200, application/json,
// the same errors): the response headers have not left Envoy at that point.
// Errors never carry body content, token contents or policy details.
//
// # Strictness
//
// Bodies are read with jsontext (github.com/go-json-experiment/json), as
// the request parser does: no duplicate member names at any depth, valid
// UTF-8 only, exactly one value. In the objects the filter interprets
// (message, result, item) names equal under Unicode simple case folding
// are rejected too, because encoding/json v1 clients match members
// case-insensitively and would read a different tool name or list than the
// filter did.
//
// A server answers every caller's list with the same result; only the
// JSON-RPC id around it differs. The strict parse of a result is kept (the
// parse memo, Options.ParseMemoSize and ParseMemoBytes), and a body whose
// result is byte for byte one parsed before has only its envelope parsed:
// the body with the result replaced by {}, which must put the placeholder
// exactly at the result member's value. Substituting one valid JSON value
// for another leaves the text exactly as valid, so this is as strict as a
// whole parse (FuzzParseMemo holds the two equal).
//
// # Concurrency
//
// A Server is immutable but for a pool of per-stream buffers and the parse
// memo (immutable entries behind a lock); every stream owns its state
// while it runs. Process starts no goroutines.
// Policy.Visible runs on the stream's goroutine, must honour its context
// and must not keep the List it was given.
//
// # Deployment notes
//
// Serve the processor on the gRPC server of ext_authz
// (extprocv3.RegisterExternalProcessorServer). Envoy sends body chunks as
// they arrive; grpc-go refuses messages over 4 MiB unless the server raises
// grpc.MaxRecvMsgSize. Dynamic metadata of a list request carries the
// token claims (mcpauthz_list.input): do not log the whole ext_authz
// namespace.
package extproc
