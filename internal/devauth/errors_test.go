package devauth_test

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/devauth"
)

const devRedirect = "http://127.0.0.1:48123/callback"

// code runs an authorization of the pre-registered public client in auto
// mode and returns the code.
func (e *env) code(p pkcePair, scope string) string {
	e.t.Helper()
	q := authorizeQuery(devauth.DevClientID, devRedirect, p, scope)
	return redirectParams(e.t, e.get("/authorize?"+q.Encode()), devRedirect).Get("code")
}

func (e *env) exchange(code string, p pkcePair) response {
	e.t.Helper()
	return e.postForm("/token", url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {p.verifier},
		"redirect_uri": {devRedirect}, "client_id": {devauth.DevClientID},
	}, "")
}

// tokens runs a whole authorization and exchange for the dev client.
func (e *env) tokens(scope string) tokens {
	e.t.Helper()
	p := newPKCE("tokens")
	r := e.exchange(e.code(p, scope), p)
	if r.status != http.StatusOK {
		e.t.Fatalf("exchange: %d %s", r.status, r.body)
	}
	m := r.json(e.t)
	return tokens{Access: m["access_token"].(string), Refresh: m["refresh_token"].(string)}
}

func withQuery(q url.Values, mod func(url.Values)) string {
	q = cloneValues(q)
	mod(q)
	return "/authorize?" + q.Encode()
}

func cloneValues(q url.Values) url.Values {
	c := url.Values{}
	for k, v := range q {
		c[k] = append([]string(nil), v...)
	}
	return c
}

// checkJSONError checks an RFC 6749 §5.2 error response.
func checkJSONError(t *testing.T, r response, status int, code, desc string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if r.header.Get("Cache-Control") != "no-store" || r.header.Get("Pragma") != "no-cache" {
		t.Errorf("Cache-Control %q Pragma %q, want no-store, no-cache", r.header.Get("Cache-Control"), r.header.Get("Pragma"))
	}
	if r.header.Get("Location") != "" {
		t.Errorf("an error that must not be redirected has Location %q", r.header.Get("Location"))
	}
	m := r.json(t)
	if m["error"] != code {
		t.Errorf("error = %v, want %s (body %s)", m["error"], code, r.body)
	}
	d, _ := m["error_description"].(string)
	if d == "" || !strings.Contains(d, desc) {
		t.Errorf("error_description %q, want it to contain %q", d, desc)
	}
	if strings.ContainsAny(d, "\"\\") {
		t.Errorf("error_description %q has a quote or backslash", d)
	}
}

// checkRedirectError checks an error redirected to the client (RFC 6749
// §4.1.2.1) with state and iss (RFC 9207).
func checkRedirectError(t *testing.T, e *env, r response, code, desc string) {
	t.Helper()
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", r.header.Get("Cache-Control"))
	}
	q := redirectParams(t, r, devRedirect)
	if q.Get("error") != code || q.Get("state") != "state-1234567890" || q.Get("iss") != e.issuer || q.Get("code") != "" {
		t.Fatalf("redirect %v: want error=%s, state, iss and no code", q, code)
	}
	if d := q.Get("error_description"); !strings.Contains(d, desc) {
		t.Errorf("error_description %q, want it to contain %q", d, desc)
	}
}

