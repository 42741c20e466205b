// Package oauth holds the small OAuth rules that several parts of mcpauthz
// apply and that must therefore agree: the scope-token grammar (RFC 6749
// §3.3) and which URLs may name an OAuth endpoint (https, or plain http
// only to this machine, as RFC 8252 §8.3 and OAuth 2.1 §1.5 allow).
package oauth

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
)

// ValidScope reports whether s is an RFC 6749 scope token: one or more of
// %x21 / %x23-5B / %x5D-7E (printable ASCII without space, quote or
// backslash).
func ValidScope(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// IsLoopbackHost reports whether host (a URL's Hostname: no port, no
// brackets) is "localhost" or a loopback IP address (127.0.0.0/8, ::1,
// and IPv4-mapped forms of them).
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// ParseEndpointURL parses raw as the URL of an OAuth endpoint or another
// server mcpauthz talks to or names to clients: absolute, https (plain
// http only for loopback hosts, where no one else can read the traffic),
// without user information (credentials belong in headers, and would leak
// into logs) and without a fragment. The error never repeats a user
// information part.
func ParseEndpointURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("not a URL")
	}
	if u.User != nil {
		return nil, errors.New("must not contain user information; use the credential options instead")
	}
	if !u.IsAbs() || u.Host == "" {
		return nil, fmt.Errorf("%q is not an absolute URL", raw)
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return nil, fmt.Errorf("%q must not contain a fragment", raw)
	}
	switch u.Scheme {
	case "https":
		return u, nil
	case "http":
		if IsLoopbackHost(u.Hostname()) {
			return u, nil
		}
		return nil, fmt.Errorf("%q must use https (http is allowed only for loopback hosts)", raw)
	}
	return nil, fmt.Errorf("%q must use https", raw)
}
