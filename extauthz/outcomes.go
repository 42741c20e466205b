package extauthz

import (
	"slices"

	"github.com/mcpauthz/mcpauthz/internal/mcprpc"
)

// DecisionLabels are the outcome, HTTP status and reason a Decision ends
// with (Decision.Outcome, Status and Reason): the labels a recorder counts
// decisions by.
type DecisionLabels struct {
	Outcome string
	Status  int
	Reason  string
}

// Outcomes returns every combination of outcome, status and reason a Check
// can end with (the status mapping of doc.go), so that recorders can
// pre-create their series. TestOutcomesCoverTheLadder keeps it in step with
// the decision ladder.
func Outcomes() []DecisionLabels {
	out := []DecisionLabels{
		{"allow", 200, "cors_preflight"},
		{"allow", 200, "policy_allow"},
		{"shadow_deny", 200, "policy_allow"},
		{"deny", 200, "metadata"},
		{"deny", 204, "metadata_preflight"},
		{"deny", 400, "token_in_query"},
		{"deny", 400, "multiple_authorization"},
		{"deny", 400, "method_override"},
		{"deny", 400, "upgrade"},
		{"deny", 400, "unsupported_protocol_version"},
		{"deny", 400, "batch_not_allowed"},
		{"deny", 401, "no_token"},
		{"deny", 401, "invalid_token"},
		{"deny", 403, "forbidden_origin"},
		{"deny", 403, "policy_deny"},
		{"deny", 403, "insufficient_scope"},
		{"deny", 404, "metadata_not_found"},
		{"deny", 405, "method_not_allowed"},
		{"deny", 405, "metadata_method"},
		{"deny", 413, "partial_body"},
		{"deny", 415, "content_encoding"},
		{"deny", 503, "keys_unavailable"},
		{"deny", 503, "policy_error"},
		{"deny", 503, "timeout"},
		{"deny", 503, "body_not_forwarded"},
		{"deny", 503, "upstream_credential_unavailable"},
		{"deny", 503, "internal_error"},
	}
	// The body parser's own reasons: a Content-Type it refuses is a 415,
	// everything else it rejects (body, headers) a 400.
	for _, r := range mcprpc.Reasons() {
		status := 400
		if r == mcprpc.ReasonContentType {
			status = 415
		}
		if l := (DecisionLabels{"deny", status, r}); !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	return out
}
