package policy

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/download"
	"github.com/open-policy-agent/opa/v1/keys"
	"github.com/open-policy-agent/opa/v1/logging"
	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/plugins/rest"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/mcpauthz/mcpauthz/internal/oauth"
	"github.com/mcpauthz/mcpauthz/internal/problem"
)

// Bundle polling defaults, used when BundleSource.PollMin or PollMax is zero.
// They are shorter than OPA's (60s/120s) because the policy's data carries
// revocations.
const (
	DefaultBundlePollMin = 10 * time.Second
	DefaultBundlePollMax = 30 * time.Second
)

// defaultBundleKeyAlgorithm is OPA's default for keys without an algorithm.
const defaultBundleKeyAlgorithm = "RS256"

// bundleRetryMin is the base of the retry backoff after a failed poll, as in
// OPA's downloader.
const bundleRetryMin = 100 * time.Millisecond

// BundleSource names an OPA bundle (a .tar.gz of .rego files, data.json /
// data.yaml files, and optionally a .manifest and a .signatures.json) served
// over HTTP, as OPA's bundle service API describes. See Engine.RunBundle.
type BundleSource struct {
	// URL is the bundle's full URL. It must be https, except for a
	// loopback host (localhost, 127.0.0.0/8, ::1), where http is allowed.
	// Credentials do not belong in it: use BearerTokenFile or Headers.
	URL string
	// PollMin and PollMax bound the delay between two polls after a
	// successful one; each delay is drawn uniformly between them, as OPA
	// does. After a failed poll the delay follows OPA's exponential
	// backoff from 100ms, capped at PollMax. Zero selects
	// DefaultBundlePollMin / DefaultBundlePollMax.
	PollMin, PollMax time.Duration
	// Headers are sent with every request, e.g. a static Authorization
	// (which BearerTokenFile, if set, replaces).
	Headers map[string]string
	// BearerTokenFile, if set, is read before every request and its
	// content, trimmed of surrounding white space, sent as
	// "Authorization: Bearer <token>" (as OPA's credentials.bearer.token_path
	// does), so a rotated token is picked up without a restart.
	BearerTokenFile string
	// VerificationKey, if set, makes signatures mandatory: a bundle
	// without a .signatures.json, or whose signature does not verify with
	// this key, or whose files do not match the signed hashes, is
	// rejected. Without it, bundles are not verified, and a signed bundle
	// is rejected as OPA does ("verification key not provided").
	VerificationKey *BundleKey
	// Client makes the requests; nil selects a client with a 10s response
	// header timeout and a 2 minute overall timeout. A client given here
	// must honour request contexts (net/http's transports do): RunBundle
	// waits for the poll in flight when its ctx is done. Redirects are
	// followed only to URLs allowed by the rule for URL.
	Client *http.Client
}

// BundleKey is the key that verifies bundle signatures, as one entry of
// OPA's "keys" configuration together with the bundle's "signing" block.
type BundleKey struct {
	// KeyID is the name of the key, as in OPA's keys configuration and
	// signing.keyid. Signatures are verified with this key whatever key id
	// their JWT names, as OPA does when signing.keyid is set.
	KeyID string
	// Key is the PEM-encoded public key (PKIX "PUBLIC KEY", PKCS#1 "RSA
	// PUBLIC KEY") or certificate for the RS*, PS* and ES* algorithms, or
	// the shared secret, as is, for HS*.
	Key string
	// Algorithm is the JWS algorithm (RS256, RS384, RS512, PS256, PS384,
	// PS512, ES256, ES384, ES512, HS256, HS384, HS512); "" selects RS256.
	Algorithm string
	// Scope, if set, must equal the "scope" claim of the signature; if
	// empty, the signature must have no scope (OPA's rule).
	Scope string
}

