package jwtauth

import (
	"crypto/elliptic"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// TestJWXv2Behaviour pins what jwx v2 (the pinned version) does with the
// hostile inputs whose handling by jwx v3.1.1 was observed and recorded in
// the v3 column, using a plain jwt.Parse setup (WithKeySet, issuer,
// audience, 30s skew, required exp). It documents why Verify does its own
// checks instead; if a jwx upgrade changes a line, re-check the Verify rows
// of that attack.
//
// This test deliberately uses jwt.Parse/WithKeySet; production code must
// not (TestNoInsecureJWXAPIs).
func TestJWXv2Behaviour(t *testing.T) {
	k := keys(t)
	set := func(keys ...map[string]any) jwk.Set {
		s, err := jwk.Parse(jwksJSON(keys...))
		if err != nil {
			t.Fatalf("jwk.Parse: %v", err)
		}
		return s
	}
	std := set(jwkOf(k.rsa, "k1", "RS256"), jwkOf(k.ec, "e1", "ES256"))
	clock := jwt.ClockFunc(func() time.Time { return testNow })
	parse := func(tok string, ks jwk.Set, extra ...jwt.ParseOption) error {
		opts := append([]jwt.ParseOption{jwt.WithKeySet(ks), jwt.WithIssuer(testIss), jwt.WithAudience(testAud),
			jwt.WithAcceptableSkew(30 * time.Second), jwt.WithRequiredClaim("exp"), jwt.WithClock(clock)}, extra...)
		_, err := jwt.Parse([]byte(tok), opts...)
		return err
	}
	parseDefault := func(tok string) error {
		_, err := jwt.Parse([]byte(tok), jwt.WithKeySet(std), jwt.WithClock(clock))
		return err
	}
	single := func(tok string) error {
		_, err := jwt.Parse([]byte(tok), jwt.WithKey(jwa.RS256, &k.rsa.PublicKey), jwt.WithClock(clock))
		return err
	}
	now := testNow.Unix()
	es := mint(t, `{"alg":"ES256","kid":"e1"}`, claimsJSON(), "ES256", k.ec)
	highS := func() string {
		sig := sigOf(t, es)
		s := new(big.Int).Sub(elliptic.P256().Params().N, new(big.Int).SetBytes(sig[32:]))
		return withSig(es, append(sig[:32:32], s.FillBytes(make([]byte, 32))...))
	}()
	stdAlphabet := func() string {
		for {
			v := validToken(t)
			i := strings.LastIndexByte(v, '.')
			if s := v[i+1:]; strings.ContainsAny(s, "-_") {
				return v[:i+1] + strings.NewReplacer("-", "+", "_", "/").Replace(s)
			}
		}
	}()
	trailingBits := func() string {
		v := validToken(t)
		last := strings.IndexByte(b64Alphabet, v[len(v)-1])
		return v[:len(v)-1] + string(b64Alphabet[last|1])
	}()
	b64false := func() string {
		// RFC 7797 unencoded payload (no dots in it), without crit.
		h := enc.EncodeToString([]byte(`{"alg":"RS256","kid":"k1","b64":false}`))
		p := `{"sub":"admin"}`
		return h + "." + p + "." + enc.EncodeToString(signRaw(t, "RS256", k.rsa, h+"."+p))
	}()
	many := make([]map[string]any, 1500)
	for i := range many {
		many[i] = jwkOf(k.ec, fmt.Sprintf("m%d", i), "ES256")
	}
	e1key := jwkOf(k.rsa2, "k1", "RS256")
	e1key["e"] = "AQ"
	offCurve := map[string]any{"kty": "EC", "crv": "P-256", "kid": "e1", "alg": "ES256",
		"x": enc.EncodeToString(big.NewInt(1).FillBytes(make([]byte, 32))), "y": enc.EncodeToString(big.NewInt(1).FillBytes(make([]byte, 32)))}
	encKey := jwkOf(k.rsa, "k1", "RS256")
	encKey["use"] = "enc"

	tests := []struct {
		name, v3 string // v3: what jwx v3.1.1 was observed to do, abridged
		err      func() error
		wantOK   bool // jwx v2.1.7 accepts
	}{
		{"crit/unknown via WithKeySet", "ACCEPTED", func() error {
			return parse(mint(t, `{"alg":"RS256","kid":"k1","crit":["x-evil"],"x-evil":"1"}`, claimsJSON(), "RS256", k.rsa), std)
		}, true},
		{"crit/unknown via single WithKey", "rejected", func() error {
			return single(mint(t, `{"alg":"RS256","kid":"k1","crit":["x-evil"],"x-evil":"1"}`, claimsJSON(), "RS256", k.rsa))
		}, true},
		{"crit/unknown via jws.Verify single key", "lax by default", func() error {
			_, err := jws.Verify([]byte(mint(t, `{"alg":"RS256","crit":["x-evil"],"x-evil":"1"}`, claimsJSON(), "RS256", k.rsa)), jws.WithKey(jwa.RS256, &k.rsa.PublicKey))
			return err
		}, true},
		{"crit/empty via WithKeySet", "ACCEPTED", func() error {
			return parse(mint(t, `{"alg":"RS256","kid":"k1","crit":[]}`, claimsJSON(), "RS256", k.rsa), std)
		}, true},
		{"b64:false without crit via jws.Verify", "rejected", func() error {
			_, err := jws.Verify([]byte(b64false), jws.WithKey(jwa.RS256, &k.rsa.PublicKey))
			return err
		}, true},
		{"exp/missing, default options", "ACCEPTED", func() error { return parseDefault(validToken(t, "exp", del)) }, true},
		{"exp/string", "ACCEPTED", func() error { return parse(validToken(t, "exp", "4102444800"), std) }, true},
		{"exp/1e400", "rejected", func() error { return parse(validToken(t, "exp", raw("1e400")), std) }, false},
		{"exp/-1", "rejected", func() error { return parse(validToken(t, "exp", raw("-1")), std) }, false},
		{"exp/true", "rejected", func() error { return parse(validToken(t, "exp", raw("true")), std) }, false},
		{"exp/fraction", "accepted", func() error { return parse(validToken(t, "exp", raw("4102444800.999")), std) }, true},
		{"typ JWT", "ACCEPTED", func() error {
			return parse(mint(t, `{"alg":"RS256","kid":"k1","typ":"JWT"}`, claimsJSON(), "RS256", k.rsa), std)
		}, true},
		{"alg-mismatch/header RS384, key RS256", "ACCEPTED", func() error {
			return parse(mint(t, `{"alg":"RS384","kid":"k1"}`, claimsJSON(), "RS256", k.rsa), std)
		}, true},
		{"alg-mismatch/no alg, RS256 signature", "ACCEPTED", func() error {
			return parse(mint(t, `{"kid":"k1"}`, claimsJSON(), "RS256", k.rsa), std)
		}, true},
		{"no kid", "rejected", func() error { return parse(mint(t, `{"alg":"RS256"}`, claimsJSON(), "RS256", k.rsa), std) }, false},
		{"duplicate-member/header kid zzz,k1 (last wins)", "accepted", func() error {
			return parse(mint(t, `{"alg":"RS256","kid":"zzz","kid":"k1"}`, claimsJSON(), "RS256", k.rsa), std)
		}, true},
		{"duplicate-member/claim sub (AS-signed)", "accepted, last wins", func() error {
			c := strings.TrimSuffix(claimsJSON("sub", del), "}") + `,"sub":"alice","sub":"admin"}`
			return parse(mint(t, hdrRS256, c, "RS256", k.rsa), std)
		}, true},
		{"non-canonical/header padding", "rejected", func() error {
			v := validToken(t)
			i := strings.IndexByte(v, '.')
			return parse(v[:i]+"=="+v[i:], std)
		}, false},
		{"JWS JSON serialization", "rejected (compact only)", func() error {
			parts := strings.Split(validToken(t), ".")
			return parse(`{"payload":"`+parts[1]+`","signatures":[{"protected":"`+parts[0]+`","signature":"`+parts[2]+`"}]}`, std)
		}, true},
		{"non-canonical/std alphabet in signature", "ACCEPTED", func() error { return parse(stdAlphabet, std) }, true},
		{"non-canonical/trailing bits in signature", "ACCEPTED", func() error { return parse(trailingBits, std) }, true},
		{"non-canonical/ECDSA high s", "ACCEPTED", func() error { return parse(highS, std) }, true},
		{"leading/trailing white space", "accepted (trimmed)", func() error { return parse(" "+validToken(t)+"\n", std) }, true},
		{"payload trailing garbage", "ACCEPTED", func() error {
			return parse(mint(t, hdrRS256, claimsJSON()+"xyz", "RS256", k.rsa), std)
		}, true},
		{"BOM in payload", "rejected", func() error {
			return parse(mint(t, hdrRS256, "\ufeff"+claimsJSON(), "RS256", k.rsa), std)
		}, false},
		{"4 MiB signed token", "ACCEPTED", func() error { return parse(validToken(t, "pad", strings.Repeat("x", 3<<20)), std) }, true},
		{"five segments", "rejected", func() error { return parse(validToken(t)+".AA.AA", std) }, false},
		{"exp/equals now, zero skew", "rejected", func() error {
			_, err := jwt.Parse([]byte(validToken(t, "exp", now)), jwt.WithKeySet(std), jwt.WithClock(clock))
			return err
		}, false},
		{"jwks/oct key", "ACCEPTED", func() error {
			oct := set(map[string]any{"kty": "oct", "kid": "h1", "alg": "HS256", "k": "c2VjcmV0"})
			return parse(mint(t, `{"alg":"HS256","kid":"h1"}`, claimsJSON(), "HS256", []byte("secret")), oct)
		}, true},
		{"jwks/RSA 1024", "refused", func() error {
			return parse(tokenFor(t, "w", k.rsa1024), set(jwkOf(k.rsa1024, "w", "RS256")))
		}, true},
		{"jwks/RSA e=1 (forged)", "refused", func() error {
			return parse(forgeE1(t, "k1", k.rsa2.N), set(e1key))
		}, false},
		{"jwks/EC point not on curve", "refused", func() error {
			_, err := jwk.Parse(jwksJSON(offCurve))
			if err != nil {
				return err
			}
			return parse(es, set(offCurve))
		}, false},
		{"jwks/use:enc", "rejected", func() error { return parse(validToken(t), set(encKey)) }, false},
		{"jwks/keys without alg, no inference", "rejected", func() error {
			return parse(validToken(t), set(jwkOf(k.rsa, "k1", "")))
		}, false},
		{"jwks/keys without alg, inference", "accepted", func() error {
			return parse(validToken(t), set(jwkOf(k.rsa, "k1", "")), jwt.WithKeySet(set(jwkOf(k.rsa, "k1", "")), jws.WithInferAlgorithmFromKey(true)))
		}, true},
		{"jwks/duplicate kid, real key second", "rejected (first match)", func() error {
			return parse(validToken(t), set(jwkOf(k.attacker, "k1", "RS256"), jwkOf(k.rsa, "k1", "RS256")))
		}, false},
		{"jwks/1500 keys", "rejected (max 1000)", func() error {
			_, err := jwk.Parse(jwksJSON(many...))
			return err
		}, true},
		{"jwks/one off-curve key fails jwk.Parse", "whole parse fails", func() error {
			_, err := jwk.Parse(jwksJSON(offCurve, jwkOf(k.rsa, "k1", "RS256")))
			return err
		}, true},
		{"jwks/one RSA 1024 key fails jwk.Parse", "whole parse fails", func() error {
			_, err := jwk.Parse(jwksJSON(jwkOf(k.rsa1024, "w", "RS256"), jwkOf(k.rsa, "k1", "RS256")))
			return err
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.err()
			if got := err == nil; got != tt.wantOK {
				t.Errorf("jwx v2: accepted = %v (err %v), pinned %v; jwx v3.1.1 observed %q", got, err, tt.wantOK, tt.v3)
			}
			t.Logf("jwx v2 accepted=%v err=%v | v3.1.1: %s", err == nil, err, tt.v3)
		})
	}
}
