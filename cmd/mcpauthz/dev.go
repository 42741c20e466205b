package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/config"
	"github.com/mcpauthz/mcpauthz/internal/devissuer"
	"github.com/mcpauthz/mcpauthz/internal/oauth"
)

// Development defaults: the authorization server listens next to the
// server, and the resource is the Envoy listener of envoy/envoy.yaml.
const (
	devIssuerAddr = "127.0.0.1:9193"
	devResource   = "http://localhost:10000/mcp"
	// devLeeway is the clock skew allowed for development tokens: the
	// issuer runs on the same machine, so expiry takes effect at once
	// (a client that refreshes can be tried without waiting a minute).
	devLeeway = time.Second
)

// devFlags are the flags of `serve --dev`.
type devFlags struct {
	issuerAddr string
	issuerPub  string
	resource   string
	approve    string
	tokenTTL   time.Duration
	introspect bool
	// introspectSecret is the resource server's client secret at the
	// authorization server, with introspect.
	introspectSecret string
}

// devIntrospectClient is mcpauthz's client at the development authorization
// server with --dev-introspect.
const devIntrospectClient = "mcpauthz-introspection"

func devFlagSet(fs *flag.FlagSet) *devFlags {
	d := &devFlags{}
	fs.StringVar(&d.issuerAddr, "dev-issuer-addr", devIssuerAddr, "where --dev serves its authorization server; loopback unless you name another address")
	fs.StringVar(&d.issuerPub, "dev-issuer-url", "", "the authorization server's URL as clients reach it (default http://ADDR of --dev-issuer-addr); required when --dev-issuer-addr is not a loopback address")
	fs.StringVar(&d.resource, "resource", devResource, "with --dev: the protected resource URL (the URL Envoy serves the MCP endpoint at): audience of the tokens and base of the metadata URLs")
	fs.StringVar(&d.approve, "dev-approve", "page", `with --dev: "page" shows a consent page for every authorization; "auto" grants the requested scopes to dev-user at once (scripts, CI; loopback redirect URIs only)`)
	fs.DurationVar(&d.tokenTTL, "dev-token-ttl", devTokenTTL, "with --dev: lifetime of the access tokens the authorization server issues")
	fs.BoolVar(&d.introspect, "dev-introspect", false, "with --dev: the authorization server issues opaque access tokens and mcpauthz checks them by introspection (RFC 7662), so a revocation (RFC 7009) takes effect at the next check")
	return d
}

// listen binds the authorization server: loopback by default; another
// address only when named, and then only with the URL clients use.
func (d *devFlags) listen(ctx context.Context) (net.Listener, error) {
	host, _, err := net.SplitHostPort(d.issuerAddr)
	if err != nil {
		return nil, fmt.Errorf("--dev-issuer-addr %q: %w", d.issuerAddr, err)
	}
	remote := !oauth.IsLoopbackHost(host)
	if remote && d.issuerPub == "" {
		return nil, fmt.Errorf("--dev-issuer-addr %s is not a loopback address: set --dev-issuer-url to the URL clients reach it at", d.issuerAddr)
	}
	ln, err := devAuthListen(ctx, d.issuerAddr, remote)
	if err != nil {
		return nil, fmt.Errorf("dev authorization server: %w", err)
	}
	return ln, nil
}

// issuerURL is the URL clients reach the authorization server at.
func (d *devFlags) issuerURL(ln net.Listener) string {
	if d.issuerPub != "" {
		return strings.TrimSuffix(d.issuerPub, "/")
	}
	return "http://" + ln.Addr().String()
}

// useIntrospection points the development issuer's configuration at the
// authorization server's introspection endpoint, with a fresh client
// secret written to dir. Answers are cached for a second only, so that a
// revocation shows at once.
func (d *devFlags) useIntrospection(cfg *config.Config, dir string) error {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	d.introspectSecret = base64.RawURLEncoding.EncodeToString(b)
	file := filepath.Join(dir, "introspection-secret")
	if err := os.WriteFile(file, []byte(d.introspectSecret), 0o600); err != nil {
		return fmt.Errorf("--dev-introspect: %w", err)
	}
	cfg.Issuers[0].Introspection = &config.Introspection{
		Endpoint: cfg.Issuers[0].Issuer + "/introspect", ClientID: devIntrospectClient,
		ClientSecretFile: file, CacheTTL: config.Duration(time.Second),
	}
	return nil
}

