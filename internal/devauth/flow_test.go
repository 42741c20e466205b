package devauth_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpauthz/mcpauthz/internal/devauth"
	"github.com/mcpauthz/mcpauthz/internal/jwtauth"
)

// sdkClient acts as the MCP TypeScript SDK's OAuth client does: discovery,
// dynamic registration, authorization with PKCE and resource, token
// exchange, refresh, step-up, revocation. secrets collects every credential
// it sees, for the log check.
type sdkClient struct {
	t        *testing.T
	e        *env
	md       map[string]any
	clientID string
	redirect string
	secrets  []string
}

func (c *sdkClient) endpoint(name string) string {
	s, _ := c.md[name].(string)
	if s == "" {
		c.t.Fatalf("metadata has no %s", name)
	}
	return s
}

// authorize runs one authorization (answering the consent page when the
// server shows one, ticking only keep when keep is not nil) and returns
// the code.
func (c *sdkClient) authorize(scope string, p pkcePair, keep []string) (code string, granted []string) {
	c.t.Helper()
	q := authorizeQuery(c.clientID, c.redirect, p, scope)
	r := c.e.get(c.endpoint("authorization_endpoint")+"?"+q.Encode(), "Accept", "text/html")
	if r.status == http.StatusOK {
		hidden, boxes := consentForm(c.t, r.body)
		if got, want := boxes, strings.Fields(scope); !slices.Equal(got, want) {
			c.t.Fatalf("consent page scopes = %q, want %q", got, want)
		}
		if keep != nil {
			boxes = keep
		}
		form := url.Values{"authorization": {hidden.Get("authorization")}, "csrf_token": {hidden.Get("csrf_token")}, "decision": {"approve"}, "scope": boxes}
		r = c.e.postForm("/authorize/consent", form, "")
		granted = boxes
	} else {
		granted = strings.Fields(scope)
	}
	params := redirectParams(c.t, r, c.redirect)
	if params.Get("state") != "state-1234567890" || params.Get("iss") != c.e.issuer || params.Get("error") != "" {
		c.t.Fatalf("authorization response %v: want state, iss=%s and no error", params, c.e.issuer)
	}
	code = params.Get("code")
	c.secrets = append(c.secrets, code, p.verifier)
	return code, granted
}

type tokens struct {
	Access    string `json:"access_token"`
	Refresh   string `json:"refresh_token"`
	TokenType string `json:"token_type"`
	ExpiresIn int    `json:"expires_in"`
	Scope     string `json:"scope"`
}

func (c *sdkClient) token(form url.Values) tokens {
	c.t.Helper()
	r := c.e.postForm(c.endpoint("token_endpoint"), form, "")
	if r.status != http.StatusOK {
		c.t.Fatalf("token: status %d: %s", r.status, r.body)
	}
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		c.t.Errorf("token response Cache-Control = %q, want no-store", cc)
	}
	var tk tokens
	if err := json.Unmarshal(r.body, &tk); err != nil {
		c.t.Fatal(err)
	}
	if tk.Access == "" || tk.Refresh == "" || tk.TokenType != "Bearer" {
		c.t.Fatalf("token response %s: want access and refresh tokens of type Bearer", r.body)
	}
	c.secrets = append(c.secrets, tk.Access, tk.Refresh)
	return tk
}

func (c *sdkClient) exchange(code string, p pkcePair) tokens {
	return c.token(url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {p.verifier},
		"redirect_uri": {c.redirect}, "client_id": {c.clientID}, "resource": {resource},
	})
}

func (c *sdkClient) refresh(rt string) tokens {
	return c.token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {c.clientID}, "resource": {resource}})
}

// introspect asks as the resource server.
func introspect(t testing.TB, e *env, token string) map[string]any {
	t.Helper()
	r := e.postForm("/introspect", url.Values{"token": {token}}, rsID+":"+rsSecret)
	if r.status != http.StatusOK {
		t.Fatalf("introspect: status %d: %s", r.status, r.body)
	}
	return r.json(t)
}

