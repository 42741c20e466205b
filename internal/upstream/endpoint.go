package upstream

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/mcpauthz/mcpauthz/internal/oauth"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// maxResponseBody caps what is read of a token endpoint or metadata answer.
const maxResponseBody = 1 << 20

// maxAccessToken caps the length of an issued token: it goes into an HTTP
// header of the upstream request, and Envoy's default limit for all
// request headers together is 60 KiB.
const maxAccessToken = 32 << 10

// discoveryTimeout bounds one metadata fetch. Discovery runs in the
// background, never on a request.
const discoveryTimeout = 5 * time.Second

// Discovery retries back off from discoveryBackoffMin to discoveryBackoffMax.
const (
	discoveryBackoffMin = 250 * time.Millisecond
	discoveryBackoffMax = 30 * time.Second
)

// endpointConfig locates a token endpoint and the TLS trust for it.
type endpointConfig struct {
	issuer        string // for discovery, when tokenEndpoint is ""
	tokenEndpoint string
	caFile        string
}

// tokenEndpoint sends token requests (RFC 6749 §3.2) for one source: it
// holds the endpoint URL (configured, or discovered in the background),
// the source's own HTTP client and its client authentication.
type tokenEndpoint struct {
	source    string
	client    *http.Client
	transport *http.Transport
	auth      *clientAuth
	clk       clock
	obs       Observer
	log       *slog.Logger
	issuer    string

	url      atomic.Pointer[string]
	discErr  atomic.Pointer[Error] // the last discovery failure, nil after success
	discOnce sync.Once
	discDone chan struct{} // closed when the URL is known or the first discovery attempt failed
}

func newTokenEndpoint(source string, cfg endpointConfig, auth *clientAuth, opts Options) (*tokenEndpoint, error) {
	t := &tokenEndpoint{
		source:   source,
		auth:     auth,
		clk:      opts.clk(),
		obs:      opts.observer(),
		log:      opts.logger(),
		issuer:   cfg.issuer,
		discDone: make(chan struct{}),
	}
	switch {
	case cfg.tokenEndpoint != "":
		if err := checkEndpointURL(cfg.tokenEndpoint); err != nil {
			return nil, fmt.Errorf("token_endpoint: %w", err)
		}
		u := cfg.tokenEndpoint
		t.url.Store(&u)
		close(t.discDone)
	case cfg.issuer != "":
		if err := checkEndpointURL(cfg.issuer); err != nil {
			return nil, fmt.Errorf("issuer: %w", err)
		}
	default:
		return nil, errors.New("token_endpoint or issuer (for discovery) is required")
	}
	var err error
	t.client, t.transport, err = newHTTPClient(opts.HTTPClient, cfg.caFile, auth.tlsCerts)
	if err != nil {
		return nil, err
	}
	if opts.WrapTransport != nil {
		t.client.Transport = opts.WrapTransport(t.client.Transport)
	}
	return t, nil
}

// needsDiscovery reports whether run must be started.
func (t *tokenEndpoint) needsDiscovery() bool { return t.url.Load() == nil }

