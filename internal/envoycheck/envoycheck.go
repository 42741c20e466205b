package envoycheck

import (
	"context"
	"fmt"
	"regexp"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Severity ranks a finding. Only errors make Validate fail.
type Severity int

const (
	// Info is advice; nothing is wrong.
	Info Severity = iota
	// Warning is a setting that works but is risky for MCP traffic.
	Warning
	// Error is a configuration Envoy rejects, or one that silently breaks
	// authorization (fail-open, checks that can never succeed, ...).
	Error
)

func (s Severity) String() string {
	switch s {
	case Info:
		return "info"
	case Warning:
		return "warning"
	case Error:
		return "error"
	}
	return "severity(" + strconv.Itoa(int(s)) + ")"
}

// MarshalText writes the severity's name, for JSON output.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Rule names, one per check; they are stable and appear in every finding.
const (
	RuleYAML          = "yaml"           // YAML syntax, duplicate keys, several documents
	RuleSchema        = "schema"         // strict protojson: unknown fields and types, wrong value types, enum names
	RuleConstraint    = "constraint"     // protoc-gen-validate rules, including inside every Any
	RuleDuration      = "duration"       // negative durations (Envoy: "Expected positive duration")
	RuleDeprecated    = "deprecated"     // deprecated fields and enum values; disallowed-by-default ones are errors
	RuleTypedStruct   = "typed-struct"   // TypedStruct contents cannot be validated
	RuleAdmin         = "admin"          // admin interface reachable from the network
	RuleCluster       = "cluster-ref"    // a route or ext_authz names a cluster that does not exist
	RuleDuplicate     = "duplicate-name" // duplicate listener, cluster, http filter, virtual host names, domains
	RuleFilterOrder   = "filter-order"   // router last, ext_authz before router, CORS before ext_authz, list filter after ext_authz
	RulePerFilter     = "per-filter-config"
	RuleExtAuthz      = "ext-authz"       // no ext_authz / traffic forwarded unauthorized / gRPC service required
	RuleTransport     = "transport-api"   // transport_api_version must be V3
	RuleHTTP2         = "http2-cluster"   // the ext_authz and list filter clusters must speak HTTP/2
	RuleFailOpen      = "fail-open"       // failure_mode_allow (ext_authz, list filter), filter_enabled without deny_at_disable, shadow/observability mode
	RuleStatusOnError = "status-on-error" // 503 on authorizer failure, not the default 403
	RuleTimeout       = "authz-timeout"   // the 200 ms default gRPC timeout
	RuleBody          = "request-body"    // with_request_body present, complete, pack_as_bytes
	RuleHeaders       = "allowed-headers" // allowed/disallowed_headers must let Authorization & MCP headers through
	RuleRouteCache    = "route-cache"     // clear_route_cache
	RuleDisabled      = "authz-disabled"  // ext_authz or the list filter disabled on a route that forwards
	RuleSSE           = "sse-timeouts"    // route timeout, stream idle timeout, max stream duration
	RuleIdentity      = "identity-headers"
	RuleUnderscores   = "underscores" // headers_with_underscores_action
	RuleCORS          = "cors"
	RulePreflight     = "cors-preflight"  // forward_not_matching_preflights must be false
	RuleCatchAll      = "catch-all-route" // a prefix "/" route that forwards every path to an upstream
	RuleAccessLog     = "access-log"
	RuleRemoteAddress = "remote-address"

	// The list filter (mcpauthz's ext_proc service).
	RuleExtProc         = "ext-proc"          // present; a gRPC service
	RuleExtProcGate     = "ext-proc-gate"     // gated on ext_authz's list_filter, not run for every request
	RuleExtProcMode     = "ext-proc-mode"     // the processing modes the list filter is written for
	RuleExtProcMetadata = "ext-proc-metadata" // ext_authz's namespace forwarded, not writable
	RuleExtProcTimeout  = "ext-proc-timeout"  // message_timeout set
)

// Finding is one problem or remark about a configuration.
type Finding struct {
	Severity Severity `json:"severity"`
	Rule     string   `json:"rule"`
	// Path is the field the finding is about, with proto field names (see
	// Path); empty for the whole file.
	Path string `json:"path,omitempty"`
	// Line is the YAML line of Path (or of its closest present parent when
	// the finding is about a missing field); 0 when unknown.
	Line    int    `json:"line,omitempty"`
	Message string `json:"message"`
}

// String formats a finding as "line 12: error: path: message [rule]".
func (f Finding) String() string {
	var b strings.Builder
	if f.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", f.Line)
	}
	b.WriteString(f.Severity.String())
	b.WriteString(": ")
	if f.Path != "" {
		b.WriteString(f.Path)
		b.WriteString(": ")
	}
	b.WriteString(f.Message)
	b.WriteString(" [")
	b.WriteString(f.Rule)
	b.WriteString("]")
	return b.String()
}