func TestAuthorizeErrors(t *testing.T) {
	e := newEnv(t)
	p := newPKCE("authz")
	good := authorizeQuery(devauth.DevClientID, devRedirect, p, "tools:get_weather")

	shown := []struct {
		name   string
		path   string
		status int
		code   string
		desc   string
	}{
		{"unknown client", withQuery(good, func(q url.Values) { q.Set("client_id", "nobody") }), 400, "invalid_client", "not registered"},
		{"missing client_id", withQuery(good, func(q url.Values) { q.Del("client_id") }), 400, "invalid_request", "client_id parameter is missing"},
		{"repeated client_id", withQuery(good, func(q url.Values) { q.Add("client_id", "x") }), 400, "invalid_request", "repeated"},
		{"wrong redirect host", withQuery(good, func(q url.Values) { q.Set("redirect_uri", "http://evil.example.com/callback") }), 400, "invalid_request", "is not registered"},
		{"wrong redirect path", withQuery(good, func(q url.Values) { q.Set("redirect_uri", "http://127.0.0.1:48123/other") }), 400, "invalid_request", "is not registered"},
		{"loopback host swapped", withQuery(good, func(q url.Values) { q.Set("redirect_uri", "http://127.0.0.2:48123/callback") }), 400, "invalid_request", "is not registered"},
		{"missing redirect with several registered", withQuery(good, func(q url.Values) { q.Del("redirect_uri") }), 400, "invalid_request", "redirect_uri parameter is required"},
		{"redirect with fragment", withQuery(good, func(q url.Values) { q.Set("redirect_uri", devRedirect+"#x") }), 400, "invalid_request", "is not registered"},
	}
	for _, tc := range shown {
		t.Run("shown/"+tc.name, func(t *testing.T) {
			checkJSONError(t, e.get(tc.path), tc.status, tc.code, tc.desc)
		})
	}

	redirected := []struct {
		name string
		path string
		code string
		desc string
	}{
		{"missing PKCE", withQuery(good, func(q url.Values) { q.Del("code_challenge"); q.Del("code_challenge_method") }), "invalid_request", "code_challenge parameter is missing"},
		{"plain PKCE", withQuery(good, func(q url.Values) { q.Set("code_challenge_method", "plain") }), "invalid_request", "must be S256"},
		{"PKCE without method", withQuery(good, func(q url.Values) { q.Del("code_challenge_method") }), "invalid_request", "must be S256"},
		{"unknown PKCE method", withQuery(good, func(q url.Values) { q.Set("code_challenge_method", "S512") }), "invalid_request", "not supported"},
		{"malformed challenge", withQuery(good, func(q url.Values) { q.Set("code_challenge", "short") }), "invalid_request", "43 characters"},
		{"unsupported response_type", withQuery(good, func(q url.Values) { q.Set("response_type", "token") }), "unsupported_response_type", "token"},
		{"missing response_type", withQuery(good, func(q url.Values) { q.Del("response_type") }), "unsupported_response_type", "response_type"},
		{"unknown resource", withQuery(good, func(q url.Values) { q.Set("resource", "https://other.example.com/mcp") }), "invalid_target", "is not served"},
		{"two resources", withQuery(good, func(q url.Values) { q.Add("resource", otherResource) }), "invalid_target", "one resource"},
		{"invalid scope token", withQuery(good, func(q url.Values) { q.Set("scope", `tools:"x"`) }), "invalid_scope", "scope"},
		{"repeated scope", withQuery(good, func(q url.Values) { q.Add("scope", "tools:*") }), "invalid_request", "scope parameter is repeated"},
		{"repeated state", withQuery(good, func(q url.Values) { q.Add("state", "another-state-value") }), "invalid_request", "state parameter is repeated"},
		{"unsupported response_mode", withQuery(good, func(q url.Values) { q.Set("response_mode", "form_post") }), "unsupported_response_mode", "response_mode"},
	}
	for _, tc := range redirected {
		t.Run("redirected/"+tc.name, func(t *testing.T) {
			checkRedirectError(t, e, e.get(tc.path), tc.code, tc.desc)
		})
	}

	t.Run("error page for browsers", func(t *testing.T) {
		r := e.get(withQuery(good, func(q url.Values) { q.Set("client_id", "nobody") }), "Accept", "text/html,application/xhtml+xml")
		if r.status != 400 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") || !strings.Contains(string(r.body), "invalid_client") {
			t.Fatalf("status %d type %q body %s", r.status, r.header.Get("Content-Type"), r.body)
		}
		checkPageHeaders(t, r.header)
	})
}

func checkPageHeaders(t *testing.T, h http.Header) {
	t.Helper()
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	if h.Get("X-Frame-Options") != "DENY" || h.Get("Cache-Control") != "no-store" {
		t.Errorf("X-Frame-Options %q Cache-Control %q", h.Get("X-Frame-Options"), h.Get("Cache-Control"))
	}
}

func TestAuthorizeState(t *testing.T) {
	e := newEnv(t)
	p := newPKCE("state")
	good := authorizeQuery(devauth.DevClientID, devRedirect, p, "tools:get_weather")
	for _, tc := range []struct {
		name    string
		mod     func(url.Values)
		want    string
		present bool
	}{
		{"absent", func(q url.Values) { q.Del("state") }, "", false},
		{"short", func(q url.Values) { q.Set("state", "abc") }, "abc", true},
		{"empty", func(q url.Values) { q.Set("state", "") }, "", true},
		{"long", func(q url.Values) { q.Set("state", strings.Repeat("s", 100)) }, strings.Repeat("s", 100), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := redirectParams(t, e.get(withQuery(good, tc.mod)), devRedirect)
			if _, ok := q["state"]; ok != tc.present || q.Get("state") != tc.want || q.Get("code") == "" {
				t.Fatalf("redirect %v: want state %q (present %v) and a code", q, tc.want, tc.present)
			}
		})
	}
}

