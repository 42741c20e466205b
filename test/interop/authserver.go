package interop

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// AuthServer is one authorization server the client flows run against. The
// flows are the same for every row; a row says how to bring the server and
// mcpauthz up for it and what it issues.
type AuthServer struct {
	Name string
	// Start brings up the authorization server and mcpauthz configured for
	// it.
	Start func(t *testing.T, env *Env) *Deployment
}

// Env is what a row gets to start with.
type Env struct {
	// Bin is the mcpauthz binary.
	Bin string
	// Resource is the MCP resource URI: the front's /mcp.
	Resource string
	// OtherResource is the audience of the wrong-audience case's token.
	OtherResource string
	// Dir is a temporary directory of the row.
	Dir string
}

// Deployment is a running authorization server and mcpauthz.
type Deployment struct {
	Mcpauthz *Mcpauthz
	// Issuer is the authorization server's issuer (also the PRM's
	// authorization_servers[0]).
	Issuer string
	// ResourceName is the protected resource metadata's resource_name.
	ResourceName string
	// Login and Password fill in the login form; Subject is the sub of the
	// tokens the user gets.
	Login, Password, Subject string
	// ShortTTL is the access-token lifetime of clients that registered
	// the refresh_token grant; LongTTL that of the others.
	ShortTTL, LongTTL time.Duration
	// RefreshAlways is true when the server issues refresh tokens to every
	// client, not only to those that registered the refresh_token grant
	// (the public client then discards it: see client.mjs).
	RefreshAlways bool
	// Leeway is the issuer's leeway in mcpauthz.
	Leeway time.Duration
	// MintOtherAudience, if set, is the command that mints the
	// wrong-audience case's token (with the same key and issuer, for
	// Env.OtherResource and the scope tools:get_weather); client.mjs
	// appends --client-id and the registered client's ID. Without it the
	// client gets that token from the authorization server, with the
	// resource indicator Env.OtherResource.
	MintOtherAudience []string
	// CheckInteraction, if set, checks one pass of the browser through the
	// server's pages: run starts with the authorization request and ends
	// with the redirect back; missing are the requested scopes the user had
	// not granted yet for resource.
	CheckInteraction func(t *testing.T, run []exchange, resource string, missing []string)
}