// TestWholeFlow runs what an MCP client does against the server, in both
// approval modes, and checks that mcpauthz's own verifier accepts the
// tokens.
func TestWholeFlow(t *testing.T) {
	for _, mode := range []devauth.ApproveMode{devauth.ApproveAuto, devauth.ApprovePage} {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, func(o *devauth.Options) { o.Approve = mode })
			c := &sdkClient{t: t, e: e, redirect: "http://127.0.0.1:33418/callback", secrets: []string{rsSecret, machineSecret}}

			// Discovery, as the SDK does it: RFC 8414 first.
			r := e.get("/.well-known/oauth-authorization-server")
			if r.status != http.StatusOK {
				t.Fatalf("metadata: %d", r.status)
			}
			c.md = r.json(t)
			if c.md["issuer"] != e.issuer {
				t.Fatalf("issuer = %v, want %s", c.md["issuer"], e.issuer)
			}

			// Dynamic registration with the scope of the first challenge.
			reg := e.postJSON(c.endpoint("registration_endpoint"), `{"client_name":"Test MCP client","redirect_uris":["`+c.redirect+`"],
				"grant_types":["authorization_code","refresh_token"],"response_types":["code"],"token_endpoint_auth_method":"none","scope":"tools:get_weather"}`)
			if reg.status != http.StatusCreated {
				t.Fatalf("register: %d %s", reg.status, reg.body)
			}
			c.clientID, _ = reg.json(t)["client_id"].(string)

			// First authorization.
			p1 := newPKCE("first")
			code, _ := c.authorize("tools:get_weather", p1, nil)
			t1 := c.exchange(code, p1)
			if t1.Scope != "tools:get_weather" || t1.ExpiresIn < 3590 || t1.ExpiresIn > 3600 {
				t.Errorf("token response scope %q expires_in %d", t1.Scope, t1.ExpiresIn)
			}

			// mcpauthz accepts the token: JWKS fetched from the server, typ
			// at+jwt required.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			v, err := jwtauth.NewVerifier(jwtauth.Options{
				Issuers:         []jwtauth.Issuer{{Issuer: e.issuer, JWKSURI: c.endpoint("jwks_uri"), TokenType: "at+jwt"}},
				DefaultAudience: resource,
			})
			if err != nil {
				t.Fatal(err)
			}
			v.Start()
			defer v.Close()
			wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
			defer wcancel()
			if err := v.WaitReady(wctx); err != nil {
				t.Fatal(err)
			}
			id, err := v.Verify(ctx, t1.Access)
			if err != nil {
				t.Fatalf("mcpauthz refuses the token: %v", err)
			}
			if id.Subject != devauth.DefaultSubject || id.ClientID != c.clientID || !slices.Equal(id.Audience, []string{resource}) ||
				!slices.Equal(id.Scopes, []string{"tools:get_weather"}) || id.Issuer != e.issuer || id.JTI == "" {
				t.Fatalf("identity %+v", id)
			}
			checkJWT(t, t1.Access, c.clientID, "tools:get_weather")

			// Refresh: rotated, same grant.
			t2 := c.refresh(t1.Refresh)
			if t2.Refresh == t1.Refresh || t2.Access == t1.Access || t2.Scope != "tools:get_weather" {
				t.Fatalf("refresh did not rotate: %+v", t2)
			}
			if _, err := v.Verify(ctx, t2.Access); err != nil {
				t.Fatalf("refreshed token refused: %v", err)
			}
			if got := introspect(t, e, t1.Access)["active"]; got != false {
				t.Errorf("access token replaced by a refresh: active = %v, want false", got)
			}

			// Step-up after a 403: more scopes than registered, a fresh
			// authorization. On the page, one scope is left unticked.
			p2 := newPKCE("second")
			var keep []string
			want := "tools:get_weather tools:delete_file"
			if mode == devauth.ApprovePage {
				keep = []string{"tools:delete_file"}
				want = "tools:delete_file"
			}
			code, _ = c.authorize("tools:get_weather tools:delete_file", p2, keep)
			t3 := c.exchange(code, p2)
			if t3.Scope != want {
				t.Fatalf("step-up granted %q, want %q", t3.Scope, want)
			}
			id, err = v.Verify(ctx, t3.Access)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(id.Scopes, " "); got != strings.Join(sorted(strings.Fields(want)), " ") {
				t.Fatalf("step-up token scopes %q, want %q", got, want)
			}

			// Introspection of a live token: its claims.
			in := introspect(t, e, t3.Access)
			if in["active"] != true || in["client_id"] != c.clientID || in["sub"] != devauth.DefaultSubject ||
				in["aud"] != resource || in["scope"] != want || in["token_type"] != "Bearer" || in["iss"] != e.issuer {
				t.Fatalf("introspection %v", in)
			}

			// Revoke the step-up grant: both its tokens go inactive, the
			// first grant lives on.
			if r := e.postForm(c.endpoint("revocation_endpoint"), url.Values{"token": {t3.Access}, "client_id": {c.clientID}}, ""); r.status != http.StatusOK {
				t.Fatalf("revoke: %d %s", r.status, r.body)
			}
			if in := introspect(t, e, t3.Access); !cmp.Equal(in, map[string]any{"active": false}) {
				t.Errorf("revoked access token: %v", in)
			}
			if in := introspect(t, e, t3.Refresh); !cmp.Equal(in, map[string]any{"active": false}) {
				t.Errorf("refresh token of a revoked grant: %v", in)
			}
			if in := introspect(t, e, t2.Access); in["active"] != true {
				t.Errorf("the other grant's token: %v", in)
			}
			if in := introspect(t, e, t2.Refresh); in["active"] != true || in["token_use"] != "refresh_token" {
				t.Errorf("the other grant's refresh token: %v", in)
			}

			// Nothing secret was logged.
			logs := e.logs.String()
			if !strings.Contains(logs, "token issued") {
				t.Fatalf("no log lines: %s", logs)
			}
			for _, s := range c.secrets {
				if s != "" && strings.Contains(logs, s) {
					t.Errorf("log contains a secret %.12s...", s)
				}
			}
		})
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// checkJWT checks the RFC 9068 shape of an access token.
func checkJWT(t *testing.T, tok, clientID, scope string) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWS: %q", tok)
	}
	var hdr, claims map[string]any
	for i, v := range []*map[string]any{&hdr, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	if hdr["typ"] != "at+jwt" || hdr["alg"] != "RS256" || hdr["kid"] != testKey.KeyID() {
		t.Errorf("header %v", hdr)
	}
	for _, name := range []string{"iss", "sub", "aud", "scope", "client_id", "jti", "iat", "exp"} {
		if _, ok := claims[name]; !ok {
			t.Errorf("claim %s missing: %v", name, claims)
		}
	}
	if claims["aud"] != resource || claims["client_id"] != clientID || claims["scope"] != scope {
		t.Errorf("claims %v", claims)
	}
	// Exactly the lifespan, whatever fraction of a second the grant began at.
	if exp, iat := claims["exp"].(float64), claims["iat"].(float64); exp-iat != 3600 {
		t.Errorf("exp - iat = %v, want the 1h TTL", exp-iat)
	}
}

