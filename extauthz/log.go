package extauthz

import (
	"context"
	"log/slog"
)

// LogRecorder writes one structured line per decision. Denials are logged at
// Info, allows at Debug unless AllowSampleRate selects them. It never logs
// the token, cookies or tool arguments.
type LogRecorder struct {
	Logger *slog.Logger
}

var _ Recorder = (*LogRecorder)(nil)

// Record implements Recorder.
func (l *LogRecorder) Record(ctx context.Context, d *Decision) {
	level := slog.LevelInfo
	if d.Allowed && len(d.ShadowDenials) == 0 {
		level = slog.LevelDebug
	}
	if !l.Logger.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 16)
	attrs = append(attrs,
		slog.String("request_id", d.RequestID),
		slog.String("decision", d.Outcome()),
		slog.Int("status", d.Status),
		slog.String("reason", d.Reason),
		slog.String("http_method", d.HTTPMethod),
		slog.String("path", d.Path),
	)
	if m := d.MCPMethod(); m != "" {
		attrs = append(attrs, slog.String("mcp_method", m))
	}
	if t := d.Tool(); t != "" {
		attrs = append(attrs, slog.String("tool", t))
	}
	if d.Batch() {
		attrs = append(attrs, slog.Int("batch", len(d.Messages)))
	}
	if id := d.Identity; id != nil {
		attrs = append(attrs, slog.String("issuer", id.Issuer), slog.String("subject", id.Subject), slog.String("client_id", id.ClientID))
	}
	if d.PolicyReason != "" {
		attrs = append(attrs, slog.String("policy_reason", d.PolicyReason))
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
	attrs = append(attrs, slog.Duration("latency", d.Duration))
	l.Logger.LogAttrs(ctx, level, "decision", attrs...)
}
