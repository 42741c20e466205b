package devauth

import (
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ory/fosite"

	"github.com/mcpauthz/mcpauthz/internal/oauth"
)

// Token endpoint authentication methods (RFC 7591 §2).
const (
	authNone   = "none"
	authBasic  = "client_secret_basic"
	authPost   = "client_secret_post"
	maxURILen  = 2000
	maxNameLen = 200
	// maxRedirectURIs bounds one client's redirect URIs.
	maxRedirectURIs = 20
)

// clientMetadata is the client metadata of RFC 7591 §2 that this server
// understands, as sent in a registration request or a client ID metadata
// document. Members it does not understand are ignored (RFC 7591 §2).
type clientMetadata struct {
	ClientID        string   `json:"client_id,omitempty"`
	ClientSecret    string   `json:"client_secret,omitempty"`
	RedirectURIs    []string `json:"redirect_uris,omitempty"`
	AuthMethod      string   `json:"token_endpoint_auth_method,omitempty"`
	GrantTypes      []string `json:"grant_types,omitempty"`
	ResponseTypes   []string `json:"response_types,omitempty"`
	ClientName      string   `json:"client_name,omitempty"`
	ClientURI       string   `json:"client_uri,omitempty"`
	LogoURI         string   `json:"logo_uri,omitempty"`
	TOSURI          string   `json:"tos_uri,omitempty"`
	PolicyURI       string   `json:"policy_uri,omitempty"`
	Scope           string   `json:"scope,omitempty"`
	Contacts        []string `json:"contacts,omitempty"`
	SoftwareID      string   `json:"software_id,omitempty"`
	SoftwareVersion string   `json:"software_version,omitempty"`
}

// check validates the metadata and normalizes it: default and de-duplicated
// grant and response types, refresh_token added to authorization_code.
// AuthMethod must have been defaulted by the caller.
func (m *clientMetadata) check() *oauthError {
	switch m.AuthMethod {
	case authNone, authBasic, authPost:
	default:
		return invalidMetadata("token_endpoint_auth_method " + quote(m.AuthMethod) + " is not supported (none, client_secret_basic, client_secret_post)")
	}

	if len(m.GrantTypes) == 0 {
		m.GrantTypes = []string{GrantAuthorizationCode}
	}
	var grants []string
	for _, g := range m.GrantTypes {
		switch g {
		case GrantAuthorizationCode, GrantRefreshToken, GrantClientCredentials:
		default:
			return invalidMetadata("grant type " + quote(g) + " is not supported (authorization_code, refresh_token, client_credentials)")
		}
		if !slices.Contains(grants, g) {
			grants = append(grants, g)
		}
	}
	code := slices.Contains(grants, GrantAuthorizationCode)
	if code && !slices.Contains(grants, GrantRefreshToken) {
		// Refresh tokens come with every authorization code grant.
		grants = append(grants, GrantRefreshToken)
	}
	if slices.Contains(grants, GrantClientCredentials) && m.AuthMethod == authNone {
		return invalidMetadata("the client_credentials grant needs a confidential client (token_endpoint_auth_method client_secret_basic or client_secret_post)")
	}
	if slices.Contains(grants, GrantRefreshToken) && !code && !slices.Contains(grants, GrantClientCredentials) {
		return invalidMetadata("the refresh_token grant needs the authorization_code grant")
	}
	m.GrantTypes = grants

	if len(m.ResponseTypes) == 0 && code {
		m.ResponseTypes = []string{"code"}
	}
	for _, rt := range m.ResponseTypes {
		if rt != "code" {
			return invalidMetadata("response type " + quote(rt) + " is not supported (code)")
		}
	}
	m.ResponseTypes = dedupe(m.ResponseTypes)
	if len(m.ResponseTypes) > 0 != code {
		return invalidMetadata("response_types code and grant_types authorization_code go together (RFC 7591 §2.1)")
	}

	if code && len(m.RedirectURIs) == 0 {
		return invalidRedirect("redirect_uris is required for the authorization_code grant")
	}
	if len(m.RedirectURIs) > maxRedirectURIs {
		return invalidRedirect("at most 20 redirect_uris are accepted")
	}
	for _, r := range m.RedirectURIs {
		if err := checkRedirectURI(r); err != nil {
			return err
		}
	}
	m.RedirectURIs = dedupe(m.RedirectURIs)

	for _, s := range strings.Split(m.Scope, " ") {
		if s != "" && !oauth.ValidScope(s) {
			return invalidMetadata("scope " + quote(s) + " is not a scope token (RFC 6749 §3.3)")
		}
	}
	if n := utf8.RuneCountInString(m.ClientName); n > maxNameLen || !utf8.ValidString(m.ClientName) || strings.ContainsFunc(m.ClientName, isControl) {
		return invalidMetadata("client_name must be at most 200 printable characters")
	}
	for _, u := range append([]string{m.ClientURI, m.LogoURI, m.TOSURI, m.PolicyURI, m.SoftwareID, m.SoftwareVersion}, m.Contacts...) {
		if len(u) > maxURILen || strings.ContainsFunc(u, isControl) {
			return invalidMetadata("client metadata values must be at most 2000 printable characters")
		}
	}
	return nil
}

