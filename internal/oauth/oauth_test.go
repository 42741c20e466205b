package oauth

import (
	"strings"
	"testing"
)

func TestParseEndpointURL(t *testing.T) {
	ok := []string{
		"https://idp.example.com",
		"https://idp.example.com/realms/a/protocol/openid-connect/certs?x=1",
		"http://127.0.0.1:8080/jwks",
		"http://127.1.2.3/jwks",
		"http://localhost/jwks",
		"http://LOCALHOST:9/jwks",
		"http://[::1]:9/jwks",
		"http://[::ffff:127.0.0.1]/jwks",
	}
	for _, u := range ok {
		if _, err := ParseEndpointURL(u); err != nil {
			t.Errorf("ParseEndpointURL(%q) = %v, want ok", u, err)
		}
	}
	bad := map[string]string{
		"plain http to another host":    "http://idp.example.com/jwks",
		"http to a private address":     "http://10.0.0.1/jwks",
		"look-alike of localhost":       "http://localhost.example.com/jwks",
		"relative":                      "/jwks",
		"no host":                       "https:///jwks",
		"other scheme":                  "ftp://idp.example.com/jwks",
		"file scheme":                   "file:///etc/passwd",
		"fragment":                      "https://idp.example.com/jwks#x",
		"empty fragment":                "https://idp.example.com/jwks#",
		"user information":              "https://user:secret@idp.example.com/jwks",
		"not a URL":                     "https://idp.example.com/%zz",
		"scheme-relative":               "//idp.example.com/jwks",
		"credentials in a loopback url": "http://u:p@127.0.0.1/jwks",
	}
	for name, u := range bad {
		_, err := ParseEndpointURL(u)
		if err == nil {
			t.Errorf("%s: ParseEndpointURL(%q) = ok, want an error", name, u)
			continue
		}
		if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "u:p") {
			t.Errorf("%s: error %q repeats the user information", name, err)
		}
	}
}

func TestValidScope(t *testing.T) {
	for _, s := range []string{"tools:*", "a", "files:read", "https://api.example.com/read", "!#[]~"} {
		if !ValidScope(s) {
			t.Errorf("ValidScope(%q) = false", s)
		}
	}
	for _, s := range []string{"", "a b", `a"b`, `a\b`, "a\tb", "é", "a\x7f"} {
		if ValidScope(s) {
			t.Errorf("ValidScope(%q) = true", s)
		}
	}
}