// Report is the result of a validation: every finding, ordered by line.
type Report struct {
	Findings []Finding `json:"findings"`
}

// Count returns the number of findings of severity s.
func (r Report) Count(s Severity) int {
	n := 0
	for _, f := range r.Findings {
		if f.Severity == s {
			n++
		}
	}
	return n
}

// HasErrors reports whether any finding is an error.
func (r Report) HasErrors() bool { return r.Count(Error) > 0 }

// Err returns nil when the report has no errors, otherwise an error that
// lists them.
func (r Report) Err() error {
	var lines []string
	for _, f := range r.Findings {
		if f.Severity == Error {
			lines = append(lines, f.String())
		}
	}
	if len(lines) == 0 {
		return nil
	}
	return fmt.Errorf("invalid Envoy configuration (%d error(s)):\n  %s", len(lines), strings.Join(lines, "\n  "))
}

// Validate checks an Envoy bootstrap (YAML or JSON) the way `envoy --mode
// validate` would as far as that is possible without Envoy, and adds the
// checks Envoy does not make (see the package documentation). The error is
// Report.Err(): non-nil exactly when some finding is an error.
//
// Input beyond MaxConfigBytes, or that expands through YAML aliases beyond
// MaxNodes or MaxExpandedBytes, is one error finding (rule yaml) and is
// never expanded. When ctx is done before the validation is, Validate
// returns promptly with an empty Report and an error that wraps ctx.Err()
// (errors.Is(err, context.Canceled)): every phase observes ctx, and the one
// that cannot (protojson decoding) is bounded by the limits.
func Validate(ctx context.Context, data []byte) (Report, error) {
	var bs bootstrapv3.Bootstrap
	v, ok, err := decode(ctx, data, &bs)
	if err != nil {
		return Report{}, err
	}
	if ok {
		v.walk(bs.ProtoReflect(), nil)
		if err := v.stopped(); err != nil {
			return Report{}, err
		}
		v.lint(&bs)
	}
	return v.report()
}

// ValidateAs decodes a fragment of Envoy configuration (YAML or JSON) into m
// strictly and checks it like Validate checks every message of a bootstrap
// (constraints inside every Any, durations, deprecations), without the
// bootstrap-wide lints. It suits the patches of an Istio EnvoyFilter. Limits
// and cancellation are those of Validate.
func ValidateAs(ctx context.Context, data []byte, m proto.Message) (Report, error) {
	v, ok, err := decode(ctx, data, m)
	if err != nil {
		return Report{}, err
	}
	if ok {
		v.walk(m.ProtoReflect(), nil)
		if err := v.stopped(); err != nil {
			return Report{}, err
		}
	}
	return v.report()
}

// DecodeAs only decodes data into m strictly (unknown fields and types are
// errors); for partial messages such as an EnvoyFilter MERGE patch, whose
// required fields are legitimately absent. Limits and cancellation are those
// of Validate.
func DecodeAs(ctx context.Context, data []byte, m proto.Message) (Report, error) {
	v, _, err := decode(ctx, data, m)
	if err != nil {
		return Report{}, err
	}
	return v.report()
}