// TestLoopbackRedirects: a loopback redirect URI matches on any port, for
// the IP literals and for localhost; nothing else is loosened.
func TestLoopbackRedirects(t *testing.T) {
	e := newEnv(t, func(o *devauth.Options) {
		o.Clients = append(o.Clients, devauth.Client{ID: "exact", RedirectURIs: []string{"https://app.example.com/cb", "com.example.app:/oauth"}})
	})
	p := newPKCE("loop")
	for _, tc := range []struct {
		client, redirect string
		ok               bool
	}{
		{devauth.DevClientID, "http://127.0.0.1:1/callback", true},
		{devauth.DevClientID, "http://127.0.0.1:65535/callback", true},
		{devauth.DevClientID, "http://127.0.0.1/callback", true},
		{devauth.DevClientID, "http://[::1]:9999/callback", true},
		{devauth.DevClientID, "http://localhost:6274/callback", true},
		{devauth.DevClientID, "https://127.0.0.1:9999/callback", false},
		{devauth.DevClientID, "http://127.0.0.1:9999/callback/", false},
		{devauth.DevClientID, "http://127.0.0.1:9999/callback?x=1", false},
		{devauth.DevClientID, "http://localhost.evil.com:9999/callback", false},
		{devauth.DevClientID, "http://user@127.0.0.1:9999/callback", false},
		{"exact", "https://app.example.com/cb", true},
		{"exact", "https://app.example.com:8443/cb", false},
		{"exact", "com.example.app:/oauth", true},
	} {
		t.Run(tc.client+" "+tc.redirect, func(t *testing.T) {
			q := authorizeQuery(tc.client, tc.redirect, p, "tools:get_weather")
			r := e.get("/authorize?" + q.Encode())
			if !tc.ok {
				checkJSONError(t, r, 400, "invalid_request", "is not registered")
				return
			}
			if r.status == http.StatusOK {
				// Auto approval only for loopback redirects: the others
				// get the consent page.
				if strings.HasPrefix(tc.redirect, "http://") {
					t.Fatalf("consent page for the loopback redirect %s", tc.redirect)
				}
				hidden, boxes := consentForm(t, r.body)
				r = submit(e, hidden, "approve", boxes)
			}
			params := redirectParams(t, r, tc.redirect)
			code := params.Get("code")
			// The token request must name the same redirect URI.
			tr := e.postForm("/token", url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {p.verifier},
				"redirect_uri": {tc.redirect}, "client_id": {tc.client}}, "")
			if tr.status != 200 {
				t.Fatalf("exchange: %d %s", tr.status, tr.body)
			}
		})
	}
}

