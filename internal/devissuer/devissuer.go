// Package devissuer is a local token issuer for development: it keeps an
// RS256 signing key on disk, serves its public key set and metadata over
// HTTP, and mints RFC 9068 access tokens. It backs "mcpauthz serve --dev"
// and "mcpauthz token".
//
// It has no authorization or token endpoint: tokens are minted locally
// with Mint. Never use it in production.
package devissuer

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/mcpauthz/mcpauthz/internal/oauth"
)

// KeyFile is the name of the signing key in the directory given to
// LoadOrCreateKey.
const KeyFile = "signing-key.json"

const (
	keyBits    = 2048
	defaultTTL = time.Hour
	// DefaultClientID is the client_id of minted tokens that set none.
	DefaultClientID = "mcpauthz-dev"
)

// LoadOrCreateKey returns the RS256 private signing key stored as JWK JSON
// in dir/signing-key.json, creating dir (0700) and the key (0600) when
// missing. With rotate, a fresh key replaces any existing one. The key's
// kid is its RFC 7638 thumbprint.
//
// An existing key file that group or others can access is refused (except
// on Windows, where modes do not apply).
func LoadOrCreateKey(dir string, rotate bool) (jwk.Key, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	path := filepath.Join(dir, KeyFile)
	if !rotate {
		key, err := loadKey(path)
		if err == nil || !errors.Is(err, fs.ErrNotExist) {
			return key, err
		}
	}
	return createKey(dir, path)
}

