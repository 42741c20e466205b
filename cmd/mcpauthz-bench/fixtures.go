package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/mcpauthz/mcpauthz"
	"github.com/mcpauthz/mcpauthz/internal/devissuer"
)

const (
	// resource is the protected resource; the checks are for its host and
	// path, as Envoy in front of it would send them.
	resource     = "https://mcp.example.com/mcp"
	resourceHost = "mcp.example.com"
	resourcePath = "/mcp"

	// hotScope grants get_weather under the default policy (tools:<name>).
	hotScope = "tools:get_weather"
	hotTool  = "get_weather"
	// otherScope grants another tool: a get_weather call is 403.
	otherScope = "tools:get_forecast"

	// The tools1000 workload: tools are mapped ten per scope, and the
	// 10-tool data file holds only the last scope of the 1000-tool one, so
	// that both servers get the very same requests.
	toolsPerScope = 10
	toolsScope    = "grp099:call"
	toolsTool     = "tool_0999"

	jwksKeys   = 50
	denyTokens = 64
	tokenTTL   = 2 * time.Hour
)

// fixtures are the run's keys, issuers and JWKS server.
type fixtures struct {
	dir    string
	srv    *http.Server
	main   *devissuer.Issuer // issuer ".../main", one key
	forged *devissuer.Issuer // same issuer URL, a key not in its JWKS with the kid of its key
	jwks50 *devissuer.Issuer // issuer ".../jwks50", signing with the last of its 50 keys
}

// newFixtures creates the keys the selected workloads need and serves the
// key sets on 127.0.0.1.
func newFixtures(ctx context.Context, dir string, workloads []string) (*fixtures, error) {
	fx := &fixtures{dir: dir}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	base := "http://" + ln.Addr().String()

	need50 := false
	for _, w := range workloads {
		need50 = need50 || w == "jwks50"
	}
	n := 2 // main, forged
	if need50 {
		n += jwksKeys
	}
	keys, err := generateKeys(ctx, filepath.Join(dir, "keys"), n)
	if err != nil {
		ln.Close()
		return nil, err
	}
	fx.main = &devissuer.Issuer{URL: base + "/main", Key: keys[0]}
	forgedKey := keys[1]
	if err := forgedKey.Set(jwk.KeyIDKey, keys[0].KeyID()); err != nil {
		ln.Close()
		return nil, err
	}
	fx.forged = &devissuer.Issuer{URL: fx.main.URL, Key: forgedKey}

	mux := http.NewServeMux()
	mux.Handle("/main/", fx.main.Handler())
	if need50 {
		set, err := publicSet(keys[2:])
		if err != nil {
			ln.Close()
			return nil, err
		}
		fx.jwks50 = &devissuer.Issuer{URL: base + "/jwks50", Key: keys[len(keys)-1]}
		mux.HandleFunc("GET /jwks50/jwks", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "public, max-age=300")
			_, _ = w.Write(set)
		})
	}
	fx.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = fx.srv.Serve(ln) }()
	return fx, nil
}

func (fx *fixtures) close() { fx.srv.Close() }