// OIDCProvider is the row of oidc-provider (test/interop/node/oidc.mjs)
// with mcpauthz configured as docs/idp.md tells a user to: the issuer
// entry of its oidc-provider section, and no scopes_supported, so that
// mcpauthz advertises none and every challenge names the scopes of the
// request it answers.
var OIDCProvider = AuthServer{
	Name: "oidc-provider",
	Start: func(t *testing.T, env *Env) *Deployment {
		const shortTTL, longTTL, leeway = 5 * time.Second, 10 * time.Minute, time.Second
		as := startNode(t, "oidc-provider", "oidc.mjs",
			"--resource", env.Resource, "--other-resource", env.OtherResource,
			"--short-ttl", fmt.Sprint(shortTTL.Seconds()), "--long-ttl", fmt.Sprint(longTTL.Seconds()))
		var ready struct {
			Issuer, Login, Password string
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := as.ready(ctx, &ready); err != nil {
			t.Fatal(err)
		}
		const resourceName = "mcpauthz interop test"
		issuers := IDPDocBlock(t, "### oidc-provider (Node.js)", ready.Issuer, env.Resource)
		cfg := fmt.Sprintf(`resource: %s
resource_name: %s
authorization_servers: [%s]
log: { format: json, level: info }
%s    leeway: %s
`, env.Resource, resourceName, ready.Issuer, issuers, leeway)
		path := writeFile(t, env.Dir, "mcpauthz.yaml", cfg)
		m := StartMcpauthz(t, env.Bin, env.Dir, "--config", path, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
		return &Deployment{
			Mcpauthz: m, Issuer: ready.Issuer, ResourceName: resourceName,
			Login: ready.Login, Password: ready.Password, Subject: ready.Login,
			ShortTTL: shortTTL, LongTTL: longTTL, Leeway: leeway,
			CheckInteraction: oidcInteraction,
		}
	},
}

// oidcInteraction checks oidc.mjs's pages: a login form (only while the
// browser has no session), then a consent form listing exactly the scopes
// not granted yet, each for the resource asked for.
func oidcInteraction(t *testing.T, run []exchange, resource string, missing []string) {
	t.Helper()
	var consent []string
	pages := 0
	for _, e := range run {
		switch e.Page {
		case "":
		case "Sign in":
			pages++
			if !slices.Equal(e.FormFields, []string{"login", "password"}) {
				t.Errorf("login form fields %q", e.FormFields)
			}
		case "Allow access":
			pages++
			consent = e.FormFields
		default:
			t.Errorf("unexpected page %q", e.Page)
		}
		if pw, ok := e.Form["password"]; ok && pw != "<redacted>" {
			t.Error("the recorded login form shows the password")
		}
	}
	want := []string{}
	for _, s := range missing {
		want = append(want, "scope="+resource+" "+s)
	}
	if consent == nil {
		consent = []string{}
	}
	if pages == 0 || !slices.Equal(want, consent) {
		t.Errorf("consent page lists %q, want %q", consent, want)
	}
}

// DevServer is the row of `mcpauthz serve --dev --dev-approve=auto`: mcpauthz
// is the authorization server as well (internal/devauth), with automatic
// approval for the client's loopback redirect URI, so the browser sees no
// page. The development server issues tokens for its one resource only, so
// the wrong-audience token is minted offline by `mcpauthz token` with the
// same key and issuer. Every token of the server lives --dev-token-ttl,
// also the public client's: long enough for that client's steps (well
// under a second each), short enough for the expiry case.
var DevServer = AuthServer{
	Name: "mcpauthz-dev",
	Start: func(t *testing.T, env *Env) *Deployment {
		// The development issuer's leeway is 1s (cmd/mcpauthz devLeeway).
		const ttl, leeway = 10 * time.Second, time.Second
		dir := filepath.Join(env.Dir, "dev")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		m := StartMcpauthz(t, env.Bin, env.Dir, "--dev", "--dev-approve=auto", "--dev-dir", dir,
			"--resource", env.Resource, "--dev-token-ttl", ttl.String(),
			"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--dev-issuer-addr", "127.0.0.1:0")
		if m.DevIssuer == "" {
			t.Fatal("mcpauthz serve --dev wrote no dev_issuer to --addr-file")
		}
		return &Deployment{
			Mcpauthz: m, Issuer: m.DevIssuer, ResourceName: "mcpauthz development server",
			Subject:  "dev-user",
			ShortTTL: ttl, LongTTL: ttl, RefreshAlways: true, Leeway: leeway,
			MintOtherAudience: []string{env.Bin, "token", "--dev-dir", dir, "--aud", env.OtherResource,
				"--scope", "tools:get_weather", "--sub", "dev-user", "--ttl", "10m"},
		}
	},
}

// IDPDocBlock returns the first ```yaml block after heading in
// docs/idp.md, with its example issuer (https://as.example.com) and
// resource (https://mcp.example.com/mcp) replaced. It fails the test when
// the block is missing or no longer names them, so the guide and the test
// cannot drift apart.
func IDPDocBlock(t testing.TB, heading, issuer, resource string) string {
	t.Helper()
	path := filepath.Join(Root(), "docs", "idp.md")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	i := strings.Index(doc, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("%s: no section %q", path, heading)
	}
	rest := doc[i:]
	start := strings.Index(rest, "\n```yaml\n")
	if start < 0 {
		t.Fatalf("%s: section %q has no yaml block", path, heading)
	}
	block := rest[start+len("\n```yaml\n"):]
	end := strings.Index(block, "\n```")
	if end < 0 {
		t.Fatalf("%s: unterminated yaml block in %q", path, heading)
	}
	block = block[:end+1]
	const exampleIssuer, exampleResource = "https://as.example.com", "https://mcp.example.com/mcp"
	if !strings.Contains(block, exampleIssuer) || !strings.Contains(block, exampleResource) {
		t.Fatalf("%s %q: the yaml block no longer names %s and %s:\n%s", path, heading, exampleIssuer, exampleResource, block)
	}
	return strings.NewReplacer(exampleResource, resource, exampleIssuer, issuer).Replace(block)
}

// startNode runs a script of test/interop/node.
func startNode(t testing.TB, name, script string, args ...string) *process {
	t.Helper()
	cmd := exec.Command("node", append([]string{script}, args...)...)
	cmd.Dir = NodeDir()
	return start(t, name, cmd, false)
}

// NodeDir is the Node side of the test.
func NodeDir() string { return filepath.Join(Root(), "test", "interop", "node") }
