package interop

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/devissuer"
)

// TestUpstreamCredential: a policy gives the tool whoami a token-exchanged
// credential; through the Envoy stand-in, the MCP server (the TypeScript
// SDK's) receives exactly the exchanged token and never the client's, and
// the token endpoint received the client's token as the subject token.
func TestUpstreamCredential(t *testing.T) {
	RequireNode(t)
	bin := BuildMcpauthz(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	front := NewStandin(t)
	resource := front.BaseURL() + "/mcp"

	key, err := devissuer.LoadOrCreateKey(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	jwks := filepath.Join(dir, "jwks.json")
	if err := devissuer.WriteJWKS(jwks, key); err != nil {
		t.Fatal(err)
	}
	iss := &devissuer.Issuer{URL: "https://idp.example.com", Key: key}

	const exchanged = "upstream-token-for-alice"
	var mu sync.Mutex
	var subjects []string
	tokenEndpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, secret, _ := r.BasicAuth()
		if r.ParseForm() != nil || id != "mcp-gateway" || secret != "s3cret" ||
			r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange" ||
			r.PostForm.Get("subject_token_type") != "urn:ietf:params:oauth:token-type:access_token" ||
			r.PostForm.Get("audience") != "inventory-api" {
			http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
			return
		}
		mu.Lock()
		subjects = append(subjects, r.PostForm.Get("subject_token"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":%q,"issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":300}`, exchanged)
	}))
	defer tokenEndpoint.Close()

	data := writeFile(t, dir, "data.json", `{"mcp":{"config":{"upstream_credentials":{"tools":{"whoami":"inventory"},"prompts":{}}}}}`)
	cfg := fmt.Sprintf(`resource: %s
authorization_servers: [https://idp.example.com]
issuers: [{issuer: https://idp.example.com, jwks_file: %s}]
policy:
  paths: [%s, %s]
upstream_credentials:
  inventory:
    type: token_exchange
    token_endpoint: %s/token
    audiences: [inventory-api]
    client: {id: mcp-gateway, auth: client_secret_basic, secret_file: %s}
`, resource, jwks, filepath.Join(Root(), "rego", "mcp", "authz.rego"), policyDataWithout(t, dir, data),
		tokenEndpoint.URL, writeFile(t, dir, "secret", "s3cret\n"))
	m := StartMcpauthz(t, bin, dir, "--config", writeFile(t, dir, "mcpauthz.yaml", cfg), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")

	up := startNode(t, "upstream", "upstream.mjs")
	var upReady struct{ Addr string }
	if err := up.ready(ctx, &upReady); err != nil {
		t.Fatal(err)
	}
	front.Start(t, m.GRPCAddr, upReady.Addr)
	m.WaitReady(t)

	tok, err := iss.Mint(devissuer.MintOptions{Subject: "alice", ClientID: "agent-1", Audience: []string{resource},
		Scopes: []string{"tools:whoami"}, TTL: time.Hour, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	c := &mcpSession{t: t, url: resource, token: tok}
	c.post(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"interop","version":"1"}}}`)
	c.post(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	result := c.post(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"whoami","arguments":{}}}`)

	// whoami answers with the headers the MCP server received.
	var call struct {
		Result struct {
			Content []struct{ Text string } `json:"content"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(result), &call); err != nil || len(call.Result.Content) != 1 {
		t.Fatalf("tools/call whoami: %q: %v", result, err)
	}
	var seen map[string]string
	if err := json.Unmarshal([]byte(call.Result.Content[0].Text), &seen); err != nil {
		t.Fatal(err)
	}
	if want := fingerprint("Bearer " + exchanged); seen["authorization"] != want {
		t.Errorf("the MCP server received authorization %q, want the exchanged token %q (the client's is %q)",
			seen["authorization"], want, fingerprint("Bearer "+tok))
	}
	if seen["x-mcp-subject"] != "alice" || seen["x-mcp-client-id"] != "agent-1" {
		t.Errorf("identity headers at the MCP server: %v", seen)
	}

	// initialize and notifications/initialized choose no credential: the
	// MCP server gets no authorization at all for them.
	clientPrint := fingerprint("Bearer " + tok)
	var calls, initializes int
	for _, l := range up.snapshot() {
		if strings.Contains(l, clientPrint) {
			t.Errorf("the MCP server received the client's token: %s", l)
		}
		if strings.Contains(l, `"request"`) {
			if strings.Contains(l, fingerprint("Bearer "+exchanged)) {
				calls++
			} else if !strings.Contains(l, `"authorization"`) {
				initializes++
			}
		}
	}
	if calls != 1 || initializes != 2 {
		t.Errorf("at the MCP server: %d requests with the exchanged token (want 1), %d without authorization (want 2)", calls, initializes)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(subjects) != 1 || subjects[0] != tok {
		t.Errorf("the token endpoint got %d subject tokens, want the client's once", len(subjects))
	}
	for _, l := range m.Log() {
		if strings.Contains(l, exchanged) || strings.Contains(l, tok) || strings.Contains(l, "s3cret") {
			t.Errorf("mcpauthz logged a secret: %.80s…", l)
		}
	}
}

// policyDataWithout returns the shipped rego/data.json with the members of
// override replaced, written to dir: OPA refuses two data files that set
// the same key.
func policyDataWithout(t *testing.T, dir, override string) string {
	t.Helper()
	var base, over map[string]any
	if err := json.Unmarshal(mustRead(t, filepath.Join(Root(), "rego", "data.json")), &base); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(mustRead(t, override), &over); err != nil {
		t.Fatal(err)
	}
	cfg := base["mcp"].(map[string]any)["config"].(map[string]any)
	for k, v := range over["mcp"].(map[string]any)["config"].(map[string]any) {
		cfg[k] = v
	}
	b, err := json.Marshal(base)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, dir, "policy-data.json", string(b))
}

// fingerprint is how upstream.mjs shows a credential: its length and a
// SHA-256 prefix, never the value.
func fingerprint(v string) string {
	sum := sha256.Sum256([]byte(v))
	return fmt.Sprintf("<%d bytes sha256:%s>", len(v), hex.EncodeToString(sum[:8]))
}

// mcpSession is a minimal Streamable HTTP client: POSTs with the session
// id the server assigned, answers read as JSON or as the one SSE event.
type mcpSession struct {
	t          *testing.T
	url, token string
	sessionID  string
}

func (c *mcpSession) post(body string) string {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodPost, c.url, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if c.sessionID != "" {
		req.Header.Set("Mcp-Session-Id", c.sessionID)
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(resp.Body)
		c.t.Fatalf("POST %s: %s %s", body, resp.Status, b)
	}
	if id := resp.Header.Get("Mcp-Session-Id"); id != "" {
		c.sessionID = id
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			return d
		}
	}
	c.t.Fatalf("POST %s: no SSE data event", body)
	return ""
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
