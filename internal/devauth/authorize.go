package devauth

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/base64"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/ory/fosite"

	"github.com/mcpauthz/mcpauthz/internal/oauth"
)

// pendingTTL bounds how long a consent page may stay open.
const pendingTTL = 10 * time.Minute

// statePlaceholder stands in, inside fosite only, for a state that is
// absent or shorter than fosite's minimum of 8 characters: OAuth 2.1 makes
// state optional (PKCE carries the CSRF protection), and some MCP clients
// send none. The client's own state (or its absence) is what the redirect
// carries.
const statePlaceholder = "devauth-state-placeholder"

// pendingAuth is an authorization request waiting on the consent page.
type pendingAuth struct {
	ar       fosite.AuthorizeRequester
	client   *oauthClient
	csrf     string
	resource string
	state    clientState
}

// clientState is the state parameter as the client sent it.
type clientState struct {
	value   string
	present bool
}

var (
	//go:embed templates/consent.html
	consentHTML string
	//go:embed templates/error.html
	errorHTML string
	//go:embed templates/page.css
	pageCSS string

	consentTmpl = template.Must(template.New("consent").Parse(consentHTML))
	errorTmpl   = template.Must(template.New("error").Parse(errorHTML))
	// styleHash lets the inline style sheet pass the Content-Security-Policy
	// without 'unsafe-inline'.
	styleHash = func() string {
		sum := sha256.Sum256([]byte(pageCSS))
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}()
)

// Parameters that must not be repeated (RFC 6749 §3.1).
var singleParams = []string{"client_id", "redirect_uri", "response_type", "response_mode", "scope", "state", "code_challenge", "code_challenge_method"}

// handleAuthorize is the authorization endpoint (RFC 6749 §4.1.1 with PKCE
// and RFC 8707). Errors found before the client and its redirect URI are
// known to be good are shown to the user; later ones are redirected to the
// client with state and iss (RFC 9207).
func (s *Server) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := r.ParseForm(); err != nil {
		s.showError(w, r, invalidRequest("The request query could not be parsed."))
		return
	}
	form := r.Form
	for _, k := range []string{"client_id", "redirect_uri"} {
		if len(form[k]) > 1 {
			s.showError(w, r, invalidRequest("The "+k+" parameter is repeated."))
			return
		}
	}
	id := form.Get("client_id")
	if id == "" {
		s.showError(w, r, invalidRequest("The client_id parameter is missing."))
		return
	}
	client, err := s.store.client(ctx, id)
	if err != nil {
		if e, ok := err.(*oauthError); ok {
			s.showError(w, r, e)
		} else {
			s.showError(w, r, newError(http.StatusBadRequest, errInvalidClient, "The client "+quote(id)+" is not registered."))
		}
		return
	}
	if redirect := form.Get("redirect_uri"); redirect != "" {
		if !redirectMatches(client.RedirectURIs, redirect) {
			s.showError(w, r, invalidRequest("The redirect_uri "+quote(redirect)+" is not registered for client "+quote(id)+"."))
			return
		}
		ctx = withApprovedRedirect(ctx, redirect)
	} else if len(client.RedirectURIs) != 1 {
		s.showError(w, r, invalidRequest("The redirect_uri parameter is required: the client has several (or no) redirect URIs."))
		return
	}

	st := clientState{value: form.Get("state"), present: form.Has("state")}
	if len(form["state"]) <= 1 && len(st.value) < fosite.MinParameterEntropy {
		form.Set("state", statePlaceholder)
	}
	ar, err := s.provider.NewAuthorizeRequest(ctx, r)
	if err != nil {
		s.authorizeError(w, r, ar, err, st)
		return
	}
	resource, oerr := s.checkAuthorizeRequest(form)
	if oerr != nil {
		s.authorizeError(w, r, ar, oerr, st)
		return
	}
	ar.SetRequestedAudience(fosite.Arguments{resource})
	p := &pendingAuth{ar: ar, client: client, resource: resource, state: st}
	if s.cfg.approve == ApproveAuto && isLoopbackRedirect(ar.GetRedirectURI()) {
		s.grant(w, r, p, ar.GetRequestedScopes())
		return
	}
	s.showConsent(w, r, p)
}

// isLoopbackRedirect reports whether the code would stay on this machine.
// Auto approval is limited to such redirects: otherwise any web page could
// register a client with its own https redirect URI, send the browser to
// the authorization endpoint and receive a code for the development user.
// Other redirects get the consent page even in auto mode.
func isLoopbackRedirect(u *url.URL) bool {
	return u != nil && u.Scheme == "http" && oauth.IsLoopbackHost(u.Hostname())
}