func TestTokenErrors(t *testing.T) {
	e := newEnv(t)
	p := newPKCE("token")
	tok := func(form url.Values) response { return e.postForm("/token", form, "") }
	codeForm := func(mod func(url.Values)) url.Values {
		f := url.Values{"grant_type": {"authorization_code"}, "code": {e.code(p, "tools:get_weather")}, "code_verifier": {p.verifier},
			"redirect_uri": {devRedirect}, "client_id": {devauth.DevClientID}}
		mod(f)
		return f
	}
	for _, tc := range []struct {
		name   string
		do     func() response
		status int
		code   string
		desc   string
	}{
		{"wrong verifier", func() response {
			return tok(codeForm(func(f url.Values) { f.Set("code_verifier", newPKCE("other").verifier) }))
		}, 400, "invalid_grant", "code challenge did not match"},
		{"missing verifier", func() response { return tok(codeForm(func(f url.Values) { f.Del("code_verifier") })) }, 400, "invalid_grant", "verifier"},
		{"unknown code", func() response { return tok(codeForm(func(f url.Values) { f.Set("code", "nope.nope") })) }, 400, "invalid_grant", ""},
		{"redirect_uri mismatch", func() response {
			return tok(codeForm(func(f url.Values) { f.Set("redirect_uri", "http://127.0.0.1:48124/callback") }))
		}, 400, "invalid_grant", "redirect_uri"},
		{"code of another client", func() response {
			return tok(codeForm(func(f url.Values) { f.Set("client_id", otherPublicID) }))
		}, 400, "invalid_grant", "Client ID"},
		{"grant not registered for the client", func() response {
			return e.postForm("/token", codeForm(func(f url.Values) { f.Del("client_id") }), machineID+":"+machineSecret)
		}, 400, "unauthorized_client", "authorization_code"},
		{"other resource at the token endpoint", func() response {
			return tok(codeForm(func(f url.Values) { f.Set("resource", otherResource) }))
		}, 400, "invalid_target", "not part of this authorization"},
		{"unknown resource at the token endpoint", func() response {
			return tok(codeForm(func(f url.Values) { f.Set("resource", "https://x.example.com/") }))
		}, 400, "invalid_target", "is not served"},
		{"unsupported grant_type", func() response {
			return tok(url.Values{"grant_type": {"password"}, "username": {"u"}, "password": {"p"}})
		}, 400, "unsupported_grant_type", "password"},
		{"implicit grant_type", func() response { return tok(url.Values{"grant_type": {"implicit"}}) }, 400, "unsupported_grant_type", ""},
		{"missing grant_type", func() response { return tok(url.Values{"code": {"x"}}) }, 400, "invalid_request", "grant_type"},
		{"repeated grant_type", func() response {
			return tok(url.Values{"grant_type": {"client_credentials", "client_credentials"}})
		}, 400, "invalid_request", "repeated"},
		{"bad client secret (basic)", func() response {
			return e.postForm("/token", url.Values{"grant_type": {"client_credentials"}}, machineID+":wrong")
		}, 401, "invalid_client", ""},
		{"bad client secret (post)", func() response {
			return tok(url.Values{"grant_type": {"client_credentials"}, "client_id": {machineID}, "client_secret": {"wrong"}})
		}, 401, "invalid_client", ""},
		{"no client authentication", func() response { return tok(url.Values{"grant_type": {"client_credentials"}}) }, 401, "invalid_client", ""},
		{"unknown client", func() response {
			return tok(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}, "client_id": {"nobody"}})
		}, 401, "invalid_client", ""},
		{"client assertion", func() response {
			return tok(url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {"x.y.z"}})
		}, 401, "invalid_client", "private_key_jwt"},
		{"client_credentials for a public client", func() response {
			return tok(url.Values{"grant_type": {"client_credentials"}, "client_id": {devauth.DevClientID}})
		}, 400, "invalid_grant", "public"},
		{"client_credentials with an unknown resource", func() response {
			return e.postForm("/token", url.Values{"grant_type": {"client_credentials"}, "resource": {"https://x.example.com/mcp"}}, machineID+":"+machineSecret)
		}, 400, "invalid_target", "is not served"},
		{"unknown refresh token", func() response {
			return tok(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"nope.nope"}, "client_id": {devauth.DevClientID}})
		}, 400, "invalid_grant", ""},
		{"JSON body", func() response { return e.postJSON("/token", `{"grant_type":"client_credentials"}`) }, 400, "invalid_request", "grant_type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.do()
			checkJSONError(t, r, tc.status, tc.code, tc.desc)
			if tc.status == 401 && strings.Contains(tc.name, "basic") && r.header.Get("WWW-Authenticate") != `Basic realm="devauth"` {
				t.Errorf("WWW-Authenticate %q, want a Basic challenge", r.header.Get("WWW-Authenticate"))
			}
		})
	}
}

