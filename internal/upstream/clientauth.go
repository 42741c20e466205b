package upstream

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// The client authentication methods (RFC 8414 token_endpoint_auth_method
// values).
const (
	AuthClientSecretBasic = "client_secret_basic"
	AuthClientSecretPost  = "client_secret_post"
	AuthPrivateKeyJWT     = "private_key_jwt"
	AuthTLSClientAuth     = "tls_client_auth"
)

// ClientAuth is how mcpauthz authenticates to a token endpoint as an OAuth
// client. Secrets and keys are read from files (Kubernetes Secret mounts),
// never from the configuration itself.
type ClientAuth struct {
	// ID is mcpauthz's client_id at the authorization server.
	ID string
	// Method is one of client_secret_basic (RFC 6749 §2.3.1),
	// client_secret_post, private_key_jwt (RFC 7523 §2.2, OpenID Connect
	// Core §9) or tls_client_auth (RFC 8705 §2: the client certificate
	// authenticates, client_id goes in the body).
	Method string
	// SecretFile holds the client secret (client_secret_basic and
	// client_secret_post). Read once, at construction; a trailing newline
	// is trimmed.
	SecretFile string
	// PrivateKeyFile holds the key that signs the private_key_jwt
	// assertion: PEM (PKCS #8, PKCS #1 or SEC 1, unencrypted) or a JWK
	// with its private part. RSA keys need at least 2048 bits.
	PrivateKeyFile string
	// KeyID is the kid header of the assertion. Default: the JWK's kid,
	// else none.
	KeyID string
	// SigningAlgorithm signs the assertion. Default: RS256 for RSA keys,
	// ES256/ES384/ES512 by curve, EdDSA for Ed25519.
	SigningAlgorithm string
	// AssertionAudience is the aud of the assertion. Default: the token
	// endpoint URL (RFC 7523 §3). Some servers want their issuer instead.
	AssertionAudience string
	// CertificateFile, for private_key_jwt, is the PEM certificate of the
	// signing key: its SHA-1 and SHA-256 thumbprints go into the assertion's
	// x5t and x5t#S256 headers, which Microsoft Entra ID requires for
	// certificate credentials.
	CertificateFile string
	// TLSCertFile and TLSKeyFile are the PEM client certificate and key of
	// tls_client_auth. They are reloaded when they change (checked at each
	// TLS handshake), so a rotated certificate needs no restart.
	TLSCertFile string
	TLSKeyFile  string
}

// clientAuth is a validated ClientAuth.
type clientAuth struct {
	method   string
	id       string
	secret   string // client_secret_*
	basic    string // the Authorization value of client_secret_basic
	signer   *assertionSigner
	tlsCerts *certLoader
}

