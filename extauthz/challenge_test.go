package extauthz

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/mcpauthz/mcpauthz/internal/oauth"
)

func TestChallengeString(t *testing.T) {
	const rm = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
	tests := []struct {
		name string
		c    Challenge
		want string
	}{
		{
			name: "no token",
			c:    Challenge{ResourceMetadata: rm, Scopes: []string{"mcp:connect", "tools:read"}},
			want: `Bearer resource_metadata="` + rm + `", scope="mcp:connect tools:read"`,
		},
		{
			name: "no token no scopes",
			c:    Challenge{ResourceMetadata: rm},
			want: `Bearer resource_metadata="` + rm + `"`,
		},
		{
			name: "invalid token",
			c:    Challenge{ResourceMetadata: rm, Scopes: []string{"mcp:connect"}, Error: "invalid_token", ErrorDescription: "The access token expired"},
			want: `Bearer resource_metadata="` + rm + `", scope="mcp:connect", error="invalid_token", error_description="The access token expired"`,
		},
		{
			name: "insufficient scope",
			c:    Challenge{ResourceMetadata: rm, Scopes: []string{"files:read", "files:write"}, Error: "insufficient_scope"},
			want: `Bearer error="insufficient_scope", scope="files:read files:write", resource_metadata="` + rm + `"`,
		},
		{
			name: "empty scope list is omitted",
			c:    Challenge{ResourceMetadata: rm, Scopes: []string{}, Error: "insufficient_scope"},
			want: `Bearer error="insufficient_scope", resource_metadata="` + rm + `"`,
		},
		{
			name: "invalid scope tokens dropped",
			c:    Challenge{ResourceMetadata: rm, Scopes: []string{"ok", "bad scope", `q"uote`, `back\slash`, "", "é"}},
			want: `Bearer resource_metadata="` + rm + `", scope="ok"`,
		},
		{
			name: "description cannot break out",
			c:    Challenge{ResourceMetadata: rm, Error: "invalid_token", ErrorDescription: "x\", scope=\"admin\"\r\nSet-Cookie: a=b\\"},
			want: `Bearer resource_metadata="` + rm + `", error="invalid_token", error_description="x , scope  admin   Set-Cookie: a b"`,
		},
		{
			name: "invalid error code dropped",
			c:    Challenge{ResourceMetadata: rm, Error: `bad" code`},
			want: `Bearer resource_metadata="` + rm + `"`,
		},
		{
			name: "quote in metadata URL dropped",
			c:    Challenge{ResourceMetadata: `https://x/"`, Error: "invalid_token"},
			want: `Bearer error="invalid_token"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.c.String(); got != tt.want {
				t.Errorf("Challenge.String() =\n  %s\nwant\n  %s", got, tt.want)
			}
		})
	}
}

// parseChallenge is a strict RFC 9110 §11 parser for one Bearer challenge
// whose auth-params all use quoted-string values (what String emits). It
// rejects anything else.
func parseChallenge(s string) (map[string]string, error) {
	rest, ok := strings.CutPrefix(s, "Bearer")
	if !ok {
		return nil, fmt.Errorf("scheme is not Bearer")
	}
	params := map[string]string{}
	if rest == "" {
		return params, nil
	}
	rest, ok = strings.CutPrefix(rest, " ")
	if !ok {
		return nil, fmt.Errorf("no space after scheme")
	}
	for {
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("missing '=' in %q", rest)
		}
		name := rest[:eq]
		for _, c := range name {
			if !(c >= 'a' && c <= 'z' || c == '_') {
				return nil, fmt.Errorf("bad parameter name %q", name)
			}
		}
		if _, dup := params[name]; dup {
			return nil, fmt.Errorf("duplicate parameter %q", name)
		}
		rest = rest[eq+1:]
		if !strings.HasPrefix(rest, `"`) {
			return nil, fmt.Errorf("unquoted value for %q", name)
		}
		end := strings.IndexByte(rest[1:], '"')
		if end < 0 {
			return nil, fmt.Errorf("unterminated value for %q", name)
		}
		val := rest[1 : 1+end]
		if strings.ContainsAny(val, "\\\r\n") {
			return nil, fmt.Errorf("escape or line break in %q", name)
		}
		params[name] = val
		rest = rest[end+2:]
		if rest == "" {
			return params, nil
		}
		rest, ok = strings.CutPrefix(rest, ", ")
		if !ok {
			return nil, fmt.Errorf("bad separator before %q", rest)
		}
	}
}

// sdkParam reads a challenge parameter with the regex of the TypeScript and
// Python MCP SDKs (extractWWWAuthenticateParams, extract_field_from_www_auth):
// the first match anywhere, no escapes.
func sdkParam(header, name string) string {
	m := regexp.MustCompile(name + `=(?:"([^"]+)"|([^\s,]+))`).FindStringSubmatch(header)
	if m == nil {
		return ""
	}
	return m[1] + m[2]
}

func FuzzChallenge(f *testing.F) {
	f.Add("https://mcp.example.com/.well-known/oauth-protected-resource/mcp", "tools:a tools:b", "insufficient_scope", "need more")
	f.Add("https://m/x", "", "invalid_token", `x", scope="admin"`)
	f.Add("", "a\"b c\\d", "e=f", "\r\nSet-Cookie: x")
	f.Add("https://m/x", "resource_metadata=evil", "invalid_token", "scope=admin error=x")
	f.Fuzz(func(t *testing.T, rm, scopes, errCode, desc string) {
		c := Challenge{ResourceMetadata: rm, Scopes: strings.Split(scopes, " "), Error: errCode, ErrorDescription: desc}
		h := c.String()
		if strings.ContainsAny(h, "\r\n\x00") {
			t.Fatalf("header contains a line break or NUL: %q", h)
		}
		params, err := parseChallenge(h)
		if err != nil {
			t.Fatalf("parseChallenge(%q) = %v", h, err)
		}
		// What strict parsing and the SDK regexes read must agree, and
		// nothing from a value can masquerade as another parameter.
		for name, val := range params {
			if got := sdkParam(h, name); got != val {
				t.Fatalf("SDK regex reads %s=%q, strict parser %q in %q", name, got, val, h)
			}
		}
		if v, ok := params["error_description"]; ok && strings.Contains(v, "=") {
			t.Fatalf("error_description contains '=': %q", v)
		}
		if v, ok := params["scope"]; ok {
			for _, s := range strings.Split(v, " ") {
				if !oauth.ValidScope(s) || strings.Contains(s, "=") {
					t.Fatalf("invalid scope token %q in %q", s, h)
				}
			}
		}
		if v, ok := params["resource_metadata"]; ok && v != rm || !ok && sanitizeURI(rm) != "" {
			t.Fatalf("resource_metadata = %q, want %q", v, rm)
		}
	})
}
