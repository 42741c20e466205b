package devauth

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/mcpauthz/mcpauthz/internal/oauth"
)

// ApproveMode says how the authorization endpoint obtains the user's
// consent.
type ApproveMode string

const (
	// ApprovePage shows a consent page on which the user ticks the scopes
	// to grant and approves or denies (the default).
	ApprovePage ApproveMode = "page"
	// ApproveAuto grants every requested scope to the development user at
	// once, without a page: for scripts and CI.
	ApproveAuto ApproveMode = "auto"
)

// ParseApproveMode reads the value of a --dev-approve flag.
func ParseApproveMode(s string) (ApproveMode, error) {
	switch m := ApproveMode(s); m {
	case ApprovePage, ApproveAuto:
		return m, nil
	}
	return "", fmt.Errorf("devauth: approval mode %q: want %q or %q", s, ApprovePage, ApproveAuto)
}

// Defaults of Options.
const (
	DefaultTokenTTL   = time.Hour
	DefaultRefreshTTL = 24 * time.Hour
	DefaultCodeTTL    = 60 * time.Second
	// DefaultSubject is the user every authorization is granted to: the
	// server has no login.
	DefaultSubject = "dev-user"
	// DevClientID is the pre-registered public client that is always
	// present (unless Options.Clients names a client with this ID): the
	// client of `mcpauthz token` and of scripts. Its redirect URIs are
	// DevClientRedirectURIs, on any port.
	DevClientID = "mcpauthz-dev"
)

// DevClientRedirectURIs are the redirect URIs of the pre-registered
// DevClientID client. They are loopback URIs, so any port matches.
var DevClientRedirectURIs = []string{"http://127.0.0.1/callback", "http://[::1]/callback", "http://localhost/callback"}

// Grant types a client may use.
const (
	GrantAuthorizationCode = "authorization_code"
	GrantRefreshToken      = "refresh_token"
	GrantClientCredentials = "client_credentials"
)

// Options configure a Server. Issuer, Key and Resources are required.
type Options struct {
	// Issuer is the issuer identifier and base URL of every endpoint,
	// e.g. "http://127.0.0.1:9193" (no query, no fragment, no trailing
	// slash). A plain-http issuer must name a loopback host unless
	// AllowRemote is set.
	Issuer string
	// AllowRemote permits an http issuer on a host that is not loopback
	// (for instance inside a container network). Tokens then cross a
	// network in clear text: never do this outside development.
	AllowRemote bool
	// Key is the RS256 private signing key (devissuer.LoadOrCreateKey); its
	// kid goes into every token header and the public key is served at
	// {Issuer}/jwks.
	Key jwk.Key
	// Resources are the RFC 8707 resource indicators tokens may be issued
	// for; the first is the audience of requests that name none.
	Resources []string
	// Scopes are advertised in scopes_supported. Any valid scope may be
	// requested and granted, listed or not (step-up asks for scopes a
	// client did not register).
	Scopes []string
	// Approve is the approval mode (default ApprovePage).
	Approve ApproveMode
	// Subject is the sub of tokens issued through the authorization
	// endpoint (default DefaultSubject).
	Subject string
	// TokenTTL is the access-token lifetime (default 1h).
	TokenTTL time.Duration
	// OpaqueAccessTokens issues opaque access tokens (fosite's HMAC
	// tokens, stored by signature) instead of at+jwt: a resource server
	// can only check them by introspection, so a revocation takes effect
	// at its next introspection.
	OpaqueAccessTokens bool
	// RefreshTTL is the refresh-token lifetime (default 24h).
	RefreshTTL time.Duration
	// CodeTTL is the authorization-code lifetime (default 60s).
	CodeTTL time.Duration
	// Clients are pre-registered in addition to the public DevClientID
	// client (a client listed here with that ID replaces it).
	Clients []Client
	// HTTPClient fetches client ID metadata documents (default: a client
	// with a 5 s timeout). Redirects are never followed.
	HTTPClient *http.Client
	// Logger receives one line per registration, authorization, token
	// issuance and refused request (never a token, code, verifier or
	// secret). Nil discards.
	Logger *slog.Logger
}

