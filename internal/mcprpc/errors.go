package mcprpc

import (
	"unicode"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
)

// The closed set of Error.Reason values. Each reason always comes with the
// same Code, listed next to it. The set is safe to use as a metric label.
const (
	// Parse errors (CodeParseError, ID always nil).
	ReasonEmptyBody     = "empty_body"     // body is empty or only whitespace
	ReasonInvalidJSON   = "invalid_json"   // not JSON: syntax error, BOM, truncation, …
	ReasonInvalidUTF8   = "invalid_utf8"   // raw bytes that are not valid UTF-8
	ReasonTrailingData  = "trailing_data"  // anything but whitespace after the value
	ReasonDuplicateKey  = "duplicate_key"  // object names equal, or equal under Unicode case folding
	ReasonInvalidKey    = "invalid_key"    // object name with a control character, or a case variant of a name Parse reads
	ReasonTooDeep       = "too_deep"       // nesting deeper than Options.MaxDepth
	ReasonInvalidNumber = "invalid_number" // number outside the float64 range (e.g. 1e400)

	// Invalid requests (CodeInvalidRequest).
	ReasonInvalidBatch   = "invalid_batch"   // empty batch, nested array or non-object element
	ReasonBatchTooLarge  = "batch_too_large" // more than Options.MaxBatch elements
	ReasonInvalidMessage = "invalid_message" // not a request, notification or response
	ReasonInvalidJSONRPC = "invalid_jsonrpc" // "jsonrpc" missing or not "2.0"
	ReasonInvalidID      = "invalid_id"      // "id" not a string or an integer
	ReasonInvalidMethod  = "invalid_method"  // "method" not a non-empty string without controls

	// Invalid params (CodeInvalidParams).
	ReasonInvalidParams        = "invalid_params"         // params or a member the method needs is malformed
	ReasonInvalidToolName      = "invalid_tool_name"      // tools/call params.name not 1–128 of [A-Za-z0-9_.-]
	ReasonInvalidResourceURI   = "invalid_resource_uri"   // a resource URI that is not a valid absolute URI
	ReasonAmbiguousResourceURI = "ambiguous_resource_uri" // a resource URI that readers would resolve differently

	// Content-Type (CodeInvalidRequest); see CheckContentType.
	ReasonContentType = "content_type" // not application/json, or a charset other than UTF-8

	// Headers (CodeHeaderMismatch).
	ReasonInvalidHeader  = "invalid_header"  // DecodeHeaderValue: malformed header value
	ReasonHeaderMismatch = "header_mismatch" // CheckHeaders: header missing or differs from body
)

// Reasons returns every value Error.Reason can take, so that metrics can
// pre-declare their label values.
func Reasons() []string {
	return []string{
		ReasonEmptyBody, ReasonInvalidJSON, ReasonInvalidUTF8, ReasonTrailingData,
		ReasonDuplicateKey, ReasonInvalidKey, ReasonTooDeep, ReasonInvalidNumber,
		ReasonInvalidBatch, ReasonBatchTooLarge, ReasonInvalidMessage, ReasonInvalidJSONRPC,
		ReasonInvalidID, ReasonInvalidMethod, ReasonInvalidParams, ReasonInvalidToolName,
		ReasonInvalidResourceURI, ReasonAmbiguousResourceURI, ReasonContentType,
		ReasonInvalidHeader, ReasonHeaderMismatch,
	}
}

func newError(reason string, code int, id jsontext.Value, msg string) *Error {
	return &Error{Reason: reason, Code: code, ID: id, Message: msg}
}

// maxEchoBytes bounds every value echoed into an error message.
const maxEchoBytes = 64

// sanitize makes an untrusted value safe to echo in an error message that ends
// up in responses and logs: non-printable runes (controls, format characters
// such as bidi overrides, invalid UTF-8) become '?', and the result is at most
// maxEchoBytes bytes long, ending in "..." when it was truncated.
func sanitize(s string) string {
	clean := len(s) <= maxEchoBytes
	for i := 0; clean && i < len(s); i++ {
		clean = s[i] >= 0x20 && s[i] < 0x7f
	}
	if clean {
		return s
	}
	out := make([]byte, 0, maxEchoBytes)
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			r = '?'
		}
		if len(out)+utf8.RuneLen(r) > maxEchoBytes {
			for len(out) > maxEchoBytes-len("...") {
				_, size := utf8.DecodeLastRune(out)
				out = out[:len(out)-size]
			}
			return string(append(out, "..."...))
		}
		out = utf8.AppendRune(out, r)
	}
	return string(out)
}

// isControl reports whether r is a Unicode control character (category Cc:
// C0, DEL and C1).
func isControl(r rune) bool {
	return r < 0x20 || (r >= 0x7f && r < 0xa0)
}

// hasControl reports whether the UTF-8 text b contains a control character.
func hasControl[T ~string | ~[]byte](b T) bool {
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c < 0x20 || c == 0x7f {
			return true
		}
		// C1 controls U+0080..U+009F are encoded as C2 80..C2 9F.
		if c == 0xc2 && i+1 < len(b) && b[i+1] >= 0x80 && b[i+1] < 0xa0 {
			return true
		}
	}
	return false
}
