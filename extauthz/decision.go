package extauthz

import (
	"strconv"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mcpauthz/mcpauthz/internal/mcprpc"
)

// Decision is the outcome of one Check, as recorders and `mcpauthz check`
// see it. Nothing in it is secret: no token, no cookie.
type Decision struct {
	RequestID  string
	HTTPMethod string
	Path       string

	// Allowed means Envoy forwards the request upstream.
	Allowed bool
	// Status is the HTTP status the client gets from mcpauthz (401, 403,
	// ...), or 200 when the request is forwarded.
	Status int
	// Reason is the outcome from a closed set (see doc.go); safe as a
	// metric label.
	Reason string
	// PolicyReason is the reason the policy gave, when policy decided, and
	// PolicyRevision the revision of the policy that decided.
	PolicyReason   string
	PolicyRevision string
	// Detail explains the outcome for operators (logs, `mcpauthz check`);
	// it is never sent to the client.
	Detail string

	// Identity is the verified token, nil when none was verified.
	Identity       *Identity
	RequiredScopes []string
	// ShadowDenials are denials that policy or shadow mode chose not to
	// enforce.
	ShadowDenials []string
	// UpstreamCredential is the name of the credential source the MCP
	// server got a credential from ("" for none); never the credential.
	UpstreamCredential string
	// TokenResult is "valid" or the jwtauth reason of a rejected token;
	// empty when no token was verified.
	TokenResult string
	// Duration is the whole check; PolicyDuration the policy evaluation
	// (zero when policy was not reached).
	Duration       time.Duration
	PolicyDuration time.Duration

	messages   []mcprpc.Message    // the parsed JSON-RPC messages
	listMeta   *structpb.Struct    // for the list filter (see recordLists)
	credential *UpstreamCredential // set on the upstream request

	// Response parts.
	isDirect  bool        // a response mcpauthz answers itself (metadata)
	body      []byte      // response body on denial
	headers   [][2]string // extra response headers on denial
	challenge *Challenge  // WWW-Authenticate
	upstream  [][2]string // extra upstream headers on allow (from policy)
}

// Outcome is "allow", "deny" or "shadow_deny".
func (d *Decision) Outcome() string {
	switch {
	case d.Allowed && len(d.ShadowDenials) > 0:
		return "shadow_deny"
	case d.Allowed:
		return "allow"
	default:
		return "deny"
	}
}

// MCPMethod is the method of the first message ("" when none); Tool likewise.
func (d *Decision) MCPMethod() string {
	if len(d.messages) == 0 {
		return ""
	}
	m := d.messages[0]
	if m.Method == "" {
		return string(m.Kind)
	}
	return m.Method
}

// Tool is the tool of the first tools/call message, "" when none.
func (d *Decision) Tool() string {
	for _, m := range d.messages {
		if m.Tool != "" {
			return m.Tool
		}
	}
	return ""
}

// Batch reports whether the request was a JSON-RPC batch.
func (d *Decision) Batch() bool { return len(d.messages) > 1 }

// Messages is the number of JSON-RPC messages the request carried.
func (d *Decision) Messages() int { return len(d.messages) }

func (d *Decision) allow(reason string) {
	d.Allowed, d.Status, d.Reason = true, 200, reason
}

func (d *Decision) deny(status int, reason, detail string) {
	d.Allowed, d.Status, d.Reason, d.Detail = false, status, reason, detail
}

func (d *Decision) direct(status int, reason string, body []byte) {
	d.deny(status, reason, "")
	d.isDirect, d.body = true, body
}

// unauthenticated is a 401: no usable credential (oauthErr "") or an invalid
// token (oauthErr invalid_token). The client sees a generic description; the
// precise cause goes to Detail. A request that presented no credential gets
// no error code, in the challenge or in the body (RFC 6750 §3.1): it is not
// an error to ask without a token, only the start of the OAuth flow.
// scopes are what the challenge asks for (see Server.challengeScopes).
func (d *Decision) unauthenticated(reason, oauthErr, detail string, scopes []string) {
	d.deny(401, reason, detail)
	d.challenge = &Challenge{Error: oauthErr, Scopes: scopes}
	if oauthErr == errInvalidToken {
		d.challenge.ErrorDescription = "The access token is invalid or expired"
		d.body = oauthError(errInvalidToken, d.challenge.ErrorDescription)
		return
	}
	d.body = []byte(`{"error_description":"Missing bearer token"}`)
}

// badCredentials is a 400 invalid_request (RFC 6750 §3.1): credentials
// presented in a way the protocol forbids.
func (d *Decision) badCredentials(reason, detail string) {
	d.deny(400, reason, detail)
	d.challenge = &Challenge{Error: errInvalidRequest, ErrorDescription: "Send exactly one bearer token in the Authorization header"}
	d.body = oauthError(errInvalidRequest, d.challenge.ErrorDescription)
}

// unavailable is a 503: mcpauthz cannot decide. Fail closed.
func (d *Decision) unavailable(reason, detail string) {
	d.deny(503, reason, detail)
	d.challenge = nil
	d.headers = append(d.headers[:0], [2]string{"retry-after", "1"})
	d.body = rpcError(nil, mcprpc.CodeInternalError, "Authorization temporarily unavailable", true)
}

// rpcError renders a JSON-RPC 2.0 error response. id is the raw request id;
// withID false omits the member entirely (the invalid-Origin answer), nil
// renders "id":null.
func rpcError(id jsontext.Value, code int, message string, withID bool) []byte {
	b := make([]byte, 0, 96+len(message)+len(id))
	b = append(b, `{"jsonrpc":"2.0",`...)
	if withID {
		b = append(b, `"id":`...)
		if len(id) == 0 {
			b = append(b, "null"...)
		} else {
			b = append(b, id...)
		}
		b = append(b, ',')
	}
	b = append(b, `"error":{"code":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, `,"message":`...)
	b, _ = jsontext.AppendQuote(b, message)
	return append(b, "}}"...)
}

func oauthError(code, description string) []byte {
	b := make([]byte, 0, 64+len(description))
	b = append(b, `{"error":`...)
	b, _ = jsontext.AppendQuote(b, code)
	b = append(b, `,"error_description":`...)
	b, _ = jsontext.AppendQuote(b, description)
	return append(b, '}')
}
