package devauth

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/oauth"
)

func TestBoundedMap(t *testing.T) {
	t0 := time.Unix(1000, 0)
	m := newBoundedMap[int](3)
	for i := range 3 {
		m.put(t0, fmt.Sprint(i), i, t0.Add(time.Duration(i+1)*time.Minute))
	}
	m.put(t0, "3", 3, t0.Add(10*time.Minute)) // full: the oldest goes
	if _, ok := m.get(t0, "0"); ok || m.len() != 3 {
		t.Fatalf("oldest entry not evicted (len %d)", m.len())
	}
	if _, ok := m.get(t0.Add(2*time.Minute), "1"); ok {
		t.Fatal("an entry was served at its expiry")
	}
	if v, ok := m.get(t0.Add(2*time.Minute), "2"); !ok || v != 2 {
		t.Fatalf("live entry: %v %v", v, ok)
	}
	m.set("2", 20)
	if v, _ := m.get(t0, "2"); v != 20 {
		t.Fatalf("set: %v", v)
	}
	// An insert sweeps the expired entries at the front.
	m.put(t0.Add(5*time.Minute), "4", 4, time.Time{})
	if m.len() != 2 {
		t.Fatalf("len %d after the sweep, want 2 (3 and 4)", m.len())
	}
	m.removeIf(func(v int) bool { return v == 3 })
	if _, ok := m.get(t0, "3"); ok {
		t.Fatal("removeIf kept the entry")
	}
	if _, ok := m.get(t0.Add(1000*time.Hour), "4"); !ok {
		t.Fatal("an entry without expiry expired")
	}
}

// TestStoreBounds: registrations and pending consents beyond the caps evict
// the oldest instead of growing.
func TestStoreBounds(t *testing.T) {
	st := newStore(nil, time.Hour, time.Hour)
	md := clientMetadata{RedirectURIs: []string{"http://127.0.0.1/cb"}, AuthMethod: authNone}
	if e := md.check(); e != nil {
		t.Fatal(e)
	}
	for i := range maxDynamicClients + 10 {
		st.addClient(newOAuthClient(fmt.Sprint("c", i), nil, md, nil, nil))
	}
	if n := st.dynamic.len(); n != maxDynamicClients {
		t.Fatalf("%d clients kept, want %d", n, maxDynamicClients)
	}
	if _, err := st.client(t.Context(), "c0"); err == nil {
		t.Fatal("the oldest client was not evicted")
	}
	if _, err := st.client(t.Context(), fmt.Sprint("c", maxDynamicClients+9)); err != nil {
		t.Fatal(err)
	}
}

func TestRedirectMatches(t *testing.T) {
	reg := []string{"http://127.0.0.1/cb", "http://localhost:3000/cb?x=1", "https://app.example.com/cb", "com.example.app:/oauth"}
	for _, tc := range []struct {
		uri string
		ok  bool
	}{
		{"http://127.0.0.1/cb", true},
		{"http://127.0.0.1:1234/cb", true},
		{"http://localhost:9/cb?x=1", true},
		{"http://LOCALHOST:9/cb?x=1", true},
		{"http://localhost:9/cb", false},
		{"http://127.0.0.1:1234/cb/", false},
		{"http://127.0.0.1:1234/CB", false},
		{"http://[::1]:1234/cb", false},
		{"https://127.0.0.1:1234/cb", false},
		{"https://app.example.com/cb", true},
		{"https://app.example.com:443/cb", false},
		{"https://APP.example.com/cb", false},
		{"com.example.app:/oauth", true},
		{"com.example.app:/oauth2", false},
		{"http://127.0.0.1:1234/cb#f", false},
		{"http://u:p@127.0.0.1:1234/cb", false},
		{"http://127.0.0.1:1234/%63b", false},
	} {
		if got := redirectMatches(reg, tc.uri); got != tc.ok {
			t.Errorf("redirectMatches(%q) = %v, want %v", tc.uri, got, tc.ok)
		}
	}
}

// FuzzRegistration feeds arbitrary bodies to the registration parser: it
// must not panic, and what it accepts must satisfy the server's
// invariants.
func FuzzRegistration(f *testing.F) {
	for _, s := range []string{
		`{"redirect_uris":["http://127.0.0.1:1/cb"],"token_endpoint_auth_method":"none"}`,
		`{"grant_types":["client_credentials"],"token_endpoint_auth_method":"client_secret_post","scope":"a b"}`,
		`{"redirect_uris":["cursor://x/cb"],"response_types":["code"],"client_name":"é"}`,
		`{"redirect_uris":["https://a.example.com/cb"],"redirect_uris":[]}`,
		`[]`, `null`, `{"redirect_uris":"x"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var md clientMetadata
		if e := parseRegistration(body, &md); e != nil {
			if e.code != errInvalidClientMetadata && e.code != errInvalidRedirectURI || e.desc == "" {
				t.Fatalf("error %+v", e)
			}
			return
		}
		switch md.AuthMethod {
		case authNone, authBasic, authPost:
		default:
			t.Fatalf("accepted auth method %q", md.AuthMethod)
		}
		code := false
		for _, g := range md.GrantTypes {
			switch g {
			case GrantAuthorizationCode:
				code = true
			case GrantRefreshToken, GrantClientCredentials:
			default:
				t.Fatalf("accepted grant %q", g)
			}
			if g == GrantClientCredentials && md.AuthMethod == authNone {
				t.Fatal("public client with client_credentials")
			}
		}
		if code && len(md.RedirectURIs) == 0 {
			t.Fatal("authorization_code without redirect URIs")
		}
		for _, r := range md.RedirectURIs {
			if e := checkRedirectURI(r); e != nil {
				t.Fatalf("accepted redirect %q: %v", r, e)
			}
			u, _ := url.Parse(r)
			if u.Scheme == "http" && !oauth.IsLoopbackHost(u.Hostname()) || strings.ContainsAny(r, "# \n") {
				t.Fatalf("accepted redirect %q", r)
			}
		}
		if md.ClientID != "" || md.ClientSecret != "" {
			t.Fatal("client-chosen credentials kept")
		}
	})
}

// FuzzRedirectMatches: a match is either exact or a loopback http URI
// that differs from a registered one only in its port.
func FuzzRedirectMatches(f *testing.F) {
	f.Add("http://127.0.0.1/cb", "http://127.0.0.1:8080/cb")
	f.Add("http://localhost/cb", "http://localhost:1/cb")
	f.Add("https://a.example.com/cb", "https://a.example.com/cb")
	f.Add("http://[::1]/cb", "http://[::1]:65535/cb?x")
	f.Fuzz(func(t *testing.T, registered, requested string) {
		if !redirectMatches([]string{registered}, requested) || registered == requested {
			return
		}
		req, err1 := url.Parse(requested)
		reg, err2 := url.Parse(registered)
		if err1 != nil || err2 != nil || req.Scheme != "http" || reg.Scheme != "http" || !oauth.IsLoopbackHost(req.Hostname()) ||
			!strings.EqualFold(req.Hostname(), reg.Hostname()) || req.EscapedPath() != reg.EscapedPath() || req.RawQuery != reg.RawQuery || req.Fragment != "" {
			t.Fatalf("%q matched %q", requested, registered)
		}
	})
}