func newClientAuth(c ClientAuth, log *slog.Logger) (*clientAuth, error) {
	if c.ID == "" {
		return nil, errors.New("client: id is required")
	}
	a := &clientAuth{method: c.Method, id: c.ID}
	unused := func(fields map[string]string) error {
		for name, v := range fields {
			if v != "" {
				return fmt.Errorf("client: %s is not used by auth %s", name, c.Method)
			}
		}
		return nil
	}
	switch c.Method {
	case AuthClientSecretBasic, AuthClientSecretPost:
		if err := unused(map[string]string{"private_key_file": c.PrivateKeyFile, "tls_cert_file": c.TLSCertFile, "tls_key_file": c.TLSKeyFile, "certificate_file": c.CertificateFile}); err != nil {
			return nil, err
		}
		if c.SecretFile == "" {
			return nil, fmt.Errorf("client: secret_file is required for auth %s", c.Method)
		}
		s, err := readSecretFile(c.SecretFile, 4096)
		if err != nil {
			return nil, fmt.Errorf("client: secret_file: %w", err)
		}
		a.secret = s
		// RFC 6749 §2.3.1: both parts are form-urlencoded before they are
		// joined and base64-encoded.
		a.basic = "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(c.ID)+":"+url.QueryEscape(s)))
	case AuthPrivateKeyJWT:
		if err := unused(map[string]string{"secret_file": c.SecretFile, "tls_cert_file": c.TLSCertFile, "tls_key_file": c.TLSKeyFile}); err != nil {
			return nil, err
		}
		s, err := newAssertionSigner(c)
		if err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
		a.signer = s
	case AuthTLSClientAuth:
		if err := unused(map[string]string{"secret_file": c.SecretFile, "private_key_file": c.PrivateKeyFile, "certificate_file": c.CertificateFile}); err != nil {
			return nil, err
		}
		if c.TLSCertFile == "" || c.TLSKeyFile == "" {
			return nil, errors.New("client: tls_cert_file and tls_key_file are required for auth tls_client_auth")
		}
		l := &certLoader{certFile: c.TLSCertFile, keyFile: c.TLSKeyFile, log: log}
		if err := l.load(); err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
		a.tlsCerts = l
	case "":
		return nil, fmt.Errorf("client: auth is required (%s, %s, %s or %s)", AuthClientSecretBasic, AuthClientSecretPost, AuthPrivateKeyJWT, AuthTLSClientAuth)
	default:
		return nil, fmt.Errorf("client: unknown auth %q (want %s, %s, %s or %s)", c.Method, AuthClientSecretBasic, AuthClientSecretPost, AuthPrivateKeyJWT, AuthTLSClientAuth)
	}
	if c.Method != AuthPrivateKeyJWT {
		if err := unused(map[string]string{"key_id": c.KeyID, "signing_alg": c.SigningAlgorithm, "assertion_audience": c.AssertionAudience}); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// apply adds the client authentication to the form and returns the
// Authorization header value ("" for none) and the secrets of this request
// that must never appear in an error (the secret, the assertion).
func (a *clientAuth) apply(form url.Values, endpoint string, now time.Time) (authz string, secrets []string, err error) {
	switch a.method {
	case AuthClientSecretBasic:
		return a.basic, []string{a.secret, a.basic}, nil
	case AuthClientSecretPost:
		form.Set("client_id", a.id)
		form.Set("client_secret", a.secret)
		return "", []string{a.secret}, nil
	case AuthPrivateKeyJWT:
		jwt, err := a.signer.sign(a.id, endpoint, now)
		if err != nil {
			return "", nil, err
		}
		form.Set("client_id", a.id)
		form.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
		form.Set("client_assertion", jwt)
		return "", []string{jwt}, nil
	default: // tls_client_auth: the certificate authenticates (RFC 8705 §2).
		form.Set("client_id", a.id)
		return "", nil, nil
	}
}

// readSecretFile reads a secret of at most limit bytes and trims its
// trailing CR/LF characters; an empty result is an error.
func readSecretFile(path string, limit int64) (string, error) {
	b, err := readLimited(path, limit)
	if err != nil {
		return "", err
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", errors.New("file is empty")
	}
	return s, nil
}

var errTooLarge = errors.New("file too large")

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w (more than %d bytes)", errTooLarge, limit)
	}
	return b, nil
}

// assertionLifetime is how long a private_key_jwt assertion is valid. Each
// request gets a fresh one (with its own jti), so it only needs to cover
// one round trip and modest clock skew.
const assertionLifetime = 60 * time.Second

// assertionSigner signs RFC 7523 client assertions.
type assertionSigner struct {
	key     crypto.Signer
	alg     jwa.SignatureAlgorithm
	kid     string
	aud     string // "" means the token endpoint
	x5t     string // base64url SHA-1 of the certificate, "" without one
	x5tS256 string
}