// TestOpaqueAccessTokens: with OpaqueAccessTokens the access token is no
// JWT; introspection describes it from the grant, and after revocation
// (RFC 7009) it is inactive: revocation shown end to end for a resource
// server that introspects.
func TestOpaqueAccessTokens(t *testing.T) {
	e := newEnv(t, func(o *devauth.Options) { o.OpaqueAccessTokens = true })
	c := &sdkClient{t: t, e: e, clientID: otherPublicID, redirect: devauth.DevClientRedirectURIs[0]}
	c.md = e.get("/.well-known/oauth-authorization-server").json(t)
	p := newPKCE("opaque")
	code, _ := c.authorize("tools:get_weather", p, nil)
	tk := c.exchange(code, p)
	if strings.Count(tk.Access, ".") == 2 {
		t.Fatalf("access token %.20s… is a JWS, want an opaque token", tk.Access)
	}
	in := introspect(t, e, tk.Access)
	exp, _ := in["exp"].(float64)
	iat, _ := in["iat"].(float64)
	if in["active"] != true || in["sub"] != devauth.DefaultSubject || in["client_id"] != otherPublicID ||
		in["scope"] != "tools:get_weather" || in["token_type"] != "Bearer" || in["token_use"] != "access_token" ||
		in["iss"] != e.issuer || fmt.Sprint(in["aud"]) != "["+resource+"]" || exp-iat < 3590 || exp-iat > 3600 {
		t.Fatalf("introspection of an active opaque token: %v", in)
	}
	if r := e.postForm("/revoke", url.Values{"token": {tk.Access}, "client_id": {otherPublicID}}, ""); r.status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if in := introspect(t, e, tk.Access); in["active"] != false || len(in) != 1 {
		t.Errorf("introspection after revocation = %v, want exactly {active: false}", in)
	}
}
