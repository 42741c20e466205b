package devauth

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/ory/fosite"
)

// Token endpoint parameters that must not be repeated.
var singleTokenParams = []string{"grant_type", "code", "code_verifier", "redirect_uri", "refresh_token", "client_id", "client_secret", "scope"}

// handleToken is the token endpoint: authorization_code (with PKCE),
// refresh_token (rotating, with reuse detection) and client_credentials.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := r.ParseForm(); err != nil {
		s.tokenError(w, r, invalidRequest("The request body could not be parsed as a form (at most 64 KiB of application/x-www-form-urlencoded)."))
		return
	}
	form := r.PostForm
	for _, k := range singleTokenParams {
		if len(form[k]) > 1 {
			s.tokenError(w, r, invalidRequest("The "+k+" parameter is repeated."))
			return
		}
	}
	grant := form.Get("grant_type")
	switch grant {
	case "":
		s.tokenError(w, r, invalidRequest("The grant_type parameter is missing."))
		return
	case GrantAuthorizationCode, GrantRefreshToken, GrantClientCredentials:
	default:
		s.tokenError(w, r, newError(http.StatusBadRequest, errUnsupportedGrantType, "The grant type "+quote(grant)+" is not supported (authorization_code, refresh_token, client_credentials)."))
		return
	}
	if e := s.checkClientAuth(r); e != nil {
		s.tokenError(w, r, e)
		return
	}
	resource := ""
	if grant == GrantClientCredentials || len(form["resource"]) > 0 {
		var e *oauthError
		if resource, e = s.resource(form["resource"]); e != nil {
			s.tokenError(w, r, e)
			return
		}
	}

	s.flowMu.Lock()
	defer s.flowMu.Unlock()
	ar, err := s.provider.NewAccessRequest(ctx, r, &fosite.DefaultSession{})
	if err != nil {
		s.tokenError(w, r, err)
		return
	}
	switch grant {
	case GrantClientCredentials:
		// The client acts on its own behalf: it is the subject (RFC 9068
		// §2.2).
		ar.GetSession().(*fosite.DefaultSession).Subject = ar.GetClient().GetID()
		for _, sc := range ar.GetRequestedScopes() {
			ar.GrantScope(sc)
		}
		ar.GrantAudience(resource)
	default:
		// The audience was fixed at authorization; a resource named now
		// must be that one (RFC 8707 §2.2).
		if resource != "" && !slices.Contains(ar.GetRequestedAudience(), resource) {
			s.tokenError(w, r, invalidTarget("The resource "+quote(resource)+" was not part of this authorization."))
			return
		}
	}
	resp, err := s.provider.NewAccessResponse(ctx, ar)
	if err != nil {
		s.tokenError(w, r, err)
		return
	}
	resp.SetTokenType("Bearer")
	s.log.Info("devauth: token issued", "grant_type", grant, "client_id", ar.GetClient().GetID(),
		"subject", ar.GetSession().GetSubject(), "audience", strings.Join(ar.GetGrantedAudience(), " "),
		"scope", strings.Join(ar.GetGrantedScopes(), " "))
	s.provider.WriteAccessResponse(ctx, w, ar, resp)
}

// checkClientAuth refuses client authentication methods this server does
// not offer and resolves a metadata-document client before fosite needs it,
// so that a failed fetch gets its own message.
func (s *Server) checkClientAuth(r *http.Request) *oauthError {
	if r.PostForm.Has("client_assertion") || r.PostForm.Has("client_assertion_type") {
		return newError(http.StatusUnauthorized, errInvalidClient, "Client assertions (private_key_jwt) are not supported; use none, client_secret_basic or client_secret_post.")
	}
	id := r.PostForm.Get("client_id")
	u, _, basic := r.BasicAuth()
	if basic {
		if dec, err := url.QueryUnescape(u); err == nil {
			id = dec
		}
	}
	if id == "" {
		return newError(http.StatusUnauthorized, errInvalidClient, "Client authentication is missing: a public client sends client_id, a confidential one its credentials (client_secret_basic or client_secret_post).")
	}
	if looksLikeURL(id) {
		if _, err := s.store.client(r.Context(), id); err != nil {
			if e, ok := err.(*oauthError); ok {
				return e
			}
		}
	}
	return nil
}

// tokenError writes an error of the token or revocation endpoint (RFC 6749
// §5.2): invalid_client is 401, with a Basic challenge when the client
// tried Basic authentication.
func (s *Server) tokenError(w http.ResponseWriter, r *http.Request, err error) {
	e := asOAuthError(err)
	if e.code == errInvalidClient {
		e = &oauthError{status: http.StatusUnauthorized, code: e.code, desc: e.desc}
		if _, _, ok := r.BasicAuth(); ok {
			w.Header().Set("WWW-Authenticate", `Basic realm="devauth"`)
		}
	}
	s.log.Info("devauth: token request refused", "endpoint", r.URL.Path, "grant_type", r.PostForm.Get("grant_type"),
		"client_id", r.PostForm.Get("client_id"), "error", e.code, "error_description", e.desc)
	writeError(w, e)
}