// validator collects findings for one document.
type validator struct {
	ctx      context.Context
	doc      *document
	findings []Finding
	steps    int
	err      error // ctx's error, when it stopped the walk
}

// stopped returns the error Validate returns when ctx stopped the walk.
func (v *validator) stopped() error {
	if v.err == nil {
		return nil
	}
	return cancelled(v.err)
}

// cancelled wraps ctx's error.
func cancelled(err error) error {
	return fmt.Errorf("envoycheck: validation stopped: %w", err)
}

func (v *validator) add(sev Severity, rule string, p Path, format string, args ...any) {
	v.findings = append(v.findings, Finding{
		Severity: sev, Rule: rule, Path: p.String(), Line: v.doc.lineOf(p),
		Message: fmt.Sprintf(format, args...),
	})
}

func (v *validator) report() (Report, error) {
	sort.SliceStable(v.findings, func(i, j int) bool {
		a, b := v.findings[i], v.findings[j]
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Severity > b.Severity
	})
	r := Report{Findings: v.findings}
	return r, r.Err()
}

// protobuf-go separates "proto:" with a space or a non-breaking space.
var protojsonPos = regexp.MustCompile(`^(?:proto:[ \x{00a0}]*)?(?:\(line (\d+):(\d+)\): )?(.*)$`)
var unresolved = regexp.MustCompile(`unable to resolve "(?:type\.googleapis\.com/)?([^"]+)": "?not found"?`)

// decode parses YAML into m with strict protojson, turning failures into
// located findings. The error is only ever ctx's.
func decode(ctx context.Context, data []byte, m proto.Message) (*validator, bool, error) {
	doc, fs, err := parseYAML(ctx, data, defaultLimits)
	if err != nil {
		return nil, false, cancelled(err)
	}
	v := &validator{ctx: ctx, doc: doc, findings: fs}
	if doc == nil {
		return v, false, nil
	}
	// protojson cannot be interrupted; the limits parseYAML enforced bound
	// it to a fraction of a second.
	err = protojson.UnmarshalOptions{}.Unmarshal(doc.json, m)
	if cerr := ctx.Err(); cerr != nil {
		return nil, false, cancelled(cerr)
	}
	if err == nil {
		return v, true, nil
	}
	f := Finding{Severity: Error, Rule: RuleSchema, Message: err.Error()}
	if sm := protojsonPos.FindStringSubmatch(err.Error()); sm != nil {
		f.Message = sm[3]
		if sm[2] != "" {
			col, _ := strconv.Atoi(sm[2])
			f.Line, f.Path = doc.at(col - 1)
		}
	}
	if um := unresolved.FindStringSubmatch(f.Message); um != nil {
		f.Message = fmt.Sprintf("unknown type %q: misspelled, or an extension this validator does not link (it knows %d Envoy extension types; see envoycheck.KnownTypes)", um[1], len(KnownTypes()))
	}
	v.findings = append(v.findings, f)
	return v, false, nil
}

// APIVersion returns the version of github.com/envoyproxy/go-control-plane/envoy
// linked into this binary, whose Envoy API the validation follows (the module's
// vX.Y.Z is the Envoy API of Envoy vX.Y), or "" when unknown.
func APIVersion() string {
	apiVersionOnce.Do(func() {
		bi, ok := debug.ReadBuildInfo()
		if !ok {
			return
		}
		for _, d := range bi.Deps {
			if d.Path == "github.com/envoyproxy/go-control-plane/envoy" {
				if d.Replace != nil {
					d = d.Replace
				}
				apiVersion = d.Version
			}
		}
	})
	return apiVersion
}

var (
	apiVersionOnce sync.Once
	apiVersion     string
)
