package devissuer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/mcpauthz/mcpauthz/internal/jwtauth"
)

const resource = "https://mcp.example.com/mcp"

func TestLoadOrCreateKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	k1, err := LoadOrCreateKey(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if k1.KeyID() == "" || k1.Algorithm().String() != "RS256" || k1.KeyUsage() != "sig" {
		t.Fatalf("key kid=%q alg=%v use=%q", k1.KeyID(), k1.Algorithm(), k1.KeyUsage())
	}
	if runtime.GOOS != "windows" {
		if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
			t.Errorf("dir mode = %v, want 0700", fi.Mode().Perm())
		}
		if fi, _ := os.Stat(filepath.Join(dir, KeyFile)); fi.Mode().Perm() != 0o600 {
			t.Errorf("key file mode = %v, want 0600", fi.Mode().Perm())
		}
	}
	k2, err := LoadOrCreateKey(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if k2.KeyID() != k1.KeyID() {
		t.Fatalf("reload changed the key: %q -> %q", k1.KeyID(), k2.KeyID())
	}
	k3, err := LoadOrCreateKey(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if k3.KeyID() == k1.KeyID() {
		t.Fatal("rotate kept the key")
	}
	k4, err := LoadOrCreateKey(dir, false)
	if err != nil || k4.KeyID() != k3.KeyID() {
		t.Fatalf("after rotate, load = %v, %v; want the rotated key", k4, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("dir has %d entries, want only %s", len(entries), KeyFile)
	}
}

func TestLoadOrCreateKeyRefusesBadFiles(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecKey, _ := jwk.FromRaw(ec)
	ecKey.Set(jwk.KeyIDKey, "e")
	ecJSON, _ := json.Marshal(ecKey)
	good := t.TempDir()
	key, err := LoadOrCreateKey(good, false)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := key.PublicKey()
	pubJSON, _ := json.Marshal(pub)
	tests := map[string]struct {
		data []byte
		mode os.FileMode
		want string
	}{
		"garbage":     {[]byte("not json"), 0o600, "not a JWK"},
		"ec-key":      {ecJSON, 0o600, "not an RSA private key"},
		"public-only": {pubJSON, 0o600, "not an RSA private key"},
	}
	if runtime.GOOS != "windows" {
		b, _ := os.ReadFile(filepath.Join(good, KeyFile))
		tests["world-readable"] = struct {
			data []byte
			mode os.FileMode
			want string
		}{b, 0o644, "accessible by group or others"}
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, KeyFile)
			if err := os.WriteFile(p, tt.data, tt.mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(p, tt.mode)
			if _, err := LoadOrCreateKey(dir, false); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("LoadOrCreateKey = %v, want %q", err, tt.want)
			}
			// rotate replaces even a bad file.
			if _, err := LoadOrCreateKey(dir, true); err != nil {
				t.Fatalf("LoadOrCreateKey(rotate) = %v", err)
			}
		})
	}
}