// Validate checks src as RunBundle would before polling: the URL, the poll
// delays and the verification key. Problems are *problem.Error values with
// the paths "url", "poll_min", "poll_max" and "signing".
func (src BundleSource) Validate() error {
	var errs problem.List
	if _, err := oauth.ParseEndpointURL(src.URL); err != nil {
		errs.Add("url", "%v", err)
	}
	minDelay, maxDelay := src.delays()
	switch {
	case src.PollMin < 0:
		errs.Add("poll_min", "must not be negative")
	case src.PollMax < 0:
		errs.Add("poll_max", "must not be negative")
	case maxDelay < minDelay:
		errs.Add("poll_max", "(%v) is less than poll_min (%v)", maxDelay, minDelay)
	}
	if k := src.VerificationKey; k != nil {
		if err := k.validate(); err != nil {
			errs.Add("signing", "%v", err)
		}
	}
	return errs.Err()
}

func (src BundleSource) delays() (minDelay, maxDelay time.Duration) {
	minDelay, maxDelay = src.PollMin, src.PollMax
	if minDelay == 0 {
		minDelay = DefaultBundlePollMin
	}
	if maxDelay == 0 {
		maxDelay = max(DefaultBundlePollMax, minDelay)
	}
	return minDelay, maxDelay
}

func (k *BundleKey) algorithm() string {
	if k.Algorithm == "" {
		return defaultBundleKeyAlgorithm
	}
	return k.Algorithm
}

// validate checks the key as OPA will use it, so that a key OPA cannot use
// fails at start-up rather than on every bundle.
func (k *BundleKey) validate() error {
	alg := k.algorithm()
	if !keys.IsSupportedAlgorithm(alg) {
		return fmt.Errorf("unsupported algorithm %q", alg)
	}
	if k.Key == "" {
		return errors.New("no key")
	}
	if strings.HasPrefix(alg, "HS") {
		return nil
	}
	block, _ := pem.Decode([]byte(k.Key))
	if block == nil {
		return fmt.Errorf("%s needs a PEM public key or certificate", alg)
	}
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		_, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		_, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		_, err = x509.ParseCertificate(block.Bytes)
	default:
		err = fmt.Errorf("PEM block %q is not a public key or certificate", block.Type)
	}
	if err != nil {
		return fmt.Errorf("verification key: %w", err)
	}
	return nil
}

// bundleKeyName names the key in the verification config when KeyID is
// empty.
const bundleKeyName = "mcpauthz"

func (k *BundleKey) verificationConfig() *bundle.VerificationConfig {
	id := k.KeyID
	if id == "" {
		id = bundleKeyName
	}
	kc := &keys.Config{Key: k.Key, Algorithm: k.algorithm(), Scope: k.Scope}
	return bundle.NewVerificationConfig(map[string]*bundle.KeyConfig{id: kc}, id, k.Scope, nil)
}

// bundleURL parses and checks a bundle or redirect URL: https, or http on
// loopback, and no credentials in it (see oauth.ParseEndpointURL).
func bundleURL(raw string) (*url.URL, error) {
	u, err := oauth.ParseEndpointURL(raw)
	if err != nil {
		return nil, fmt.Errorf("bundle url: %w", err)
	}
	return u, nil
}

// redactURL returns u without user info, query and fragment, for logs.
func redactURL(u *url.URL) string {
	c := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	return c.String()
}

// RunBundle polls the bundle of src and activates every new bundle, until
// ctx is done; it returns nil then, and an error at once only if src is
// invalid (see BundleSource.Validate).
//
// It uses OPA's bundle downloader: the first poll is immediate, later ones
// send If-None-Match with the ETag of the last bundle received, and a 304
// keeps the current policy. A bundle is read, and its signature verified
// if src.VerificationKey is set, by OPA's bundle reader; its Rego modules
// (Rego v1 unless the manifest says otherwise) and data, laid out by OPA's
// bundle conventions, are then compiled exactly as Load compiles local files
// and published atomically. The first activation makes the engine Ready.
//
// Nothing replaces the current policy unless it compiles: a failed
// download (HTTP error, connection refused), a corrupt or wrongly signed
// bundle, a bundle that does not compile or defines no
// data.mcp.authz.decision, a delta bundle and a bundle with Wasm or plan
// modules are all rejected, reported to OnReload (with the rejected
// bundle's revision, or "" if it could not be read) and logged (Warn, once
// per distinct error), and the last good policy keeps serving. A bundle
// that was read but not activated is not downloaded again until the server
// serves a different ETag; one that could not be read (corrupt, badly
// signed, a Rego syntax error) is downloaded again at the next poll, with
// the retry backoff.
//
// The revision of a bundle is its manifest's revision or, if that is
// empty, a short SHA-256 of its modules, data and manifest. Receiving a
// bundle identical to the current one keeps the compiled policy.
//
// Run at most one RunBundle per engine, and do not mix it with Load or
// Watch: whichever publishes last wins.
func (e *Engine) RunBundle(ctx context.Context, src BundleSource) error {
	r, err := newBundleRunner(e, src)
	if err != nil {
		return err
	}
	e.logger.LogAttrs(ctx, slog.LevelInfo, "polling policy bundle", slog.String("bundle", r.name),
		slog.Bool("verify_signatures", src.VerificationKey != nil),
		slog.Duration("poll_min", r.minDelay), slog.Duration("poll_max", r.maxDelay))
	r.run(ctx)
	return nil
}

