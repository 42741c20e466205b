package upstream

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
)

// SubjectToken is the request side of a credential lookup: the client's
// verified access token and what the verifier and the policy decided
// about it.
type SubjectToken struct {
	// Token is the client's verified access token, exactly as received. A
	// token exchange sends it to the authorization server as the subject
	// token; it is never kept beyond the exchange (cache keys hold its
	// SHA-256 only) and never logged.
	Token string
	// Issuer, Subject and ClientID are the verified identity (iss, sub,
	// client_id/azp). They are part of the cache key.
	Issuer   string
	Subject  string
	ClientID string
	// Expiry is the token's exp; zero when it has none. An exchanged token
	// is never served from the cache past it.
	Expiry time.Time
	// Scopes, when not nil, is the policy's choice of upstream scopes for
	// this request. It may only narrow: it must be a non-empty subset of
	// the source's configured scopes (else ReasonScopeNotAllowed). Sources
	// that cannot narrow (client_credentials, static) accept only nil or
	// exactly their configured set. Nil means the configured scopes.
	Scopes []string
}

// Credential is what to set on the upstream request: the header Header
// (lowercase) with the value Value, replacing any value the client sent.
//
// String, GoString and LogValue redact Value, so a Credential passed to fmt
// or slog by mistake does not leak the secret.
type Credential struct {
	Header string
	Value  string
}

// String returns the header name and a redaction marker.
func (c Credential) String() string { return c.Header + ": [redacted]" }

// GoString is String, for %#v.
func (c Credential) GoString() string { return "upstream.Credential{" + c.String() + "}" }

// LogValue logs the header name only.
func (c Credential) LogValue() slog.Value {
	return slog.GroupValue(slog.String("header", c.Header), slog.String("value", "[redacted]"))
}

// Format is String for every verb, so that %v, %+v, %s and %q cannot
// print the value either.
func (c Credential) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		fmt.Fprint(f, c.GoString())
		return
	}
	fmt.Fprint(f, c.String())
}

// CacheEvent is an event of a token exchange cache (see Observer).
type CacheEvent string

// The cache events.
const (
	// CacheHit: a request was answered from the cache.
	CacheHit CacheEvent = "hit"
	// CacheMiss: a request found no valid entry and started or joined an
	// exchange.
	CacheMiss CacheEvent = "miss"
	// CacheEviction: an exchange result pushed the least recently used
	// entry out of a full cache.
	CacheEviction CacheEvent = "eviction"
)

// Observer receives the events of the sources, for metrics. Methods may be
// called concurrently and must not block. A nil Observer in Options
// discards the events.
type Observer interface {
	// ObserveFetch is called after every attempt to obtain a credential
	// from its origin: every token endpoint request (token exchange,
	// client credentials, and discovery of the token endpoint is not
	// one), and every static file read that found new content or failed.
	// result is ResultOK or the Reason of the failure; d is the time the
	// attempt took.
	ObserveFetch(source string, result string, d time.Duration)
	// ObserveCache is called for every cache event of a token exchange
	// source.
	ObserveCache(source string, event CacheEvent)
}

// Options are the dependencies shared by the sources.
type Options struct {
	// Logger receives background events (refresh failures, static file
	// changes, discovery), with source names, endpoints and reasons only,
	// never credentials or tokens. Nil discards them.
	Logger *slog.Logger
	// Observer receives metric events. Nil discards them.
	Observer Observer
	// HTTPClient is the base of the client used for token endpoints and
	// metadata. Its Transport, when set, must be an *http.Transport (it is
	// cloned, so that the source's TLS settings and idle connections are
	// its own); redirects are never followed. Nil means a clone of
	// http.DefaultTransport.
	HTTPClient *http.Client
	// WrapTransport, when set, wraps the transport of every source's
	// client (for tracing the token endpoint calls: the request's context
	// carries the check's span).
	WrapTransport func(http.RoundTripper) http.RoundTripper

	// clock replaces the real clock in tests.
	clock clock
}

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

func (o Options) clk() clock {
	if o.clock == nil {
		return realClock{}
	}
	return o.clock
}

