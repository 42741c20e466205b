package policy

import (
	"context"
	"errors"
	"testing"

	"github.com/open-policy-agent/opa/v1/topdown"
)

// TestCutShort: an evaluation during which its context ended is a timeout
// whatever OPA returned (a result computed past the deadline may lack
// rules whose builtins failed on it), and so is an OPA cancellation; other
// outcomes are kept.
func TestCutShort(t *testing.T) {
	expired, cancel := context.WithTimeout(t.Context(), 0)
	defer cancel()
	cancelled, cancel2 := context.WithCancel(t.Context())
	cancel2()
	builtin := errors.New("http.send: context deadline exceeded")
	opaCancel := &topdown.Error{Code: topdown.CancelErr, Message: "caller cancelled query execution"}
	tests := []struct {
		name    string
		ctx     context.Context
		err     error
		want    error // errors.Is(got, want); nil: got must be nil
		wantErr error // also errors.Is(got, wantErr) when set
	}{
		{"deadline passed, OPA returned a result", expired, nil, context.DeadlineExceeded, nil},
		{"deadline passed, a builtin failed", expired, builtin, context.DeadlineExceeded, builtin},
		{"deadline passed, OPA cancelled", expired, opaCancel, context.DeadlineExceeded, nil},
		{"caller cancelled", cancelled, nil, context.Canceled, nil},
		{"OPA cancelled, context alive", t.Context(), opaCancel, context.DeadlineExceeded, nil},
		{"evaluation error, context alive", t.Context(), builtin, builtin, nil},
		{"result, context alive", t.Context(), nil, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := cutShort(tt.ctx, tt.err)
			switch {
			case tt.want == nil && got != nil:
				t.Errorf("cutShort = %v, want nil", got)
			case tt.want != nil && !errors.Is(got, tt.want):
				t.Errorf("cutShort = %v, want it to wrap %v", got, tt.want)
			case tt.wantErr != nil && !errors.Is(got, tt.wantErr):
				t.Errorf("cutShort = %v, want it to keep %v", got, tt.wantErr)
			}
			if tt.want == builtin && errors.Is(got, context.DeadlineExceeded) {
				t.Errorf("cutShort = %v: an evaluation error with time left is not a timeout", got)
			}
		})
	}
}