// TestCodeReuse: a code is single-use, and presenting it again revokes the
// tokens issued from it (RFC 6749 §4.1.2).
func TestCodeReuse(t *testing.T) {
	e := newEnv(t)
	p := newPKCE("reuse")
	code := e.code(p, "tools:get_weather")
	first := e.exchange(code, p)
	if first.status != 200 {
		t.Fatalf("first exchange: %d %s", first.status, first.body)
	}
	tk := first.json(t)
	checkJSONError(t, e.exchange(code, p), 400, "invalid_grant", "already been used")
	for _, name := range []string{"access_token", "refresh_token"} {
		if in := introspect(t, e, tk[name].(string)); in["active"] != false {
			t.Errorf("%s issued from a replayed code: %v", name, in)
		}
	}
	r := e.postForm("/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tk["refresh_token"].(string)}, "client_id": {devauth.DevClientID}}, "")
	checkJSONError(t, r, 400, "invalid_grant", "")
}

func TestCodeExpiry(t *testing.T) {
	e := newEnv(t, func(o *devauth.Options) { o.CodeTTL = 50 * time.Millisecond })
	p := newPKCE("expiry")
	code := e.code(p, "tools:get_weather")
	time.Sleep(100 * time.Millisecond)
	checkJSONError(t, e.exchange(code, p), 400, "invalid_grant", "expired")
}

// TestRefreshReuse: a refresh token is single-use; presenting a used one
// revokes its whole family.
func TestRefreshReuse(t *testing.T) {
	e := newEnv(t)
	t1 := e.tokens("tools:get_weather")
	refresh := func(rt string) response {
		return e.postForm("/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {devauth.DevClientID}}, "")
	}
	r := refresh(t1.Refresh)
	if r.status != 200 {
		t.Fatalf("refresh: %d %s", r.status, r.body)
	}
	t2 := r.json(t)
	r = refresh(t2["refresh_token"].(string))
	if r.status != 200 {
		t.Fatalf("second refresh: %d %s", r.status, r.body)
	}
	t3 := r.json(t)
	if in := introspect(t, e, t3["access_token"].(string)); in["active"] != true {
		t.Fatalf("live token: %v", in)
	}

	// An attacker replays the first refresh token.
	checkJSONError(t, refresh(t1.Refresh), 400, "invalid_grant", "already used")

	if in := introspect(t, e, t3["access_token"].(string)); in["active"] != false {
		t.Errorf("access token of a revoked family: %v", in)
	}
	for i, rt := range []string{t1.Refresh, t2["refresh_token"].(string), t3["refresh_token"].(string)} {
		checkJSONError(t, refresh(rt), 400, "invalid_grant", "")
		if in := introspect(t, e, rt); in["active"] != false {
			t.Errorf("refresh token %d of a revoked family: %v", i, in)
		}
	}
}

func TestClientCredentials(t *testing.T) {
	e := newEnv(t, func(o *devauth.Options) {
		o.Clients = append(o.Clients, devauth.Client{ID: "limited", Secret: "limited-secret-0123456789abcdef0123", Scopes: []string{"tools:get_weather"}})
	})
	for _, tc := range []struct {
		name, basic string
		form        url.Values
		aud, scope  string
	}{
		{"basic, default resource", machineID + ":" + machineSecret, url.Values{"scope": {"tools:*"}}, resource, "tools:*"},
		{"post, other resource", "", url.Values{"client_id": {machineID}, "client_secret": {machineSecret}, "resource": {otherResource}}, otherResource, ""},
		{"limited client", "limited:limited-secret-0123456789abcdef0123", url.Values{"scope": {"tools:get_weather"}}, resource, "tools:get_weather"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.form.Set("grant_type", "client_credentials")
			r := e.postForm("/token", tc.form, tc.basic)
			if r.status != 200 {
				t.Fatalf("%d %s", r.status, r.body)
			}
			m := r.json(t)
			if _, ok := m["refresh_token"]; ok {
				t.Error("a refresh token for client_credentials")
			}
			in := introspect(t, e, m["access_token"].(string))
			id, _, _ := strings.Cut(tc.basic+tc.form.Get("client_id"), ":")
			if in["active"] != true || in["aud"] != tc.aud || in["sub"] != id || in["client_id"] != id || (tc.scope != "" && in["scope"] != tc.scope) {
				t.Fatalf("introspection %v", in)
			}
		})
	}
	r := e.postForm("/token", url.Values{"grant_type": {"client_credentials"}, "scope": {"tools:*"}}, "limited:limited-secret-0123456789abcdef0123")
	checkJSONError(t, r, 400, "invalid_scope", "tools:*")
}

func TestRevocationAndIntrospectionErrors(t *testing.T) {
	e := newEnv(t)
	tk := e.tokens("tools:get_weather")
	for _, tc := range []struct {
		name   string
		do     func() response
		status int
		code   string
		desc   string
	}{
		{"introspect without authentication", func() response { return e.postForm("/introspect", url.Values{"token": {tk.Access}}, "") }, 401, "invalid_client", "client_secret_basic"},
		{"introspect with a wrong secret", func() response { return e.postForm("/introspect", url.Values{"token": {tk.Access}}, rsID+":wrong") }, 401, "invalid_client", "failed"},
		{"introspect as a client not allowed to", func() response {
			return e.postForm("/introspect", url.Values{"token": {tk.Access}}, machineID+":"+machineSecret)
		}, 401, "invalid_client", "not allowed"},
		{"introspect with a bearer token", func() response {
			req, _ := http.NewRequest(http.MethodPost, e.url("/introspect"), strings.NewReader(url.Values{"token": {tk.Refresh}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Authorization", "Bearer "+tk.Access)
			return e.do(req)
		}, 401, "invalid_client", "client_secret_basic"},
		{"introspect without token", func() response { return e.postForm("/introspect", url.Values{}, rsID+":"+rsSecret) }, 400, "invalid_request", "token"},
		{"revoke without token", func() response { return e.postForm("/revoke", url.Values{"client_id": {devauth.DevClientID}}, "") }, 400, "invalid_request", "token"},
		{"revoke another client's token", func() response {
			return e.postForm("/revoke", url.Values{"token": {tk.Access}}, machineID+":"+machineSecret)
		}, 400, "unauthorized_client", "not issued to this client"},
		{"revoke with a wrong secret", func() response {
			return e.postForm("/revoke", url.Values{"token": {tk.Access}}, machineID+":wrong")
		}, 401, "invalid_client", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkJSONError(t, tc.do(), tc.status, tc.code, tc.desc)
		})
	}
	// Unknown tokens are revoked without complaint (RFC 7009 §2.2), and
	// the real ones survived the refused attempts.
	if r := e.postForm("/revoke", url.Values{"token": {"no-such-token"}, "client_id": {devauth.DevClientID}}, ""); r.status != 200 {
		t.Errorf("revoke unknown token: %d %s", r.status, r.body)
	}
	if in := introspect(t, e, tk.Access); in["active"] != true {
		t.Errorf("token after refused revocations: %v", in)
	}
	if in := introspect(t, e, "garbage"); fmt.Sprint(in) != "map[active:false]" {
		t.Errorf("introspect garbage: %v", in)
	}
}

func TestRegistrationErrors(t *testing.T) {
	e := newEnv(t)
	reg := func(body string) response { return e.postJSON("/register", body) }
	for _, tc := range []struct {
		name string
		do   func() response
		code string
		desc string
	}{
		{"no redirect_uris", func() response { return reg(`{"token_endpoint_auth_method":"none"}`) }, "invalid_redirect_uri", "required"},
		{"empty redirect_uris", func() response { return reg(`{"redirect_uris":[],"token_endpoint_auth_method":"none"}`) }, "invalid_redirect_uri", "required"},
		{"http redirect on a public host", func() response { return reg(`{"redirect_uris":["http://app.example.com/cb"]}`) }, "invalid_redirect_uri", "loopback"},
		{"relative redirect", func() response { return reg(`{"redirect_uris":["/cb"]}`) }, "invalid_redirect_uri", "absolute"},
		{"redirect with fragment", func() response { return reg(`{"redirect_uris":["https://app.example.com/cb#x"]}`) }, "invalid_redirect_uri", "fragment"},
		{"javascript redirect", func() response { return reg(`{"redirect_uris":["javascript:alert(1)"]}`) }, "invalid_redirect_uri", "forbidden scheme"},
		{"redirect with spaces", func() response { return reg(`{"redirect_uris":["https://app.example.com/a b"]}`) }, "invalid_redirect_uri", ""},
		{"redirect not a string", func() response { return reg(`{"redirect_uris":[1]}`) }, "invalid_client_metadata", "mistyped"},
		{"not JSON", func() response { return reg(`redirect_uris=https://x`) }, "invalid_client_metadata", "not a JSON object"},
		{"JSON array", func() response { return reg(`[]`) }, "invalid_client_metadata", "not a JSON object"},
		{"truncated JSON", func() response { return reg(`{"redirect_uris":["https://a.example.com/cb"]`) }, "invalid_client_metadata", ""},
		{"duplicate member", func() response {
			return reg(`{"redirect_uris":["https://a.example.com/cb"],"redirect_uris":["https://b.example.com/cb"]}`)
		}, "invalid_client_metadata", "duplicate"},
		{"wrong content type", func() response {
			return e.postForm("/register", url.Values{"redirect_uris": {"https://a.example.com/cb"}}, "")
		}, "invalid_client_metadata", "application/json"},
		{"unknown auth method", func() response {
			return reg(`{"redirect_uris":["https://a.example.com/cb"],"token_endpoint_auth_method":"private_key_jwt"}`)
		}, "invalid_client_metadata", "private_key_jwt"},
		{"unknown grant type", func() response {
			return reg(`{"redirect_uris":["https://a.example.com/cb"],"grant_types":["password"]}`)
		}, "invalid_client_metadata", "password"},
		{"implicit response type", func() response {
			return reg(`{"redirect_uris":["https://a.example.com/cb"],"response_types":["token"]}`)
		}, "invalid_client_metadata", "token"},
		{"public client_credentials", func() response {
			return reg(`{"grant_types":["client_credentials"],"token_endpoint_auth_method":"none"}`)
		}, "invalid_client_metadata", "confidential"},
		{"bad scope", func() response { return reg(`{"redirect_uris":["https://a.example.com/cb"],"scope":"a\\b"}`) }, "invalid_client_metadata", "scope"},
		{"too big", func() response {
			return reg(`{"redirect_uris":["https://a.example.com/cb"],"client_name":"` + strings.Repeat("x", 70<<10) + `"}`)
		}, "invalid_client_metadata", "64 KiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkJSONError(t, tc.do(), 400, tc.code, tc.desc)
		})
	}
}

func TestRegistration(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name, body, method string
		secret             bool
		grants             []string
	}{
		{"public", `{"redirect_uris":["http://127.0.0.1:1/cb"],"token_endpoint_auth_method":"none","client_name":"P","extra":{"ignored":true}}`, "none", false, []string{"authorization_code", "refresh_token"}},
		{"default method", `{"redirect_uris":["https://a.example.com/cb"]}`, "client_secret_basic", true, []string{"authorization_code", "refresh_token"}},
		{"post", `{"redirect_uris":["https://a.example.com/cb"],"token_endpoint_auth_method":"client_secret_post","grant_types":["authorization_code"]}`, "client_secret_post", true, []string{"authorization_code", "refresh_token"}},
		{"machine", `{"grant_types":["client_credentials"],"token_endpoint_auth_method":"client_secret_basic"}`, "client_secret_basic", true, []string{"client_credentials"}},
		{"native scheme", `{"redirect_uris":["cursor://anysphere.cursor-retrieval/oauth/callback"],"token_endpoint_auth_method":"none"}`, "none", false, []string{"authorization_code", "refresh_token"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.postJSON("/register", tc.body)
			if r.status != 201 || r.header.Get("Cache-Control") != "no-store" {
				t.Fatalf("%d %q %s", r.status, r.header.Get("Cache-Control"), r.body)
			}
			m := r.json(t)
			id, _ := m["client_id"].(string)
			secret, _ := m["client_secret"].(string)
			if id == "" || (secret != "") != tc.secret || m["token_endpoint_auth_method"] != tc.method || fmt.Sprint(m["grant_types"]) != fmt.Sprint(tc.grants) {
				t.Fatalf("registration response %v", m)
			}
			if _, ok := m["client_id_issued_at"].(float64); !ok {
				t.Errorf("no client_id_issued_at: %v", m)
			}
			if tc.secret && m["client_secret_expires_at"] != float64(0) {
				t.Errorf("client_secret_expires_at %v, want 0", m["client_secret_expires_at"])
			}
			if tc.name == "machine" {
				// The issued secret works.
				tr := e.postForm("/token", url.Values{"grant_type": {"client_credentials"}}, id+":"+secret)
				if tr.status != 200 {
					t.Fatalf("client_credentials with the issued secret: %d %s", tr.status, tr.body)
				}
			}
		})
	}
}

// TestClientIDMetadataDocuments serves documents from a second loopback
// server and authorizes with their URLs as client IDs.
func TestClientIDMetadataDocuments(t *testing.T) {
	var docs *httptest.Server
	mux := http.NewServeMux()
	docs = httptest.NewServer(mux)
	defer docs.Close()
	doc := func(path, body string) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, strings.ReplaceAll(body, "$URL", docs.URL+path))
		})
	}
	doc("/good", `{"client_id":"$URL","client_name":"Doc client","redirect_uris":["`+devRedirect+`"],"token_endpoint_auth_method":"none","extra":1}`)
	doc("/mismatch", `{"client_id":"https://elsewhere.example.com/client","redirect_uris":["`+devRedirect+`"]}`)
	doc("/no-redirects", `{"client_id":"$URL"}`)
	doc("/secret", `{"client_id":"$URL","redirect_uris":["`+devRedirect+`"],"client_secret":"s"}`)
	doc("/confidential", `{"client_id":"$URL","redirect_uris":["`+devRedirect+`"],"token_endpoint_auth_method":"client_secret_basic"}`)
	doc("/not-json", `<html>hello</html>`)
	doc("/big", `{"client_id":"$URL","redirect_uris":["`+devRedirect+`"],"client_name":"`+strings.Repeat("x", 20<<10)+`"}`)
	doc("/bad-redirect", `{"client_id":"$URL","redirect_uris":["http://evil.example.com/cb"]}`)
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/good", http.StatusFound) })
	mux.HandleFunc("/gone", http.NotFound)
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	unreachable := "http://" + closed.Addr().String() + "/client"
	closed.Close()

	e := newEnv(t, func(o *devauth.Options) { o.HTTPClient = &http.Client{Timeout: 300 * time.Millisecond} })
	p := newPKCE("cimd")

	t.Run("good", func(t *testing.T) {
		id := docs.URL + "/good"
		q := authorizeQuery(id, devRedirect, p, "tools:get_weather")
		code := redirectParams(t, e.get("/authorize?"+q.Encode()), devRedirect).Get("code")
		r := e.postForm("/token", url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {p.verifier},
			"redirect_uri": {devRedirect}, "client_id": {id}}, "")
		if r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		if in := introspect(t, e, r.json(t)["access_token"].(string)); in["client_id"] != id {
			t.Fatalf("introspection %v", in)
		}
	})
	for _, tc := range []struct {
		name, id, desc string
	}{
		{"unreachable", unreachable, "could not be fetched"},
		{"timeout", docs.URL + "/slow", "timed out"},
		{"too big", docs.URL + "/big", "larger than"},
		{"mismatched client_id", docs.URL + "/mismatch", "does not equal the document URL"},
		{"no redirect_uris", docs.URL + "/no-redirects", "no redirect_uris"},
		{"client_secret in the document", docs.URL + "/secret", "client_secret"},
		{"confidential", docs.URL + "/confidential", "only public clients"},
		{"not JSON", docs.URL + "/not-json", "not a JSON object"},
		{"404", docs.URL + "/gone", "HTTP 404"},
		{"redirected", docs.URL + "/redirect", "redirect"},
		{"bad redirect in the document", docs.URL + "/bad-redirect", "loopback"},
		{"http on a public host", "http://client.example.com/doc", "https URL"},
		{"no path", docs.URL, "path"},
		{"dot segments", docs.URL + "/a/../good", "dot segments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := authorizeQuery(tc.id, devRedirect, p, "tools:get_weather")
			checkJSONError(t, e.get("/authorize?"+q.Encode()), 400, "invalid_client", tc.desc)
		})
	}
	t.Run("redirect not in the document", func(t *testing.T) {
		q := authorizeQuery(docs.URL+"/good", "http://127.0.0.1:48123/other", p, "tools:get_weather")
		checkJSONError(t, e.get("/authorize?"+q.Encode()), 400, "invalid_request", "is not registered")
	})
	t.Run("token endpoint", func(t *testing.T) {
		r := e.postForm("/token", url.Values{"grant_type": {"authorization_code"}, "code": {"x"}, "code_verifier": {p.verifier},
			"redirect_uri": {devRedirect}, "client_id": {docs.URL + "/mismatch"}}, "")
		checkJSONError(t, r, 401, "invalid_client", "does not equal the document URL")
	})
}

