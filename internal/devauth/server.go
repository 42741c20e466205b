package devauth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/pkce"
	"github.com/ory/fosite/token/hmac"

	"github.com/mcpauthz/mcpauthz/internal/devissuer"
	"github.com/mcpauthz/mcpauthz/internal/oauth"
)

// maxBodyBytes bounds every request body.
const maxBodyBytes = 64 << 10

// Server is a development OAuth 2.1 authorization server. It owns no
// goroutines: expired state is dropped lazily, so there is nothing to
// close.
type Server struct {
	cfg      *serverConfig
	provider fosite.OAuth2Provider
	store    *store
	docs     *docFetcher
	log      *slog.Logger
	paths    paths

	metadata []byte
	jwks     []byte

	// flowMu serialises every call into fosite that reads or writes grants
	// (authorization responses, token, revocation and introspection
	// requests): fosite's multi-step updates (check a code, then
	// invalidate it; rotate a refresh token) are then atomic without
	// storage transactions. A development server needs no more throughput.
	flowMu sync.Mutex

	pendingMu sync.Mutex
	pending   *boundedMap[*pendingAuth]
}

// paths are the request paths of the endpoints, under the issuer's path.
type paths struct {
	authorize, consent, token, register, revoke, introspect, jwks string
	metadata                                                      []string
}

func newPaths(base string) paths {
	p := paths{
		authorize:  base + "/authorize",
		consent:    base + "/authorize/consent",
		token:      base + "/token",
		register:   base + "/register",
		revoke:     base + "/revoke",
		introspect: base + "/introspect",
		jwks:       base + "/jwks",
	}
	// RFC 8414 §3.1 inserts the well-known part before the issuer's path;
	// OpenID Connect Discovery appends it. The MCP SDKs probe both forms
	// (and OIDC with the path inserted).
	p.metadata = []string{"/.well-known/oauth-authorization-server" + base, base + "/.well-known/openid-configuration"}
	if base != "" {
		p.metadata = append(p.metadata, "/.well-known/openid-configuration"+base)
	}
	return p
}

// New validates opts and builds a Server.
func New(opts Options) (*Server, error) {
	cfg, err := opts.validate()
	if err != nil {
		return nil, err
	}
	pub, err := cfg.key.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("devauth: key: %w", err)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("devauth: %w", err)
	}

	static := make(map[string]*oauthClient, len(cfg.clients))
	for _, c := range cfg.clients {
		md := clientMetadata{ClientName: c.Name, RedirectURIs: c.RedirectURIs, GrantTypes: c.GrantTypes, AuthMethod: authNone}
		var hash []byte
		if c.Secret != "" {
			md.AuthMethod, hash = authBasic, hashSecret(c.Secret)
		}
		// normalize has checked the metadata; check again only to fill
		// in the response types.
		if e := md.check(); e != nil {
			return nil, fmt.Errorf("devauth: clients %q: %s", c.ID, e.desc)
		}
		oc := newOAuthClient(c.ID, hash, md, c.Scopes, cfg.resources)
		oc.introspect = c.Introspect
		static[c.ID] = oc
	}

	s := &Server{
		cfg:     cfg,
		log:     cfg.log,
		paths:   newPaths(strings.TrimSuffix(cfg.issuer.Path, "/")),
		store:   newStore(static, cfg.tokenTTL, cfg.refreshTTL),
		docs:    newDocFetcher(cfg.httpClient, cfg.resources),
		pending: newBoundedMap[*pendingAuth](maxPending),
	}
	s.store.fetchDoc = s.docs.fetch

	fcfg := &fosite.Config{
		AccessTokenLifespan:   cfg.tokenTTL,
		RefreshTokenLifespan:  cfg.refreshTTL,
		AuthorizeCodeLifespan: cfg.codeTTL,
		AccessTokenIssuer:     cfg.issuerStr,
		TokenURL:              cfg.issuerStr + "/token",
		GlobalSecret:          secret,
		// PKCE with S256 for every client, public or confidential
		// (OAuth 2.1 §7.5.1).
		EnforcePKCE:                    true,
		EnablePKCEPlainChallengeMethod: false,
		// Refresh tokens for every authorization code grant, whatever the
		// scopes (fosite's default wants offline_access).
		RefreshTokenScopes:       []string{},
		ScopeStrategy:            scopeStrategy,
		AudienceMatchingStrategy: fosite.ExactAudienceMatchingStrategy,
		ClientSecretsHasher:      secretHasher{},
		// The scope granted is in the token response.
		OmitRedirectScopeParam:     true,
		SendDebugMessagesToClients: false,
	}
	strategy := &tokenStrategy{
		HMACSHAStrategyUnPrefixed: oauth2.NewHMACSHAStrategyUnPrefixed(&hmac.HMACStrategy{Config: fcfg}, fcfg),
		issuer:                    &devissuer.Issuer{URL: cfg.issuerStr, Key: cfg.key},
		pub:                       pub,
		lifespan:                  cfg.tokenTTL,
		opaque:                    cfg.opaque,
	}
	s.provider = newProvider(fcfg, s.store, strategy)

	if s.metadata, err = json.MarshalIndent(s.metadataDocument(), "", "  "); err != nil {
		return nil, fmt.Errorf("devauth: metadata: %w", err)
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return nil, fmt.Errorf("devauth: key set: %w", err)
	}
	if s.jwks, err = json.Marshal(set); err != nil {
		return nil, fmt.Errorf("devauth: key set: %w", err)
	}
	return s, nil
}

