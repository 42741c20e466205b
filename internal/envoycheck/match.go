package envoycheck

import (
	"regexp"
	"strings"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	earlyhmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/early_header_mutation/header_mutation/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
)

type headerMutation = *mutationrulesv3.HeaderMutation

func earlyMutations(m proto.Message) []headerMutation {
	if hm, ok := m.(*earlyhmv3.HeaderMutation); ok {
		return hm.GetMutations()
	}
	return nil
}

// removes reports whether the mutations remove header name.
func removes(muts []headerMutation, name string) bool {
	for _, m := range muts {
		if strings.EqualFold(m.GetRemove(), name) {
			return true
		}
		if km := m.GetRemoveOnMatch().GetKeyMatcher(); km != nil {
			if ok, _ := match(km, name); ok {
				return true
			}
		}
	}
	return false
}

// matchAny evaluates a list of string matchers; known is false when a
// matcher cannot be evaluated here (custom matchers).
func matchAny(ms []*matcherv3.StringMatcher, s string) (matched, known bool) {
	known = true
	for _, m := range ms {
		ok, k := match(m, s)
		if ok {
			return true, true
		}
		known = known && k
	}
	return false, known
}

// match evaluates one StringMatcher as Envoy does (safe_regex must match the
// whole string; RE2 and Go's regexp share their syntax).
func match(m *matcherv3.StringMatcher, s string) (matched, known bool) {
	fold := m.GetIgnoreCase()
	eq := func(a, b string) bool {
		if fold {
			return strings.EqualFold(a, b)
		}
		return a == b
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return eq(s, p.Exact), true
	case *matcherv3.StringMatcher_Prefix:
		return len(s) >= len(p.Prefix) && eq(s[:len(p.Prefix)], p.Prefix), true
	case *matcherv3.StringMatcher_Suffix:
		return len(s) >= len(p.Suffix) && eq(s[len(s)-len(p.Suffix):], p.Suffix), true
	case *matcherv3.StringMatcher_Contains:
		if fold {
			return strings.Contains(strings.ToLower(s), strings.ToLower(p.Contains)), true
		}
		return strings.Contains(s, p.Contains), true
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := regexp.Compile(`^(?:` + p.SafeRegex.GetRegex() + `)$`)
		if err != nil {
			return false, false
		}
		return re.MatchString(s), true
	}
	return false, false
}
