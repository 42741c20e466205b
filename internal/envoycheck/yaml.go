package envoycheck

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Bounds on what Validate reads. Envoy bootstraps are typically 10–100 KiB
// with a few thousand YAML nodes; these bounds are far above that and keep a
// hostile file from exhausting memory or time: a 300-byte file of nested
// anchors ("billion laughs") expands to billions of nodes.
const (
	// MaxConfigBytes caps the size of the file.
	MaxConfigBytes = 2 << 20
	// MaxNodes caps the number of YAML nodes after alias expansion.
	MaxNodes = 500_000
	// MaxExpandedBytes caps the scalar bytes after alias expansion, which
	// is about the size of the JSON handed to protojson.
	MaxExpandedBytes = 16 << 20
	// maxDepth caps nesting, aliases included.
	maxDepth = 200
)

// limits are the bounds in force; tests lower them.
type limits struct {
	bytes, nodes, scalarBytes int64
}

var defaultLimits = limits{bytes: MaxConfigBytes, nodes: MaxNodes, scalarBytes: MaxExpandedBytes}

// document is one parsed YAML configuration: its node tree, the JSON that is
// handed to protojson, and an index from offsets in that JSON back to YAML
// lines and field paths, so that protojson's "(line 1:345)" can be reported
// as the YAML line and field it is about.
type document struct {
	root  *yaml.Node // the top-level value (a mapping for a bootstrap)
	json  []byte
	spans []span // in increasing offset order
}

type span struct {
	off  int // byte offset in json
	line int // YAML line
	path string
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// parseYAML reads exactly one YAML document and converts it to JSON the way
// Envoy's own loader does. Problems are returned as findings; the error is
// only ever ctx's, when it is cancelled.
//
// The phases are bounded before they run: the input size first; then the
// node tree (yaml.v3 keeps aliases as pointers, so decoding is linear in the
// input) is measured as it would be expanded, without expanding it, and
// refused when aliases blow it up; only then is it converted. Every phase
// observes ctx: the YAML decoder reads through a reader that fails once ctx
// is done, the measurement and the conversion check ctx as they go.
func parseYAML(ctx context.Context, data []byte, lim limits) (*document, []Finding, error) {
	if int64(len(data)) > lim.bytes {
		return nil, []Finding{{Severity: Error, Rule: RuleYAML, Message: fmt.Sprintf(
			"the configuration is %s; envoycheck reads at most %s (an Envoy bootstrap is typically 10-100 KiB)",
			byteSize(int64(len(data))), byteSize(lim.bytes))}}, nil
	}
	dec := yaml.NewDecoder(&ctxReader{ctx: ctx, r: bytes.NewReader(data)})
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if cerr := ctx.Err(); cerr != nil {
			return nil, nil, cerr
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, []Finding{yamlFinding(err)}, nil
		}
		if len(n.Content) > 0 {
			docs = append(docs, &n)
		}
	}
	switch {
	case len(docs) == 0:
		return nil, []Finding{{Severity: Error, Rule: RuleYAML, Message: "empty configuration: an Envoy bootstrap is one YAML mapping"}}, nil
	case len(docs) > 1:
		return nil, []Finding{{Severity: Error, Rule: RuleYAML, Line: docs[1].Content[0].Line,
			Message: fmt.Sprintf("%d YAML documents: Envoy reads exactly one bootstrap per file", len(docs))}}, nil
	}
	root := docs[0].Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, []Finding{{Severity: Error, Rule: RuleYAML, Line: root.Line, Message: "the configuration is not a YAML mapping"}}, nil
	}
	m := &measurer{ctx: ctx, lim: lim, memo: map[*yaml.Node]expansion{}, active: map[*yaml.Node]bool{}}
	if _, f := m.measure(root, 0); f != nil || m.err != nil {
		if m.err != nil {
			return nil, nil, m.err
		}
		return nil, []Finding{*f}, nil
	}
	c := &converter{ctx: ctx}
	c.buf.Grow(int(min(m.total.scalarBytes+8*m.total.nodes, lim.scalarBytes+8*lim.nodes)))
	if f := c.value(root, nil); f != nil || c.err != nil {
		if c.err != nil {
			return nil, nil, c.err
		}
		return nil, []Finding{*f}, nil
	}
	return &document{root: root, json: c.buf.Bytes(), spans: c.spans}, nil, nil
}