type nopObserver struct{}

func (nopObserver) ObserveFetch(string, string, time.Duration) {}
func (nopObserver) ObserveCache(string, CacheEvent)            {}

func (o Options) observer() Observer {
	if o.Observer == nil {
		return nopObserver{}
	}
	return o.Observer
}

// defaultHeader is the header a credential goes in when none is configured.
const defaultHeader = "authorization"

// checkHeaderName validates the configured header of a source: a lowercase
// RFC 9110 token that is not a pseudo-header, not a header Envoy or the
// transport owns, and not one whose semantics would change the request
// (host, content-*, hop-by-hop headers, cookie).
func checkHeaderName(name string) error {
	if name == "" {
		return fmt.Errorf("header must not be empty")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return fmt.Errorf("header %q is not a lowercase HTTP header name", name)
		}
	}
	switch name {
	case "host", "cookie", "content-length", "content-type", "content-encoding", "transfer-encoding",
		"connection", "upgrade", "te", "trailer", "keep-alive", "proxy-authorization", "proxy-connection",
		"x-request-id", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host":
		return fmt.Errorf("header %q may not carry an upstream credential", name)
	}
	if strings.HasPrefix(name, "x-envoy-") {
		return fmt.Errorf("header %q may not carry an upstream credential (x-envoy- headers belong to Envoy)", name)
	}
	return nil
}

// isToken68 reports whether s is an RFC 6750 b64token / RFC 9110 token68:
// 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=". Bearer
// values must have this form, so a token from an authorization server
// cannot inject header syntax.
func isToken68(s string) bool {
	i := 0
	for i < len(s) && s[i] != '=' {
		if !isTokenChar(s[i]) {
			return false
		}
		i++
	}
	if i == 0 {
		return false
	}
	for ; i < len(s); i++ {
		if s[i] != '=' {
			return false
		}
	}
	return true
}

// isFieldValue reports whether s may be an HTTP header value as is: visible
// ASCII with inner spaces or tabs, no leading or trailing whitespace, no
// control characters (so no CR or LF) and no bytes above 0x7e.
func isFieldValue(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c > 0x20 && c < 0x7f:
		case (c == ' ' || c == '\t') && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

// valueBuilder builds the header value from a token or secret: with a
// scheme ("Bearer token"), the token must be token68; without (raw, for
// headers such as x-api-key), it must be a valid field value.
type valueBuilder struct {
	scheme string // "" for raw values
}

func (vb valueBuilder) build(secret string) (string, bool) {
	if vb.scheme == "" {
		return secret, isFieldValue(secret)
	}
	if !isToken68(secret) {
		return "", false
	}
	return vb.scheme + " " + secret, true
}

// newValueBuilder returns the builder for header with the configured scheme
// ("" meaning the default: Bearer for authorization, raw otherwise; "none"
// meaning raw).
func newValueBuilder(header, scheme string) (valueBuilder, error) {
	switch {
	case scheme == "none":
		return valueBuilder{}, nil
	case scheme == "" && header == defaultHeader:
		return valueBuilder{scheme: "Bearer"}, nil
	case scheme == "":
		return valueBuilder{}, nil
	}
	for i := 0; i < len(scheme); i++ {
		c := scheme[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return valueBuilder{}, fmt.Errorf("scheme %q is not an HTTP authentication scheme token", scheme)
		}
	}
	return valueBuilder{scheme: scheme}, nil
}

// background holds the goroutines a source runs once started: constructors
// start nothing (validating a configuration contacts no server), Start
// starts them, Close stops them. Start and Close are not called
// concurrently.
type background struct {
	once sync.Once
	fns  []func()
}

func (b *background) add(f func()) { b.fns = append(b.fns, f) }

// start runs every function on its own goroutine counted by wg, unless ctx
// (the source's lifetime, nil for none) has ended.
func (b *background) start(ctx context.Context, wg *sync.WaitGroup) {
	b.once.Do(func() {
		if ctx != nil && ctx.Err() != nil {
			return
		}
		for _, f := range b.fns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f()
			}()
		}
	})
}
