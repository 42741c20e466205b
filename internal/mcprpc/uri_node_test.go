package mcprpc

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestNormalizeURIAgainstWHATWG is a differential test against the WHATWG
// URL parser of Node.js (the one the TypeScript SDK reads resource URIs
// with; the Python SDK's pydantic AnyUrl follows the same standard). A
// seeded corpus of URIs mixing schemes, hosts, dot segments in every
// spelling, backslashes, valid and invalid escapes and Unicode goes through
// NormalizeURI and through `new URL(s).href` (testdata/whatwg_url.js).
//
// For every URI NormalizeURI accepts:
//   - Node accepts it too;
//   - special schemes: the normal form equals Node's href up to the
//     documented, safe differences (whatwgToNormal);
//   - other schemes: Node's href normalises to the same normal form (Node
//     keeps host case and escapes, so only equivalence is required);
//   - Node reads the normal form itself the same way (it is stable under a
//     second WHATWG parse).
//
// Rejecting is always allowed: that is the fail-closed direction.
func TestNormalizeURIAgainstWHATWG(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: skipping the differential test against the WHATWG URL parser")
	}
	corpus := uriCorpus(4000)
	for _, tc := range uriCases {
		if !tc.template {
			corpus = append(corpus, tc.in)
		}
	}
	type result struct {
		out string
		err *uriProblem
	}
	goRes := make([]result, len(corpus))
	batch := append([]string(nil), corpus...)
	for i, s := range corpus {
		out, p := normalizeURI(s, false)
		goRes[i] = result{out, p}
		if p == nil {
			batch = append(batch, out)
		}
	}
	version, nodeRes := runWHATWG(t, node, batch)
	t.Logf("node %s, %d URIs", version, len(corpus))

	accepted, special, rejected := 0, 0, map[string]int{}
	next := len(corpus)
	for i, s := range corpus {
		g := goRes[i]
		if g.err != nil {
			rejected[g.err.reason]++
			continue
		}
		accepted++
		first, second := nodeRes[i], nodeRes[next]
		next++
		if first.Error != "" {
			t.Errorf("NormalizeURI(%q) = %q, but WHATWG rejects the URI (%s)", s, g.out, first.Error)
			continue
		}
		if second.Error != "" {
			t.Errorf("NormalizeURI(%q) = %q, but WHATWG rejects the normal form (%s)", s, g.out, second.Error)
			continue
		}
		_, isSpecial := specialPorts[g.out[:strings.IndexByte(g.out, ':')]]
		if isSpecial {
			special++
			if want := whatwgToNormal(first.Href); g.out != want {
				t.Errorf("NormalizeURI(%q) = %q, WHATWG href %q (normal form %q)", s, g.out, first.Href, want)
			}
			if want := whatwgToNormal(second.Href); g.out != want {
				t.Errorf("NormalizeURI(%q) = %q, WHATWG reads that as %q", s, g.out, second.Href)
			}
			continue
		}
		for _, href := range []string{first.Href, second.Href} {
			if n, p := normalizeURI(href, false); p != nil || n != g.out {
				t.Errorf("NormalizeURI(%q) = %q, WHATWG href %q normalises to %q (%v)", s, g.out, href, n, p)
			}
		}
	}
	reasons := make([]string, 0, len(rejected))
	for r, n := range rejected {
		reasons = append(reasons, r+"="+itoa(n))
	}
	sort.Strings(reasons)
	t.Logf("accepted %d (%d special), rejected %v", accepted, special, reasons)
	if accepted < len(corpus)/5 || special < accepted/3 {
		t.Errorf("corpus too weak: %d of %d accepted, %d special", accepted, len(corpus), special)
	}
}

// whatwgResult is one line of testdata/whatwg_url.js output.
type whatwgResult struct {
	Href  string `json:"href"`
	Error string `json:"error"`
}

