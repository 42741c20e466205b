package devauth_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/mcpauthz/mcpauthz/internal/devauth"
)

func pageEnv(t *testing.T) *env {
	return newEnv(t, func(o *devauth.Options) { o.Approve = devauth.ApprovePage })
}

// openConsent starts an authorization of the dev client and returns the
// consent page.
func openConsent(t *testing.T, e *env, scope string) (response, url.Values, []string) {
	t.Helper()
	q := authorizeQuery(devauth.DevClientID, devRedirect, newPKCE("consent"), scope)
	r := e.get("/authorize?"+q.Encode(), "Accept", "text/html")
	if r.status != http.StatusOK {
		t.Fatalf("authorize: %d %s", r.status, r.body)
	}
	hidden, boxes := consentForm(t, r.body)
	return r, hidden, boxes
}

func submit(e *env, hidden url.Values, decision string, scopes []string, hdr ...string) response {
	form := url.Values{"authorization": {hidden.Get("authorization")}, "csrf_token": {hidden.Get("csrf_token")}, "decision": {decision}, "scope": scopes}
	req, _ := http.NewRequest(http.MethodPost, e.url("/authorize/consent"), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "text/html")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return e.do(req)
}

func TestConsentPage(t *testing.T) {
	e := pageEnv(t)
	r, _, boxes := openConsent(t, e, "tools:get_weather tools:*")
	checkPageHeaders(t, r.header)
	csp := r.header.Get("Content-Security-Policy")
	for _, want := range []string{"form-action 'self' http://127.0.0.1:48123", "style-src 'sha256-", "base-uri 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(string(r.body), "<script") {
		t.Errorf("the page allows or has inline script")
	}
	body := string(r.body)
	for _, want := range []string{"mcpauthz development client", devauth.DevClientID, resource, devRedirect, ">Approve<", ">Deny<", "dev-user"} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Join(boxes, " ") != "tools:get_weather tools:*" {
		t.Errorf("scope boxes %q", boxes)
	}
}

func TestConsentEscapesClientName(t *testing.T) {
	e := pageEnv(t)
	reg := e.postJSON("/register", `{"client_name":"<script>alert(1)</script>","redirect_uris":["`+devRedirect+`"],"token_endpoint_auth_method":"none"}`)
	id := reg.json(t)["client_id"].(string)
	q := authorizeQuery(id, devRedirect, newPKCE("xss"), "tools:x")
	r := e.get("/authorize?"+q.Encode(), "Accept", "text/html")
	if strings.Contains(string(r.body), "<script>") || !strings.Contains(string(r.body), "&lt;script&gt;") {
		t.Fatalf("client name not escaped: %s", r.body)
	}
}

