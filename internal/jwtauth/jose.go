package jwtauth

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// maxJSONDepth bounds the nesting of the header and the payload. Real
// access tokens nest two or three levels (Keycloak realm_access.roles).
const maxJSONDepth = 32

// maxNumericDate is 9999-12-31T23:59:59Z; larger NumericDates (and
// negative ones) are rejected as malformed, whatever the clock says.
const maxNumericDate = 253402300799

var b64 = base64.RawURLEncoding.Strict()

// jose is a compact JWS split and decoded with strict rules. Only the
// header fields and iss are read before the signature is verified.
type jose struct {
	header  map[string]jsontext.Value
	payload []byte // decoded payload: exactly the bytes that were signed
	claims  map[string]jsontext.Value
	signed  string // the JWS signing input: header and payload segments
	sig     []byte // decoded signature

	alg    string
	kid    string
	hasKID bool
	typ    string
	hasTyp bool
}

// malformed returns an error wrapping ErrInvalidToken and ErrMalformed.
// Messages never contain token material.
func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %w: "+format, append([]any{ErrInvalidToken, ErrMalformed}, args...)...)
}

// invalid returns an error wrapping ErrInvalidToken and cause.
func invalid(cause error, format string, args ...any) error {
	return fmt.Errorf("%w: %w: "+format, append([]any{ErrInvalidToken, cause}, args...)...)
}

// parseJOSE parses a compact JWS: exactly three non-empty segments of
// unpadded, canonical base64url (RFC 7515 §7.1, §2), whose header and
// payload are JSON objects without duplicate member names, with valid
// UTF-8, no trailing data and at most maxJSONDepth levels of nesting.
//
// JWE (five segments) and the JWS JSON serialization are rejected here.
func parseJOSE(token string) (*jose, error) {
	dot1, dot2 := -1, -1
	for i := 0; i < len(token); i++ {
		c := token[i]
		if c == '.' {
			switch {
			case dot1 < 0:
				dot1 = i
			case dot2 < 0:
				dot2 = i
			default:
				return nil, malformed("not a compact JWS (more than three segments)")
			}
			continue
		}
		if !isB64URLChar(c) {
			return nil, malformed("invalid character in token")
		}
	}
	if dot2 < 0 {
		return nil, malformed("not a compact JWS (fewer than three segments)")
	}
	hseg, pseg, sseg := token[:dot1], token[dot1+1:dot2], token[dot2+1:]
	if hseg == "" || pseg == "" || sseg == "" {
		return nil, malformed("empty segment")
	}

	// Cheapest first: the header decides most rejections (alg, kid, crit,
	// key references) and is the smallest segment.
	hdr, err := b64.DecodeString(hseg)
	if err != nil {
		return nil, malformed("header is not canonical base64url")
	}
	j := &jose{signed: token[:dot2]}
	if j.header, err = decodeObject(hdr); err != nil {
		return nil, malformed("header: %w", err)
	}
	if err := j.readHeader(); err != nil {
		return nil, err
	}
	if j.payload, err = b64.DecodeString(pseg); err != nil {
		return nil, malformed("payload is not canonical base64url")
	}
	// Canonical (no trailing bits), so that one signature has one
	// spelling and the bytes verified are the ones decoded here.
	if j.sig, err = b64.DecodeString(sseg); err != nil {
		return nil, malformed("signature is not canonical base64url")
	}
	if j.claims, err = decodeObject(j.payload); err != nil {
		return nil, malformed("payload: %w", err)
	}
	return j, nil
}

func isB64URLChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

// decodeObject decodes a JSON object strictly: duplicate names, invalid
// UTF-8 (including unpaired surrogate escapes), trailing data and excess
// nesting are errors.
func decodeObject(b []byte) (map[string]jsontext.Value, error) {
	if !depthWithin(b, maxJSONDepth) {
		return nil, fmt.Errorf("nested deeper than %d levels", maxJSONDepth)
	}
	if jsontext.Value(b).Kind() != jsontext.KindBeginObject {
		return nil, fmt.Errorf("not a JSON object")
	}
	// A token loop rather than json.Unmarshal into the map: the values
	// are slices of b (no copy each), read with the same strictness (the
	// decoder's defaults reject duplicate names and invalid UTF-8).
	d := decoders.Get().(*pooledDecoder)
	defer func() {
		d.buf.Reset()
		d.dec.Reset(&d.buf)
		decoders.Put(d)
	}()
	d.buf = *bytes.NewBuffer(b)
	dec := d.dec
	dec.Reset(&d.buf)
	if _, err := dec.ReadToken(); err != nil {
		return nil, fmt.Errorf("invalid JSON")
	}
	m := make(map[string]jsontext.Value, 8)
	for dec.PeekKind() != '}' {
		tok, err := dec.ReadToken()
		if err != nil {
			return nil, fmt.Errorf("invalid JSON")
		}
		name := tok.String() // before the next read voids tok
		val, err := dec.ReadValue()
		if err != nil {
			return nil, fmt.Errorf("invalid JSON")
		}
		end := int(dec.InputOffset())
		m[name] = jsontext.Value(b[end-len(val) : end : end])
	}
	if _, err := dec.ReadToken(); err != nil {
		return nil, fmt.Errorf("invalid JSON")
	}
	if _, err := dec.ReadToken(); err != io.EOF {
		return nil, fmt.Errorf("invalid JSON")
	}
	return m, nil
}