// ctxReader fails reads once ctx is done, which stops the YAML decoder (it
// reads its input in small chunks as it parses).
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r *ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// expansion is the size of a node with every alias in it expanded.
type expansion struct {
	nodes, scalarBytes int64
}

// measurer computes the expanded size of a node tree without expanding it:
// an anchored node's size is computed once and reused for every alias of
// it, so the work is linear in the decoded tree however much the aliases
// multiply it.
type measurer struct {
	ctx    context.Context
	lim    limits
	memo   map[*yaml.Node]expansion // anchored nodes
	active map[*yaml.Node]bool      // anchored nodes being measured (alias cycles)
	total  expansion
	steps  int
	err    error // ctx's error, when it stopped the measurement

	// The aliases with the largest expansions so far, by nodes and by
	// scalar bytes, for the message.
	mostNodes, mostBytes *yaml.Node
	most                 expansion
}

// measure returns the expanded size of n, or a finding as soon as a bound
// is crossed. depth counts nesting, aliases included.
func (m *measurer) measure(n *yaml.Node, depth int) (expansion, *Finding) {
	if m.steps++; m.steps%4096 == 0 && m.err == nil {
		m.err = m.ctx.Err()
	}
	if m.err != nil {
		return expansion{}, &Finding{}
	}
	if depth > maxDepth {
		return expansion{}, &Finding{Severity: Error, Rule: RuleYAML, Line: n.Line,
			Message: fmt.Sprintf("nesting deeper than %d levels", maxDepth)}
	}
	if n.Kind == yaml.AliasNode {
		target := n.Alias
		if m.active[target] {
			return expansion{}, &Finding{Severity: Error, Rule: RuleYAML, Line: n.Line, Message: fmt.Sprintf(
				"alias *%s refers to a node that contains it: the document would be infinite", n.Value)}
		}
		e, f := m.measure(target, depth+1)
		if f != nil {
			return e, f
		}
		if e.nodes > m.most.nodes {
			m.mostNodes, m.most.nodes = n, e.nodes
		}
		if e.scalarBytes > m.most.scalarBytes {
			m.mostBytes, m.most.scalarBytes = n, e.scalarBytes
		}
		// e fits the bounds: the anchored node was measured where it is
		// defined. Its parent adds it up.
		return e, nil
	}
	if n.Anchor != "" {
		if e, ok := m.memo[n]; ok {
			return e, nil
		}
		m.active[n] = true
		defer delete(m.active, n)
	}
	e := expansion{nodes: 1, scalarBytes: int64(len(n.Value))}
	for _, c := range n.Content {
		ce, f := m.measure(c, depth+1)
		if f != nil {
			return e, f
		}
		e.nodes += ce.nodes
		e.scalarBytes += ce.scalarBytes
		if f := m.check(e, c.Line); f != nil {
			return e, f
		}
	}
	if n.Anchor != "" {
		m.memo[n] = e
	}
	if depth == 0 {
		m.total = e
	}
	return e, nil
}