// handleRevoke is the revocation endpoint (RFC 7009). Revoking an access
// or a refresh token revokes the whole grant: every token of its family.
// Unknown and already revoked tokens are answered 200, as the RFC asks.
func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		s.tokenError(w, r, invalidRequest("The request body could not be parsed as a form."))
		return
	}
	if r.PostForm.Get("token") == "" {
		s.tokenError(w, r, invalidRequest("The token parameter is missing."))
		return
	}
	if e := s.checkClientAuth(r); e != nil {
		s.tokenError(w, r, e)
		return
	}
	s.flowMu.Lock()
	err := s.provider.NewRevocationRequest(r.Context(), r)
	s.flowMu.Unlock()
	if err != nil {
		e := asOAuthError(err)
		switch e.code {
		case errInvalidClient, errInvalidRequest:
		case "unauthorized_client":
			// The token belongs to another client (RFC 7009 §2.1).
			e = newError(http.StatusBadRequest, e.code, "The token was not issued to this client.")
		default:
			e = newError(http.StatusServiceUnavailable, errTemporarilyUnavailable, "The token could not be revoked.")
		}
		s.tokenError(w, r, e)
		return
	}
	s.log.Info("devauth: token revoked", "client_id", r.PostForm.Get("client_id"))
	noStore(w.Header())
	w.WriteHeader(http.StatusOK)
}

// handleIntrospect is the introspection endpoint (RFC 7662). Only
// pre-registered confidential clients marked Introspect may call it, with
// client_secret_basic. Access tokens are answered with their JWT claims;
// refresh tokens with token_use refresh_token, which a resource server
// must refuse.
func (s *Server) handleIntrospect(w http.ResponseWriter, r *http.Request) {
	if e := s.introspectionClient(r); e != nil {
		w.Header().Set("WWW-Authenticate", `Basic realm="devauth"`)
		s.log.Info("devauth: introspection refused", "error", e.code, "error_description", e.desc)
		writeError(w, e)
		return
	}
	if err := r.ParseForm(); err != nil {
		writeError(w, invalidRequest("The request body could not be parsed as a form."))
		return
	}
	token := r.PostForm.Get("token")
	if token == "" {
		writeError(w, invalidRequest("The token parameter is missing."))
		return
	}
	s.flowMu.Lock()
	ir, err := s.provider.NewIntrospectionRequest(r.Context(), r, &fosite.DefaultSession{})
	var out map[string]any
	if err == nil && ir.IsActive() {
		out = s.introspection(ir, token)
	}
	s.flowMu.Unlock()
	switch {
	case err != nil && !errors.Is(err, fosite.ErrInactiveToken):
		writeError(w, asOAuthError(err))
	case out == nil:
		writeJSON(w, http.StatusOK, map[string]any{"active": false})
	default:
		writeJSON(w, http.StatusOK, out)
	}
}

func (s *Server) introspectionClient(r *http.Request) *oauthError {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return newError(http.StatusUnauthorized, errInvalidClient, "Introspection requires client_secret_basic authentication of a client allowed to introspect.")
	}
	id, err1 := url.QueryUnescape(user)
	secret, err2 := url.QueryUnescape(pass)
	c, known := s.store.static[id]
	switch {
	case err1 != nil || err2 != nil:
		return newError(http.StatusUnauthorized, errInvalidClient, "The Basic credentials are not form-urlencoded (RFC 6749 §2.3.1).")
	case !known || c.Public || secretHasher{}.Compare(r.Context(), c.Secret, []byte(secret)) != nil:
		return newError(http.StatusUnauthorized, errInvalidClient, "Client authentication failed.")
	case !c.introspect:
		return newError(http.StatusUnauthorized, errInvalidClient, "The client "+quote(id)+" is not allowed to introspect tokens.")
	}
	return nil
}

// introspection is the RFC 7662 §2.2 answer for an active token.
func (s *Server) introspection(ir fosite.IntrospectionResponder, token string) map[string]any {
	if ir.GetTokenUse() == fosite.AccessToken && !s.cfg.opaque {
		claims, err := accessTokenClaims(token)
		if err != nil {
			return nil
		}
		claims["active"] = true
		claims["token_type"] = "Bearer"
		claims["token_use"] = "access_token"
		return claims
	}
	ar := ir.GetAccessRequester()
	use, kind := "refresh_token", fosite.RefreshToken
	if ir.GetTokenUse() == fosite.AccessToken {
		use, kind = "access_token", fosite.AccessToken
	}
	out := map[string]any{
		"active":    true,
		"token_use": use,
		"iss":       s.cfg.issuerStr,
		"client_id": ar.GetClient().GetID(),
		"sub":       ar.GetSession().GetSubject(),
		"aud":       ar.GetGrantedAudience(),
		"scope":     strings.Join(ar.GetGrantedScopes(), " "),
		"iat":       ar.GetRequestedAt().Unix(),
	}
	if kind == fosite.AccessToken {
		out["token_type"] = "Bearer"
	}
	if exp := ar.GetSession().GetExpiresAt(kind); !exp.IsZero() {
		out["exp"] = exp.Unix()
	}
	return out
}
