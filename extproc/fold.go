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

// appendFoldKey appends the folding key of name: every rune replaced by the
// smallest rune of its simple folding orbit, so two names have the same key
// exactly when strings.EqualFold reports them equal.
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
// folding, by their folding keys. Small objects are searched linearly;
// large ones switch to a map, so the cost stays linear in the body.
type nameSet struct {
	arena  []byte
	refs   [][2]int // offset, length of each key in arena
	keys   map[string]struct{}
	mapped bool
}

const linearNames = 32

func (s *nameSet) reset() {
	s.arena, s.refs = s.arena[:0], s.refs[:0]
	if s.mapped {
		clear(s.keys)
		s.mapped = false
	}
}

// trim resets the set and drops buffers that grew large.
func (s *nameSet) trim() {
	s.reset()
	if cap(s.arena) > 4096 {
		s.arena = nil
	}
	if len(s.keys) > 0 || cap(s.refs) > 256 {
		s.keys, s.refs = nil, nil
	}
}

// addKey adds name and returns its folding key and whether an equal name
// was already added.
func (s *nameSet) addKey(name []byte) (key []byte, dup bool) {
	off := len(s.arena)
	s.arena = appendFoldKey(s.arena, name)
	key = s.arena[off:len(s.arena):len(s.arena)]
	if s.mapped {
		if _, dup := s.keys[string(key)]; dup {
			return key, true
		}
		s.keys[string(key)] = struct{}{}
		return key, false
	}
	for _, r := range s.refs {
		if r[1] == len(key) && bytes.Equal(s.arena[r[0]:r[0]+r[1]], key) {
			return key, true
		}
	}
	s.refs = append(s.refs, [2]int{off, len(key)})
	if len(s.refs) > linearNames {
		if s.keys == nil {
			s.keys = make(map[string]struct{})
		}
		for _, r := range s.refs {
			s.keys[string(s.arena[r[0]:r[0]+r[1]])] = struct{}{}
		}
		s.mapped = true
	}
	return key, false
}
