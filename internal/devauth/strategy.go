package devauth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"

	"github.com/mcpauthz/mcpauthz/internal/devissuer"
	"github.com/mcpauthz/mcpauthz/internal/oauth"
)

// tokenStrategy issues RFC 9068 JWT access tokens through devissuer.Mint,
// so that the tokens of the authorization server and those of the offline
// `mcpauthz token` are made by one piece of code. Authorization codes and
// refresh tokens are fosite's HMAC tokens: opaque, and stored only by their
// HMAC signature.
type tokenStrategy struct {
	*oauth2.HMACSHAStrategyUnPrefixed
	issuer   *devissuer.Issuer
	pub      jwk.Key
	lifespan time.Duration // of an access token
	opaque   bool          // access tokens are HMAC tokens, not JWTs
}

var _ oauth2.CoreStrategy = (*tokenStrategy)(nil)

// AccessTokenSignature is the storage key of an access token: the signature
// part of the JWS.
func (s *tokenStrategy) AccessTokenSignature(ctx context.Context, token string) string {
	if s.opaque {
		return s.HMACSHAStrategyUnPrefixed.AccessTokenSignature(ctx, token)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return ""
	}
	return parts[2]
}

// GenerateAccessToken mints the access token of a grant: sub from the
// session, aud the granted resource, scope the granted scopes, client_id the
// requesting client, exp the expiry fosite set on the session.
func (s *tokenStrategy) GenerateAccessToken(_ context.Context, req fosite.Requester) (string, string, error) {
	// Whole seconds on both ends and exactly the configured lifespan
	// between them. fosite rounds the session's expiry to the nearest
	// second, which is up to a second off a truncated iat, so the session
	// takes the token's expiry rather than the other way round; expires_in
	// and introspection then agree with the token.
	now := time.Now().Truncate(time.Second)
	ttl := s.lifespan
	if ttl < time.Second {
		return "", "", errors.New("devauth: access token lifespan under a second")
	}
	req.GetSession().SetExpiresAt(fosite.AccessToken, now.Add(ttl))
	if s.opaque {
		return s.HMACSHAStrategyUnPrefixed.GenerateAccessToken(context.Background(), req)
	}
	tok, err := s.issuer.Mint(devissuer.MintOptions{
		Subject:  req.GetSession().GetSubject(),
		ClientID: req.GetClient().GetID(),
		Audience: req.GetGrantedAudience(),
		Scopes:   req.GetGrantedScopes(),
		TTL:      ttl,
		Now:      now,
	})
	if err != nil {
		return "", "", err
	}
	return tok, s.AccessTokenSignature(context.Background(), tok), nil
}

// ValidateAccessToken checks the signature and expiry of an access token
// found in storage (introspection, revocation).
func (s *tokenStrategy) ValidateAccessToken(ctx context.Context, req fosite.Requester, token string) error {
	if s.opaque {
		return s.HMACSHAStrategyUnPrefixed.ValidateAccessToken(ctx, req, token)
	}
	if _, err := jws.Verify([]byte(token), jws.WithKey(jwa.RS256, s.pub)); err != nil {
		return fosite.ErrTokenSignatureMismatch
	}
	if exp := req.GetSession().GetExpiresAt(fosite.AccessToken); !exp.IsZero() && !time.Now().Before(exp) {
		return fosite.ErrTokenExpired
	}
	return nil
}

// accessTokenClaims returns the claims of an access token this server
// minted (its signature has been verified by ValidateAccessToken).
func accessTokenClaims(token string) (map[string]any, error) {
	msg, err := jws.Parse([]byte(token))
	if err != nil {
		return nil, err
	}
	var claims map[string]any
	if err := json.Unmarshal(msg.Payload(), &claims); err != nil {
		return nil, err
	}
	return claims, nil
}

// secretHasher stores client secrets as SHA-256 digests. Secrets this
// server issues are 256-bit random strings, for which a fast digest is as
// safe as a slow one; fosite's default, bcrypt, would cost a quarter second
// per token request.
type secretHasher struct{}

var _ fosite.Hasher = secretHasher{}

func (secretHasher) Hash(_ context.Context, data []byte) ([]byte, error) {
	sum := sha256.Sum256(data)
	return sum[:], nil
}

func (secretHasher) Compare(_ context.Context, hash, data []byte) error {
	sum := sha256.Sum256(data)
	if len(hash) != sha256.Size || subtle.ConstantTimeCompare(hash, sum[:]) != 1 {
		return errors.New("devauth: client secret mismatch")
	}
	return nil
}

func hashSecret(secret string) []byte {
	h, _ := secretHasher{}.Hash(context.Background(), []byte(secret))
	return h
}

// scopeStrategy decides whether a client may be granted scope: any valid
// scope for a client registered without a scope limit (so that step-up can
// ask for scopes beyond those named at registration), else one of its
// scopes.
func scopeStrategy(allowed []string, scope string) bool {
	if !oauth.ValidScope(scope) {
		return false
	}
	if len(allowed) == 0 {
		return true
	}
	return slices.Contains(allowed, scope)
}