// newHTTPClient returns a client of its own (a cloned transport, so TLS
// settings and idle connections belong to the source) that never follows
// redirects: the request carries credentials and must reach the
// configured endpoint only.
func newHTTPClient(base *http.Client, caFile string, certs *certLoader) (*http.Client, *http.Transport, error) {
	var tr *http.Transport
	if base == nil || base.Transport == nil {
		tr = http.DefaultTransport.(*http.Transport).Clone()
	} else {
		t, ok := base.Transport.(*http.Transport)
		if !ok {
			return nil, nil, fmt.Errorf("the HTTP client's transport is a %T, not an *http.Transport", base.Transport)
		}
		tr = t.Clone()
	}
	if caFile != "" || certs != nil {
		cfg := &tls.Config{}
		if tr.TLSClientConfig != nil {
			cfg = tr.TLSClientConfig.Clone()
		}
		cfg.MinVersion = max(cfg.MinVersion, tls.VersionTLS12)
		if caFile != "" {
			pem, err := readLimited(caFile, 1<<20)
			if err != nil {
				return nil, nil, fmt.Errorf("ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, nil, errors.New("ca_file: no PEM certificate found")
			}
			cfg.RootCAs = pool
		}
		if certs != nil {
			cfg.GetClientCertificate = certs.get
		}
		tr.TLSClientConfig = cfg
	}
	c := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c, tr, nil
}

// run discovers the token endpoint from the issuer's metadata, retrying
// with backoff until it succeeds or ctx ends.
func (t *tokenEndpoint) run(ctx context.Context) {
	backoff := discoveryBackoffMin
	for {
		u, err := t.discover(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			t.url.Store(&u)
			t.discErr.Store(nil)
			t.discOnce.Do(func() { close(t.discDone) })
			t.log.Info("token endpoint discovered", "source", t.source, "issuer", t.issuer, "token_endpoint", u)
			return
		}
		t.discErr.Store(err)
		t.discOnce.Do(func() { close(t.discDone) })
		t.log.Warn("token endpoint discovery failed", "source", t.source, "issuer", t.issuer, "retry_in", backoff.String(), "error", err.Error())
		if !sleep(t.clk, backoff, ctx.Done()) {
			return
		}
		backoff = min(2*backoff, discoveryBackoffMax)
	}
}

// resolve returns the endpoint URL. Before the first discovery attempt has
// ended it waits for it, within ctx; while discovery is failing it fails
// at once, so requests do not queue behind a broken metadata endpoint.
func (t *tokenEndpoint) resolve(ctx context.Context) (string, *Error) {
	for {
		if u := t.url.Load(); u != nil {
			return *u, nil
		}
		if e := t.discErr.Load(); e != nil {
			return "", e
		}
		select {
		case <-t.discDone:
		case <-ctx.Done():
			return "", ctxError(ctx, t.source, "the token endpoint was discovered")
		}
	}
}

// discover tries the RFC 8414 §3.1 URL (well-known part inserted before the
// issuer's path), then the OpenID Connect Discovery 1.0 §4 URL (appended).
// The metadata's issuer must equal the configured issuer exactly (RFC 8414
// §3.3), so a document served for another issuer cannot redirect the
// credentials.
func (t *tokenEndpoint) discover(ctx context.Context) (string, *Error) {
	var msgs []string
	for _, mu := range metadataURLs(t.issuer) {
		u, err := t.tryMetadata(ctx, mu)
		if err == nil {
			return u, nil
		}
		msgs = append(msgs, mu+": "+err.Error())
	}
	return "", newError(t.source, ReasonDiscoveryFailed, "token endpoint discovery for issuer %s failed: %s", t.issuer, strings.Join(msgs, "; "))
}

func (t *tokenEndpoint) tryMetadata(ctx context.Context, mu string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, discoveryTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, mu, nil)
	if err != nil {
		return "", errors.New("invalid URL")
	}
	req.Header.Set("Accept", "application/json")
	res, err := t.client.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", res.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, maxResponseBody+1))
	if err != nil {
		return "", fmt.Errorf("reading the document: %w", err)
	}
	if len(body) > maxResponseBody {
		return "", fmt.Errorf("document larger than %d bytes", maxResponseBody)
	}
	m, err := decodeObject(body)
	if err != nil {
		return "", fmt.Errorf("invalid metadata document: %w", err)
	}
	iss, _, err := stringMember(m, "issuer")
	if err != nil {
		return "", err
	}
	if iss != t.issuer {
		return "", errors.New("metadata issuer does not match the configured issuer")
	}
	te, ok, err := stringMember(m, "token_endpoint")
	if err != nil {
		return "", err
	}
	if !ok || te == "" {
		return "", errors.New("metadata has no token_endpoint")
	}
	if err := checkEndpointURL(te); err != nil {
		return "", fmt.Errorf("token_endpoint: %w", err)
	}
	return te, nil
}

func metadataURLs(issuer string) []string {
	u, err := url.Parse(issuer)
	if err != nil {
		return nil
	}
	path := strings.TrimSuffix(u.Path, "/")
	oauth := url.URL{Scheme: u.Scheme, Host: u.Host, Path: "/.well-known/oauth-authorization-server" + path}
	oidc := strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
	return []string{oauth.String(), oidc}
}

// tokenRequest is one token endpoint request.
type tokenRequest struct {
	form url.Values
	// secrets are the values of this request that must never appear in an
	// error (the subject token); the client authentication adds its own.
	secrets []string
	rules   responseRules
}

// responseRules says how strictly a successful answer is read.
type responseRules struct {
	// issuedTokenType is the issued_token_type the answer must carry
	// (RFC 8693 §2.2.1); "" for grants that do not define it.
	issuedTokenType string
	// issuedTypeOptional accepts an answer without issued_token_type (it
	// must still match when present).
	issuedTypeOptional bool
	// allowNA accepts token_type N_A (RFC 8693 §2.2.1: the token is not an
	// access token), for tokens that go into a raw header.
	allowNA bool
	value   valueBuilder
}

