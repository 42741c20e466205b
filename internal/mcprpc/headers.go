package mcprpc

import (
	"encoding/base64"
	"strings"
	"unicode/utf8"
)

// Headers are the MCP request metadata headers of one POST, as received
// (Mcp-Method and Mcp-Name possibly in the =?base64?…?= form).
type Headers struct {
	// ProtocolVersion is the MCP-Protocol-Version header; empty when absent.
	ProtocolVersion string
	// Method and Name are the Mcp-Method and Mcp-Name headers. HasMethod and
	// HasName tell an absent header from an empty one.
	Method, Name       string
	HasMethod, HasName bool
}

const base64Prefix, base64Suffix = "=?base64?", "?="

// DecodeHeaderValue decodes an MCP 2026-07-28 request metadata header value
// (SEP-2243). A value of the exact form =?base64?<standard, padded base64 of
// UTF-8>?= is decoded; any other value must be plain printable ASCII
// (0x20–0x7E) and is returned unchanged.
//
// It rejects, with an *Error of reason invalid_header: raw values with
// control characters or non-ASCII bytes; values that start with =?base64?
// (in any letter case) but are not of the exact form; invalid or
// non-canonical base64 (including embedded line breaks, which Go's decoder
// would otherwise skip); decoded bytes that are not valid UTF-8 or that
// contain control characters.
func DecodeHeaderValue(v string) (string, error) {
	if len(v) >= len(base64Prefix) && strings.EqualFold(v[:len(base64Prefix)], base64Prefix) {
		if !strings.HasPrefix(v, base64Prefix) || !strings.HasSuffix(v, base64Suffix) ||
			len(v) < len(base64Prefix)+len(base64Suffix) {
			return "", invalidHeader("malformed =?base64?…?= value")
		}
		enc := v[len(base64Prefix) : len(v)-len(base64Suffix)]
		for i := 0; i < len(enc); i++ {
			switch c := enc[i]; {
			case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '+', c == '/', c == '=':
			default:
				return "", invalidHeader("invalid base64")
			}
		}
		dec, err := base64.StdEncoding.Strict().DecodeString(enc)
		if err != nil {
			return "", invalidHeader("invalid base64")
		}
		if !utf8.Valid(dec) {
			return "", invalidHeader("decoded value is not valid UTF-8")
		}
		if hasControl(dec) {
			return "", invalidHeader("decoded value contains a control character")
		}
		return string(dec), nil
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c >= 0x7f {
			return "", invalidHeader("value must be printable ASCII or =?base64?…?=")
		}
	}
	return v, nil
}

func invalidHeader(msg string) *Error {
	return newError(ReasonInvalidHeader, CodeHeaderMismatch, nil, "Invalid header value: "+msg)
}

// nameHeaderRequired reports whether the Mcp-Name header is required for
// method in the 2026-07-28 era.
func nameHeaderRequired(method string) bool {
	switch method {
	case "tools/call", "resources/read", "prompts/get",
		"tasks/get", "tasks/result", "tasks/cancel", "tasks/update":
		return true
	}
	return false
}

// CheckHeaders cross-checks the MCP request metadata headers against the
// parsed body of the same request (SEP-2243). Policy must be evaluated on the
// body; this check makes sure an intermediary or server that routes on the
// headers sees the same thing.
//
// For every protocol version:
//   - a present Mcp-Method must equal m.Method, and a present Mcp-Name must
//     equal m.Name, after DecodeHeaderValue (so an Mcp-Name on a method
//     without a name is a mismatch);
//   - when both MCP-Protocol-Version and the body's _meta protocolVersion
//     are present they must be equal.
//
// When the version is 2026-07-28 or later (compared as YYYY-MM-DD strings),
// additionally:
//   - m must be a request or notification: responses are not POSTed in that
//     era (reason invalid_message, CodeInvalidRequest);
//   - Mcp-Method is required; Mcp-Name is required for tools/call,
//     resources/read, prompts/get and tasks/get|result|cancel|update;
//   - the body's _meta protocolVersion is required.
//
// The version is the MCP-Protocol-Version header, or, when the header is
// absent, the body's _meta protocolVersion: a body that claims 2026-07-28 or
// later without the header is a mismatch, so a client cannot downgrade the
// check by dropping the header.
//
// CheckHeaders does not decide whether the version is supported; call
// SupportedProtocolVersion first (CodeUnsupportedProtocolVersion).
//
// Errors are *Error with reason header_mismatch and CodeHeaderMismatch
// (-32020) unless noted, and carry m.ID. Echoed values are sanitised and
// truncated to 64 bytes.
func CheckHeaders(h Headers, m Message) error {
	mismatch := func(msg string) error {
		return newError(ReasonHeaderMismatch, CodeHeaderMismatch, m.ID, "Header mismatch: "+msg)
	}
	differs := func(header, hv, bv string) error {
		return mismatch(header + " header value '" + sanitize(hv) + "' does not match body value '" + sanitize(bv) + "'")
	}

	version := h.ProtocolVersion
	if version == "" && modernVersion(m.MetaProtocolVersion) {
		return mismatch("missing required MCP-Protocol-Version header")
	}
	if modernVersion(version) {
		if m.Kind != KindRequest && m.Kind != KindNotification {
			return newError(ReasonInvalidMessage, CodeInvalidRequest, m.ID,
				"Invalid Request: protocol version "+sanitize(version)+" accepts only requests and notifications")
		}
		if !h.HasMethod {
			return mismatch("missing required Mcp-Method header")
		}
		if !h.HasName && nameHeaderRequired(m.Method) {
			return mismatch("missing required Mcp-Name header")
		}
		if m.MetaProtocolVersion == "" {
			return mismatch("missing required _meta io.modelcontextprotocol/protocolVersion")
		}
	}
	if h.HasMethod {
		v, err := DecodeHeaderValue(h.Method)
		if err != nil {
			return mismatch("Mcp-Method header value is not valid")
		}
		if v != m.Method {
			return differs("Mcp-Method", v, m.Method)
		}
	}
	if h.HasName {
		v, err := DecodeHeaderValue(h.Name)
		if err != nil {
			return mismatch("Mcp-Name header value is not valid")
		}
		if v != m.Name {
			return differs("Mcp-Name", v, m.Name)
		}
	}
	if version != "" && m.MetaProtocolVersion != "" && version != m.MetaProtocolVersion {
		return differs("MCP-Protocol-Version", version, m.MetaProtocolVersion)
	}
	return nil
}