// bundleRunner is the state of one RunBundle.
type bundleRunner struct {
	e          *Engine
	name       string // the redacted URL, for logs
	minDelay   time.Duration
	maxDelay   time.Duration
	downloader *download.Downloader

	done    chan struct{} // closed by the update callback of the current poll
	lastErr string        // last error logged at Warn, to log it once
	// failing is set by a failed poll and cleared by a successful one;
	// stale is set while the last bundle received was not activated (the
	// downloader keeps its ETag, so a 304 then means "still that bundle").
	failing, stale bool
}

func newBundleRunner(e *Engine, src BundleSource) (*bundleRunner, error) {
	if err := src.Validate(); err != nil {
		return nil, err
	}
	u, _ := bundleURL(src.URL)
	r := &bundleRunner{e: e, name: redactURL(u)}
	r.minDelay, r.maxDelay = src.delays()

	hc := src.Client
	if hc == nil {
		tr, ok := http.DefaultTransport.(*http.Transport)
		if ok {
			tr = tr.Clone()
		} else {
			tr = &http.Transport{Proxy: http.ProxyFromEnvironment}
		}
		tr.ResponseHeaderTimeout = 10 * time.Second
		hc = &http.Client{Transport: tr, Timeout: 2 * time.Minute}
	}
	hc = restrictRedirects(hc)

	// The rest client takes the base URL from its configuration and the
	// rest of the URL as the download path.
	base := url.URL{Scheme: u.Scheme, Host: u.Host}
	path := strings.TrimPrefix(u.EscapedPath(), "/")
	if u.RawQuery != "" {
		path += "?" + u.RawQuery
	}
	cfg, err := json.Marshal(map[string]any{
		"name":        "mcpauthz-bundle",
		"url":         base.String(),
		"headers":     src.Headers,
		"credentials": map[string]any{"plugin": bundleAuthPluginName},
	})
	if err != nil {
		return nil, fmt.Errorf("policy: bundle client: %w", err)
	}
	plugin := &bundleAuthPlugin{client: hc, tokenFile: src.BearerTokenFile}
	client, err := rest.New(cfg, nil,
		rest.AuthPluginLookup(func(name string) rest.HTTPAuthPlugin {
			if name == bundleAuthPluginName {
				return plugin
			}
			return nil
		}),
		rest.Logger(&opaLogger{logger: e.logger.With(slog.String("bundle", r.name))}),
	)
	if err != nil {
		return nil, fmt.Errorf("policy: bundle client: %w", err)
	}

	trigger := plugins.TriggerManual // RunBundle drives the polls itself
	dcfg := download.Config{Trigger: &trigger}
	if err := dcfg.ValidateAndInjectDefaults(); err != nil {
		return nil, fmt.Errorf("policy: bundle downloader: %w", err)
	}
	r.downloader = download.New(dcfg, client, path).
		WithCallback(r.update).
		WithBundleParserOpts(ast.ParserOptions{RegoVersion: ast.RegoV1, ProcessAnnotation: true})
	if k := src.VerificationKey; k != nil {
		r.downloader = r.downloader.WithBundleVerificationConfig(k.verificationConfig())
	}
	return r, nil
}