// check reports a finding when e crosses a bound; line is where it was
// crossed. The message names the alias that contributed most, if any.
func (m *measurer) check(e expansion, line int) *Finding {
	if e.nodes <= m.lim.nodes && e.scalarBytes <= m.lim.scalarBytes {
		return nil
	}
	what := fmt.Sprintf("%d YAML nodes", m.lim.nodes)
	largest, size := m.mostNodes, fmt.Sprintf("%d nodes", m.most.nodes)
	if e.nodes <= m.lim.nodes {
		what = byteSize(m.lim.scalarBytes) + " of scalar values"
		largest, size = m.mostBytes, byteSize(m.most.scalarBytes)
	}
	f := &Finding{Severity: Error, Rule: RuleYAML, Line: line}
	switch {
	case largest != nil:
		f.Message = fmt.Sprintf("with its aliases expanded the configuration has more than %s (an alias bomb?): "+
			"alias *%s on line %d alone expands to %s", what, largest.Value, largest.Line, size)
	default:
		f.Message = fmt.Sprintf("the configuration has more than %s, envoycheck's limit (an Envoy bootstrap has a few thousand)", what)
	}
	return f
}

// byteSize formats n as KiB or MiB.
func byteSize(n int64) string {
	switch {
	case n >= 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', -1, 64) + " MiB"
	case n >= 1<<10:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}

func yamlFinding(err error) Finding {
	f := Finding{Severity: Error, Rule: RuleYAML, Message: err.Error()}
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		f.Message = te.Errors[0]
	}
	if m := yamlLine.FindStringSubmatch(f.Message); m != nil {
		f.Line, _ = strconv.Atoi(m[1])
		f.Message = m[2]
	}
	f.Message = strings.TrimPrefix(f.Message, "yaml: ")
	return f
}

type converter struct {
	ctx   context.Context
	buf   bytes.Buffer
	spans []span
	depth int
	steps int
	err   error // ctx's error, when it stopped the conversion
}

func (c *converter) mark(line int, p Path) {
	c.spans = append(c.spans, span{off: c.buf.Len(), line: line, path: p.String()})
}

func (c *converter) value(n *yaml.Node, p Path) *Finding {
	if c.steps++; c.steps%1024 == 0 && c.err == nil {
		c.err = c.ctx.Err()
	}
	if c.err != nil {
		return &Finding{}
	}
	c.depth++
	defer func() { c.depth-- }()
	if c.depth > maxDepth+1 {
		// measure has already refused deeper documents; kept so that the
		// recursion is bounded on its own.
		return &Finding{Severity: Error, Rule: RuleYAML, Line: n.Line, Path: p.String(), Message: "nesting too deep (alias loop?)"}
	}
	if n.Kind == yaml.AliasNode {
		return c.value(n.Alias, p)
	}
	c.mark(n.Line, p)
	switch n.Kind {
	case yaml.MappingNode:
		c.buf.WriteByte('{')
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind == yaml.AliasNode {
				k = k.Alias
			}
			if k.Kind != yaml.ScalarNode {
				return &Finding{Severity: Error, Rule: RuleYAML, Line: k.Line, Path: p.String(), Message: "mapping key is not a scalar"}
			}
			kp := p.key(k.Value)
			if prev, dup := seen[k.Value]; dup {
				return &Finding{Severity: Error, Rule: RuleYAML, Line: k.Line, Path: kp.String(),
					Message: fmt.Sprintf("duplicate key %q (first on line %d)", k.Value, prev)}
			}
			seen[k.Value] = k.Line
			if i > 0 {
				c.buf.WriteByte(',')
			}
			c.mark(k.Line, kp)
			writeJSONString(&c.buf, k.Value)
			c.buf.WriteByte(':')
			if f := c.value(v, kp); f != nil {
				return f
			}
		}
		c.buf.WriteByte('}')
	case yaml.SequenceNode:
		c.buf.WriteByte('[')
		for i, v := range n.Content {
			if i > 0 {
				c.buf.WriteByte(',')
			}
			if f := c.value(v, p.index(i)); f != nil {
				return f
			}
		}
		c.buf.WriteByte(']')
	case yaml.ScalarNode:
		if err := c.scalar(n); err != nil {
			return &Finding{Severity: Error, Rule: RuleYAML, Line: n.Line, Path: p.String(), Message: err.Error()}
		}
	default:
		return &Finding{Severity: Error, Rule: RuleYAML, Line: n.Line, Path: p.String(), Message: "unexpected YAML node"}
	}
	return nil
}

