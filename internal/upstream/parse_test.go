package upstream

import (
	"strings"
	"testing"
	"time"
)

func TestParseTokenResponse(t *testing.T) {
	bearer := valueBuilder{scheme: "Bearer"}
	rfc := responseRules{issuedTokenType: TokenTypeAccessToken, value: bearer}
	tests := []struct {
		name    string
		body    string
		rules   responseRules
		want    tokenResponse
		wantErr string
	}{
		{"RFC 8693 answer", `{"access_token":"abc.def-_~+/=","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":60,"scope":"a b"}`, rfc,
			tokenResponse{value: "Bearer abc.def-_~+/=", expiresIn: time.Minute, hasExpiry: true}, ""},
		{"token_type case-insensitive", `{"access_token":"t","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"bEaReR"}`, rfc,
			tokenResponse{value: "Bearer t"}, ""},
		{"unknown members and refresh_token ignored", `{"access_token":"t","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","refresh_token":"r","x":{"y":[1]}}`, rfc,
			tokenResponse{value: "Bearer t"}, ""},
		{"missing issued_token_type allowed", `{"access_token":"t","token_type":"Bearer"}`, responseRules{issuedTokenType: TokenTypeAccessToken, issuedTypeOptional: true, value: bearer},
			tokenResponse{value: "Bearer t"}, ""},
		{"mismatching issued_token_type refused even when optional", `{"access_token":"t","token_type":"Bearer","issued_token_type":"urn:x"}`, responseRules{issuedTokenType: TokenTypeAccessToken, issuedTypeOptional: true, value: bearer},
			tokenResponse{}, "issued_token_type"},
		{"client credentials ignore issued_token_type", `{"access_token":"t","token_type":"Bearer","issued_token_type":"urn:x"}`, responseRules{value: bearer},
			tokenResponse{value: "Bearer t"}, ""},
		{"huge expires_in capped", `{"access_token":"t","token_type":"Bearer","expires_in":99999999999999}`, responseRules{value: bearer},
			tokenResponse{value: "Bearer t", expiresIn: maxLifetimeSeconds * time.Second, hasExpiry: true}, ""},
		{"expires_in exponent", `{"access_token":"t","token_type":"Bearer","expires_in":1e3}`, responseRules{value: bearer}, tokenResponse{}, "expires_in"},
		{"expires_in null", `{"access_token":"t","token_type":"Bearer","expires_in":null}`, responseRules{value: bearer}, tokenResponse{}, "expires_in"},
		{"access_token null", `{"access_token":null,"token_type":"Bearer"}`, responseRules{value: bearer}, tokenResponse{}, "access_token is not a string"},
		{"space in a Bearer token", `{"access_token":"a b","token_type":"Bearer"}`, responseRules{value: bearer}, tokenResponse{}, "cannot go into the header"},
		{"non-ASCII in a raw header", `{"access_token":"caf\u00e9","token_type":"Bearer"}`, responseRules{}, tokenResponse{}, "cannot go into the header"},
		{"N_A refused unless allowed", `{"access_token":"t","token_type":"N_A"}`, responseRules{}, tokenResponse{}, "token_type"},
		{"N_A in a raw header", `{"access_token":"t","token_type":"N_A"}`, responseRules{allowNA: true}, tokenResponse{value: "t"}, ""},
		{"deep nesting", `{"access_token":"t","token_type":"Bearer","x":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`, responseRules{value: bearer}, tokenResponse{}, "nested deeper"},
		{"trailing data", `{"access_token":"t","token_type":"Bearer"} {}`, responseRules{value: bearer}, tokenResponse{}, "invalid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseTokenResponse([]byte(tt.body), tt.rules)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseTokenResponse(%s) error %v, want %q", tt.body, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("parseTokenResponse(%s) = %+v, %v; want %+v", tt.body, got, err, tt.want)
			}
		})
	}
}

func TestSanitizeDescription(t *testing.T) {
	secret := "s3cr3t-Value_0123"
	tests := []struct{ in, want string }{
		{"The subject token has expired", "The subject token has expired"},
		{"AADSTS50013: Assertion failed signature validation.", "AADSTS50013: Assertion failed signature validation."},
		{"token " + secret + " bad", "token [redacted] bad"},
		{"piece s3cr3t-Val here", "piece [redacted] here"},
		{"short piece s3cr3t stays", "short piece s3cr3t stays"},
		{"a JWT eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln leaked", "a JWT [redacted] leaked"},
		{"quote \" backslash \\ tab\t newline\n kept out", "quote  backslash  tab newline kept out"},
		{"unicode caf\u00e9", "unicode caf"},
		{strings.Repeat("word ", 60), strings.Repeat("word ", 40) + "..."},
	}
	for _, tt := range tests {
		if got := sanitizeDescription(tt.in, secret); got != tt.want {
			t.Errorf("sanitizeDescription(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzParseTokenResponse: the parser never panics, and whatever it accepts
// yields a header value without control characters.
func FuzzParseTokenResponse(f *testing.F) {
	f.Add([]byte(`{"access_token":"t","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":60}`))
	f.Add([]byte(`{"access_token":"t","token_type":"N_A"}`))
	f.Add([]byte(`{"access_token":"t\r\n","token_type":"Bearer"}`))
	rules := []responseRules{
		{issuedTokenType: TokenTypeAccessToken, value: valueBuilder{scheme: "Bearer"}},
		{allowNA: true},
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, r := range rules {
			resp, err := parseTokenResponse(body, r)
			if err != nil {
				continue
			}
			if !isFieldValue(resp.value) {
				t.Fatalf("accepted %q: value %q is not a header value", body, resp.value)
			}
			if resp.expiresIn < 0 {
				t.Fatalf("accepted %q: negative lifetime", body)
			}
		}
	})
}

// FuzzSanitizeDescription: the output never contains the secret, nor any
// run of 24 token characters, nor a character RFC 6749 §5.2 forbids.
func FuzzSanitizeDescription(f *testing.F) {
	f.Add("invalid grant", "secret-value-123")
	f.Add("echo secret-value-123 back", "secret-value-123")
	f.Add("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0", "x")
	f.Fuzz(func(t *testing.T, desc, secret string) {
		out := sanitizeDescription(desc, secret)
		if len(secret) >= 6 && strings.Contains(out, secret) && !strings.Contains("[redacted]...", secret) {
			t.Fatalf("sanitizeDescription(%q, %q) = %q contains the secret", desc, secret, out)
		}
		run := 0
		for i := 0; i < len(out); i++ {
			c := out[i]
			if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
				t.Fatalf("sanitizeDescription(%q) = %q has byte %#x", desc, out, c)
			}
			if isTokenChar(c) {
				run++
				if run >= 24 {
					t.Fatalf("sanitizeDescription(%q) = %q keeps a token-like run", desc, out)
				}
			} else {
				run = 0
			}
		}
	})
}