func newAssertionSigner(c ClientAuth) (*assertionSigner, error) {
	if c.PrivateKeyFile == "" {
		return nil, errors.New("private_key_file is required for auth private_key_jwt")
	}
	key, jwkKID, err := loadPrivateKey(c.PrivateKeyFile)
	if err != nil {
		return nil, fmt.Errorf("private_key_file: %w", err)
	}
	alg, err := signingAlgorithm(key, c.SigningAlgorithm)
	if err != nil {
		return nil, err
	}
	s := &assertionSigner{key: key, alg: alg, kid: c.KeyID, aud: c.AssertionAudience}
	if s.kid == "" {
		s.kid = jwkKID
	}
	if c.CertificateFile != "" {
		der, err := loadCertificate(c.CertificateFile, key.Public())
		if err != nil {
			return nil, fmt.Errorf("certificate_file: %w", err)
		}
		s1 := sha1.Sum(der)
		s256 := sha256.Sum256(der)
		s.x5t = base64.RawURLEncoding.EncodeToString(s1[:])
		s.x5tS256 = base64.RawURLEncoding.EncodeToString(s256[:])
	}
	// Sign once now, so a key that cannot sign is a configuration error
	// rather than a failure of every request.
	if _, err := s.sign("check", "https://check.invalid/token", time.Now()); err != nil {
		return nil, fmt.Errorf("private_key_file: the key cannot sign %s assertions: %w", alg, err)
	}
	return s, nil
}

// sign returns a fresh assertion: iss = sub = client_id, aud = the token
// endpoint (or the configured audience), a random jti, iat and exp.
func (s *assertionSigner) sign(clientID, endpoint string, now time.Time) (string, error) {
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	aud := s.aud
	if aud == "" {
		aud = endpoint
	}
	claims := struct {
		Iss string `json:"iss"`
		Sub string `json:"sub"`
		Aud string `json:"aud"`
		JTI string `json:"jti"`
		Iat int64  `json:"iat"`
		Exp int64  `json:"exp"`
	}{clientID, clientID, aud, base64.RawURLEncoding.EncodeToString(jti[:]), now.Unix(), now.Add(assertionLifetime).Unix()}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	h := jws.NewHeaders()
	if s.kid != "" {
		if err := h.Set(jws.KeyIDKey, s.kid); err != nil {
			return "", err
		}
	}
	if s.x5t != "" {
		if err := h.Set(jws.X509CertThumbprintKey, s.x5t); err != nil {
			return "", err
		}
		if err := h.Set(jws.X509CertThumbprintS256Key, s.x5tS256); err != nil {
			return "", err
		}
	}
	out, err := jws.Sign(payload, jws.WithKey(s.alg, s.key, jws.WithProtectedHeaders(h)))
	if err != nil {
		return "", err
	}
	return string(out), nil
}

// loadPrivateKey reads a PEM or JWK private key; it returns the JWK's kid
// when there is one.
func loadPrivateKey(path string) (crypto.Signer, string, error) {
	b, err := readLimited(path, 64<<10)
	if err != nil {
		return nil, "", err
	}
	trimmed := strings.TrimSpace(string(b))
	var raw any
	kid := ""
	if strings.HasPrefix(trimmed, "{") {
		k, err := jwk.ParseKey([]byte(trimmed))
		if err != nil {
			return nil, "", errors.New("not a valid JWK")
		}
		if priv, err := jwk.IsPrivateKey(k); err != nil || !priv {
			return nil, "", errors.New("the JWK has no private part")
		}
		if err := k.Raw(&raw); err != nil {
			return nil, "", errors.New("not a usable JWK")
		}
		kid = k.KeyID()
	} else {
		blk, rest := pem.Decode(b)
		if blk == nil {
			return nil, "", errors.New("neither PEM nor JWK")
		}
		if p, _ := pem.Decode(rest); p != nil {
			return nil, "", errors.New("more than one PEM block")
		}
		if x509.IsEncryptedPEMBlock(blk) { //nolint:staticcheck // detection only: encrypted keys are refused
			return nil, "", errors.New("encrypted PEM keys are not supported")
		}
		switch blk.Type {
		case "PRIVATE KEY":
			raw, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		case "RSA PRIVATE KEY":
			raw, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
		case "EC PRIVATE KEY":
			raw, err = x509.ParseECPrivateKey(blk.Bytes)
		default:
			return nil, "", fmt.Errorf("PEM block %q is not a private key", blk.Type)
		}
		if err != nil {
			return nil, "", fmt.Errorf("invalid %s", blk.Type)
		}
	}
	switch k := raw.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() < 2048 {
			return nil, "", fmt.Errorf("RSA key of %d bits: at least 2048 are required", k.N.BitLen())
		}
		return k, kid, nil
	case *ecdsa.PrivateKey:
		return k, kid, nil
	case ed25519.PrivateKey:
		return k, kid, nil
	case *ed25519.PrivateKey:
		return *k, kid, nil
	}
	return nil, "", fmt.Errorf("unsupported key type %T", raw)
}