// Client is a pre-registered client.
type Client struct {
	// ID is the client_id; it must not look like a URL (those name client
	// ID metadata documents).
	ID string
	// Secret makes the client confidential (client_secret_basic or
	// client_secret_post); empty means a public client
	// (token_endpoint_auth_method none).
	Secret string
	// Name is shown on the consent page (default ID).
	Name string
	// RedirectURIs are matched exactly, except that a loopback redirect
	// (http://127.0.0.1, http://[::1], http://localhost) matches on any
	// port.
	RedirectURIs []string
	// GrantTypes default to authorization_code and refresh_token when the
	// client has redirect URIs, else to client_credentials.
	// authorization_code always brings refresh_token with it.
	GrantTypes []string
	// Scopes limit what the client may be granted; empty means any scope.
	Scopes []string
	// Introspect lets this (confidential) client call the introspection
	// endpoint, e.g. the credentials of the resource server.
	Introspect bool
}

// serverConfig is Options validated and with defaults applied.
type serverConfig struct {
	issuer     *url.URL
	issuerStr  string
	key        jwk.Key
	resources  []string
	scopes     []string
	approve    ApproveMode
	subject    string
	tokenTTL   time.Duration
	opaque     bool
	refreshTTL time.Duration
	codeTTL    time.Duration
	clients    []Client
	httpClient *http.Client
	log        *slog.Logger
}