// devSetup prepares development mode: a signing key in dir (a fresh one when
// rotate), its public key set, and a configuration that trusts it for the
// resource. The issuer URL and the resource are recorded in dir so that
// `token` and `check --dev` mint and verify for what a running `serve
// --dev` uses; an empty issuerURL or resource reads them from there. With
// offline the issuer's keys are read from the key set file instead of the
// issuer's HTTP endpoint.
func devSetup(dir, issuerURL, resource string, rotate, offline bool) (*devissuer.Issuer, *config.Config, error) {
	key, err := devissuer.LoadOrCreateKey(dir, rotate)
	if err != nil {
		return nil, nil, fmt.Errorf("dev issuer key: %w", err)
	}
	jwksFile := filepath.Join(dir, "jwks.json")
	if err := devissuer.WriteJWKS(jwksFile, key); err != nil {
		return nil, nil, fmt.Errorf("dev issuer key set: %w", err)
	}
	if issuerURL, err = devRecord(dir, "issuer", issuerURL, "http://"+devIssuerAddr); err != nil {
		return nil, nil, err
	}
	if resource, err = devRecord(dir, "resource", resource, devResource); err != nil {
		return nil, nil, err
	}
	iss := &devissuer.Issuer{URL: issuerURL, Key: key}
	issuer := config.Issuer{Issuer: iss.URL, JWKSURI: iss.URL + "/jwks", TokenType: "at+jwt", Leeway: config.Duration(devLeeway)}
	if offline {
		issuer.JWKSURI, issuer.JWKSFile = "", jwksFile
	}
	cfg := &config.Config{
		Resource:             resource,
		ResourceName:         "mcpauthz development server",
		AuthorizationServers: []string{iss.URL},
		Issuers:              []config.Issuer{issuer},
		Log:                  config.Log{Format: "text"},
		// Nothing routes around a development server: stop at once.
		Shutdown: config.Shutdown{DrainDelay: new(config.Duration(0))},
	}
	return iss, cfg, nil
}

// devRecord writes value to dir/name, or, when value is empty, reads it
// back (def when nothing was recorded).
func devRecord(dir, name, value, def string) (string, error) {
	path := filepath.Join(dir, name)
	if value == "" {
		if b, err := os.ReadFile(path); err == nil {
			return strings.TrimSpace(string(b)), nil
		}
		return def, nil
	}
	if err := os.WriteFile(path, []byte(value+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("dev %s: %w", name, err)
	}
	return value, nil
}

// writeAddrFile records where serve listens, for scripts and tests that
// bind port 0.
func writeAddrFile(path, grpcAddr, httpAddr string, dev *devissuer.Issuer) error {
	rec := map[string]string{"grpc_addr": grpcAddr, "http_addr": httpAddr}
	if dev != nil {
		rec["dev_issuer"] = dev.URL
	}
	b, _ := json.Marshal(rec)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("--addr-file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("--addr-file: %w", err)
	}
	return nil
}

func printDevBanner(w io.Writer, iss *devissuer.Issuer, as devAuthServer, cfg *config.Config, grpcAddr, httpAddr, dir string) {
	tok, err := iss.Mint(devissuer.MintOptions{
		Subject:  devSubject,
		ClientID: devClientID,
		Audience: []string{cfg.Resource},
		Scopes:   []string{"tools:*"},
		TTL:      time.Hour,
		Now:      time.Now(),
	})
	if err != nil {
		fmt.Fprintln(w, "cannot mint a sample token:", err)
		return
	}
	approve := "consent page"
	if as != nil && as.ApproveMode() == devApproveAuto {
		approve = "automatic approval"
	}
	fmt.Fprintf(w, `
mcpauthz is running in development mode.
  ext_authz gRPC:        %s
  metadata/health:       http://%s%s
  authorization server:  %s (%s; key in %s)
  resource:              %s

Point an MCP client (MCP Inspector, the MCP SDKs, Claude Code, VS Code) at
%s through Envoy (envoy/envoy.yaml): it gets a 401, finds the
authorization server, registers and logs in as dev-user.

Or try a tool call through exactly the server's decision path, with a
sample token (scope "tools:*", valid 1h):

  mcpauthz check --dev --token %s \
    --body '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_weather","arguments":{"city":"Paris"}}}'

Mint tokens with other scopes:  mcpauthz token --scope tools:get_weather

`, grpcAddr, httpAddr, "/.well-known/oauth-protected-resource/mcp", iss.URL, approve, dir, cfg.Resource, cfg.Resource, tok)
}