// signingAlgorithm checks the configured algorithm against the key, or
// picks the default one.
func signingAlgorithm(key crypto.Signer, configured string) (jwa.SignatureAlgorithm, error) {
	var allowed []jwa.SignatureAlgorithm
	switch k := key.(type) {
	case *rsa.PrivateKey:
		allowed = []jwa.SignatureAlgorithm{jwa.RS256, jwa.RS384, jwa.RS512, jwa.PS256, jwa.PS384, jwa.PS512}
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			allowed = []jwa.SignatureAlgorithm{jwa.ES256}
		case elliptic.P384():
			allowed = []jwa.SignatureAlgorithm{jwa.ES384}
		case elliptic.P521():
			allowed = []jwa.SignatureAlgorithm{jwa.ES512}
		default:
			return "", errors.New("private_key_file: unsupported EC curve")
		}
	case ed25519.PrivateKey:
		allowed = []jwa.SignatureAlgorithm{jwa.EdDSA}
	}
	if configured == "" {
		return allowed[0], nil
	}
	alg := jwa.SignatureAlgorithm(configured)
	if !slices.Contains(allowed, alg) {
		return "", fmt.Errorf("signing_alg %q does not fit the key (allowed: %v)", configured, allowed)
	}
	return alg, nil
}

// loadCertificate reads a PEM certificate (the first block) and checks
// that it certifies pub.
func loadCertificate(path string, pub crypto.PublicKey) ([]byte, error) {
	b, err := readLimited(path, 64<<10)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM certificate")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, errors.New("invalid certificate")
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if e, ok := cert.PublicKey.(equaler); !ok || !e.Equal(pub) {
		return nil, errors.New("the certificate is not for private_key_file")
	}
	return blk.Bytes, nil
}

// certLoader serves the tls_client_auth certificate, reloading it when the
// files change (Kubernetes and cert-manager rotate them in place). A
// reload that fails keeps the previous certificate: it is mcpauthz's own
// credential, and the authorization server decides whether it is still
// good.
type certLoader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu    sync.Mutex
	cert  *tls.Certificate
	stamp [2]fileStamp
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.ModTime(), fi.Size()}, nil
}

func (l *certLoader) load() error {
	s0, err := stampOf(l.certFile)
	if err != nil {
		return fmt.Errorf("tls_cert_file: %w", err)
	}
	s1, err := stampOf(l.keyFile)
	if err != nil {
		return fmt.Errorf("tls_key_file: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(l.certFile, l.keyFile)
	if err != nil {
		return errors.New("tls_cert_file and tls_key_file are not a valid PEM certificate and key pair")
	}
	l.mu.Lock()
	l.cert, l.stamp = &cert, [2]fileStamp{s0, s1}
	l.mu.Unlock()
	return nil
}

// get is tls.Config.GetClientCertificate.
func (l *certLoader) get(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	s0, err0 := stampOf(l.certFile)
	s1, err1 := stampOf(l.keyFile)
	l.mu.Lock()
	changed := err0 == nil && err1 == nil && [2]fileStamp{s0, s1} != l.stamp
	cert := l.cert
	l.mu.Unlock()
	if changed {
		if err := l.load(); err != nil {
			l.log.Warn("client certificate reload failed; keeping the previous certificate", "tls_cert_file", l.certFile, "error", err.Error())
		} else {
			l.mu.Lock()
			cert = l.cert
			l.mu.Unlock()
			l.log.Info("client certificate reloaded", "tls_cert_file", l.certFile)
		}
	}
	return cert, nil
}
