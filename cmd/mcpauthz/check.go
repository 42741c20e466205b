package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/mcpauthz/mcpauthz/extauthz"
	"github.com/mcpauthz/mcpauthz/internal/app"
	"github.com/mcpauthz/mcpauthz/internal/config"
)

// headerFlags collects repeated -H "Name: value" flags.
type headerFlags []string

func (h *headerFlags) String() string     { return strings.Join(*h, ", ") }
func (h *headerFlags) Set(v string) error { *h = append(*h, v); return nil }

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check", stderr)
	cfgPath := fs.String("config", "", "configuration file (as for serve)")
	dev := fs.Bool("dev", false, "use the development issuer's key (see 'mcpauthz token') and the embedded policy")
	devDir := fs.String("dev-dir", defaultDevDir(), "where the development issuer keeps its key")
	method := fs.String("method", "POST", "HTTP method")
	path := fs.String("path", "", "request path (default: the path of the configured resource)")
	token := fs.String("token", "", "bearer token (sets Authorization: Bearer TOKEN)")
	body := fs.String("body", "", "request body (JSON-RPC)")
	bodyFile := fs.String("body-file", "", "read the request body from FILE (- for stdin)")
	reqFile := fs.String("request", "", "read a whole Envoy CheckRequest (protojson) from FILE instead of the flags above")
	asJSON := fs.Bool("json", false, "print the CheckResponse as protojson instead of text")
	var headers headerFlags
	fs.Var(&headers, "H", `request header "Name: value" (repeatable)`)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var cfg *config.Config
	var err error
	switch {
	case *dev && *cfgPath != "":
		fmt.Fprintln(stderr, "mcpauthz check: use either --config or --dev")
		return &exitError{code: 2}
	case *dev:
		_, cfg, err = devSetup(*devDir, "", "", false, true)
	case *cfgPath != "":
		if cfg, err = config.Load(*cfgPath); err != nil {
			err = fmt.Errorf("invalid configuration:\n%w", indent(err))
		}
	default:
		fmt.Fprintln(stderr, "mcpauthz check: --config FILE or --dev is required")
		return &exitError{code: 2}
	}
	if err != nil {
		return err
	}

	var req *authv3.CheckRequest
	if *reqFile != "" {
		raw, err := readInput(*reqFile)
		if err != nil {
			return err
		}
		req = &authv3.CheckRequest{}
		if err := protojson.Unmarshal(raw, req); err != nil {
			return fmt.Errorf("--request %s: not a CheckRequest: %w", *reqFile, err)
		}
	} else {
		b := []byte(*body)
		if *bodyFile != "" {
			if b, err = readInput(*bodyFile); err != nil {
				return err
			}
		}
		req, err = buildCheckRequest(cfg, *method, *path, *token, headers, b)
		if err != nil {
			return err
		}
	}

	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	rt, err := compileConfig(cfg, app.Options{Logger: log})
	if err != nil {
		return err
	}
	defer rt.Close()
	rt.Start()
	if err := rt.WaitReady(ctx); err != nil {
		fmt.Fprintf(stderr, "warning: not ready (%s): %v\n", rt.NotReadyReason(), err)
	}
	d, resp := rt.Server.Evaluate(ctx, req)
	if *asJSON {
		out, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(resp)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, string(out))
	} else {
		printDecision(stdout, d, resp)
	}
	if !d.Allowed {
		return &exitError{code: 1}
	}
	return nil
}

func readInput(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(name)
}

// buildCheckRequest builds the CheckRequest Envoy would send for the request
// described by the flags, with the configuration of envoy/envoy.yaml:
// pseudo-headers in the headers map, the body in raw_body and
// x-envoy-auth-partial-body.
func buildCheckRequest(cfg *config.Config, method, path, token string, headers []string, body []byte) (*authv3.CheckRequest, error) {
	u, err := url.Parse(cfg.Resource)
	if err != nil {
		return nil, err
	}
	if path == "" {
		path = u.EscapedPath()
	}
	h := map[string]string{
		":method":           method,
		":path":             path,
		":authority":        u.Host,
		":scheme":           u.Scheme,
		"x-request-id":      "mcpauthz-check",
		"x-forwarded-proto": u.Scheme,
	}
	if token != "" {
		h["authorization"] = "Bearer " + token
	}
	if len(body) > 0 {
		h["content-type"] = "application/json"
		h["content-length"] = strconv.Itoa(len(body))
		h["x-envoy-auth-partial-body"] = "false"
		h["accept"] = "application/json, text/event-stream"
	}
	for _, kv := range headers {
		k, v, ok := strings.Cut(kv, ":")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf(`-H %q: want "Name: value"`, kv)
		}
		k = strings.ToLower(strings.TrimSpace(k))
		v = strings.TrimSpace(v)
		if old, dup := h[k]; dup && !strings.HasPrefix(k, ":") && k != "content-type" && k != "content-length" {
			v = old + "," + v // as Envoy joins repeated headers
		}
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{
			Id:       "1",
			Method:   h[":method"],
			Path:     h[":path"],
			Host:     h[":authority"],
			Scheme:   h[":scheme"],
			Protocol: "HTTP/1.1",
			Headers:  h,
			RawBody:  body,
			Size:     int64(len(body)),
		},
	}}}, nil
}

func printDecision(w io.Writer, d *extauthz.Decision, resp *authv3.CheckResponse) {
	fmt.Fprintf(w, "decision: %s\n", d.Outcome())
	fmt.Fprintf(w, "status:   %d %s\n", d.Status, http.StatusText(d.Status))
	reason := d.Reason
	if d.PolicyReason != "" {
		reason += " (policy: " + d.PolicyReason + ")"
	}
	fmt.Fprintf(w, "reason:   %s\n", reason)
	if d.Detail != "" {
		fmt.Fprintf(w, "detail:   %s\n", d.Detail)
	}
	if id := d.Identity; id != nil {
		fmt.Fprintf(w, "token:    iss=%s sub=%s client_id=%s scopes=%q\n", id.Issuer, id.Subject, id.ClientID, strings.Join(id.Scopes, " "))
	}
	if m := d.MCPMethod(); m != "" {
		fmt.Fprintf(w, "mcp:      %s", m)
		if t := d.Tool(); t != "" {
			fmt.Fprintf(w, " tool=%s", t)
		}
		if d.Batch() {
			fmt.Fprintf(w, " (batch of %d)", d.Messages())
		}
		fmt.Fprintln(w)
	}
	if ok := resp.GetOkResponse(); ok != nil {
		fmt.Fprintln(w, "upstream headers set:")
		for _, h := range ok.GetHeaders() {
			fmt.Fprintf(w, "  %s: %s\n", h.GetHeader().GetKey(), h.GetHeader().GetValue())
		}
		fmt.Fprintf(w, "upstream headers removed: %s\n", strings.Join(ok.GetHeadersToRemove(), ", "))
		return
	}
	denied := resp.GetDeniedResponse()
	fmt.Fprintln(w, "response headers:")
	for _, h := range denied.GetHeaders() {
		fmt.Fprintf(w, "  %s: %s\n", h.GetHeader().GetKey(), h.GetHeader().GetValue())
	}
	fmt.Fprintf(w, "response body:\n  %s\n", denied.GetBody())
}