// checkAuthorizeRequest makes the checks fosite leaves to later or does not
// make: no repeated parameters, PKCE S256 present now (not only after
// consent), one known resource. It returns the resource the code is bound
// to.
func (s *Server) checkAuthorizeRequest(form url.Values) (string, *oauthError) {
	for _, k := range singleParams {
		if len(form[k]) > 1 {
			return "", invalidRequest("The " + k + " parameter is repeated.")
		}
	}
	challenge, method := form.Get("code_challenge"), form.Get("code_challenge_method")
	switch {
	case challenge == "":
		return "", invalidRequest("PKCE is required: the code_challenge parameter is missing.")
	case method == "" || method == "plain":
		return "", invalidRequest("PKCE code_challenge_method must be S256 (plain is not allowed).")
	case method != "S256":
		return "", invalidRequest("PKCE code_challenge_method " + quote(method) + " is not supported; use S256.")
	case len(challenge) != 43 || strings.Trim(challenge, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "":
		return "", invalidRequest("The code_challenge is not a base64url-encoded SHA-256 digest (43 characters).")
	}
	return s.resource(form["resource"])
}

// resource checks the resource parameters of a request (RFC 8707 §2): none
// means the default resource; one must be a configured resource.
func (s *Server) resource(values []string) (string, *oauthError) {
	switch len(values) {
	case 0:
		return s.cfg.resources[0], nil
	case 1:
		if slices.Contains(s.cfg.resources, values[0]) {
			return values[0], nil
		}
		return "", invalidTarget("The resource " + quote(values[0]) + " is not served by this authorization server (known: " + strings.Join(s.cfg.resources, " ") + ").")
	}
	return "", invalidTarget("Only one resource per request is supported.")
}

// grant issues the authorization code for the granted scopes and redirects
// to the client.
func (s *Server) grant(w http.ResponseWriter, r *http.Request, p *pendingAuth, scopes []string) {
	ar := p.ar
	for _, sc := range scopes {
		ar.GrantScope(sc)
	}
	ar.GrantAudience(p.resource)
	s.flowMu.Lock()
	resp, err := s.provider.NewAuthorizeResponse(r.Context(), ar, &fosite.DefaultSession{Subject: s.cfg.subject})
	s.flowMu.Unlock()
	if err != nil {
		s.authorizeError(w, r, ar, err, p.state)
		return
	}
	s.log.Info("devauth: authorization granted", "client_id", ar.GetClient().GetID(), "subject", s.cfg.subject,
		"resource", p.resource, "scope", strings.Join(scopes, " "), "approval", string(s.cfg.approve))
	s.redirect(w, ar, url.Values{"code": {resp.GetCode()}}, p.state)
}

// redirect sends the authorization response to the client's redirect URI
// in the query (RFC 6749 §4.1.2), with the client's state and the issuer
// (RFC 9207).
func (s *Server) redirect(w http.ResponseWriter, ar fosite.AuthorizeRequester, params url.Values, st clientState) {
	u := *ar.GetRedirectURI()
	u.Fragment = ""
	q := u.Query()
	for k, v := range params {
		q[k] = v
	}
	if st.present {
		q.Set("state", st.value)
	}
	q.Set("iss", s.cfg.issuerStr)
	u.RawQuery = q.Encode()
	noStore(w.Header())
	w.Header().Set("Location", u.String())
	w.WriteHeader(http.StatusSeeOther)
}

// authorizeError redirects err to the client when its redirect URI has been
// validated, and shows it otherwise (never redirecting to an unverified
// URI).
func (s *Server) authorizeError(w http.ResponseWriter, r *http.Request, ar fosite.AuthorizeRequester, err error, st clientState) {
	e := asOAuthError(err)
	clientID := r.Form.Get("client_id")
	if ar == nil || !ar.IsRedirectURIValid() {
		s.showError(w, r, e)
		return
	}
	s.log.Info("devauth: authorization request refused (redirected)", "client_id", clientID, "error", e.code, "error_description", e.desc)
	s.redirect(w, ar, url.Values{"error": {e.code}, "error_description": {description(e.desc)}}, st)
}

// securityHeaders are set on every HTML page: no caching, no framing
// (clickjacking of the Approve button), no inline script, no referrer.
func securityHeaders(h http.Header, formAction string) {
	csp := "default-src 'none'; style-src " + styleHash + "; frame-ancestors 'none'; base-uri 'none'"
	if formAction != "" {
		csp += "; form-action " + formAction
	}
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Type", "text/html; charset=utf-8")
	noStore(h)
}

type consentPage struct {
	CSS          template.CSS
	ClientName   string
	ClientID     string
	Document     bool
	RedirectHost string
	RedirectURI  string
	Resource     string
	Subject      string
	Scopes       []string
	Action       string
	ID           string
	CSRF         string
}

// showConsent stores the request as pending and renders the consent page.
// The form carries the pending ID and a CSRF token bound to it; both are
// single-use.
func (s *Server) showConsent(w http.ResponseWriter, r *http.Request, p *pendingAuth) {
	id, csrf := randomString(32), randomString(32)
	p.csrf = csrf
	s.pendingMu.Lock()
	now := time.Now()
	s.pending.put(now, id, p, now.Add(pendingTTL))
	s.pendingMu.Unlock()

	redirect := p.ar.GetRedirectURI()
	page := consentPage{
		CSS:          template.CSS(pageCSS),
		ClientName:   p.client.name,
		ClientID:     p.client.ID,
		Document:     p.client.document,
		RedirectHost: redirect.Host,
		RedirectURI:  redirect.String(),
		Resource:     p.resource,
		Subject:      s.cfg.subject,
		Scopes:       p.ar.GetRequestedScopes(),
		Action:       s.paths.consent,
		ID:           id,
		CSRF:         csrf,
	}
	var buf bytes.Buffer
	if err := consentTmpl.Execute(&buf, page); err != nil {
		s.showError(w, r, newError(http.StatusInternalServerError, errServerError, "The consent page could not be rendered."))
		return
	}
	// The form posts here and is then redirected to the client, which
	// form-action must allow as well.
	securityHeaders(w.Header(), "'self' "+formActionSource(redirect))
	w.Write(buf.Bytes())
}

// formActionSource is the CSP source that admits redirect: its origin for
// http(s), its scheme for a native app's private-use scheme.
func formActionSource(u *url.URL) string {
	if u.Scheme == "http" || u.Scheme == "https" {
		return u.Scheme + "://" + u.Host
	}
	return u.Scheme + ":"
}

// handleConsent receives the consent form.
func (s *Server) handleConsent(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		s.showError(w, r, invalidRequest("The consent form could not be read."))
		return
	}
	f := r.PostForm
	s.pendingMu.Lock()
	p, ok := s.pending.get(time.Now(), f.Get("authorization"))
	if ok {
		s.pending.remove(f.Get("authorization"))
	}
	s.pendingMu.Unlock()
	if !ok {
		s.showError(w, r, invalidRequest("This authorization request is unknown, was already answered or has expired; start again from the client."))
		return
	}
	if subtle.ConstantTimeCompare([]byte(f.Get("csrf_token")), []byte(p.csrf)) != 1 {
		s.log.Warn("devauth: consent form with a wrong CSRF token", "client_id", p.client.ID)
		s.showError(w, r, newError(http.StatusForbidden, errInvalidRequest, "The consent form does not belong to this authorization request (CSRF token mismatch)."))
		return
	}
	switch f.Get("decision") {
	case "approve":
		requested := p.ar.GetRequestedScopes()
		var granted []string
		for _, sc := range f["scope"] {
			if slices.Contains(requested, sc) && !slices.Contains(granted, sc) {
				granted = append(granted, sc)
			}
		}
		s.grant(w, r, p, granted)
	case "deny":
		s.log.Info("devauth: authorization denied by the user", "client_id", p.client.ID)
		s.redirect(w, p.ar, url.Values{"error": {errAccessDenied}, "error_description": {"The user denied the authorization."}}, p.state)
	default:
		s.showError(w, r, invalidRequest("The consent form has no decision (approve or deny)."))
	}
}

type errorPage struct {
	CSS         template.CSS
	Code        string
	Description string
}

// showError answers an error that cannot go back to the client: an HTML
// page for browsers, the JSON error object otherwise. A 401 becomes 400
// here: there is no authentication the user could retry with.
func (s *Server) showError(w http.ResponseWriter, r *http.Request, e *oauthError) {
	s.log.Info("devauth: request refused (shown to the user)", "path", r.URL.Path, "client_id", r.Form.Get("client_id"),
		"error", e.code, "error_description", e.desc)
	status := e.status
	if status == http.StatusUnauthorized || status == 0 {
		status = http.StatusBadRequest
	}
	if !strings.Contains(r.Header.Get("Accept"), "text/html") {
		writeError(w, &oauthError{status: status, code: e.code, desc: e.desc})
		return
	}
	var buf bytes.Buffer
	if err := errorTmpl.Execute(&buf, errorPage{CSS: template.CSS(pageCSS), Code: e.code, Description: description(e.desc)}); err != nil {
		writeError(w, &oauthError{status: status, code: e.code, desc: e.desc})
		return
	}
	securityHeaders(w.Header(), "")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}
