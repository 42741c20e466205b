package jwtauth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"slices"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// Limits applied to every fetched or loaded key set.
const (
	maxKeysPerSet  = 1000
	minRSABits     = 2048
	maxRSABits     = 8192
	maxJWKSBodyLen = 1 << 20
)

// verificationKey is one public key that passed the filter.
type verificationKey struct {
	kid    string
	alg    string // the JWK's alg, "" when it has none
	family keyFamily
	pub    crypto.PublicKey // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

// fits reports whether the key may verify a token signed with alg: the key
// type (and curve) must be the one of alg, and the key's own alg, when it
// has one, must equal alg.
func (k *verificationKey) fits(alg string) bool {
	return algFamily[alg] == k.family && (k.alg == "" || k.alg == alg)
}

// keySet is an immutable verification set, published with an
// atomic.Pointer and shared by all requests.
type keySet struct {
	keys  []*verificationKey
	byKID map[string][]*verificationKey
}

// filterStats counts what buildKeySet did, for logs.
type filterStats struct {
	total, usable                                  int
	symmetric, notForSig, algorithm, weak, invalid int
	unsupported, duplicateKID                      int
}

func (s filterStats) logAttrs() []any {
	return []any{
		"keys_fetched", s.total, "keys_usable", s.usable,
		"dropped_symmetric", s.symmetric, "dropped_not_for_signature", s.notForSig,
		"dropped_algorithm", s.algorithm, "dropped_weak", s.weak, "dropped_invalid", s.invalid,
		"dropped_unsupported", s.unsupported, "dropped_duplicate_kid", s.duplicateKID,
	}
}

var errTooManyKeys = errors.New("key set has too many keys")

// buildKeySet filters a parsed JWK set into a verification set for an
// issuer whose allowed algorithms are algs:
//
//   - symmetric (kty oct) keys are dropped: an HMAC key published in a JWKS
//     is known to everyone who can read it;
//   - keys whose use is not "sig", or whose key_ops lack "verify", are
//     dropped;
//   - keys whose alg is not allowed or does not match the key type, and keys
//     without alg that no allowed algorithm can use, are dropped;
//   - RSA keys shorter than 2048 or longer than 8192 bits or with an even or
//     tiny exponent, EC points not on their curve, and Ed25519 keys of the
//     wrong length are dropped; only P-256, P-384, P-521 and Ed25519 curves
//     are supported;
//   - when several keys share a kid and are not the same public key, all of
//     them are dropped: which one the issuer meant is ambiguous.
//
// Sets of more than maxKeysPerSet keys are refused as a whole.
func buildKeySet(set jwk.Set, algs map[string]bool) (*keySet, filterStats, error) {
	var st filterStats
	st.total = set.Len()
	if st.total > maxKeysPerSet {
		return nil, st, fmt.Errorf("%w (%d, at most %d)", errTooManyKeys, st.total, maxKeysPerSet)
	}
	var keys []*verificationKey
	for i := range set.Len() {
		key, _ := set.Key(i)
		if vk := newVerificationKey(key, algs, &st); vk != nil {
			keys = append(keys, vk)
		}
	}
	// Ambiguous kids: the same kid for different public keys.
	groups := make(map[string][]*verificationKey)
	for _, k := range keys {
		if k.kid != "" {
			groups[k.kid] = append(groups[k.kid], k)
		}
	}
	keys = slices.DeleteFunc(keys, func(k *verificationKey) bool {
		for _, other := range groups[k.kid] {
			if !samePublicKey(k.pub, other.pub) {
				st.duplicateKID++
				return true
			}
		}
		return false
	})
	ks := &keySet{keys: keys, byKID: make(map[string][]*verificationKey)}
	for _, k := range keys {
		if k.kid != "" {
			ks.byKID[k.kid] = append(ks.byKID[k.kid], k)
		}
	}
	st.usable = len(keys)
	return ks, st, nil
}

// newVerificationKey converts key into a verificationKey, or returns nil
// after counting the reason it was dropped in st.
func newVerificationKey(key jwk.Key, algs map[string]bool, st *filterStats) *verificationKey {
	if key.KeyType() == jwa.OctetSeq {
		st.symmetric++
		return nil
	}
	if use := key.KeyUsage(); use != "" && use != string(jwk.ForSignature) {
		st.notForSig++
		return nil
	}
	if ops := key.KeyOps(); len(ops) > 0 && !slices.Contains(ops, jwk.KeyOpVerify) {
		st.notForSig++
		return nil
	}
	pk, err := key.PublicKey()
	if err != nil {
		st.invalid++
		return nil
	}
	var raw any
	if err := pk.Raw(&raw); err != nil {
		st.invalid++
		return nil
	}
	vk := &verificationKey{kid: key.KeyID()}
	if a := key.Algorithm(); a != nil {
		vk.alg = a.String()
	}
	switch pub := raw.(type) {
	case *rsa.PublicKey:
		if bits := pub.N.BitLen(); bits < minRSABits || bits > maxRSABits || pub.E < 3 || pub.E%2 == 0 {
			st.weak++
			return nil
		}
		vk.family, vk.pub = famRSA, pub
	case *ecdsa.PublicKey:
		vk.family = curveFamily(pub.Curve)
		if vk.family == famNone {
			st.unsupported++
			return nil
		}
		if _, err := pub.ECDH(); err != nil { // not on the curve
			st.invalid++
			return nil
		}
		vk.pub = pub
	case ed25519.PublicKey:
		if len(pub) != ed25519.PublicKeySize {
			st.invalid++
			return nil
		}
		vk.family, vk.pub = famEd25519, pub
	default: // X25519, secp256k1, ...
		st.unsupported++
		return nil
	}
	if vk.alg != "" {
		if !algs[vk.alg] || algFamily[vk.alg] != vk.family {
			st.algorithm++
			return nil
		}
		return vk
	}
	for a := range algs {
		if algFamily[a] == vk.family {
			return vk
		}
	}
	st.algorithm++
	return nil
}

// lookup returns the candidate keys for a token: the keys with its kid, or
// without a kid the only key of the set. found is false when a kid was
// given and no key has it (a refresh may help); a kid-less token against a
// set with several keys is not found either, but no refresh can fix that.
func (ks *keySet) lookup(kid string, hasKID bool) (cands []*verificationKey, refreshable bool) {
	if hasKID {
		cands = ks.byKID[kid]
		return cands, len(cands) == 0
	}
	if len(ks.keys) == 1 {
		return ks.keys, false
	}
	return nil, false
}

func samePublicKey(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	ea, ok := a.(equaler)
	return ok && ea.Equal(b)
}

// curveFamily maps an elliptic curve to its key family.
func curveFamily(c elliptic.Curve) keyFamily {
	switch c {
	case elliptic.P256():
		return famP256
	case elliptic.P384():
		return famP384
	case elliptic.P521():
		return famP521
	}
	return famNone
}