func loadKey(path string) (jwk.Key, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("devissuer: %s is accessible by group or others (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	key, err := jwk.ParseKey(b)
	if err != nil {
		return nil, fmt.Errorf("devissuer: %s is not a JWK", path)
	}
	var priv rsa.PrivateKey
	if err := key.Raw(&priv); err != nil {
		return nil, fmt.Errorf("devissuer: %s is not an RSA private key", path)
	}
	if priv.N.BitLen() < keyBits {
		return nil, fmt.Errorf("devissuer: %s: RSA key shorter than %d bits", path, keyBits)
	}
	if key.KeyID() == "" {
		return nil, fmt.Errorf("devissuer: %s: key has no kid", path)
	}
	return key, nil
}

func createKey(dir, path string) (jwk.Key, error) {
	priv, err := rsa.GenerateKey(rand.Reader, keyBits)
	if err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	key, err := jwk.FromRaw(priv)
	if err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	tp, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	for name, v := range map[string]any{jwk.KeyIDKey: base64.RawURLEncoding.EncodeToString(tp), jwk.AlgorithmKey: jwa.RS256, jwk.KeyUsageKey: jwk.ForSignature} {
		if err := key.Set(name, v); err != nil {
			return nil, fmt.Errorf("devissuer: %w", err)
		}
	}
	b, err := json.Marshal(key)
	if err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	if err := writeFileAtomic(dir, path, b, 0o600); err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	return key, nil
}

// WriteJWKS writes the public key set of key (private parts removed) to
// path, for an issuer configured with jwks_file.
func WriteJWKS(path string, key jwk.Key) error {
	b, err := publicSetJSON(key)
	if err != nil {
		return fmt.Errorf("devissuer: %w", err)
	}
	if err := writeFileAtomic(filepath.Dir(path), path, b, 0o644); err != nil {
		return fmt.Errorf("devissuer: %w", err)
	}
	return nil
}

func publicSetJSON(key jwk.Key) ([]byte, error) {
	pub, err := key.PublicKey()
	if err != nil {
		return nil, err
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return nil, err
	}
	return json.Marshal(set)
}

// writeFileAtomic writes data to path through a temporary file in dir, so
// that readers never see a partial file.
func writeFileAtomic(dir, path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // no-op after the rename
	if err := f.Chmod(perm); err != nil && runtime.GOOS != "windows" {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// Issuer is a development issuer. URL is its issuer identifier (the iss of
// its tokens, and where Handler is served); Key is its private signing key.
type Issuer struct {
	URL string
	Key jwk.Key
}

// Paths returns the paths Handler serves, derived from the path of URL:
// the key set, the RFC 8414 metadata (well-known part inserted before the
// issuer path) and the OpenID Connect discovery document (appended).
func (i *Issuer) Paths() (jwks, oauthMetadata, oidcMetadata string) {
	base := ""
	if u, err := url.Parse(i.URL); err == nil {
		base = strings.TrimSuffix(u.Path, "/")
	}
	return base + "/jwks", "/.well-known/oauth-authorization-server" + base, base + "/.well-known/openid-configuration"
}

// JWKSURI is the URL of the issuer's public key set.
func (i *Issuer) JWKSURI() string {
	jwksPath, _, _ := i.Paths()
	u, err := url.Parse(i.URL)
	if err != nil {
		return strings.TrimSuffix(i.URL, "/") + "/jwks"
	}
	u.Path = jwksPath
	u.RawPath = ""
	return u.String()
}

// Handler serves GET (and HEAD) requests for the public key set and the
// authorization server metadata (RFC 8414 and OpenID Connect discovery).
func (i *Issuer) Handler() http.Handler {
	jwksPath, oauthPath, oidcPath := i.Paths()
	set, setErr := publicSetJSON(i.Key)
	md, mdErr := json.Marshal(i.metadata())
	mux := http.NewServeMux()
	serve := func(body []byte, err error, cacheControl string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if err != nil {
				http.Error(w, "key unavailable", http.StatusInternalServerError)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", cacheControl)
			w.Write(body)
		}
	}
	mux.Handle("GET "+jwksPath, serve(set, setErr, "public, max-age=300"))
	mux.Handle("GET "+oauthPath, serve(md, mdErr, "no-store"))
	mux.Handle("GET "+oidcPath, serve(md, mdErr, "no-store"))
	return mux
}

func (i *Issuer) metadata() map[string]any {
	return map[string]any{
		"issuer":   i.URL,
		"jwks_uri": i.JWKSURI(),
		// Tokens are minted locally: there is no authorization or token
		// endpoint, hence no response or grant types.
		"response_types_supported":              []string{},
		"grant_types_supported":                 []string{},
		"token_endpoint_auth_methods_supported": []string{"none"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"service_documentation":                 "mcpauthz development issuer: mint tokens with `mcpauthz token`",
	}
}

// MintOptions describe a token to mint. Subject and Audience are required.
type MintOptions struct {
	Subject  string
	ClientID string // default DefaultClientID
	Audience []string
	Scopes   []string
	TTL      time.Duration // default 1h
	Now      time.Time     // default time.Now()
	// ExtraClaims are added to the token; they must not name a claim that
	// Mint sets itself.
	ExtraClaims map[string]any
}

var registeredClaims = []string{"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope"}

// Mint returns an RFC 9068 access token signed with the issuer's key:
// header typ at+jwt, alg RS256 and kid; claims iss, sub, aud, exp, iat,
// nbf, jti (random), client_id and scope (space-delimited, omitted when
// there are no scopes).
func (i *Issuer) Mint(opts MintOptions) (string, error) {
	if opts.Subject == "" {
		return "", errors.New("devissuer: subject is required")
	}
	if len(opts.Audience) == 0 || slices.Contains(opts.Audience, "") {
		return "", errors.New("devissuer: a non-empty audience is required")
	}
	for _, s := range opts.Scopes {
		if !oauth.ValidScope(s) {
			return "", fmt.Errorf("devissuer: scope %q is not a scope-token (RFC 6749 §3.3)", s)
		}
	}
	if opts.ClientID == "" {
		opts.ClientID = DefaultClientID
	}
	if opts.TTL <= 0 {
		opts.TTL = defaultTTL
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", fmt.Errorf("devissuer: %w", err)
	}
	claims := make(map[string]any, len(registeredClaims)+len(opts.ExtraClaims))
	for name, v := range opts.ExtraClaims {
		if slices.Contains(registeredClaims, name) {
			return "", fmt.Errorf("devissuer: extra claim %q would replace a claim Mint sets", name)
		}
		claims[name] = v
	}
	now := opts.Now.Unix()
	claims["iss"] = i.URL
	claims["sub"] = opts.Subject
	claims["aud"] = opts.Audience
	if len(opts.Audience) == 1 {
		claims["aud"] = opts.Audience[0]
	}
	claims["iat"] = now
	claims["nbf"] = now
	claims["exp"] = opts.Now.Add(opts.TTL).Unix()
	claims["jti"] = base64.RawURLEncoding.EncodeToString(jti[:])
	claims["client_id"] = opts.ClientID
	if len(opts.Scopes) > 0 {
		claims["scope"] = strings.Join(opts.Scopes, " ")
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("devissuer: claims: %w", err)
	}

	hdr := jws.NewHeaders()
	for name, v := range map[string]any{jws.TypeKey: "at+jwt", jws.KeyIDKey: i.Key.KeyID()} {
		if err := hdr.Set(name, v); err != nil {
			return "", fmt.Errorf("devissuer: %w", err)
		}
	}
	tok, err := jws.Sign(payload, jws.WithKey(jwa.RS256, i.Key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", fmt.Errorf("devissuer: signing: %w", err)
	}
	return string(tok), nil
}
