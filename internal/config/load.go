package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mcpauthz/mcpauthz/internal/problem"
)

// Problem is one configuration error, located by key path and, when the
// config came from a file, by file and line.
type Problem struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (p Problem) Error() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		if p.Line > 0 {
			b.WriteString(":" + strconv.Itoa(p.Line))
		}
		b.WriteString(": ")
	}
	if p.Key != "" {
		b.WriteString(p.Key + ": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Load reads the configuration file at path strictly: unknown keys and
// values of the wrong type are problems. It does not apply defaults or
// check values: the packages that use them do (internal/app.Compile), and
// their problems are located in the file with Locate. The returned error
// joins every problem found (errors.Join of Problem values).
func Load(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, raw)
}

var (
	unknownField = regexp.MustCompile(`^line (\d+): field (\S+) not found in type \S+$`)
	lineMsg      = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
)

// Parse is Load for configuration bytes; name is used in messages.
func Parse(name string, raw []byte) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, yamlProblems(name, err)
	}
	var cfg Config
	if len(doc.Content) > 0 {
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil {
			return nil, yamlProblems(name, err)
		}
	}
	cfg.file, cfg.doc = name, &doc
	return &cfg, nil
}

// Locate turns every *problem.Error in err (a problem with the value at a
// key path, as internal/app.Compile reports them) into a Problem with the
// file and line of that key, when the configuration came from a file.
// Other errors are kept as they are.
func (c *Config) Locate(err error) error {
	if err == nil {
		return nil
	}
	var errs []error
	for _, e := range problem.Split(err) {
		var pe *problem.Error
		if errors.As(e, &pe) && pe == e {
			p := Problem{File: c.file, Key: pe.Path, Msg: pe.Msg}
			if c.doc != nil {
				p.Line = lineOf(c.doc, pe.Path)
			}
			errs = append(errs, p)
			continue
		}
		errs = append(errs, e)
	}
	// In the order of the file, so that the list reads top to bottom.
	slices.SortStableFunc(errs, func(a, b error) int {
		var pa, pb Problem
		errors.As(a, &pa)
		errors.As(b, &pb)
		return cmp.Compare(pa.Line, pb.Line)
	})
	return errors.Join(errs...)
}

// yamlProblems turns yaml.v3 errors ("line 3: field x not found in type
// config.Config") into file:line problems without Go type names.
func yamlProblems(file string, err error) error {
	var te *yaml.TypeError
	msgs := []string{err.Error()}
	if errors.As(err, &te) {
		msgs = te.Errors
	}
	var errs []error
	for _, m := range msgs {
		p := Problem{File: file, Msg: m}
		if sm := unknownField.FindStringSubmatch(m); sm != nil {
			p.Line, _ = strconv.Atoi(sm[1])
			p.Msg = fmt.Sprintf("unknown key %q", sm[2])
		} else if sm := lineMsg.FindStringSubmatch(m); sm != nil {
			p.Line, _ = strconv.Atoi(sm[1])
			p.Msg = strings.TrimPrefix(sm[2], "yaml: ")
		}
		errs = append(errs, p)
	}
	return errors.Join(errs...)
}

// lineOf finds the line of a key path like "issuers[0].jwks_uri"; when the
// key itself is absent it returns the line of its closest present parent.
func lineOf(doc *yaml.Node, path string) int {
	if doc == nil || len(doc.Content) == 0 {
		return 0
	}
	n := doc.Content[0]
	line := n.Line
	for _, part := range splitPath(path) {
		next, l := child(n, part)
		if next == nil {
			return line
		}
		n, line = next, l
	}
	return line
}

func splitPath(path string) []string {
	var parts []string
	for _, seg := range strings.Split(path, ".") {
		for seg != "" {
			i := strings.IndexByte(seg, '[')
			if i < 0 {
				parts = append(parts, seg)
				break
			}
			if i > 0 {
				parts = append(parts, seg[:i])
			}
			j := strings.IndexByte(seg, ']')
			if j < i {
				break
			}
			parts = append(parts, seg[i:j+1])
			seg = seg[j+1:]
		}
	}
	return parts
}

func child(n *yaml.Node, part string) (*yaml.Node, int) {
	if strings.HasPrefix(part, "[") {
		i, err := strconv.Atoi(strings.Trim(part, "[]"))
		if err != nil || n.Kind != yaml.SequenceNode || i < 0 || i >= len(n.Content) {
			return nil, 0
		}
		return n.Content[i], n.Content[i].Line
	}
	if n.Kind != yaml.MappingNode {
		return nil, 0
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == part {
			return n.Content[i+1], n.Content[i].Line
		}
	}
	return nil, 0
}

// UnmarshalYAML reads a Go duration string ("60s", "1m30s").
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: want a duration like \"60s\"", n.Line)}}
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: invalid duration %q (want e.g. \"60s\")", n.Line, n.Value)}}
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a Go duration string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }
