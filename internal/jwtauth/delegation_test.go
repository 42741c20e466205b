package jwtauth

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestDelegation: the act chain (RFC 8693 §4.1), azp and may_act reach the
// identity; a delegation that cannot be read makes the token malformed,
// never a token without delegation.
func TestDelegation(t *testing.T) {
	jwks := writeFile(t, "jwks.json", mainJWKS(t))
	v := newTestVerifier(t, []Issuer{{Issuer: testIss, JWKSFile: jwks}}, Options{})
	nest := func(depth int) map[string]any {
		var act map[string]any
		for i := depth; i > 0; i-- {
			a := map[string]any{"sub": "agent-" + string(rune('a'+i-1))}
			if act != nil {
				a["act"] = act
			}
			act = a
		}
		return act
	}
	tests := []struct {
		name   string
		kv     []any
		actors []Actor
		azp    string
		mayAct string
		err    error
	}{
		{name: "no delegation"},
		{name: "one actor", kv: []any{"act", map[string]any{"sub": "agent-1", "client_id": "agent-app", "iss": "https://as.example"}},
			actors: []Actor{{Subject: "agent-1", ClientID: "agent-app", Issuer: "https://as.example"}}},
		{name: "chain, current actor first", kv: []any{"act", map[string]any{"sub": "b", "act": map[string]any{"sub": "a"}}},
			actors: []Actor{{Subject: "b"}, {Subject: "a"}}},
		{name: "azp and may_act", kv: []any{"azp", "web-app", "may_act", map[string]any{"sub": "agent-1"}},
			azp: "web-app", mayAct: `{"sub":"agent-1"}`},
		{name: "longest chain read", kv: []any{"act", nest(16)}, actors: func() []Actor {
			var out []Actor
			for i := 1; i <= 16; i++ {
				out = append(out, Actor{Subject: "agent-" + string(rune('a'+i-1))})
			}
			return out
		}()},
		{name: "malformed/chain too long", kv: []any{"act", nest(17)}, err: ErrMalformed},
		{name: "malformed/act not an object", kv: []any{"act", "agent-1"}, err: ErrMalformed},
		{name: "malformed/act without sub", kv: []any{"act", map[string]any{"client_id": "x"}}, err: ErrMalformed},
		{name: "malformed/act sub not a string", kv: []any{"act", map[string]any{"sub": 7}}, err: ErrMalformed},
		{name: "malformed/nested act not an object", kv: []any{"act", map[string]any{"sub": "b", "act": []any{"a"}}}, err: ErrMalformed},
		{name: "malformed/may_act not an object", kv: []any{"may_act", "agent-1"}, err: ErrMalformed},
		{name: "malformed/azp not a string", kv: []any{"azp", 1}, err: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := v.Verify(context.Background(), validToken(t, tt.kv...))
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Verify = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.actors, id.Actors); diff != "" {
				t.Errorf("Actors (-want +got):\n%s", diff)
			}
			if id.Azp != tt.azp || string(id.MayAct) != tt.mayAct {
				t.Errorf("Azp %q, MayAct %s; want %q, %s", id.Azp, id.MayAct, tt.azp, tt.mayAct)
			}
		})
	}
}
