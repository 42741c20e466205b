package extauthz

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"strings"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/mcpauthz/mcpauthz/internal/problem"
	"github.com/mcpauthz/mcpauthz/internal/traceparent"
)

// LogRecorder writes the decision log: one structured line per decision,
// with a fixed set of fields. Denials and shadow denials are always logged
// (Info); allowed decisions are sampled at AllowSampleRate (Info) and the
// rest go to Debug. It never logs the token or cookies; tool and prompt
// arguments only when Arguments is set, with RedactKeys masked.
type LogRecorder struct {
	Logger *slog.Logger
	// AllowSampleRate is the fraction of allowed decisions logged at Info.
	AllowSampleRate float64
	Arguments       bool
	// RedactKeys are lowercase member names whose values are masked, at any
	// depth of the arguments.
	RedactKeys []string
}

var _ Recorder = (*LogRecorder)(nil)

// LogOptions configure the decision log (see NewLogRecorder).
type LogOptions struct {
	Logger *slog.Logger
	// AllowSampleRate is the fraction of allowed decisions logged at Info,
	// between 0 and 1; nil means 1. Denials are always logged.
	AllowSampleRate *float64
	// Arguments adds tool and prompt arguments to the log.
	Arguments bool
	// RedactKeys are argument member names whose values are masked
	// (case-insensitive, any depth); empty means DefaultRedactKeys.
	RedactKeys []string
}

// DefaultRedactKeys are the argument names whose values the decision log
// masks when arguments are logged and no list is configured.
var DefaultRedactKeys = []string{"password", "secret", "token", "authorization", "api_key", "apikey", "access_token", "refresh_token", "client_secret", "cookie"}

// NewLogRecorder returns the decision log of opts, with the defaults
// applied; a problem is reported with the option's path
// ("allow_sample_rate").
func NewLogRecorder(opts LogOptions) (*LogRecorder, error) {
	var errs problem.List
	rate := 1.0
	if r := opts.AllowSampleRate; r != nil {
		rate = *r
		if rate < 0 || rate > 1 {
			errs.Add("allow_sample_rate", "must be between 0 and 1")
		}
	}
	keys := opts.RedactKeys
	if len(keys) == 0 {
		keys = DefaultRedactKeys
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return &LogRecorder{Logger: logger, AllowSampleRate: rate, Arguments: opts.Arguments, RedactKeys: keys}, nil
}

// maxLoggedArguments caps the arguments written per message.
const maxLoggedArguments = 4096

// Record implements Recorder.
func (l *LogRecorder) Record(ctx context.Context, d *Decision) {
	level := slog.LevelInfo
	if d.Outcome() == "allow" && (l.AllowSampleRate <= 0 || l.AllowSampleRate < 1 && rand.Float64() >= l.AllowSampleRate) {
		level = slog.LevelDebug
	}
	if !l.Logger.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 20)
	attrs = append(attrs,
		slog.String("request_id", d.RequestID),
		slog.String("decision", d.Outcome()),
		slog.Int("status", d.Status),
		slog.String("reason", d.Reason),
		slog.String("http_method", d.HTTPMethod),
		slog.String("path", d.Path),
	)
	attrs = traceparent.AppendLogAttrs(ctx, attrs) // the check's span, when tracing is on
	if m := d.MCPMethod(); m != "" {
		attrs = append(attrs, slog.String("mcp_method", m))
	}
	if t := d.Tool(); t != "" {
		attrs = append(attrs, slog.String("tool", t))
	}
	if d.Batch() {
		attrs = append(attrs, slog.Int("batch", len(d.messages)))
	}
	if id := d.Identity; id != nil {
		attrs = append(attrs, slog.String("issuer", id.Issuer), slog.String("subject", id.Subject), slog.String("client_id", id.ClientID))
		if len(id.Actors) > 0 {
			attrs = append(attrs, slog.String("actor", actorChain(id.Actors)), slog.Int("delegation_depth", len(id.Actors)))
		}
	}
	if d.UpstreamCredential != "" {
		attrs = append(attrs, slog.String("upstream_credential", d.UpstreamCredential))
	}
	if d.TokenResult != "" && d.TokenResult != "valid" {
		attrs = append(attrs, slog.String("token_result", d.TokenResult))
	}
	if d.PolicyReason != "" {
		attrs = append(attrs, slog.String("policy_reason", d.PolicyReason))
	}
	if d.PolicyRevision != "" {
		attrs = append(attrs, slog.String("policy_revision", d.PolicyRevision))
	}
	if d.Detail != "" {
		attrs = append(attrs, slog.String("detail", d.Detail))
	}
	if len(d.RequiredScopes) > 0 {
		attrs = append(attrs, slog.Any("required_scopes", d.RequiredScopes))
	}
	if len(d.ShadowDenials) > 0 {
		attrs = append(attrs, slog.Any("shadow_denials", d.ShadowDenials))
	}
	if l.Arguments {
		for _, m := range d.messages {
			if len(m.Arguments) > 0 {
				attrs = append(attrs, slog.String("arguments", redact(m.Arguments, l.RedactKeys, maxLoggedArguments)))
				break
			}
		}
	}
	attrs = append(attrs, slog.Duration("latency", d.Duration))
	logLine(ctx, l.Logger, level, "decision", attrs)
}

// redact re-encodes raw JSON with the values of members named in keys
// (case-insensitive, any depth) replaced by "[REDACTED]", truncated to max
// bytes. The input was validated by mcprpc; anything unreadable is dropped.
func redact(raw jsontext.Value, keys []string, max int) string {
	dec := jsontext.NewDecoder(bytes.NewReader(raw))
	var out bytes.Buffer
	enc := jsontext.NewEncoder(&out)
	for {
		tok, err := dec.ReadToken()
		if err != nil {
			break
		}
		if tok.Kind() == '"' && isObjectName(dec) && redacted(tok.String(), keys) {
			if enc.WriteToken(tok) != nil || enc.WriteToken(jsontext.String("[REDACTED]")) != nil || dec.SkipValue() != nil {
				return "[unloggable]"
			}
			continue
		}
		if enc.WriteToken(tok) != nil {
			return "[unloggable]"
		}
		if out.Len() > max {
			return strings.TrimSpace(out.String()[:max]) + "…"
		}
	}
	return strings.TrimSpace(out.String())
}

// isObjectName reports whether the token just read was an object member
// name: inside an object, names sit at odd stack lengths.
func isObjectName(dec *jsontext.Decoder) bool {
	kind, n := dec.StackIndex(dec.StackDepth())
	return kind == '{' && n%2 == 1
}

func redacted(name string, keys []string) bool {
	for _, k := range keys {
		if strings.EqualFold(name, k) {
			return true
		}
	}
	return false
}
