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
	// Skip returns why the row cannot run with this mcpauthz binary, or "".
	Skip func(bin string) string
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
	// OtherResource is a resource indicator the authorization server also
	// issues tokens for, for the wrong-audience case.
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
	// Login and Password fill in the login form; Subject is the sub of the
	// tokens the user gets.
	Login, Password, Subject string
	// ScopesSupported is what the protected resource metadata advertises
	// and the 401 challenge asks for.
	ScopesSupported []string
	// ShortTTL is the access-token lifetime of clients that registered
	// the refresh_token grant; LongTTL that of the others. Refresh is false
	// when the server issues no refresh tokens (the refresh scenario is
	// then skipped).
	ShortTTL, LongTTL time.Duration
	Refresh           bool
	// Leeway is the issuer's leeway in mcpauthz.
	Leeway time.Duration
	// CheckInteraction, if set, checks one pass of the browser through the
	// server's pages: run starts with the authorization request and ends
	// with the redirect back; missing are the requested scopes the user had
	// not granted yet for resource.
	CheckInteraction func(t *testing.T, run []exchange, resource string, missing []string)
}

// scopesSupported is advertised by mcpauthz in the rows that take a
// configuration file. The embedded default policy's data would advertise
// its example scopes instead.
var scopesSupported = []string{"tools:announce", "tools:get_weather", "tools:whoami"}

// OIDCProvider is the row of oidc-provider (test/interop/node/oidc.mjs)
// with mcpauthz configured as docs/idp.md tells a user to.
var OIDCProvider = AuthServer{
	Name: "oidc-provider",
	Skip: func(string) string { return "" },
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
		issuers := IDPDocBlock(t, "### oidc-provider (Node.js)", ready.Issuer, env.Resource)
		cfg := fmt.Sprintf(`resource: %s
resource_name: mcpauthz interop test
authorization_servers: [%s]
scopes_supported: %s
log: { format: json, level: info }
%s    leeway: %s
`, env.Resource, ready.Issuer, quoteList(scopesSupported), issuers, leeway)
		path := writeFile(t, env.Dir, "mcpauthz.yaml", cfg)
		m := StartMcpauthz(t, env.Bin, "--config", path, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
		return &Deployment{
			Mcpauthz: m, Issuer: ready.Issuer,
			Login: ready.Login, Password: ready.Password, Subject: ready.Login,
			ScopesSupported: scopesSupported,
			ShortTTL:        shortTTL, LongTTL: longTTL, Refresh: true, Leeway: leeway,
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

// devServerFlags are the flags `mcpauthz serve` needs for the row of its own
// development authorization server (internal/devauth).
var devServerFlags = []string{"-dev-approve", "-resource", "-dev-token-ttl"}

// DevServer is the row of `mcpauthz serve --dev --dev-approve=auto`: mcpauthz
// is the authorization server as well. It runs once the binary has every
// flag it needs (devServerFlags); see the package documentation.
var DevServer = AuthServer{
	Name: "mcpauthz-dev",
	Skip: func(bin string) string {
		out, _ := exec.Command(bin, "serve", "-h").CombinedOutput()
		var missing []string
		for _, f := range devServerFlags {
			if !strings.Contains(string(out), "  "+f+" ") && !strings.Contains(string(out), "  "+f+"\n") {
				missing = append(missing, "-"+f)
			}
		}
		if len(missing) > 0 {
			return "the development authorization server row (internal/devauth) needs `mcpauthz serve --dev --dev-approve=auto " +
				"--resource URL --dev-token-ttl D`; this binary lacks " + strings.Join(missing, ", ")
		}
		return ""
	},
	Start: func(t *testing.T, env *Env) *Deployment {
		// The development issuer's leeway must be 1s for the expiry case to
		// take seconds (see the package documentation).
		const shortTTL, leeway = 5 * time.Second, time.Second
		dir := filepath.Join(env.Dir, "dev")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		m := StartMcpauthz(t, env.Bin, "--dev", "--dev-approve=auto", "--dev-dir", dir,
			"--resource", env.Resource, "--dev-token-ttl", shortTTL.String(),
			"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--dev-issuer-addr", "127.0.0.1:0")
		return &Deployment{
			Mcpauthz: m,
			Subject:  "dev-user",
			// Issuer and ScopesSupported come from the protected resource
			// metadata (Run fills them in).
			ShortTTL: shortTTL, LongTTL: shortTTL, Refresh: true, Leeway: leeway,
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
