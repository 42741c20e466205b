package mcprpc

// The MCP protocol versions this package knows, oldest first.
const (
	Version20241105 = "2024-11-05"
	Version20250326 = "2025-03-26"
	Version20250618 = "2025-06-18"
	Version20251125 = "2025-11-25"
	Version20260728 = "2026-07-28"
)

var knownVersions = [...]string{Version20241105, Version20250326, Version20250618, Version20251125, Version20260728}

// SupportedProtocolVersion reports whether v is a protocol version this
// package knows (2024-11-05, 2025-03-26, 2025-06-18, 2025-11-25,
// 2026-07-28). An unsupported MCP-Protocol-Version header should be answered
// with CodeUnsupportedProtocolVersion (HTTP 400).
func SupportedProtocolVersion(v string) bool {
	for _, k := range knownVersions {
		if v == k {
			return true
		}
	}
	return false
}

// BatchAllowed reports whether a JSON-RPC batch may be POSTed under the
// MCP-Protocol-Version header value version: only 2025-03-26 allowed batches
// (removed in 2025-06-18), and a request without the header is treated as
// 2025-03-26, as the specification says a server should assume. Every element
// of an allowed batch must be authorized on its own.
func BatchAllowed(version string) bool {
	return version == "" || version == Version20250326
}

// modernVersion reports whether v is 2026-07-28 or later, the era of the
// stateless protocol with mandatory request metadata headers. Versions are
// YYYY-MM-DD strings, so string order is date order.
func modernVersion(v string) bool {
	return v >= Version20260728
}

// knownMethods are the client-to-server methods of every MCP version
// (2024-11-05 … 2026-07-28, tasks included) and the body-less kinds.
var knownMethods = map[string]bool{
	"initialize": true, "ping": true, "server/discover": true,
	"tools/list": true, "tools/call": true,
	"prompts/list": true, "prompts/get": true,
	"resources/list": true, "resources/templates/list": true, "resources/read": true,
	"resources/subscribe": true, "resources/unsubscribe": true, "subscriptions/listen": true,
	"completion/complete": true, "logging/setLevel": true,
	"tasks/get": true, "tasks/result": true, "tasks/cancel": true, "tasks/list": true, "tasks/update": true,
	"notifications/initialized": true, "notifications/cancelled": true, "notifications/progress": true,
	"notifications/roots/list_changed": true, "notifications/tasks/status": true,
	string(KindResponse): true, string(KindStream): true, string(KindSessionEnd): true,
}

// KnownMethod reports whether m is a method the MCP specification defines
// for clients, or one of the kinds response, stream and session_end: a
// closed set, safe as a metric label value.
func KnownMethod(m string) bool { return knownMethods[m] }