// yamlCppBools are the plain scalars yaml-cpp (Envoy's YAML library) reads as
// booleans; YAML 1.2 parsers such as yaml.v3 read most of them as strings.
var yamlCppBools = map[string]bool{
	"y": true, "yes": true, "on": true, "true": true,
	"n": false, "no": false, "off": false, "false": false,
}

// scalar writes a YAML scalar as JSON the way Envoy's loader converts it:
// quoted (and block) scalars are strings; plain scalars become booleans,
// numbers or null when they look like one, otherwise strings.
func (c *converter) scalar(n *yaml.Node) error {
	const quoted = yaml.DoubleQuotedStyle | yaml.SingleQuotedStyle | yaml.LiteralStyle | yaml.FoldedStyle
	tag := n.ShortTag()
	if n.Style&quoted != 0 || (n.Style&yaml.TaggedStyle != 0 && tag == "!!str") {
		writeJSONString(&c.buf, n.Value)
		return nil
	}
	switch tag {
	case "!!null":
		c.buf.WriteString("null")
		return nil
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			return err
		}
		c.buf.WriteString(strconv.FormatBool(b))
		return nil
	case "!!int":
		var v any
		if err := n.Decode(&v); err != nil {
			return err
		}
		out, err := json.Marshal(v)
		if err != nil {
			return err
		}
		c.buf.Write(out)
		return nil
	case "!!float":
		var f float64
		if err := n.Decode(&f); err != nil {
			return err
		}
		switch {
		case math.IsNaN(f):
			c.buf.WriteString(`"NaN"`)
		case math.IsInf(f, 1):
			c.buf.WriteString(`"Infinity"`)
		case math.IsInf(f, -1):
			c.buf.WriteString(`"-Infinity"`)
		default:
			c.buf.WriteString(strconv.FormatFloat(f, 'g', -1, 64))
		}
		return nil
	}
	if n.Style&yaml.TaggedStyle == 0 {
		// yaml-cpp accepts each word in lower, UPPER and Capitalized case.
		v, lower := n.Value, strings.ToLower(n.Value)
		if b, ok := yamlCppBools[lower]; ok && (v == lower || v == strings.ToUpper(lower) || v == strings.ToUpper(lower[:1])+lower[1:]) {
			c.buf.WriteString(strconv.FormatBool(b))
			return nil
		}
	}
	writeJSONString(&c.buf, n.Value)
	return nil
}

func writeJSONString(buf *bytes.Buffer, s string) {
	b, _ := json.Marshal(s) // a string always marshals
	buf.Write(b)
}

// at returns the line and path of the JSON token at byte offset off.
func (d *document) at(off int) (line int, path string) {
	i := sort.Search(len(d.spans), func(i int) bool { return d.spans[i].off > off }) - 1
	if i < 0 {
		return 0, ""
	}
	return d.spans[i].line, d.spans[i].path
}

// lineOf returns the YAML line of p, or of its closest present ancestor when
// p itself is absent (an unset field is reported where its parent is).
func (d *document) lineOf(p Path) int {
	if d == nil || d.root == nil {
		return 0
	}
	n := d.root
	line := n.Line
	for _, e := range p {
		for n.Kind == yaml.AliasNode {
			n = n.Alias
		}
		var next *yaml.Node
		switch e.kind {
		case elemIndex:
			if n.Kind == yaml.SequenceNode && e.index < len(n.Content) {
				next = n.Content[e.index]
			}
		default:
			if n.Kind == yaml.MappingNode {
				alt := jsonName(e.name)
				for i := 0; i+1 < len(n.Content); i += 2 {
					if k := n.Content[i].Value; k == e.name || (e.kind == elemField && k == alt) {
						next = n.Content[i+1]
						line = n.Content[i].Line
						break
					}
				}
			}
		}
		if next == nil {
			return line
		}
		n = next
		if e.kind == elemIndex {
			line = n.Line
		}
	}
	return line
}
