package jwtauth

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

const tok = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"

// TestExtractBearer covers table B of security-cases.md. Rows about where
// the header comes from (B-08..B-12) are properties of the caller; the
// rows here pin what ExtractBearer contributes to them.
func TestExtractBearer(t *testing.T) {
	malformedToken := errors.Join(ErrInvalidToken, ErrMalformed) // marker
	tests := []struct {
		name string
		in   string
		want string
		err  error
	}{
		{name: "B-01/control", in: "Bearer " + tok, want: tok},
		{name: "B-01/b64token-all-chars", in: "Bearer aZ09-._~+/==", want: "aZ09-._~+/=="},
		{name: "B-02/lower-case-scheme", in: "bearer " + tok, want: tok},
		{name: "B-02/upper-case-scheme", in: "BEARER " + tok, want: tok},
		{name: "B-02/mixed-case-scheme", in: "BeArEr " + tok, want: tok},
		{name: "B-03/two-spaces", in: "Bearer  " + tok, want: tok},
		{name: "B-03/many-spaces", in: "Bearer       " + tok, want: tok},
		{name: "B-04/scheme-only", in: "Bearer", err: ErrNoBearer},
		{name: "B-04/scheme-and-space", in: "Bearer ", err: ErrNoBearer},
		{name: "B-04/scheme-and-spaces", in: "Bearer    ", err: ErrNoBearer},
		{name: "B-04/tab-separator", in: "Bearer\t" + tok, err: ErrNoBearer},
		{name: "B-04/no-separator", in: "Bearer" + tok, err: ErrNoBearer},
		{name: "B-04/empty-header", in: "", err: ErrNoBearer},
		{name: "B-05/space-inside-token", in: "Bearer abc def", err: malformedToken},
		{name: "B-05/comma-inside-token", in: "Bearer abc,def", err: ErrMalformedHeader},
		{name: "B-05/quote", in: `Bearer "abc"`, err: malformedToken},
		{name: "B-05/cr", in: "Bearer abc\rdef", err: malformedToken},
		{name: "B-05/lf", in: "Bearer abc\n", err: malformedToken},
		{name: "B-05/trailing-space", in: "Bearer abc ", err: malformedToken},
		{name: "B-05/equals-inside", in: "Bearer ab=c", err: malformedToken},
		{name: "B-05/only-equals", in: "Bearer ==", err: malformedToken},
		{name: "B-05/colon", in: "Bearer a:b", err: malformedToken},
		{name: "B-05/non-ascii", in: "Bearer ab\u00e9", err: malformedToken},
		{name: "B-06/two-bearer-values-joined", in: "Bearer a,Bearer b", err: ErrMalformedHeader},
		{name: "B-06/joined-with-space", in: "Bearer a, Bearer b", err: ErrMalformedHeader},
		{name: "B-06/bearer-and-basic-joined", in: "Basic dXNlcjpwYXNz,Bearer " + tok, err: ErrMalformedHeader},
		{name: "B-07/basic", in: "Basic dXNlcjpwYXNz", err: ErrNoBearer},
		{name: "B-07/token-scheme", in: "Token " + tok, err: ErrNoBearer},
		{name: "B-07/dpop-scheme", in: "DPoP " + tok, err: ErrNoBearer},
		{name: "B-07/bearer-prefix-of-longer-scheme", in: "Bearerx " + tok, err: ErrNoBearer},
		// B-08..B-10: the caller reads only the Authorization header; a
		// token in the query or the body never reaches ExtractBearer, and
		// a request without the header is "no token".
		{name: "B-08/query-token-only", in: "", err: ErrNoBearer},
		{name: "B-09/form-token-only", in: "", err: ErrNoBearer},
		{name: "B-10/header-token-is-used-as-is", in: "Bearer " + tok, want: tok},
		// B-11: values of look-alike headers or cookies are not bearer
		// credentials even if the caller passed them by mistake.
		{name: "B-11/cookie-value", in: "Authorization=Bearer " + tok, err: ErrNoBearer},
		// B-12 (header map keys are lower-case) is a property of the
		// caller's lookup and is tested in extauthz.
		{name: "B-13/invalid-utf8", in: "Bearer ab\xffcd", err: malformedToken},
		{name: "B-13/envoy-replacement-char", in: "Bearer ab!cd", err: malformedToken},
		{name: "B-13/nul", in: "Bearer ab\x00cd", err: malformedToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ExtractBearer(tt.in)
			switch {
			case tt.err == nil:
				if err != nil || got != tt.want {
					t.Fatalf("ExtractBearer(%q) = %q, %v, want %q", tt.in, got, err, tt.want)
				}
			case tt.err == malformedToken:
				if !errors.Is(err, ErrInvalidToken) || !errors.Is(err, ErrMalformed) || Reason(err) != "malformed_token" {
					t.Fatalf("ExtractBearer(%q) = %q, %v, want ErrInvalidToken+ErrMalformed", tt.in, got, err)
				}
			default:
				if !errors.Is(err, tt.err) || errors.Is(err, ErrInvalidToken) {
					t.Fatalf("ExtractBearer(%q) = %q, %v, want %v", tt.in, got, err, tt.err)
				}
			}
			if err != nil && got != "" {
				t.Fatalf("ExtractBearer(%q) returned token %q with error", tt.in, got)
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
		got, err := ExtractBearer(in)
		if err != nil {
			if got != "" {
				t.Fatalf("token %q returned with error %v", got, err)
			}
			if !errors.Is(err, ErrNoBearer) && !errors.Is(err, ErrMalformedHeader) && !(errors.Is(err, ErrInvalidToken) && errors.Is(err, ErrMalformed)) {
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
			t.Fatalf("ExtractBearer(%q) = %q, want the rest after the spaces", in, got)
		}
	})
}