// decoders recycles the JSON decoders of decodeObject. A pooled one reads
// an empty buffer: it keeps no reference to a token.
var decoders = sync.Pool{New: func() any {
	d := &pooledDecoder{}
	d.dec = jsontext.NewDecoder(&d.buf)
	return d
}}

type pooledDecoder struct {
	dec *jsontext.Decoder
	buf bytes.Buffer
}

// depthWithin reports whether the nesting of the JSON text b stays within
// max levels. It is a cheap pre-check: b may still be invalid JSON.
func depthWithin(b []byte, max int) bool {
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
			if depth > max {
				return false
			}
		case '}', ']':
			depth--
		}
	}
	return true
}

// headerRejected are protected header parameters whose presence rejects
// the token: key references that must never be followed (RFC 8725 §3.10)
// and b64, which is only meaningful together with crit (RFC 7797 §6).
var headerRejected = []string{"jwk", "jku", "x5u", "b64"}

func (j *jose) readHeader() error {
	if _, ok := j.header["crit"]; ok {
		// No extension is supported, so any crit (even an empty or
		// malformed one) is rejected (RFC 7515 §4.1.11).
		return invalid(ErrCritical, "crit header present")
	}
	for _, name := range headerRejected {
		if _, ok := j.header[name]; ok {
			return malformed("header parameter %s is not accepted", name)
		}
	}
	alg, ok, err := stringMember(j.header, "alg")
	if err != nil {
		return malformed("alg is not a string")
	}
	if !ok {
		return malformed("alg missing")
	}
	j.alg = alg
	if j.kid, j.hasKID, err = stringMember(j.header, "kid"); err != nil {
		return malformed("kid is not a string")
	}
	if j.hasKID && j.kid == "" {
		return malformed("kid is empty")
	}
	if j.typ, j.hasTyp, err = stringMember(j.header, "typ"); err != nil {
		return malformed("typ is not a string")
	}
	return nil
}

// stringMember returns the string value of m[name]; present is false when
// the member is absent. Any other JSON type, null included, is an error.
func stringMember(m map[string]jsontext.Value, name string) (s string, present bool, err error) {
	v, ok := m[name]
	if !ok {
		return "", false, nil
	}
	if v.Kind() != jsontext.KindString {
		return "", true, fmt.Errorf("%s is not a string", name)
	}
	if err := json.Unmarshal(v, &s); err != nil {
		return "", true, fmt.Errorf("%s is not a string", name)
	}
	return s, true, nil
}

// stringsMember returns the value of m[name] when it is a string or an
// array of strings; present is false when the member is absent.
func stringsMember(m map[string]jsontext.Value, name string) (ss []string, present bool, err error) {
	v, ok := m[name]
	if !ok {
		return nil, false, nil
	}
	switch v.Kind() {
	case jsontext.KindString:
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, true, fmt.Errorf("%s is not a string", name)
		}
		return []string{s}, true, nil
	case jsontext.KindBeginArray:
		if err := json.Unmarshal(v, &ss); err != nil {
			return nil, true, fmt.Errorf("%s is not an array of strings", name)
		}
		return ss, true, nil
	}
	return nil, true, fmt.Errorf("%s is neither a string nor an array of strings", name)
}

// numericDate returns m[name] as a NumericDate (RFC 7519 §2): a JSON
// number of seconds since the epoch, fractions allowed, within
// [0, maxNumericDate]. Strings, booleans, null and out-of-range numbers
// are errors.
func numericDate(m map[string]jsontext.Value, name string) (t time.Time, present bool, err error) {
	v, ok := m[name]
	if !ok {
		return time.Time{}, false, nil
	}
	if v.Kind() != jsontext.KindNumber {
		return time.Time{}, true, fmt.Errorf("%s is not a number", name)
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(string(v)), 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > maxNumericDate {
		return time.Time{}, true, fmt.Errorf("%s is out of range", name)
	}
	sec := math.Floor(f)
	return time.Unix(int64(sec), int64((f-sec)*1e9)), true, nil
}