func TestConsentDecisions(t *testing.T) {
	e := pageEnv(t)
	for _, tc := range []struct {
		name     string
		decision string
		tick     []string
		want     string // granted scope; "" for none
	}{
		{"approve all", "approve", []string{"tools:get_weather", "tools:*"}, "tools:get_weather tools:*"},
		{"approve one", "approve", []string{"tools:*"}, "tools:*"},
		{"approve none", "approve", nil, ""},
		{"a scope that was not requested is ignored", "approve", []string{"tools:get_weather", "admin"}, "tools:get_weather"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, hidden, _ := openConsent(t, e, "tools:get_weather tools:*")
			q := redirectParams(t, submit(e, hidden, tc.decision, tc.tick), devRedirect)
			if q.Get("state") != "state-1234567890" || q.Get("iss") != e.issuer {
				t.Fatalf("redirect %v", q)
			}
			tr := e.postForm("/token", url.Values{"grant_type": {"authorization_code"}, "code": {q.Get("code")}, "code_verifier": {newPKCE("consent").verifier},
				"redirect_uri": {devRedirect}, "client_id": {devauth.DevClientID}}, "")
			if tr.status != 200 {
				t.Fatalf("exchange: %d %s", tr.status, tr.body)
			}
			if got, _ := tr.json(t)["scope"].(string); got != tc.want {
				t.Fatalf("granted %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("deny", func(t *testing.T) {
		_, hidden, _ := openConsent(t, e, "tools:get_weather")
		checkRedirectError(t, e, submit(e, hidden, "deny", []string{"tools:get_weather"}), "access_denied", "denied")
	})
}

func TestConsentFormForgery(t *testing.T) {
	e := pageEnv(t)
	page := func(t *testing.T, r response, status int, want string) {
		t.Helper()
		if r.status != status || r.header.Get("Location") != "" || !strings.Contains(string(r.body), want) {
			t.Fatalf("status %d Location %q body %s; want %d with %q", r.status, r.header.Get("Location"), r.body, status, want)
		}
		checkPageHeaders(t, r.header)
	}
	t.Run("wrong CSRF token", func(t *testing.T) {
		_, hidden, boxes := openConsent(t, e, "tools:get_weather")
		good := hidden.Get("csrf_token")
		hidden.Set("csrf_token", "forged")
		page(t, submit(e, hidden, "approve", boxes), 403, "CSRF token mismatch")
		// The pending request is spent: the genuine token no longer works.
		hidden.Set("csrf_token", good)
		page(t, submit(e, hidden, "approve", boxes), 400, "unknown, was already answered or has expired")
	})
	t.Run("CSRF token of another request", func(t *testing.T) {
		_, a, boxes := openConsent(t, e, "tools:get_weather")
		_, b, _ := openConsent(t, e, "tools:get_weather")
		a.Set("csrf_token", b.Get("csrf_token"))
		page(t, submit(e, a, "approve", boxes), 403, "CSRF token mismatch")
	})
	t.Run("replayed form", func(t *testing.T) {
		_, hidden, boxes := openConsent(t, e, "tools:get_weather")
		redirectParams(t, submit(e, hidden, "approve", boxes), devRedirect)
		page(t, submit(e, hidden, "approve", boxes), 400, "already answered")
	})
	t.Run("unknown authorization", func(t *testing.T) {
		page(t, submit(e, url.Values{"authorization": {"nope"}, "csrf_token": {"nope"}}, "approve", nil), 400, "unknown")
	})
	t.Run("cross-site post", func(t *testing.T) {
		_, hidden, boxes := openConsent(t, e, "tools:get_weather")
		page(t, submit(e, hidden, "approve", boxes, "Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example.com"), 403, "another site")
		// Same-origin posts from the page itself pass.
		redirectParams(t, submit(e, hidden, "approve", boxes, "Sec-Fetch-Site", "same-origin", "Origin", e.issuer), devRedirect)
	})
	t.Run("no decision", func(t *testing.T) {
		_, hidden, boxes := openConsent(t, e, "tools:get_weather")
		page(t, submit(e, hidden, "", boxes), 400, "no decision")
	})
	t.Run("GET is not a submission", func(t *testing.T) {
		r := e.get("/authorize/consent")
		if r.status != http.StatusMethodNotAllowed {
			t.Fatalf("GET consent: %d", r.status)
		}
	})
}

// TestAutoApprovalStaysLocal: auto mode grants at once only when the code
// goes to a loopback redirect; a client with another redirect URI gets the
// consent page, so that no web page can collect codes without the user.
func TestAutoApprovalStaysLocal(t *testing.T) {
	e := newEnv(t) // auto mode
	reg := e.postJSON("/register", `{"client_name":"Remote","redirect_uris":["https://app.example.com/cb","com.example.app:/cb"],"token_endpoint_auth_method":"none"}`)
	id := reg.json(t)["client_id"].(string)
	for _, redirect := range []string{"https://app.example.com/cb", "com.example.app:/cb"} {
		q := authorizeQuery(id, redirect, newPKCE("remote"), "tools:get_weather")
		r := e.get("/authorize?"+q.Encode(), "Accept", "text/html")
		if r.status != http.StatusOK || r.header.Get("Location") != "" {
			t.Fatalf("auto mode, redirect %s: %d Location %q; want the consent page", redirect, r.status, r.header.Get("Location"))
		}
		consentForm(t, r.body)
	}
}
