package mcprpc

import (
	"bytes"
	"hash/maphash"
	"slices"
	"unicode"
	"unicode/utf8"
)

// foldSeed is random per process so that nobody can precompute names whose
// hashes collide and turn the per-object name set into a linear list.
var foldSeed = maphash.MakeSeed()

// appendFold appends the case-folding key of name to dst: every rune is
// replaced by the smallest rune of its Unicode simple case folding orbit
// (unicode.SimpleFold). Two names have the same key exactly when
// strings.EqualFold reports them equal: "method", "Method" and "METHOD" all
// become "METHOD", "paramſ" (U+017F) becomes "PARAMS", and "\u212a" (Kelvin
// sign) becomes "K".
func appendFold(dst, name []byte) []byte {
	// ASCII fast path. No ASCII rune but a letter has a folding partner, and
	// the smallest member of a letter's orbit is its ASCII upper case.
	n := len(dst)
	dst = slices.Grow(dst, len(name))[:n+len(name)]
	for i, c := range name {
		if c >= utf8.RuneSelf {
			return appendFoldUnicode(dst[:n+i], name[i:])
		}
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		dst[n+i] = c
	}
	return dst
}

func appendFoldUnicode(dst, name []byte) []byte {
	for len(name) > 0 {
		r, size := utf8.DecodeRune(name)
		name = name[size:]
		if r < utf8.RuneSelf {
			if 'a' <= r && r <= 'z' {
				r -= 'a' - 'A'
			}
			dst = append(dst, byte(r))
			continue
		}
		dst = utf8.AppendRune(dst, foldMin(r))
	}
	return dst
}

// foldMin returns the smallest rune of r's simple case folding orbit.
func foldMin(r rune) rune {
	lo := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		lo = min(lo, f)
	}
	return lo
}

// foldDuplicate adds name to the innermost open object and reports whether
// the object already has a member whose name is equal to it under Unicode
// simple case folding. Objects with few members are searched linearly;
// larger ones switch to a hash map, so the cost stays linear in the body.
func (p *parser) foldDuplicate(name []byte) bool {
	lv := &p.levels[p.nlevels-1]
	off := len(p.arena)
	p.arena = appendFold(p.arena, name)
	key := p.arena[off:]
	idx := len(p.names)
	if !lv.mapped {
		for i := lv.start; i < idx; i++ {
			if e := p.names[i]; e.n == len(key) && bytes.Equal(p.arena[e.off:e.off+e.n], key) {
				return true
			}
		}
		p.names = append(p.names, nameEntry{off: off, n: len(key), prev: -1})
		if idx+1-lv.start > linearNames {
			if lv.m == nil {
				lv.m = make(map[uint64]int)
			}
			lv.mapped = true
			for i := lv.start; i <= idx; i++ {
				e := &p.names[i]
				e.hash = maphash.Bytes(foldSeed, p.arena[e.off:e.off+e.n])
				e.prev = -1
				if j, ok := lv.m[e.hash]; ok {
					e.prev = j
				}
				lv.m[e.hash] = i
			}
		}
		return false
	}
	h := maphash.Bytes(foldSeed, key)
	head, ok := lv.m[h]
	if !ok {
		head = -1
	}
	for j := head; j >= 0; j = p.names[j].prev {
		if e := p.names[j]; e.n == len(key) && bytes.Equal(p.arena[e.off:e.off+e.n], key) {
			return true
		}
	}
	p.names = append(p.names, nameEntry{off: off, n: len(key), hash: h, prev: head})
	lv.m[h] = idx
	return false
}

// foldEqualASCII reports whether name equals the ASCII string k under
// Unicode simple case folding (strings.EqualFold), without allocating.
func foldEqualASCII(name []byte, k string) bool {
	if len(name) < len(k) || len(name) > utf8.UTFMax*len(k) {
		return false
	}
	j := 0
	for i := 0; i < len(name); j++ {
		if j == len(k) {
			return false
		}
		r, size := rune(name[i]), 1
		if r >= utf8.RuneSelf {
			r, size = utf8.DecodeRune(name[i:])
		}
		i += size
		c := rune(k[j])
		if r != c && foldMin(r) != foldMin(c) {
			return false
		}
	}
	return j == len(k)
}
