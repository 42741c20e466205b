package extauthz_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/mcpauthz/mcpauthz/internal/config"
)

// anonymousToken is a token of the test issuer without sub (as some IdPs
// issue for client credentials), for tools:get_weather.
func (e *env) anonymousToken(t *testing.T) string {
	t.Helper()
	now := time.Now().Unix()
	payload, err := json.Marshal(map[string]any{
		"iss": issuerURL, "aud": resource, "client_id": "svc-1", "scope": "tools:get_weather",
		"iat": now, "exp": now + 600, "jti": "anon-1",
	})
	if err != nil {
		t.Fatal(err)
	}
	hdr := jws.NewHeaders()
	for k, v := range map[string]string{"kid": e.iss.Key.KeyID(), "typ": "at+jwt"} {
		if err := hdr.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := jws.Sign(payload, jws.WithKey(jwa.RS256, e.iss.Key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(tok)
}

// TestTokenWithoutSubject: by default a token without sub is refused
// (401 invalid_token, token result missing_subject), so that identity
// headers and subject revocation never silently key on nothing. With
// require_subject: false it is accepted, and the subject header is
// removed from the upstream request rather than set empty (a client's own
// x-mcp-subject never gets through), while the other identity headers are
// set.
func TestTokenWithoutSubject(t *testing.T) {
	spoofed := map[string]string{"x-mcp-subject": "admin"}
	t.Run("required-by-default", func(t *testing.T) {
		e := newEnv(t)
		resp, err := e.client.Check(context.Background(), checkRequest(req{body: callWeather, headers: merge(bearer(e.anonymousToken(t)), spoofed)}))
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetDeniedResponse().GetStatus().GetCode(); got != 401 {
			t.Fatalf("status = %v, want 401", got)
		}
		md := resp.GetDynamicMetadata().GetFields()
		if r, tr := md["reason"].GetStringValue(), md["token_result"].GetStringValue(); r != "invalid_token" || tr != "missing_subject" {
			t.Fatalf("reason %q, token_result %q, want invalid_token, missing_subject", r, tr)
		}
	})
	t.Run("opt-out", func(t *testing.T) {
		e := newEnv(t, withConfig(func(c *config.Config) { c.Issuers[0].RequireSubject = new(false) }))
		resp, err := e.client.Check(context.Background(), checkRequest(req{body: callWeather, headers: merge(bearer(e.anonymousToken(t)), spoofed)}))
		if err != nil {
			t.Fatal(err)
		}
		ok := resp.GetOkResponse()
		if ok == nil {
			t.Fatalf("response = %v, want allowed", resp)
		}
		set := map[string]string{}
		for _, h := range ok.GetHeaders() {
			set[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		}
		if _, found := set["x-mcp-subject"]; found {
			t.Fatalf("x-mcp-subject set to %q, want it removed", set["x-mcp-subject"])
		}
		if set["x-mcp-client-id"] != "svc-1" || set["x-mcp-scopes"] != "tools:get_weather" {
			t.Fatalf("identity headers = %v, want client id and scopes", set)
		}
		if !slices.Contains(ok.GetHeadersToRemove(), "x-mcp-subject") {
			t.Fatalf("headers to remove = %q, want x-mcp-subject among them", ok.GetHeadersToRemove())
		}
	})
}