// tokenResponse is a checked successful answer (RFC 6749 §5.1, RFC 8693
// §2.2.1).
type tokenResponse struct {
	value     string // the header value built from access_token
	expiresIn time.Duration
	hasExpiry bool
}

// do sends r, reads and checks the answer and reports the attempt to the
// Observer. Every failure is an *Error.
func (t *tokenEndpoint) do(ctx context.Context, r tokenRequest) (tokenResponse, *Error) {
	start := time.Now()
	resp, err := t.doRequest(ctx, r)
	result := ResultOK
	if err != nil {
		result = string(err.Reason)
	}
	t.obs.ObserveFetch(t.source, result, time.Since(start))
	return resp, err
}

func (t *tokenEndpoint) doRequest(ctx context.Context, r tokenRequest) (tokenResponse, *Error) {
	ep, e := t.resolve(ctx)
	if e != nil {
		return tokenResponse{}, e
	}
	authz, authSecrets, err := t.auth.apply(r.form, ep, t.clk.Now())
	if err != nil {
		// The signer's errors name no key material.
		return tokenResponse{}, newError(t.source, ReasonClientAuth, "signing the client assertion failed: %v", err)
	}
	secrets := append(authSecrets, r.secrets...)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep, strings.NewReader(r.form.Encode()))
	if err != nil {
		return tokenResponse{}, newError(t.source, ReasonUnreachable, "invalid token endpoint URL")
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	res, err := t.client.Do(req)
	if err != nil {
		return tokenResponse{}, t.transportError(ctx, ep, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxResponseBody+1))
	if err != nil {
		return tokenResponse{}, t.transportError(ctx, ep, err)
	}
	if len(body) > maxResponseBody {
		return tokenResponse{}, newError(t.source, ReasonInvalidResponse, "token endpoint %s answered more than %d bytes", ep, maxResponseBody)
	}
	if res.StatusCode != http.StatusOK {
		return tokenResponse{}, t.statusError(ep, res.StatusCode, body, secrets)
	}
	if mt, _, err := mime.ParseMediaType(res.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return tokenResponse{}, newError(t.source, ReasonInvalidResponse, "token endpoint %s answered 200 with content type %q, not application/json", ep, res.Header.Get("Content-Type"))
	}
	resp, err := parseTokenResponse(body, r.rules)
	if err != nil {
		return tokenResponse{}, newError(t.source, ReasonInvalidResponse, "token endpoint %s answered 200 with an invalid token response: %v", ep, err)
	}
	return resp, nil
}

// transportError classifies a failed round trip. A transport error names
// the URL and the network cause only.
func (t *tokenEndpoint) transportError(ctx context.Context, ep string, err error) *Error {
	var e *Error
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		e = newError(t.source, ReasonTimeout, "token endpoint %s did not answer in time", ep)
	case errors.Is(ctx.Err(), context.Canceled):
		e = newError(t.source, ReasonClosed, "token request to %s cancelled: the source is closing", ep)
	default:
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		e = newError(t.source, ReasonUnreachable, "token endpoint %s unreachable: %v", ep, err)
	}
	e.cause = err
	return e
}

// statusError maps a non-200 answer: a 4xx with an RFC 6749 §5.2 error
// object is a rejection with its code; anything else is a bad status. The
// body is never quoted, only the filtered error code and description.
func (t *tokenEndpoint) statusError(ep string, status int, body []byte, secrets []string) *Error {
	if status >= 400 && status < 500 {
		if code, desc, ok := parseErrorResponse(body); ok {
			e := newError(t.source, ReasonRejected, "token endpoint %s rejected the request (status %d): %s", ep, status, code)
			if d := sanitizeDescription(desc, secrets...); d != "" {
				e.detail += ": " + d
			}
			e.Code = rejectionCode(code)
			e.Status = status
			return e
		}
	}
	e := newError(t.source, ReasonBadStatus, "token endpoint %s answered status %d", ep, status)
	if status >= 300 && status < 400 {
		e.detail += " (redirects are not followed)"
	}
	e.Status = status
	return e
}

// parseErrorResponse reads an RFC 6749 §5.2 error object. The code must be
// a non-empty string of the characters §5.2 allows (%x20-21 / %x23-5B /
// %x5D-7E); a code outside that set is reported as "other".
func parseErrorResponse(body []byte) (code, desc string, ok bool) {
	m, err := decodeObject(body)
	if err != nil {
		return "", "", false
	}
	code, has, err := stringMember(m, "error")
	if err != nil || !has || code == "" {
		return "", "", false
	}
	for i := 0; i < len(code); i++ {
		if c := code[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			code = "other"
			break
		}
	}
	if len(code) > 64 {
		code = "other"
	}
	desc, _, _ = stringMember(m, "error_description")
	return code, desc, true
}

