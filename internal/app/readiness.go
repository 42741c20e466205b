package app

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mcpauthz/mcpauthz/policy"
)

// Readiness is the JSON body of /readyz: whether checks can be decided,
// and which policy decides them. A policy change that failed or was
// refused leaves the last good policy serving: the process stays ready,
// and policy.last_reload says why the change is not serving.
type Readiness struct {
	// Status is "ready" or "not ready" (then the answer is 503).
	Status string `json:"status"`
	// Reason is NotReadyReason, when not ready.
	Reason string       `json:"reason,omitempty"`
	Policy PolicyStatus `json:"policy"`
}

// PolicyStatus is the policy part of Readiness.
type PolicyStatus struct {
	// Revision is the revision that serves, "" before the first.
	Revision string `json:"revision"`
	// LastReload is the last load attempt, nil before the first.
	LastReload *ReloadStatus `json:"last_reload,omitempty"`
}

// ReloadStatus is one load attempt (policy.Reload) as /readyz shows it.
type ReloadStatus struct {
	// Result is success, error or refused (as the result label of
	// mcpauthz_policy_reloads_total).
	Result string `json:"result"`
	// Revision is the revision tried ("" if it could not be read).
	Revision string `json:"revision,omitempty"`
	// Time is when the attempt ended (RFC 3339).
	Time string `json:"time"`
	// Reason is the refusal reason (as mcpauthz_policy_activation_refusals_total).
	Reason string `json:"reason,omitempty"`
	// Error is the first problem, at most maxReadyError bytes; the log has
	// them all.
	Error string `json:"error,omitempty"`
}

// maxReadyError bounds the error /readyz shows.
const maxReadyError = 300

// Readiness reports what /readyz answers.
func (rt *Runtime) Readiness() Readiness {
	r := Readiness{Status: "ready", Policy: PolicyStatus{Revision: rt.Engine.Revision()}}
	if why := rt.NotReadyReason(); why != "" {
		r.Status, r.Reason = "not ready", why
	}
	if last, ok := rt.Engine.LastReload(); ok {
		s := &ReloadStatus{Result: last.Result(), Revision: last.Revision, Time: last.Time.UTC().Format(time.RFC3339)}
		var ae *policy.ActivationError
		switch {
		case errors.As(last.Err, &ae):
			s.Reason = ae.Reason()
			s.Error = oneLine(ae.Problems[0].String())
			if n := len(ae.Problems) - 1; n > 0 {
				s.Error += fmt.Sprintf(" (and %d more problems)", n)
			}
		case last.Err != nil && last.Revision == "":
			// Unreadable files or a failed download: the error may name
			// the bundle's URL, query and all; the log has it redacted.
			s.Error = "the policy could not be read or downloaded; see the log"
		case last.Err != nil:
			first, _, _ := strings.Cut(last.Err.Error(), "\n")
			s.Error = oneLine(first)
		}
		s.Error = truncate(s.Error, maxReadyError)
		r.Policy.LastReload = s
	}
	return r
}

// oneLine joins the lines of s (an OPA error lists conflicting values on
// lines of their own) with single spaces.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n-3]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "..."
}