// Issuer is the issuer identifier.
func (s *Server) Issuer() string { return s.cfg.issuerStr }

// JWKSURI is the URL of the public key set.
func (s *Server) JWKSURI() string { return s.cfg.issuerStr + "/jwks" }

// ApproveMode is the approval mode in effect (defaults applied).
func (s *Server) ApproveMode() ApproveMode { return s.cfg.approve }

// Metadata is the authorization server metadata document (RFC 8414 §2).
type Metadata struct {
	Issuer                                     string   `json:"issuer"`
	AuthorizationEndpoint                      string   `json:"authorization_endpoint"`
	TokenEndpoint                              string   `json:"token_endpoint"`
	RegistrationEndpoint                       string   `json:"registration_endpoint"`
	RevocationEndpoint                         string   `json:"revocation_endpoint"`
	IntrospectionEndpoint                      string   `json:"introspection_endpoint"`
	JWKSURI                                    string   `json:"jwks_uri"`
	ScopesSupported                            []string `json:"scopes_supported"`
	ResponseTypesSupported                     []string `json:"response_types_supported"`
	ResponseModesSupported                     []string `json:"response_modes_supported"`
	GrantTypesSupported                        []string `json:"grant_types_supported"`
	CodeChallengeMethodsSupported              []string `json:"code_challenge_methods_supported"`
	TokenEndpointAuthMethodsSupported          []string `json:"token_endpoint_auth_methods_supported"`
	RevocationEndpointAuthMethodsSupported     []string `json:"revocation_endpoint_auth_methods_supported"`
	IntrospectionEndpointAuthMethodsSupported  []string `json:"introspection_endpoint_auth_methods_supported"`
	ClientIDMetadataDocumentSupported          bool     `json:"client_id_metadata_document_supported"`
	AuthorizationResponseISSParameterSupported bool     `json:"authorization_response_iss_parameter_supported"`
	// Required by OpenID Connect Discovery, which serves the same document;
	// no ID tokens are issued.
	SubjectTypesSupported            []string `json:"subject_types_supported"`
	IDTokenSigningAlgValuesSupported []string `json:"id_token_signing_alg_values_supported"`
}

func (s *Server) metadataDocument() Metadata {
	iss := s.cfg.issuerStr
	authMethods := []string{authNone, authBasic, authPost}
	scopes := s.cfg.scopes
	if scopes == nil {
		scopes = []string{}
	}
	return Metadata{
		Issuer:                                     iss,
		AuthorizationEndpoint:                      iss + "/authorize",
		TokenEndpoint:                              iss + "/token",
		RegistrationEndpoint:                       iss + "/register",
		RevocationEndpoint:                         iss + "/revoke",
		IntrospectionEndpoint:                      iss + "/introspect",
		JWKSURI:                                    iss + "/jwks",
		ScopesSupported:                            scopes,
		ResponseTypesSupported:                     []string{"code"},
		ResponseModesSupported:                     []string{"query"},
		GrantTypesSupported:                        []string{GrantAuthorizationCode, GrantRefreshToken, GrantClientCredentials},
		CodeChallengeMethodsSupported:              []string{"S256"},
		TokenEndpointAuthMethodsSupported:          authMethods,
		RevocationEndpointAuthMethodsSupported:     authMethods,
		IntrospectionEndpointAuthMethodsSupported:  []string{authBasic},
		ClientIDMetadataDocumentSupported:          true,
		AuthorizationResponseISSParameterSupported: true,
		SubjectTypesSupported:                      []string{"public"},
		IDTokenSigningAlgValuesSupported:           []string{"RS256"},
	}
}