// parseTokenResponse checks a 200 answer strictly: a JSON object without
// duplicate names or invalid UTF-8; access_token a non-empty string that
// fits the header it goes into; token_type Bearer (case-insensitive) or,
// when allowed, N_A; issued_token_type as the rules say; expires_in, when
// present, a non-negative integer; scope, when present, a string. Other
// members (refresh_token included, which is discarded) are ignored.
func parseTokenResponse(body []byte, rules responseRules) (tokenResponse, error) {
	var resp tokenResponse
	m, err := decodeObject(body)
	if err != nil {
		return resp, err
	}
	at, ok, err := stringMember(m, "access_token")
	if err != nil {
		return resp, err
	}
	if !ok || at == "" {
		return resp, errors.New("access_token missing")
	}
	if len(at) > maxAccessToken {
		return resp, fmt.Errorf("access_token longer than %d bytes", maxAccessToken)
	}
	tt, ok, err := stringMember(m, "token_type")
	if err != nil {
		return resp, err
	}
	switch {
	case !ok:
		return resp, errors.New("token_type missing")
	case strings.EqualFold(tt, "bearer"):
	case tt == "N_A" && rules.allowNA:
	default:
		return resp, fmt.Errorf("token_type %q cannot be used as this credential", truncate(tt, 32))
	}
	if rules.issuedTokenType != "" {
		it, ok, err := stringMember(m, "issued_token_type")
		if err != nil {
			return resp, err
		}
		switch {
		case !ok && !rules.issuedTypeOptional:
			return resp, errors.New("issued_token_type missing")
		case ok && it != rules.issuedTokenType:
			return resp, fmt.Errorf("issued_token_type %q is not the requested %s", truncate(it, 80), rules.issuedTokenType)
		}
	}
	if v, ok := m["expires_in"]; ok {
		if v.Kind() != '0' {
			return resp, errors.New("expires_in is not a number")
		}
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil || n < 0 {
			return resp, errors.New("expires_in is not a non-negative integer")
		}
		resp.expiresIn = time.Duration(min(n, maxLifetimeSeconds)) * time.Second
		resp.hasExpiry = true
	}
	if _, _, err := stringMember(m, "scope"); err != nil {
		return resp, err
	}
	value, ok := rules.value.build(at)
	if !ok {
		return resp, errors.New("access_token has characters that cannot go into the header")
	}
	resp.value = value
	return resp, nil
}

// maxLifetimeSeconds caps expires_in (ten years), so durations cannot
// overflow.
const maxLifetimeSeconds = 10 * 365 * 24 * 3600

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// maxJSONDepth bounds the nesting of answers, checked before decoding.
const maxJSONDepth = 32

// decodeObject decodes a JSON object strictly: duplicate member names and
// invalid UTF-8 are errors (so another parser cannot read the answer
// differently), and so is nesting deeper than maxJSONDepth.
func decodeObject(b []byte) (map[string]jsontext.Value, error) {
	if !depthWithin(b, maxJSONDepth) {
		return nil, fmt.Errorf("nested deeper than %d levels", maxJSONDepth)
	}
	if jsontext.Value(bytes.TrimSpace(b)).Kind() != '{' {
		return nil, errors.New("not a JSON object")
	}
	var m map[string]jsontext.Value
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, errors.New("invalid JSON (syntax, duplicate member name or invalid UTF-8)")
	}
	if m == nil {
		return nil, errors.New("not a JSON object")
	}
	return m, nil
}

func depthWithin(b []byte, limit int) bool {
	depth := 0
	inString, escaped := false, false
	for _, c := range b {
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			depth++
			if depth > limit {
				return false
			}
		case '}', ']':
			depth--
		}
	}
	return true
}

// stringMember returns the string member name; a member of another type
// (null included) is an error.
func stringMember(m map[string]jsontext.Value, name string) (string, bool, error) {
	v, ok := m[name]
	if !ok {
		return "", false, nil
	}
	if v.Kind() != '"' {
		return "", false, fmt.Errorf("%s is not a string", name)
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", false, fmt.Errorf("%s is not a valid string", name)
	}
	return s, true, nil
}

// checkEndpointURL accepts what every OAuth endpoint of mcpauthz accepts
// (oauth.ParseEndpointURL): absolute https URLs, http only for loopback
// hosts, no user information, no fragment.
func checkEndpointURL(raw string) error {
	_, err := oauth.ParseEndpointURL(raw)
	return err
}