// TestConcurrentRefresh: many clients racing with one refresh token get
// exactly one new pair; the others are reuse, which revokes the family
// (the winner's new tokens included).
func TestConcurrentRefresh(t *testing.T) {
	e := newEnv(t)
	tk := e.tokens("tools:get_weather")
	const n = 8
	results := make(chan response, n)
	for range n {
		go func() {
			results <- e.postForm("/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tk.Refresh}, "client_id": {devauth.DevClientID}}, "")
		}()
	}
	var won []response
	for range n {
		r := <-results
		switch r.status {
		case 200:
			won = append(won, r)
		case 400:
			if m := r.json(t); m["error"] != "invalid_grant" {
				t.Errorf("loser: %s", r.body)
			}
		default:
			t.Errorf("status %d: %s", r.status, r.body)
		}
	}
	if len(won) != 1 {
		t.Fatalf("%d refreshes succeeded, want exactly 1", len(won))
	}
	if in := introspect(t, e, won[0].json(t)["access_token"].(string)); in["active"] != false {
		t.Errorf("the family survived the reuse: %v", in)
	}
}

// TestErrorLogsHoldNoSecrets replays codes and refresh tokens and sends
// wrong secrets: the refusal log lines name the client and the error,
// never the credential.
func TestErrorLogsHoldNoSecrets(t *testing.T) {
	e := newEnv(t)
	p := newPKCE("logs")
	code := e.code(p, "tools:get_weather")
	first := e.exchange(code, p).json(t)
	e.exchange(code, p) // replay
	rt := first["refresh_token"].(string)
	for range 2 {
		e.postForm("/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {devauth.DevClientID}}, "")
	}
	e.postForm("/token", url.Values{"grant_type": {"client_credentials"}}, machineID+":wrong-secret-value")
	e.postForm("/introspect", url.Values{"token": {first["access_token"].(string)}}, rsID+":wrong-secret-value")
	e.postForm("/token", url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {"wrong-verifier-" + p.verifier},
		"redirect_uri": {devRedirect}, "client_id": {devauth.DevClientID}}, "")
	logs := e.logs.String()
	if !strings.Contains(logs, "token request refused") || !strings.Contains(logs, "introspection refused") {
		t.Fatalf("refusals not logged:\n%s", logs)
	}
	for _, s := range []string{code, p.verifier, rt, first["access_token"].(string), "wrong-secret-value", machineSecret, rsSecret} {
		if strings.Contains(logs, s) {
			t.Errorf("log contains %.16s...", s)
		}
	}
}