// Handler serves every endpoint under the issuer's path.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	p := s.paths
	static := func(body []byte, cacheControl string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", cacheControl)
			w.Write(body)
		}
	}
	// Browser-based clients (MCP Inspector) call these endpoints with
	// fetch, so they allow any origin. No cookie or ambient credential is
	// ever honoured, so that is safe.
	public := func(path string, methods string, h http.Handler) {
		for _, m := range strings.Split(methods, ",") {
			mux.Handle(m+" "+path, cors(h))
		}
		mux.Handle("OPTIONS "+path, cors(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Access-Control-Allow-Methods", methods+", OPTIONS")
			w.WriteHeader(http.StatusNoContent)
		})))
	}
	for _, m := range p.metadata {
		public(m, "GET", static(s.metadata, "no-store"))
	}
	public(p.jwks, "GET", static(s.jwks, "public, max-age=300"))
	public(p.token, "POST", limitBody(http.HandlerFunc(s.handleToken)))
	public(p.register, "POST", limitBody(http.HandlerFunc(s.handleRegister)))
	public(p.revoke, "POST", limitBody(http.HandlerFunc(s.handleRevoke)))
	mux.Handle("POST "+p.introspect, limitBody(http.HandlerFunc(s.handleIntrospect)))
	mux.HandleFunc("GET "+p.authorize, s.handleAuthorize)

	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.showError(w, r, newError(http.StatusForbidden, errInvalidRequest, "The consent form was submitted from another site."))
	}))
	mux.Handle("POST "+p.consent, cop.Handler(limitBody(http.HandlerFunc(s.handleConsent))))

	allowed := map[string]string{p.jwks: "GET", p.authorize: "GET", p.consent: "POST", p.token: "POST", p.register: "POST", p.revoke: "POST", p.introspect: "POST"}
	for _, m := range p.metadata {
		allowed[m] = "GET"
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if m, ok := allowed[r.URL.Path]; ok {
			w.Header().Set("Allow", m)
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": errInvalidRequest, "error_description": "Use " + m + " on this endpoint."})
			return
		}
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not_found", "error_description": "No such endpoint."})
	})
	return s.checkHost(mux)
}

// checkHost answers only requests for the issuer's host. A web page that
// points a name it controls at 127.0.0.1 (DNS rebinding) would otherwise
// talk to the server as a same-origin page and read its answers; its
// requests carry that name in Host.
func (s *Server) checkHost(h http.Handler) http.Handler {
	host := s.cfg.issuer.Host
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Host, host) {
			s.log.Warn("devauth: request for another host refused", "host", r.Host)
			writeJSON(w, http.StatusMisdirectedRequest, map[string]string{"error": errInvalidRequest,
				"error_description": description("This server answers only requests for " + host + " (the issuer's host).")})
			return
		}
		h.ServeHTTP(w, r)
	})
}

func cors(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Access-Control-Allow-Origin", "*")
		hd.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, MCP-Protocol-Version")
		hd.Set("Access-Control-Expose-Headers", "WWW-Authenticate")
		hd.Set("Access-Control-Max-Age", "600")
		h.ServeHTTP(w, r)
	})
}

func limitBody(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
		h.ServeHTTP(w, r)
	})
}

// Listen binds addr for the server. An address that is not a loopback IP
// or localhost is refused unless allowRemote: the development server has no
// login and must not be reachable from other machines by accident.
func Listen(ctx context.Context, addr string, allowRemote bool) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("devauth: address %q: %w", addr, err)
	}
	if !allowRemote && !oauth.IsLoopbackHost(host) {
		return nil, fmt.Errorf("devauth: address %q is not a loopback address (use 127.0.0.1:PORT)", addr)
	}
	var lc net.ListenConfig
	return lc.Listen(ctx, "tcp", addr)
}

// randomString returns n random bytes, base64url-encoded.
func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// newProvider assembles fosite from the handlers this server offers, as
// fosite's compose package would, without linking the handlers it does not
// offer (OpenID Connect, PAR, JWT assertion grants, implicit, password).
func newProvider(cfg *fosite.Config, st *store, strategy *tokenStrategy) fosite.OAuth2Provider {
	code := &oauth2.AuthorizeExplicitGrantHandler{
		AccessTokenStrategy:    strategy,
		RefreshTokenStrategy:   strategy,
		AuthorizeCodeStrategy:  strategy,
		CoreStorage:            st,
		TokenRevocationStorage: st,
		Config:                 cfg,
	}
	clientCredentials := &oauth2.ClientCredentialsGrantHandler{
		HandleHelper: &oauth2.HandleHelper{AccessTokenStrategy: strategy, AccessTokenStorage: st, Config: cfg},
		Config:       cfg,
	}
	refresh := &oauth2.RefreshTokenGrantHandler{
		AccessTokenStrategy:    strategy,
		RefreshTokenStrategy:   strategy,
		TokenRevocationStorage: st,
		Config:                 cfg,
	}
	// PKCE after the code handler: it verifies the code_verifier of the
	// code that handler has loaded.
	pkceHandler := &pkce.Handler{AuthorizeCodeStrategy: strategy, Storage: st, Config: cfg}
	cfg.AuthorizeEndpointHandlers.Append(code)
	cfg.AuthorizeEndpointHandlers.Append(pkceHandler)
	cfg.TokenEndpointHandlers.Append(code)
	cfg.TokenEndpointHandlers.Append(clientCredentials)
	cfg.TokenEndpointHandlers.Append(refresh)
	cfg.TokenEndpointHandlers.Append(pkceHandler)
	cfg.TokenIntrospectionHandlers.Append(&oauth2.CoreValidator{CoreStrategy: strategy, CoreStorage: st, Config: cfg})
	cfg.RevocationHandlers.Append(&oauth2.TokenRevocationHandler{TokenRevocationStorage: st, AccessTokenStrategy: strategy, RefreshTokenStrategy: strategy})
	return fosite.NewOAuth2Provider(st, cfg)
}
