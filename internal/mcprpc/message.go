package mcprpc

import (
	"github.com/go-json-experiment/json/jsontext"
)

// Kind is the JSON-RPC shape of one message.
type Kind string

// The message kinds. KindStream and KindSessionEnd describe body-less GET and
// DELETE requests on an MCP endpoint; Parse never returns them.
const (
	KindRequest      Kind = "request"
	KindNotification Kind = "notification"
	KindResponse     Kind = "response"
	KindStream       Kind = "stream"
	KindSessionEnd   Kind = "session_end"
)

// Message is what policy needs to know about one JSON-RPC message. Every
// string field holds the decoded JSON value (escapes resolved); raw JSON
// fields hold the exact bytes of the body so they can be echoed verbatim.
type Message struct {
	Kind Kind
	// ID is the raw JSON of "id" (a string, or a number that is an integer
	// of at most 2^53 in magnitude, as sent: "1.0" stays "1.0"), nil when
	// absent.
	ID jsontext.Value
	// Method is the JSON-RPC method; empty for responses.
	Method string
	// Tool is params.name of tools/call.
	Tool string
	// Prompt is params.name of prompts/get, or params.ref.name of a
	// completion/complete that references a prompt.
	Prompt string
	// ResourceURI is params.uri of resources/read, resources/subscribe and
	// resources/unsubscribe (normalised by NormalizeURI), or params.ref.uri
	// of a completion/complete that references a resource (a URI template,
	// normalised by NormalizeURITemplate).
	ResourceURI string
	// ResourceURIs lists the normalised URIs of
	// params.notifications.resourceSubscriptions of subscriptions/listen.
	ResourceURIs []string
	// TaskID is params.taskId of the tasks/* methods.
	TaskID string
	// Name is the value the 2026-07-28 Mcp-Name header must mirror:
	// params.name, params.uri (raw, not normalised) or params.taskId. Empty
	// when the method has no such parameter.
	Name string
	// Arguments is the raw JSON of params.arguments (tools/call, prompts/get),
	// nil when absent.
	Arguments jsontext.Value
	// MetaProtocolVersion is params._meta["io.modelcontextprotocol/protocolVersion"].
	MetaProtocolVersion string
}

// Body is a parsed POST body: one message, or a JSON-RPC batch.
type Body struct {
	Batch    bool
	Messages []Message
}

// Options bounds the parser. Zero values select the defaults.
type Options struct {
	// MaxDepth caps JSON nesting (default 64).
	MaxDepth int
	// MaxBatch caps the number of elements of a batch (default 100).
	MaxBatch int
}

// Error codes of JSON-RPC 2.0 and MCP used in error bodies.
const (
	CodeParseError                 = -32700
	CodeInvalidRequest             = -32600
	CodeInvalidParams              = -32602
	CodeInternalError              = -32603
	CodeHeaderMismatch             = -32020
	CodeUnsupportedProtocolVersion = -32022
)

// Error is a body or header that is not acceptable. Reason is a short
// identifier from a closed set (used as a metric label); Code is the JSON-RPC
// error code to answer with; ID is the request id when it could be read.
type Error struct {
	Reason  string
	Code    int
	ID      jsontext.Value
	Message string
}

func (e *Error) Error() string { return "mcprpc: " + e.Reason + ": " + e.Message }
