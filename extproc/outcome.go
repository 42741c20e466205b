package extproc

import (
	"context"
	"time"
)

// Reason says why the processor failed closed. The set is closed (see
// Reasons) and safe as a metric label.
type Reason string

// The reasons. Each fail-closed answer carries exactly one.
const (
	// ReasonMissingMetadata: no ext_authz metadata on the stream (ext_authz
	// did not run, or its namespace is not forwarded to ext_proc).
	ReasonMissingMetadata Reason = "missing_metadata"
	// ReasonBadMetadata: the list metadata is malformed, of another
	// version, or ambiguous (two list requests with one id).
	ReasonBadMetadata Reason = "bad_metadata"
	// ReasonBadBody: the body is not the JSON-RPC it should be (not strict
	// JSON, wrong shape, duplicate or case-variant member names, a list
	// that is not an array of objects, a content type that clients may
	// read as JSON or SSE but is neither exactly).
	ReasonBadBody Reason = "bad_body"
	// ReasonContentEncoding: a compressed (or otherwise encoded) list
	// response, which the processor cannot read.
	ReasonContentEncoding Reason = "content_encoding"
	// ReasonTooLarge: a JSON body or one SSE event larger than
	// Options.MaxBufferedBytes.
	ReasonTooLarge Reason = "too_large"
	// ReasonPolicyError: the policy returned an error, panicked, or
	// answered with the wrong number of decisions.
	ReasonPolicyError Reason = "policy_error"
	// ReasonTimeout: the policy did not answer within
	// Options.PolicyTimeout, or failed with an error wrapping
	// context.DeadlineExceeded (its own evaluation bound).
	ReasonTimeout Reason = "timeout"
	// ReasonProtocol: Envoy's messages do not follow the configured
	// processing mode (the stream is ended with a gRPC error).
	ReasonProtocol Reason = "protocol_error"
	// ReasonInternal: a panic in the processor (the stream is ended with a
	// gRPC error).
	ReasonInternal Reason = "internal_error"
)

// Reasons returns every Reason, so metrics can pre-declare label values.
func Reasons() []Reason {
	return []Reason{
		ReasonMissingMetadata, ReasonBadMetadata, ReasonBadBody, ReasonContentEncoding,
		ReasonTooLarge, ReasonPolicyError, ReasonTimeout, ReasonProtocol, ReasonInternal,
	}
}

// Outcome is what the processor did with one list response, or one failure
// that is not tied to a list. Method is the list method ("" when unknown,
// e.g. a body that could not be read at all). Reason is empty when the list
// was filtered; otherwise the response was answered with a JSON-RPC error
// (or the stream failed, for ReasonProtocol and ReasonInternal).
type Outcome struct {
	Method  string
	Reason  Reason
	Items   int // items in the list as the server sent it
	Removed int // items removed
	// Duration is the time spent on this list: reading it, the policy and
	// writing the result (zero for failures not tied to a list).
	Duration time.Duration
}

// Recorder observes outcomes (metrics). Record must not block.
type Recorder interface {
	Record(ctx context.Context, o Outcome)
}
