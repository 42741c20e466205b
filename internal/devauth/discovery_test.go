package devauth_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/mcpauthz/mcpauthz/internal/devauth"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestMetadata compares the discovery document with a golden file (the
// issuer replaced by ISSUER), served identically at every well-known path.
func TestMetadata(t *testing.T) {
	e := newEnv(t)
	r := e.get("/.well-known/oauth-authorization-server")
	if r.status != 200 || r.header.Get("Content-Type") != "application/json" || r.header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("status %d, headers %v", r.status, r.header)
	}
	got := bytes.ReplaceAll(r.body, []byte(e.issuer), []byte("ISSUER"))
	const golden = "testdata/metadata.golden.json"
	if *updateGolden {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(string(want), string(got)); d != "" {
		t.Errorf("metadata (-golden +got):\n%s", d)
	}
	if oidc := e.get("/.well-known/openid-configuration"); !bytes.Equal(oidc.body, r.body) {
		t.Errorf("OpenID configuration differs: %s", oidc.body)
	}
}

// TestMetadataWithIssuerPath: an issuer with a path is discovered at the
// three URLs the MCP SDKs probe, and its endpoints live under the path.
func TestMetadataWithIssuerPath(t *testing.T) {
	e := newEnv(t, func(o *devauth.Options) { o.Issuer += "/tenant/a" })
	iss := e.issuer + "/tenant/a" // e.issuer is the listener's URL
	for _, path := range []string{"/.well-known/oauth-authorization-server/tenant/a", "/tenant/a/.well-known/openid-configuration", "/.well-known/openid-configuration/tenant/a"} {
		r := e.get(path)
		if r.status != 200 {
			t.Fatalf("%s: %d", path, r.status)
		}
		m := r.json(t)
		if m["issuer"] != iss || m["token_endpoint"] != iss+"/token" {
			t.Fatalf("%s: %v", path, m)
		}
	}
	if r := e.get("/.well-known/oauth-authorization-server"); r.status != 404 {
		t.Errorf("root metadata of a path issuer: %d", r.status)
	}
	// The whole flow works under the path.
	e.issuer = iss
	p := newPKCE("path")
	if r := e.exchange(e.code(p, "tools:x"), p); r.status != 200 {
		t.Fatalf("exchange under the issuer path: %d %s", r.status, r.body)
	}
}

func TestJWKS(t *testing.T) {
	e := newEnv(t)
	r := e.get("/jwks")
	if r.status != 200 || r.header.Get("Cache-Control") != "public, max-age=300" {
		t.Fatalf("%d %v", r.status, r.header)
	}
	set, err := jwk.Parse(r.body)
	if err != nil {
		t.Fatal(err)
	}
	k, ok := set.Key(0)
	if set.Len() != 1 || !ok || k.KeyID() != testKey.KeyID() {
		t.Fatalf("key set %s", r.body)
	}
	var raw map[string]any
	if err := json.Unmarshal(r.body, &raw); err != nil {
		t.Fatal(err)
	}
	for _, priv := range []string{`"d"`, `"p"`, `"q"`, `"dp"`, `"dq"`, `"qi"`} {
		if bytes.Contains(r.body, []byte(priv+":")) {
			t.Fatalf("the key set publishes private member %s", priv)
		}
	}
	if e.srv.JWKSURI() != e.issuer+"/jwks" || e.srv.Issuer() != e.issuer {
		t.Errorf("JWKSURI %q Issuer %q", e.srv.JWKSURI(), e.srv.Issuer())
	}
}

func TestRouting(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		method, path string
		status       int
		allow        string
	}{
		{"GET", "/token", 405, "POST"},
		{"GET", "/register", 405, "POST"},
		{"POST", "/authorize", 405, "GET"},
		{"POST", "/jwks", 405, "GET"},
		{"GET", "/nope", 404, ""},
	} {
		req, _ := http.NewRequest(tc.method, e.url(tc.path), nil)
		r := e.do(req)
		if r.status != tc.status || r.header.Get("Allow") != tc.allow || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
			t.Errorf("%s %s: %d Allow %q type %q", tc.method, tc.path, r.status, r.header.Get("Allow"), r.header.Get("Content-Type"))
		}
	}
	// CORS preflight of a browser-based client (MCP Inspector).
	req, _ := http.NewRequest(http.MethodOptions, e.url("/token"), nil)
	req.Header.Set("Origin", "http://localhost:6274")
	req.Header.Set("Access-Control-Request-Method", "POST")
	r := e.do(req)
	if r.status != 204 || r.header.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(r.header.Get("Access-Control-Allow-Headers"), "Authorization") ||
		!strings.Contains(r.header.Get("Access-Control-Allow-Methods"), "POST") {
		t.Errorf("preflight: %d %v", r.status, r.header)
	}
	// DNS rebinding: a request for another host name is refused.
	req, _ = http.NewRequest(http.MethodGet, e.url("/.well-known/oauth-authorization-server"), nil)
	req.Host = "rebind.example.com:" + strings.Split(e.issuer, ":")[2]
	if r := e.do(req); r.status != http.StatusMisdirectedRequest || !strings.Contains(string(r.body), "only requests for") {
		t.Errorf("request for another host: %d %s", r.status, r.body)
	}
	// Introspection is for servers: no CORS.
	if r := e.postForm("/introspect", nil, rsID+":"+rsSecret); r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("introspection allows browsers")
	}
}

func TestListen(t *testing.T) {
	ctx := context.Background()
	for _, addr := range []string{"0.0.0.0:0", "192.0.2.1:0", ":0", "example.com:0"} {
		if ln, err := devauth.Listen(ctx, addr, false); err == nil {
			ln.Close()
			t.Errorf("Listen(%q) bound a non-loopback address", addr)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "localhost:0"} {
		ln, err := devauth.Listen(ctx, addr, false)
		if err != nil {
			t.Errorf("Listen(%q): %v", addr, err)
			continue
		}
		ln.Close()
	}
}
