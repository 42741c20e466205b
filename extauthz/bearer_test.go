package extauthz

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

const tok = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"

// TestExtractBearer pins how an Authorization value becomes a token: the
// RFC 6750 grammar, scheme case, separators, several credentials, other
// schemes and bytes a proxy might let through. Where the header comes from
// (query, form, cookies) is the caller's concern and tested with Check.
func TestExtractBearer(t *testing.T) {
	malformedToken := errMalformedBearer
	tests := []struct {
		name string
		in   string
		want string
		err  error
	}{
		{name: "control", in: "Bearer " + tok, want: tok},
		{name: "b64token-all-chars", in: "Bearer aZ09-._~+/==", want: "aZ09-._~+/=="},
		{name: "lower-case-scheme", in: "bearer " + tok, want: tok},
		{name: "upper-case-scheme", in: "BEARER " + tok, want: tok},
		{name: "mixed-case-scheme", in: "BeArEr " + tok, want: tok},
		{name: "two-spaces", in: "Bearer  " + tok, want: tok},
		{name: "many-spaces", in: "Bearer       " + tok, want: tok},
		{name: "scheme-only", in: "Bearer", err: errNoBearer},
		{name: "scheme-and-space", in: "Bearer ", err: errNoBearer},
		{name: "scheme-and-spaces", in: "Bearer    ", err: errNoBearer},
		{name: "tab-separator", in: "Bearer\t" + tok, err: errNoBearer},
		{name: "no-separator", in: "Bearer" + tok, err: errNoBearer},
		{name: "empty-header", in: "", err: errNoBearer},
		{name: "space-inside-token", in: "Bearer abc def", err: malformedToken},
		{name: "comma-inside-token", in: "Bearer abc,def", err: errMalformedHeader},
		{name: "quote", in: `Bearer "abc"`, err: malformedToken},
		{name: "cr", in: "Bearer abc\rdef", err: malformedToken},
		{name: "lf", in: "Bearer abc\n", err: malformedToken},
		{name: "trailing-space", in: "Bearer abc ", err: malformedToken},
		{name: "equals-inside", in: "Bearer ab=c", err: malformedToken},
		{name: "only-equals", in: "Bearer ==", err: malformedToken},
		{name: "colon", in: "Bearer a:b", err: malformedToken},
		{name: "non-ascii", in: "Bearer ab\u00e9", err: malformedToken},
		{name: "two-bearer-values-joined", in: "Bearer a,Bearer b", err: errMalformedHeader},
		{name: "joined-with-space", in: "Bearer a, Bearer b", err: errMalformedHeader},
		{name: "bearer-and-basic-joined", in: "Basic dXNlcjpwYXNz,Bearer " + tok, err: errMalformedHeader},
		{name: "basic", in: "Basic dXNlcjpwYXNz", err: errNoBearer},
		{name: "token-scheme", in: "Token " + tok, err: errNoBearer},
		{name: "dpop-scheme", in: "DPoP " + tok, err: errNoBearer},
		{name: "bearer-prefix-of-longer-scheme", in: "Bearerx " + tok, err: errNoBearer},
		// The caller reads only the Authorization header: a token in the
		// query or the body never reaches extractBearer, and a request
		// without the header is "no token".
		{name: "query-token-only", in: "", err: errNoBearer},
		{name: "form-token-only", in: "", err: errNoBearer},
		{name: "header-token-is-used-as-is", in: "Bearer " + tok, want: tok},
		// Values of look-alike headers or cookies are not bearer
		// credentials even if the caller passed them by mistake.
		{name: "cookie-value", in: "Authorization=Bearer " + tok, err: errNoBearer},
		{name: "invalid-utf8", in: "Bearer ab\xffcd", err: malformedToken},
		{name: "envoy-replacement-char", in: "Bearer ab!cd", err: malformedToken},
		{name: "nul", in: "Bearer ab\x00cd", err: malformedToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := extractBearer(tt.in)
			switch {
			case tt.err == nil:
				if err != nil || got != tt.want {
					t.Fatalf("extractBearer(%q) = %q, %v, want %q", tt.in, got, err, tt.want)
				}
			case tt.err == malformedToken:
				if !errors.Is(err, errMalformedBearer) {
					t.Fatalf("extractBearer(%q) = %q, %v, want errMalformedBearer", tt.in, got, err)
				}
			default:
				if !errors.Is(err, tt.err) {
					t.Fatalf("extractBearer(%q) = %q, %v, want %v", tt.in, got, err, tt.err)
				}
			}
			if err != nil && got != "" {
				t.Fatalf("extractBearer(%q) returned token %q with error", tt.in, got)
			}
		})
	}
}

var b64tokenRE = regexp.MustCompile(`^[A-Za-z0-9\-._~+/]+=*$`)

func FuzzExtractBearer(f *testing.F) {
	for _, s := range []string{
		"Bearer " + tok, "bearer " + tok, "Bearer  " + tok, "Bearer", "Bearer ", "Bearer\t" + tok, "Bearer" + tok,
		"Bearer abc def", "Bearer a,Bearer b", "Basic dXNlcjpwYXNz", "DPoP " + tok, "Bearer ab\xffcd",
		"Bearer aZ09-._~+/==", "Bearer ==", "Bearer a=b", "", " Bearer x", "Bearer x ",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := extractBearer(in)
		if err != nil {
			if got != "" {
				t.Fatalf("token %q returned with error %v", got, err)
			}
			if !errors.Is(err, errNoBearer) && !errors.Is(err, errMalformedHeader) && !errors.Is(err, errMalformedBearer) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if !b64tokenRE.MatchString(got) {
			t.Fatalf("accepted token %q is not a b64token", got)
		}
		if strings.Contains(in, ",") {
			t.Fatalf("accepted a comma-joined value %q", in)
		}
		if len(in) < 7 || !strings.EqualFold(in[:7], "bearer ") {
			t.Fatalf("accepted %q without the Bearer scheme", in)
		}
		if strings.TrimLeft(in[7:], " ") != got {
			t.Fatalf("extractBearer(%q) = %q, want the rest after the spaces", in, got)
		}
	})
}