// generateKeys creates n RS256 keys (2048 bits, kid = thumbprint) in
// parallel.
func generateKeys(ctx context.Context, dir string, n int) ([]jwk.Key, error) {
	keys := make([]jwk.Key, n)
	errs := make([]error, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers(n) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n && ctx.Err() == nil; i = int(next.Add(1) - 1) {
				keys[i], errs[i] = devissuer.LoadOrCreateKey(filepath.Join(dir, strconv.Itoa(i)), true)
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return keys, errors.Join(errs...)
}

// workers is how many goroutines mint or generate n keys: one per P.
func workers(n int) int { return max(1, min(runtime.GOMAXPROCS(0), n)) }

func publicSet(keys []jwk.Key) ([]byte, error) {
	set := jwk.NewSet()
	for _, k := range keys {
		pub, err := k.PublicKey()
		if err != nil {
			return nil, err
		}
		if err := set.AddKey(pub); err != nil {
			return nil, err
		}
	}
	return json.Marshal(set)
}

// mint returns n distinct "Bearer <token>" values from iss, minted in
// parallel; subject is a prefix numbered per token.
func mint(ctx context.Context, iss *devissuer.Issuer, n int, subject string, scopes ...string) ([]string, error) {
	out := make([]string, n)
	var next atomic.Int64
	var firstErr atomic.Pointer[error]
	now := time.Now()
	var wg sync.WaitGroup
	for range workers(n) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n && ctx.Err() == nil && firstErr.Load() == nil; i = int(next.Add(1) - 1) {
				tok, err := iss.Mint(devissuer.MintOptions{
					Subject: subject + "-" + strconv.Itoa(i), ClientID: "mcpauthz-bench",
					Audience: []string{resource}, Scopes: scopes, TTL: tokenTTL, Now: now,
				})
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				out[i] = "Bearer " + tok
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if p := firstErr.Load(); p != nil {
		return nil, *p
	}
	return out, nil
}

// writePolicy writes a copy of the default policy (the embedded rego
// directory) into dir/rego with a data.json whose tool mapping holds
// exactly tools tools, ten per scope, ending with toolsScope → toolsTool.
// It returns the directory for policy.paths.
func writePolicy(dir string, tools int) (string, error) {
	if tools%toolsPerScope != 0 || tools > 100*toolsPerScope {
		return "", fmt.Errorf("tools must be a multiple of %d up to %d", toolsPerScope, 100*toolsPerScope)
	}
	root := filepath.Join(dir, "rego")
	err := fs.WalkDir(mcpauthz.DefaultPolicy, "rego", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, filepath.FromSlash(p))
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := fs.ReadFile(mcpauthz.DefaultPolicy, p)
		if err != nil {
			return err
		}
		if p == path.Join("rego", "data.json") {
			if b, err = toolData(b, tools); err != nil {
				return err
			}
		}
		return os.WriteFile(dst, b, 0o644)
	})
	return root, err
}

// toolData replaces mcp.config.scopes.tools of the default data.
func toolData(defaultData []byte, tools int) ([]byte, error) {
	var data map[string]any
	if err := json.Unmarshal(defaultData, &data); err != nil {
		return nil, err
	}
	scopes, ok := dig(data, "mcp", "config", "scopes")
	if !ok {
		return nil, errors.New("default data.json has no mcp.config.scopes")
	}
	m := map[string][]string{}
	for g := 100 - tools/toolsPerScope; g < 100; g++ {
		names := make([]string, toolsPerScope)
		for j := range names {
			names[j] = fmt.Sprintf("tool_%04d", g*toolsPerScope+j)
		}
		m[fmt.Sprintf("grp%03d:call", g)] = names
	}
	scopes["tools"] = m
	return json.MarshalIndent(data, "", "  ")
}

func dig(m map[string]any, keys ...string) (map[string]any, bool) {
	for _, k := range keys {
		next, ok := m[k].(map[string]any)
		if !ok {
			return nil, false
		}
		m = next
	}
	return m, true
}

// serverConfig is what differs between the generated mcpauthz
// configurations.
type serverConfig struct {
	grpcAddr, httpAddr string
	issuer             string // trusted issuer; its keys are at issuer + "/jwks"
	policyDir          string // "" for the embedded default policy
	// noDecisionCache sets policy.decision_cache_size to -1, so that every
	// check evaluates the policy.
	noDecisionCache bool
	noListFilter    bool
}

// writeConfig writes an mcpauthz configuration file.
func writeConfig(path string, c serverConfig) error {
	q := strconv.Quote
	var b strings.Builder
	fmt.Fprintf(&b, "grpc_addr: %s\nhttp_addr: %s\n", q(c.grpcAddr), q(c.httpAddr))
	fmt.Fprintf(&b, "resource: %s\nauthorization_servers: [%s]\n", q(resource), q(c.issuer))
	fmt.Fprintf(&b, "issuers:\n  - issuer: %s\n    jwks_uri: %s\n", q(c.issuer), q(c.issuer+"/jwks"))
	if c.policyDir != "" || c.noDecisionCache {
		b.WriteString("policy:\n")
		if c.policyDir != "" {
			fmt.Fprintf(&b, "  paths: [%s]\n", q(c.policyDir))
		}
		if c.noDecisionCache {
			b.WriteString("  decision_cache_size: -1\n")
		}
	}
	if c.noListFilter {
		b.WriteString("list_filtering:\n  enabled: false\n")
	}
	// The default log settings: every decision is logged (Info), as
	// mcpauthz runs out of the box.
	b.WriteString("shutdown:\n  timeout: 2s\n")
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// checkTemplate is the CheckRequest Envoy sends for a POST of a JSON-RPC
// body to the MCP endpoint (with_request_body, pack_as_bytes): lowercase
// headers with the pseudo-headers, the body in raw_body. The harness sets
// authorization, content-length and the body of each request.
func checkTemplate() *authv3.CheckRequest {
	h := map[string]string{
		":method":                   "POST",
		":path":                     resourcePath,
		":authority":                resourceHost,
		":scheme":                   "https",
		"content-type":              "application/json",
		"accept":                    "application/json, text/event-stream",
		"mcp-protocol-version":      "2025-11-25",
		"user-agent":                "mcpauthz-bench",
		"x-forwarded-proto":         "https",
		"x-request-id":              "7c9e6679-7425-40de-944b-e07fc1f90ae7",
		"x-envoy-auth-partial-body": "false",
		"authorization":             "",
		"content-length":            "0",
	}
	addr := func(ip string, port uint32) *authv3.AttributeContext_Peer {
		return &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}},
		}}}
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      addr("10.0.0.7", 51234),
		Destination: addr("10.0.0.2", 10000),
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "1", Method: "POST", Headers: h, Path: resourcePath, Host: resourceHost,
			Scheme: "https", Protocol: "HTTP/2",
		}},
	}}
}

// toolCall returns the raw_body of a tools/call of tool around its id.
func toolCall(tool string) (prefix, suffix string) {
	return `{"jsonrpc":"2.0","id":`, `,"method":"tools/call","params":{"name":"` + tool + `","arguments":{"city":"Paris"}}}`
}
