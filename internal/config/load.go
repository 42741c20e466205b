package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Defaults of the keys that have one.
const (
	DefaultGRPCAddr        = "127.0.0.1:9191"
	DefaultHTTPAddr        = "127.0.0.1:9192"
	DefaultMCPPath         = "/mcp"
	DefaultMaxBatch        = 100
	DefaultMaxDepth        = 64
	DefaultMaxTokenSize    = 16384
	DefaultLeeway          = 60 * time.Second
	DefaultReloadInterval  = 2 * time.Second
	DefaultEvalTimeout     = 100 * time.Millisecond
	DefaultJWKSMinRefresh  = 5 * time.Minute
	DefaultJWKSMaxRefresh  = time.Hour
	DefaultUnknownKIDWait  = 10 * time.Second
	DefaultFetchTimeout    = 5 * time.Second
	DefaultTenantClaim     = "tid"
	DefaultShutdownTimeout = 15 * time.Second
)

// DefaultRedactKeys are the argument names whose values the decision log
// redacts when arguments are logged.
var DefaultRedactKeys = []string{"password", "secret", "token", "authorization", "api_key", "apikey", "access_token", "refresh_token", "client_secret", "cookie"}

// DefaultAlgorithms are the asymmetric JWS algorithms accepted when an issuer
// does not list its own.
var DefaultAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"}

// DefaultScopeClaims are read for scopes when an issuer does not list its own.
var DefaultScopeClaims = []string{"scope", "scp"}

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

// Load reads, defaults and validates the configuration file at path. The
// returned error joins every problem found (errors.Join of Problem values).
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
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, locate(name, &doc, err)
	}
	return &cfg, nil
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

// locate adds file and line to every Problem in err, found by key path in the
// YAML document.
func locate(file string, doc *yaml.Node, err error) error {
	var errs []error
	for _, e := range unjoin(err) {
		var p Problem
		if errors.As(e, &p) {
			p.File = file
			p.Line = lineOf(doc, p.Key)
			errs = append(errs, p)
			continue
		}
		errs = append(errs, e)
	}
	return errors.Join(errs...)
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
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
