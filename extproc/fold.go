package extproc

import (
	"bytes"
	"unicode"
	"unicode/utf8"
)

// Member names are compared under Unicode simple case folding
// (strings.EqualFold), as in the request parser: encoding/json v1 clients
// match struct fields that way, so "Tools" or "nAme" is read as "tools" or
// "name" by some clients and ignored by others.

// foldEqual reports whether a and b are equal under simple case folding.
func foldEqual(a, b []byte) bool {
	if isASCII(a) && isASCII(b) {
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			x, y := a[i], b[i]
			if x != y {
				if 'A' <= x && x <= 'Z' {
					x += 'a' - 'A'
				}
				if 'A' <= y && y <= 'Z' {
					y += 'a' - 'A'
				}
				if x != y {
					return false
				}
			}
		}
		return true
	}
	return bytes.EqualFold(a, b)
}

func foldEqualString(a []byte, s string) bool {
	// Names are short; a stack buffer avoids converting s.
	var buf [32]byte
	if len(s) <= len(buf) {
		return foldEqual(a, append(buf[:0], s...))
	}
	return foldEqual(a, []byte(s))
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// appendFoldKey appends the folding key of name: every rune replaced by the
// smallest rune of its simple folding orbit, so two names have the same key
// exactly when foldEqual reports them equal.
func appendFoldKey(dst, name []byte) []byte {
	for len(name) > 0 {
		c := name[0]
		if c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			dst = append(dst, c)
			name = name[1:]
			continue
		}
		r, size := utf8.DecodeRune(name)
		name = name[size:]
		lo := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			lo = min(lo, f)
		}
		dst = utf8.AppendRune(dst, lo)
	}
	return dst
}

// nameSet detects member names of one object that are equal under case
// folding. Small objects are searched linearly; large ones switch to a map
// of folding keys, so the cost stays linear in the body.
type nameSet struct {
	arena []byte
	refs  [][2]int // offset, length in arena
	keys  map[string]struct{}
}

const linearNames = 32

func (s *nameSet) reset() {
	s.arena, s.refs = s.arena[:0], s.refs[:0]
	if s.keys != nil {
		clear(s.keys)
	}
}

// add adds name and reports whether an equal name was already added.
func (s *nameSet) add(name []byte) bool {
	if s.keys != nil && len(s.keys) > 0 {
		return s.addKey(name)
	}
	for _, r := range s.refs {
		if foldEqual(s.arena[r[0]:r[0]+r[1]], name) {
			return true
		}
	}
	s.refs = append(s.refs, [2]int{len(s.arena), len(name)})
	s.arena = append(s.arena, name...)
	if len(s.refs) > linearNames {
		if s.keys == nil {
			s.keys = make(map[string]struct{})
		}
		var key []byte
		for _, r := range s.refs {
			key = appendFoldKey(key[:0], s.arena[r[0]:r[0]+r[1]])
			s.keys[string(key)] = struct{}{}
		}
	}
	return false
}

func (s *nameSet) addKey(name []byte) bool {
	key := appendFoldKey(nil, name)
	if _, dup := s.keys[string(key)]; dup {
		return true
	}
	s.keys[string(key)] = struct{}{}
	return false
}