func (o Options) validate() (*serverConfig, error) {
	c := &serverConfig{
		key:        o.Key,
		approve:    o.Approve,
		subject:    o.Subject,
		tokenTTL:   o.TokenTTL,
		opaque:     o.OpaqueAccessTokens,
		refreshTTL: o.RefreshTTL,
		codeTTL:    o.CodeTTL,
		httpClient: o.HTTPClient,
		log:        o.Logger,
	}
	var errs []error
	u, err := parseIssuer(o.Issuer, o.AllowRemote)
	if err != nil {
		errs = append(errs, err)
	} else {
		c.issuer, c.issuerStr = u, o.Issuer
	}
	if err := checkSigningKey(o.Key); err != nil {
		errs = append(errs, err)
	}
	if len(o.Resources) == 0 {
		errs = append(errs, errors.New("resources: at least one resource is required"))
	}
	for _, r := range o.Resources {
		if err := checkResource(r); err != nil {
			errs = append(errs, fmt.Errorf("resources: %q: %w", r, err))
		} else if !slices.Contains(c.resources, r) {
			c.resources = append(c.resources, r)
		}
	}
	for _, s := range o.Scopes {
		if !oauth.ValidScope(s) {
			errs = append(errs, fmt.Errorf("scopes: %q is not a scope token (RFC 6749 §3.3)", s))
		} else if !slices.Contains(c.scopes, s) {
			c.scopes = append(c.scopes, s)
		}
	}
	switch c.approve {
	case "":
		c.approve = ApprovePage
	case ApprovePage, ApproveAuto:
	default:
		errs = append(errs, fmt.Errorf("approve: %q: want %q or %q", c.approve, ApprovePage, ApproveAuto))
	}
	if c.subject == "" {
		c.subject = DefaultSubject
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{{"token TTL", &c.tokenTTL, DefaultTokenTTL}, {"refresh TTL", &c.refreshTTL, DefaultRefreshTTL}, {"code TTL", &c.codeTTL, DefaultCodeTTL}} {
		switch {
		case *d.v == 0:
			*d.v = d.def
		case *d.v < 0:
			errs = append(errs, fmt.Errorf("%s must be positive, not %v", d.name, *d.v))
		}
	}
	if c.httpClient == nil {
		c.httpClient = &http.Client{Timeout: 5 * time.Second}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}

	seen := map[string]bool{}
	for i, cl := range o.Clients {
		cl, err := cl.normalize()
		if err != nil {
			errs = append(errs, fmt.Errorf("clients[%d] %q: %w", i, cl.ID, err))
			continue
		}
		if seen[cl.ID] {
			errs = append(errs, fmt.Errorf("clients[%d] %q: duplicate client ID", i, cl.ID))
			continue
		}
		seen[cl.ID] = true
		c.clients = append(c.clients, cl)
	}
	if !seen[DevClientID] {
		c.clients = append(c.clients, Client{
			ID:           DevClientID,
			Name:         "mcpauthz development client",
			RedirectURIs: DevClientRedirectURIs,
			GrantTypes:   []string{GrantAuthorizationCode, GrantRefreshToken},
		})
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("devauth: %w", errors.Join(errs...))
	}
	return c, nil
}

func parseIssuer(s string, allowRemote bool) (*url.URL, error) {
	u, err := url.Parse(s)
	switch {
	case s == "":
		return nil, errors.New("issuer is required")
	case err != nil:
		return nil, fmt.Errorf("issuer %q is not a URL", s)
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "", u.User != nil:
		return nil, fmt.Errorf("issuer %q: want an http(s) URL with a host and no user info", s)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#"):
		return nil, fmt.Errorf("issuer %q: no query or fragment allowed (RFC 8414 §2)", s)
	case strings.HasSuffix(u.Path, "/"):
		return nil, fmt.Errorf("issuer %q: no trailing slash", s)
	case u.Scheme == "http" && !oauth.IsLoopbackHost(u.Hostname()) && !allowRemote:
		return nil, fmt.Errorf("issuer %q: a plain-http issuer must be on a loopback host (127.0.0.1, [::1], localhost)", s)
	}
	return u, nil
}

func checkSigningKey(k jwk.Key) error {
	if k == nil {
		return errors.New("key is required")
	}
	var priv rsa.PrivateKey
	if err := k.Raw(&priv); err != nil {
		return errors.New("key: an RSA private key is required (RS256)")
	}
	if k.KeyID() == "" {
		return errors.New("key: the key has no kid")
	}
	return nil
}

func checkResource(r string) error {
	u, err := url.Parse(r)
	switch {
	case err != nil:
		return errors.New("not a URL")
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		return errors.New("want an absolute http(s) URL")
	case u.Fragment != "" || strings.Contains(r, "#"):
		return errors.New("a resource indicator has no fragment (RFC 8707 §2)")
	}
	return nil
}

// normalize validates a pre-registered client and fills in its defaults.
func (c Client) normalize() (Client, error) {
	switch {
	case c.ID == "":
		return c, errors.New("ID is required")
	case looksLikeURL(c.ID):
		return c, errors.New("a URL-shaped client ID is reserved for client ID metadata documents")
	case strings.ContainsFunc(c.ID, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return c, errors.New("ID contains control characters")
	}
	if c.Name == "" {
		c.Name = c.ID
	}
	if len(c.GrantTypes) == 0 {
		if len(c.RedirectURIs) > 0 {
			c.GrantTypes = []string{GrantAuthorizationCode, GrantRefreshToken}
		} else {
			c.GrantTypes = []string{GrantClientCredentials}
		}
	}
	if c.Introspect && c.Secret == "" {
		return c, errors.New("an introspecting client must be confidential (set Secret)")
	}
	md := clientMetadata{RedirectURIs: c.RedirectURIs, GrantTypes: c.GrantTypes, AuthMethod: authNone}
	if c.Secret != "" {
		md.AuthMethod = authBasic
	}
	if err := md.check(); err != nil {
		return c, errors.New(err.desc)
	}
	c.GrantTypes = md.GrantTypes
	for _, s := range c.Scopes {
		if !oauth.ValidScope(s) {
			return c, fmt.Errorf("scope %q is not a scope token", s)
		}
	}
	return c, nil
}

func looksLikeURL(id string) bool {
	l := strings.ToLower(id)
	return strings.HasPrefix(l, "https://") || strings.HasPrefix(l, "http://")
}