// newIssuer serves a dev issuer on 127.0.0.1 at path.
func newIssuer(t *testing.T, path string) (*Issuer, *httptest.Server) {
	t.Helper()
	key, err := LoadOrCreateKey(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	iss := &Issuer{Key: key}
	var h http.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	iss.URL = srv.URL + path
	h = iss.Handler()
	return iss, srv
}

func get(t *testing.T, method, u string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, u, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

func TestHandler(t *testing.T) {
	for _, path := range []string{"", "/dev"} {
		t.Run("path="+path, func(t *testing.T) {
			iss, srv := newIssuer(t, path)
			status, body := get(t, http.MethodGet, srv.URL+path+"/jwks")
			if status != http.StatusOK {
				t.Fatalf("GET /jwks = %d", status)
			}
			if strings.Contains(string(body), `"d"`) || strings.Contains(string(body), `"p"`) {
				t.Fatalf("JWKS leaks private parameters: %s", body)
			}
			set, err := jwk.Parse(body)
			if err != nil || set.Len() != 1 {
				t.Fatalf("JWKS = %s, %v", body, err)
			}
			if k, _ := set.Key(0); k.KeyID() != iss.Key.KeyID() {
				t.Fatalf("JWKS kid = %q, want %q", k.KeyID(), iss.Key.KeyID())
			}
			for _, mp := range []string{"/.well-known/oauth-authorization-server" + path, path + "/.well-known/openid-configuration"} {
				status, body := get(t, http.MethodGet, srv.URL+mp)
				var md map[string]any
				if status != http.StatusOK || json.Unmarshal(body, &md) != nil {
					t.Fatalf("GET %s = %d %s", mp, status, body)
				}
				if md["issuer"] != iss.URL || md["jwks_uri"] != srv.URL+path+"/jwks" || md["token_endpoint_auth_methods_supported"] == nil {
					t.Fatalf("metadata = %v", md)
				}
			}
			if status, _ := get(t, http.MethodPost, srv.URL+path+"/jwks"); status != http.StatusMethodNotAllowed {
				t.Errorf("POST /jwks = %d, want 405", status)
			}
			if status, _ := get(t, http.MethodHead, srv.URL+path+"/jwks"); status != http.StatusOK {
				t.Errorf("HEAD /jwks = %d, want 200", status)
			}
			if status, _ := get(t, http.MethodGet, srv.URL+"/nope"); status != http.StatusNotFound {
				t.Errorf("GET /nope = %d, want 404", status)
			}
		})
	}
}

func verifierFor(t *testing.T, c jwtauth.Issuer) *jwtauth.Verifier {
	t.Helper()
	v, err := jwtauth.NewVerifier(jwtauth.Options{Issuers: []jwtauth.Issuer{c}, DefaultAudience: resource})
	if err != nil {
		t.Fatal(err)
	}
	v.Start()
	t.Cleanup(func() { v.Close() })
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := v.WaitReady(wctx); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	return v
}

func TestMintVerify(t *testing.T) {
	iss, _ := newIssuer(t, "/dev")
	opts := MintOptions{
		Subject: "alice", ClientID: "cli", Audience: []string{resource}, Scopes: []string{"tools:read", "tools:call"},
		ExtraClaims: map[string]any{"roles": []string{"admin"}},
	}
	jwksFile := filepath.Join(t.TempDir(), "jwks.json")
	if err := WriteJWKS(jwksFile, iss.Key); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]jwtauth.Issuer{
		"discovery": {Issuer: iss.URL, TokenType: "at+jwt"},
		"jwks_uri":  {Issuer: iss.URL, JWKSURI: iss.JWKSURI(), TokenType: "at+jwt"},
		"jwks_file": {Issuer: iss.URL, JWKSFile: jwksFile, TokenType: "at+jwt"},
	} {
		t.Run(name, func(t *testing.T) {
			v := verifierFor(t, c)
			tok, err := iss.Mint(opts)
			if err != nil {
				t.Fatal(err)
			}
			id, err := v.Verify(context.Background(), tok)
			if err != nil {
				t.Fatalf("Verify(minted token) = %v", err)
			}
			if id.Issuer != iss.URL || id.Subject != "alice" || id.ClientID != "cli" || id.JTI == "" ||
				!slices.Equal(id.Scopes, []string{"tools:call", "tools:read"}) || !slices.Equal(id.Audience, []string{resource}) {
				t.Fatalf("identity = %+v", id)
			}
			if !strings.Contains(string(id.Claims), `"roles":["admin"]`) {
				t.Fatalf("claims = %s", id.Claims)
			}
		})
	}
}

func TestMintShape(t *testing.T) {
	iss, _ := newIssuer(t, "")
	now := time.Unix(1_800_000_000, 0)
	tok, err := iss.Mint(MintOptions{Subject: "bob", Audience: []string{"a", "b"}, Now: now, TTL: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d segments", len(parts))
	}
	var hdr, claims map[string]any
	for i, dst := range []*map[string]any{&hdr, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil || json.Unmarshal(b, dst) != nil {
			t.Fatalf("segment %d: %v", i, err)
		}
	}
	if hdr["typ"] != "at+jwt" || hdr["alg"] != "RS256" || hdr["kid"] != iss.Key.KeyID() {
		t.Fatalf("header = %v", hdr)
	}
	want := map[string]any{"iss": iss.URL, "sub": "bob", "client_id": DefaultClientID, "iat": 1.8e9, "nbf": 1.8e9, "exp": 1.8e9 + 300}
	for k, v := range want {
		if claims[k] != v {
			t.Errorf("claim %s = %v, want %v", k, claims[k], v)
		}
	}
	if aud, _ := claims["aud"].([]any); len(aud) != 2 {
		t.Errorf("aud = %v, want [a b]", claims["aud"])
	}
	if _, ok := claims["scope"]; ok {
		t.Error("scope present without scopes")
	}
	if jti, _ := claims["jti"].(string); len(jti) < 16 {
		t.Errorf("jti = %q", jti)
	}
	tok2, _ := iss.Mint(MintOptions{Subject: "bob", Audience: []string{"a"}, Now: now})
	if tok2 == tok {
		t.Error("two mints gave the same token (jti not random)")
	}
}

func TestMintErrors(t *testing.T) {
	iss, _ := newIssuer(t, "")
	tests := map[string]MintOptions{
		"no-subject":        {Audience: []string{resource}},
		"no-audience":       {Subject: "a"},
		"empty-audience":    {Subject: "a", Audience: []string{""}},
		"scope-with-space":  {Subject: "a", Audience: []string{resource}, Scopes: []string{"a b"}},
		"scope-empty":       {Subject: "a", Audience: []string{resource}, Scopes: []string{""}},
		"extra-overrides":   {Subject: "a", Audience: []string{resource}, ExtraClaims: map[string]any{"iss": "x"}},
		"extra-unencodable": {Subject: "a", Audience: []string{resource}, ExtraClaims: map[string]any{"x": func() {}}},
	}
	for name, opts := range tests {
		if _, err := iss.Mint(opts); err == nil {
			t.Errorf("Mint(%s) = nil error", name)
		}
	}
	pub, _ := iss.Key.PublicKey()
	if _, err := (&Issuer{URL: iss.URL, Key: pub}).Mint(MintOptions{Subject: "a", Audience: []string{resource}}); err == nil {
		t.Error("Mint with a public key succeeded")
	}
}

func TestMintedTokenRejectedElsewhere(t *testing.T) {
	// A dev token is not accepted by a verifier for another audience, nor
	// after it expires.
	iss, _ := newIssuer(t, "")
	v := verifierFor(t, jwtauth.Issuer{Issuer: iss.URL, TokenType: "at+jwt"})
	tok, _ := iss.Mint(MintOptions{Subject: "a", Audience: []string{"https://other.example.com"}})
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, jwtauth.ErrAudience) {
		t.Fatalf("Verify(other audience) = %v, want ErrAudience", err)
	}
	tok, _ = iss.Mint(MintOptions{Subject: "a", Audience: []string{resource}, Now: time.Now().Add(-2 * time.Hour)})
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, jwtauth.ErrExpired) {
		t.Fatalf("Verify(expired) = %v, want ErrExpired", err)
	}
}
