package devauth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/mcpauthz/mcpauthz/internal/devauth"
)

func TestParseApproveMode(t *testing.T) {
	for in, want := range map[string]devauth.ApproveMode{"page": devauth.ApprovePage, "auto": devauth.ApproveAuto} {
		if got, err := devauth.ParseApproveMode(in); err != nil || got != want {
			t.Errorf("ParseApproveMode(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "Auto", "yes"} {
		if _, err := devauth.ParseApproveMode(in); err == nil {
			t.Errorf("ParseApproveMode(%q) accepted", in)
		}
	}
}

func TestOptionsValidation(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := jwk.FromRaw(ec)
	if err != nil {
		t.Fatal(err)
	}
	ecKey.Set(jwk.KeyIDKey, "ec")
	noKid, err := jwk.FromRaw(mustRaw(t))
	if err != nil {
		t.Fatal(err)
	}
	base := func() devauth.Options {
		return devauth.Options{Issuer: "http://127.0.0.1:9193", Key: testKey, Resources: []string{resource}}
	}
	for _, tc := range []struct {
		name string
		mod  func(*devauth.Options)
		want string // "" means valid
	}{
		{"minimal", func(*devauth.Options) {}, ""},
		{"localhost issuer", func(o *devauth.Options) { o.Issuer = "http://localhost:9193" }, ""},
		{"IPv6 loopback issuer", func(o *devauth.Options) { o.Issuer = "http://[::1]:9193" }, ""},
		{"https issuer anywhere", func(o *devauth.Options) { o.Issuer = "https://auth.example.com" }, ""},
		{"remote http issuer allowed", func(o *devauth.Options) { o.Issuer, o.AllowRemote = "http://mcpauthz:9193", true }, ""},
		{"no issuer", func(o *devauth.Options) { o.Issuer = "" }, "issuer is required"},
		{"remote http issuer", func(o *devauth.Options) { o.Issuer = "http://mcpauthz:9193" }, "loopback"},
		{"issuer with query", func(o *devauth.Options) { o.Issuer = "http://127.0.0.1:9193?x" }, "no query"},
		{"issuer with fragment", func(o *devauth.Options) { o.Issuer = "http://127.0.0.1:9193#x" }, "no query or fragment"},
		{"issuer with trailing slash", func(o *devauth.Options) { o.Issuer = "http://127.0.0.1:9193/" }, "trailing slash"},
		{"issuer not http", func(o *devauth.Options) { o.Issuer = "ftp://127.0.0.1" }, "http(s) URL"},
		{"no key", func(o *devauth.Options) { o.Key = nil }, "key is required"},
		{"EC key", func(o *devauth.Options) { o.Key = ecKey }, "RSA private key"},
		{"key without kid", func(o *devauth.Options) { o.Key = noKid }, "no kid"},
		{"no resources", func(o *devauth.Options) { o.Resources = nil }, "at least one resource"},
		{"relative resource", func(o *devauth.Options) { o.Resources = []string{"/mcp"} }, "absolute"},
		{"resource with fragment", func(o *devauth.Options) { o.Resources = []string{"https://a.example.com/mcp#x"} }, "fragment"},
		{"bad scope", func(o *devauth.Options) { o.Scopes = []string{"a b"} }, "scope token"},
		{"bad approval mode", func(o *devauth.Options) { o.Approve = "yes" }, "approve"},
		{"negative TTL", func(o *devauth.Options) { o.TokenTTL = -time.Second }, "token TTL must be positive"},
		{"client without ID", func(o *devauth.Options) { o.Clients = []devauth.Client{{Secret: "s"}} }, "ID is required"},
		{"URL client ID", func(o *devauth.Options) { o.Clients = []devauth.Client{{ID: "https://a.example.com/c", Secret: "s"}} }, "URL-shaped"},
		{"duplicate client", func(o *devauth.Options) { o.Clients = []devauth.Client{{ID: "a", Secret: "s"}, {ID: "a", Secret: "t"}} }, "duplicate"},
		{"public introspecting client", func(o *devauth.Options) { o.Clients = []devauth.Client{{ID: "a", Introspect: true}} }, "confidential"},
		{"public machine client", func(o *devauth.Options) { o.Clients = []devauth.Client{{ID: "a"}} }, "confidential"},
		{"bad client redirect", func(o *devauth.Options) {
			o.Clients = []devauth.Client{{ID: "a", RedirectURIs: []string{"http://app.example.com/cb"}}}
		}, "loopback"},
		{"bad client scope", func(o *devauth.Options) { o.Clients = []devauth.Client{{ID: "a", Secret: "s", Scopes: []string{`"`}}} }, "scope"},
		{"replace the dev client", func(o *devauth.Options) {
			o.Clients = []devauth.Client{{ID: devauth.DevClientID, RedirectURIs: []string{"http://127.0.0.1/cb"}}}
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base()
			tc.mod(&o)
			_, err := devauth.New(o)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("New error %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func mustRaw(t *testing.T) any {
	var raw any
	if err := testKey.Raw(&raw); err != nil {
		t.Fatal(err)
	}
	return raw
}
