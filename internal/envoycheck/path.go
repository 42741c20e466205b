package envoycheck

import (
	"strconv"
	"strings"
)

// Path is a field path into an Envoy configuration, written with proto field
// names: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.
// The fields of a message packed in an Any (typed_config) follow the Any's
// own path directly, as they do in YAML. Map keys that are not identifiers
// are written ["envoy.filters.http.ext_authz"].
type Path []pathElem

type pathElem struct {
	name  string // field name or map key
	index int    // list index when isIndex
	kind  elemKind
}

type elemKind uint8

const (
	elemField elemKind = iota
	elemKey
	elemIndex
)

// field returns p extended by a field name (never aliasing p).
func (p Path) field(name string) Path { return p.add(pathElem{name: name, kind: elemField}) }

// key returns p extended by a map key.
func (p Path) key(k string) Path { return p.add(pathElem{name: k, kind: elemKey}) }

// index returns p extended by a list index.
func (p Path) index(i int) Path { return p.add(pathElem{index: i, kind: elemIndex}) }

func (p Path) add(e pathElem) Path {
	q := make(Path, len(p), len(p)+1)
	copy(q, p)
	return append(q, e)
}

func (p Path) String() string {
	var b strings.Builder
	for _, e := range p {
		switch e.kind {
		case elemIndex:
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(e.index))
			b.WriteByte(']')
		default:
			writeKey(&b, e.name)
		}
	}
	return b.String()
}

// writeKey writes .name for identifiers and ["name"] for anything else.
func writeKey(b *strings.Builder, name string) {
	if isIdent(name) {
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(name)
		return
	}
	b.WriteString("[")
	b.WriteString(strconv.Quote(name))
	b.WriteString("]")
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_', c == '@':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// jsonName is protojson's JSON name of a proto field name: lowerCamelCase.
func jsonName(name string) string {
	var b strings.Builder
	up := false
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c == '_' {
			up = true
			continue
		}
		if up && c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		up = false
		b.WriteByte(c)
	}
	return b.String()
}