func runWHATWG(t *testing.T, node string, uris []string) (string, []whatwgResult) {
	t.Helper()
	in, err := json.Marshal(uris)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "testdata/whatwg_url.js")
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node testdata/whatwg_url.js: %v\n%s", err, stderr.Bytes())
	}
	var res struct {
		Node    string         `json:"node"`
		Results []whatwgResult `json:"results"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("node output: %v", err)
	}
	if len(res.Results) != len(uris) {
		t.Fatalf("node returned %d results for %d URIs", len(res.Results), len(uris))
	}
	return res.Node, res.Results
}

// whatwgToNormal applies to a WHATWG href the differences NormalizeURI
// makes on purpose, all of which keep the reading the same for a server
// that percent-decodes:
//   - percent-escapes of unreserved characters (A-Z a-z 0-9 - . _ ~) are
//     decoded, other escapes get upper-case hex digits (RFC 3986 §6.2.2.1,
//     §6.2.2.2), so that "%7e", "%7E" and "~" are one string for policy;
//   - characters RFC 3986 does not allow raw, which WHATWG leaves raw in some
//     components ("^", "|", "[", "]", "{", "}", "`", and a second "#" in
//     the fragment), are percent-encoded, so that raw and encoded spellings
//     are one string for policy.
//
// The host is left alone: WHATWG's host serialisation is the normal form.
func whatwgToNormal(href string) string {
	i := strings.Index(href, "://")
	if i < 0 {
		return href
	}
	start := i + 3
	end := strings.IndexAny(href[start:], "/?#")
	if end < 0 {
		return href
	}
	start += end
	var b strings.Builder
	b.WriteString(href[:start])
	const upper = "0123456789ABCDEF"
	inFragment := false
	for j := start; j < len(href); j++ {
		c := href[j]
		switch {
		case c == '%' && j+2 < len(href):
			hi, _ := unhex(href[j+1])
			lo, _ := unhex(href[j+2])
			if v := hi<<4 | lo; isUnreserved(v) {
				b.WriteByte(v)
			} else {
				b.WriteByte('%')
				b.WriteByte(upper[hi])
				b.WriteByte(upper[lo])
			}
			j += 2
		case c == '#' && !inFragment:
			inFragment = true
			b.WriteByte(c)
		case strings.IndexByte("^|[]{}`", c) >= 0 || c == '#' && inFragment:
			b.WriteByte('%')
			b.WriteByte(upper[c>>4])
			b.WriteByte(upper[c&15])
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// uriCorpus generates n URIs from a fixed seed: the same corpus on every run.
// Each component comes from a pool of plain values or, one time in six, a
// pool of hostile ones, so that both accepted and rejected URIs are common.
func uriCorpus(n int) []string {
	r := rand.New(rand.NewPCG(20260728, 1))
	pick := func(plain, hostile []string) string {
		if r.IntN(6) == 0 {
			return hostile[r.IntN(len(hostile))]
		}
		return plain[r.IntN(len(plain))]
	}
	schemes := []string{"http", "https", "HTTP", "Https", "ws", "wss", "ftp", "file", "FILE", "File",
		"mem", "urn", "s3", "x-y+z.1", "git+ssh"}
	afterScheme, afterSchemeHostile := []string{"//"}, []string{"/", "", "///", `\`, `/\`}
	hosts := []string{"", "h", "Example.COM", "ex%41mple.com", "%65xample.com", "EX%4dMPLE.org", "127.0.0.1",
		"0.0.0.0", "1.a", "[::1]", "[0:0:0:0:0:0:0:1]", "[::FFFF:1.2.3.4]", "[1::2:3:4:5:6:7]", "[2001:DB8::]",
		"h:80", "h:443", "h:0080", "h:", "h:21", "h:8080", "localhost", "LOCALHOST", "xn--caf-dma.com",
		"XN--NXASMQ6B.com", "a_b.example", "a-.b-c", "a!$&'()*+,;=b"}
	hostsHostile := []string{"0x7f.1", "127.1", "1.2.3.04", "256.1.1.1", "a.1", "[fe80::1%25eth0]", "[1.2.3.4]",
		"h:65536", "h:8x", "u@h", "u:p@h", "@h", "xn--a.com", "café.com", "caf%C3%A9.com", "ａ.com", "a..b",
		"h.", ".h", "C:", "C|", "a%2Fb", "a^b", "a%zz"}
	segments := []string{"a", "B", "srv", "data", "etc", "passwd", ".", "..", "%2e", "%2E%2e", ".%2e", "%2e.", "...",
		"x%41", "%7e", "%7E", "~", "é", "%C3%A9", "%c3%a9", "", "^", "|", "[x]", "'", `"`, "<a>", "`", "{x}",
		"%25", "C:", "c:", ";p=1", "=", "@", ":", "%20", "!$&()*+,", "%3A", "%3a", "%7B", "\u202e"}
	segmentsHostile := []string{"%2f", "%5C", "..%2F", "%zz", "%4", "%", "%00", "%0a", "%252e", "%252F", "C|",
		"\u00a0", "a\tb", " "}
	queries := []string{"a=1", "../x", "'q'", "{x}", "%7e", "", "x=..", "q=é", "^|`", "a#b", "<>", "a/b", "%3D"}
	queriesHostile := []string{"b=%2F", "/../", `a\b`, "%zz", "x/./y", "%2e%2e", "/.."}
	out := make([]string, 0, n)
	for len(out) < n {
		var b strings.Builder
		b.WriteString(schemes[r.IntN(len(schemes))])
		b.WriteByte(':')
		pre := pick(afterScheme, afterSchemeHostile)
		b.WriteString(pre)
		if pre == "//" {
			b.WriteString(pick(hosts, hostsHostile))
		}
		for k := r.IntN(6); k > 0; k-- {
			if r.IntN(40) == 0 {
				b.WriteByte('\\')
			} else {
				b.WriteByte('/')
			}
			b.WriteString(pick(segments, segmentsHostile))
		}
		if r.IntN(10) < 3 {
			b.WriteByte('?')
			for k := r.IntN(3) + 1; k > 0; k-- {
				b.WriteString(pick(queries, queriesHostile))
				if k > 1 {
					b.WriteString([]string{"&", "/"}[r.IntN(2)])
				}
			}
		}
		if r.IntN(10) < 2 {
			b.WriteByte('#')
			b.WriteString(pick(queries, queriesHostile))
		}
		out = append(out, b.String())
	}
	return out
}