// run polls until ctx is done. The downloader keeps the ETag; run only
// times the polls, as OPA's periodic downloader does but with
// sub-second delays.
func (r *bundleRunner) run(ctx context.Context) {
	var retry int
	for {
		r.done = make(chan struct{})
		err := r.downloader.Trigger(ctx)
		// Trigger returns early when ctx is done; the poll it started then
		// fails promptly (its request carries ctx) and calls update, which
		// does nothing once ctx is done. Wait for that call so that no
		// poll touches the engine after RunBundle returns.
		<-r.done
		if ctx.Err() != nil {
			return
		}
		var delay time.Duration
		if err != nil {
			delay = util.DefaultBackoff(float64(bundleRetryMin), float64(r.maxDelay), retry)
			retry++
		} else {
			retry = 0
			delay = r.minDelay + rand.N(r.maxDelay-r.minDelay+1)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// update is the downloader's callback, called once per poll. An error it
// returns makes the poll count as failed (retry backoff); the downloader
// has by then recorded the ETag of the bundle, so a rejected bundle is not
// downloaded again until it changes.
func (r *bundleRunner) update(ctx context.Context, u download.Update) error {
	defer close(r.done)
	if ctx.Err() != nil {
		return ctx.Err() // shutting down: report nothing
	}
	if u.Error != nil {
		err := fmt.Errorf("policy: bundle: %w", u.Error)
		r.failing = true
		r.e.reloaded("", err)
		r.warn(ctx, err)
		return nil // the downloader returns u.Error itself
	}
	if u.Bundle == nil {
		// 304 Not Modified: keep the current policy. After failed polls,
		// when the bundle the server still serves is the one that is
		// active, the policy is current again: report it.
		if r.failing && !r.stale {
			if g := r.e.Current(); g != nil {
				r.e.reloaded(g.revision, nil)
			}
		}
		r.failing = false
		return nil
	}
	revision, err := r.e.activateBundle(ctx, u.Bundle, slog.String("bundle", r.name), slog.String("etag", u.ETag))
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.failing, r.stale = true, true
		r.warn(ctx, err, slog.String("rejected", revision), slog.String("etag", u.ETag))
		return err
	}
	r.failing, r.stale = false, false
	r.lastErr = ""
	return nil
}

// warn logs a failed poll the first time its error is seen (at Warn, or
// Error for a bundle the activation check refused; see logRejected), and at
// Debug while it repeats.
func (r *bundleRunner) warn(ctx context.Context, err error, attrs ...slog.Attr) {
	attrs = append([]slog.Attr{slog.String("bundle", r.name)}, attrs...)
	if err.Error() == r.lastErr {
		attrs = append([]slog.Attr{slog.String("revision", r.e.Revision())}, attrs...)
		r.e.logger.LogAttrs(ctx, slog.LevelDebug, "policy bundle update failed; keeping the last good policy", append(attrs, slog.Any("error", err))...)
		return
	}
	r.lastErr = err.Error()
	r.e.logRejected(ctx, "policy bundle update failed; keeping the last good policy", err, attrs...)
}

// activateBundle compiles b and publishes it, through the same path as
// Load. It returns b's revision.
func (e *Engine) activateBundle(ctx context.Context, b *bundle.Bundle, attrs ...slog.Attr) (string, error) {
	sum := bundleSum(b)
	revision := bundleRevision(b, sum)
	if err := checkBundleKind(b); err != nil {
		e.reloaded(revision, err)
		return revision, err
	}
	return revision, e.publish(ctx, sum, revision, func() (*Generation, error) {
		return newGeneration(ctx, b.ParsedModules(""), b.Data, sum, revision, e.logger, e.timeout)
	}, "policy bundle activated", append(attrs, slog.Int("modules", len(b.Modules)))...)
}

// checkBundleKind rejects bundles the engine cannot evaluate as a whole.
func checkBundleKind(b *bundle.Bundle) error {
	switch {
	case b.Type() == bundle.DeltaBundleType:
		return errors.New("policy: delta bundles are not supported; serve snapshot bundles")
	case len(b.WasmModules) > 0 || len(b.Wasm) > 0 || len(b.Manifest.WasmResolvers) > 0:
		return errors.New("policy: bundles with Wasm modules are not supported; serve Rego")
	case len(b.PlanModules) > 0:
		return errors.New("policy: bundles with plan modules are not supported; serve Rego")
	}
	return nil
}

// bundleRevision is the manifest's revision, or the content hash.
func bundleRevision(b *bundle.Bundle, sum [sha256.Size]byte) string {
	if b.Manifest.Revision != "" {
		return b.Manifest.Revision
	}
	return revisionOf(sum)
}

// bundleSum hashes what a bundle's generation is compiled from: the
// manifest (revision, roots, Rego versions), every module's path and source,
// and the data. It is domain-separated from the hash of local files.
func bundleSum(b *bundle.Bundle) [sha256.Size]byte {
	h := sha256.New()
	var n [8]byte
	write := func(p []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write(p)
	}
	write([]byte("mcpauthz bundle v1"))
	m, err := json.Marshal(b.Manifest)
	if err != nil {
		m = []byte(b.Manifest.String())
	}
	write(m)
	mods := slices.Clone(b.Modules)
	slices.SortFunc(mods, func(a, b bundle.ModuleFile) int { return strings.Compare(a.Path, b.Path) })
	for _, mf := range mods {
		write([]byte(mf.Path))
		write(mf.Raw)
	}
	// encoding/json sorts object keys, so equal data gives equal bytes.
	d, err := json.Marshal(b.Data)
	if err != nil {
		d = fmt.Appendf(nil, "%v", b.Data)
	}
	write(d)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// restrictRedirects returns a copy of hc that follows a redirect only to a
// URL that BundleSource.URL could be.
func restrictRedirects(hc *http.Client) *http.Client {
	c := *hc
	next := hc.CheckRedirect
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if _, err := bundleURL(req.URL.String()); err != nil {
			return fmt.Errorf("redirect to %q refused: %w", redactURL(req.URL), err)
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	return &c
}

const bundleAuthPluginName = "mcpauthz"

// bundleAuthPlugin hands OPA's rest client the engine's HTTP client and adds
// the bearer token.
type bundleAuthPlugin struct {
	client    *http.Client
	tokenFile string
}

func (p *bundleAuthPlugin) NewClient(rest.Config) (*http.Client, error) { return p.client, nil }

func (p *bundleAuthPlugin) Prepare(req *http.Request) error {
	if p.tokenFile == "" {
		return nil
	}
	raw, err := os.ReadFile(p.tokenFile)
	if err != nil {
		return fmt.Errorf("bearer token: %w", err)
	}
	token := strings.TrimSpace(string(raw))
	if token == "" {
		return fmt.Errorf("bearer token: %s is empty", p.tokenFile)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	return nil
}

// opaLogger sends the log of OPA's downloader and rest client to the
// engine's logger at debug level; the engine logs what matters itself.
type opaLogger struct {
	logger *slog.Logger
	fields map[string]any
}

func (l *opaLogger) log(f string, a []any) {
	ctx := context.Background()
	if !l.logger.Enabled(ctx, slog.LevelDebug) {
		return
	}
	attrs := make([]slog.Attr, 0, len(l.fields))
	for _, k := range util.KeysSorted(l.fields) {
		attrs = append(attrs, slog.Any(k, l.fields[k]))
	}
	l.logger.LogAttrs(ctx, slog.LevelDebug, "opa: "+fmt.Sprintf(f, a...), attrs...)
}

func (l *opaLogger) Debug(f string, a ...any) { l.log(f, a) }
func (l *opaLogger) Info(f string, a ...any)  { l.log(f, a) }
func (l *opaLogger) Warn(f string, a ...any)  { l.log(f, a) }
func (l *opaLogger) Error(f string, a ...any) { l.log(f, a) }

func (l *opaLogger) WithFields(fields map[string]any) logging.Logger {
	merged := make(map[string]any, len(l.fields)+len(fields))
	for k, v := range l.fields {
		merged[k] = v
	}
	for k, v := range fields {
		merged[k] = v
	}
	return &opaLogger{logger: l.logger, fields: merged}
}

func (l *opaLogger) GetLevel() logging.Level {
	if l.logger.Enabled(context.Background(), slog.LevelDebug) {
		return logging.Debug
	}
	return logging.Info
}

func (l *opaLogger) SetLevel(logging.Level) {}