// dedupe returns the distinct elements of s in their first order.
func dedupe(s []string) []string {
	var out []string
	for _, v := range s {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) }

// quote shows a client-supplied value in an error description, shortened
// and restricted to the description charset.
func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return "'" + description(s) + "'"
}

// schemes that must never be redirected to: they run code or read local
// data in the browser.
var forbiddenRedirectSchemes = []string{"javascript", "data", "vbscript", "file", "about", "blob", "filesystem"}

// checkRedirectURI validates a redirect URI at registration (RFC 6749
// §3.1.2, OAuth 2.1 §2.3.1, RFC 8252 §7): absolute, no fragment; https, http
// on a loopback host, or a private-use scheme of a native app.
func checkRedirectURI(s string) *oauthError {
	if len(s) > maxURILen {
		return invalidRedirect("redirect URI too long (at most 2000 characters)")
	}
	u, err := url.Parse(s)
	switch {
	case err != nil || u.Scheme == "":
		return invalidRedirect("redirect URI " + quote(s) + " is not an absolute URI")
	case u.Fragment != "" || strings.Contains(s, "#"):
		return invalidRedirect("redirect URI " + quote(s) + " has a fragment (RFC 6749 §3.1.2)")
	case slices.Contains(forbiddenRedirectSchemes, strings.ToLower(u.Scheme)):
		return invalidRedirect("redirect URI " + quote(s) + " has a forbidden scheme")
	case strings.ContainsFunc(s, func(r rune) bool { return r <= 0x20 || r >= 0x7f }):
		return invalidRedirect("redirect URI " + quote(s) + " contains spaces or non-ASCII characters")
	case u.Scheme == "https" && u.Host == "":
		return invalidRedirect("redirect URI " + quote(s) + " has no host")
	case u.Scheme == "http" && !oauth.IsLoopbackHost(u.Hostname()):
		return invalidRedirect("redirect URI " + quote(s) + ": plain http is allowed only on loopback hosts (RFC 8252 §7.3)")
	}
	return nil
}

// redirectMatches reports whether requested is one of the registered
// redirect URIs: compared as strings, except that a loopback http redirect
// matches a registered one with the same host, path and query on any port
// (RFC 8252 §7.3; localhost is accepted as well as the IP literals).
func redirectMatches(registered []string, requested string) bool {
	if slices.Contains(registered, requested) {
		return true
	}
	req, err := url.Parse(requested)
	if err != nil || req.Scheme != "http" || !oauth.IsLoopbackHost(req.Hostname()) || req.User != nil || req.Fragment != "" {
		return false
	}
	for _, r := range registered {
		reg, err := url.Parse(r)
		if err == nil && reg.Scheme == "http" && strings.EqualFold(reg.Hostname(), req.Hostname()) &&
			reg.EscapedPath() == req.EscapedPath() && reg.RawQuery == req.RawQuery && reg.User == nil {
			return true
		}
	}
	return false
}

// oauthClient is a registered client as fosite sees it. Scopes is empty
// for clients that may be granted any scope (see scopeStrategy).
type oauthClient struct {
	fosite.DefaultClient
	name       string
	authMethod string
	introspect bool
	// metadata is what the client registered (the registration response)
	metadata clientMetadata
	issuedAt time.Time
	// document is set for clients defined by a client ID metadata
	// document.
	document bool
}

func newOAuthClient(id string, secretHash []byte, md clientMetadata, scopes []string, audience []string) *oauthClient {
	name := md.ClientName
	if name == "" {
		name = id
	}
	return &oauthClient{
		DefaultClient: fosite.DefaultClient{
			ID:            id,
			Secret:        secretHash,
			RedirectURIs:  md.RedirectURIs,
			GrantTypes:    md.GrantTypes,
			ResponseTypes: md.ResponseTypes,
			Scopes:        scopes,
			Audience:      audience,
			Public:        md.AuthMethod == authNone,
		},
		name:       name,
		authMethod: md.AuthMethod,
		metadata:   md,
	}
}

// withRedirect returns a copy of c that also lists redirect, which the
// caller has matched with redirectMatches. fosite matches loopback
// redirects on any port only for IP literals, not for localhost.
func (c *oauthClient) withRedirect(redirect string) *oauthClient {
	if slices.Contains(c.RedirectURIs, redirect) {
		return c
	}
	cp := *c
	cp.RedirectURIs = append(slices.Clip(c.RedirectURIs), redirect)
	return &cp
}
