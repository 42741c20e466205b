package envoycheck

import (
	"bytes"
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
// Envoy's own loader does. Problems are returned as findings.
func parseYAML(data []byte) (*document, []Finding) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, []Finding{yamlFinding(err)}
		}
		if len(n.Content) > 0 {
			docs = append(docs, &n)
		}
	}
	switch {
	case len(docs) == 0:
		return nil, []Finding{{Severity: Error, Rule: RuleYAML, Message: "empty configuration: an Envoy bootstrap is one YAML mapping"}}
	case len(docs) > 1:
		return nil, []Finding{{Severity: Error, Rule: RuleYAML, Line: docs[1].Content[0].Line,
			Message: fmt.Sprintf("%d YAML documents: Envoy reads exactly one bootstrap per file", len(docs))}}
	}
	root := docs[0].Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, []Finding{{Severity: Error, Rule: RuleYAML, Line: root.Line, Message: "the configuration is not a YAML mapping"}}
	}
	c := &converter{}
	if f := c.value(root, nil); f != nil {
		return nil, []Finding{*f}
	}
	return &document{root: root, json: c.buf.Bytes(), spans: c.spans}, nil
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
	buf   bytes.Buffer
	spans []span
	depth int
}

func (c *converter) mark(line int, p Path) {
	c.spans = append(c.spans, span{off: c.buf.Len(), line: line, path: p.String()})
}

func (c *converter) value(n *yaml.Node, p Path) *Finding {
	c.depth++
	defer func() { c.depth-- }()
	if c.depth > 200 {
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
