package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/mcpauthz/mcpauthz/internal/app"
	"github.com/mcpauthz/mcpauthz/internal/config"
	"github.com/mcpauthz/mcpauthz/internal/devissuer"
)

// Development defaults: the issuer listens next to the server, and the
// resource is the Envoy listener of envoy/envoy.yaml.
const (
	devIssuerAddr = "127.0.0.1:9193"
	devResource   = "http://localhost:10000/mcp"
)

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", stderr)
	cfgPath := fs.String("config", "", "configuration file (YAML)")
	dev := fs.Bool("dev", false, "development mode: local issuer, embedded policy, no configuration needed")
	devDir := fs.String("dev-dir", defaultDevDir(), "where --dev keeps its signing key")
	shadow := fs.Bool("shadow", false, "shadow mode (overrides the config's shadow): allow everything policy denies, and log and count the would-be denials")
	drain := fs.Duration("drain-delay", -1, "override shutdown.drain_delay: on SIGTERM, report not-serving and wait this long before draining (e.g. 5s in Kubernetes)")
	grace := fs.Duration("shutdown-timeout", 0, "override shutdown.timeout: how long in-flight checks may take to finish on shutdown")
	grpcAddr := fs.String("grpc-addr", "", "override grpc_addr")
	httpAddr := fs.String("http-addr", "", "override http_addr")
	devIssuer := fs.String("dev-issuer-addr", devIssuerAddr, "where --dev serves its issuer (JWKS and metadata)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	o := serveOptions{devDir: *devDir, stdout: stdout}
	var (
		cfg *config.Config
		err error
	)
	switch {
	case *dev && *cfgPath != "":
		fmt.Fprintln(stderr, "mcpauthz serve: use either --config or --dev")
		return &exitError{code: 2}
	case *dev:
		var lc net.ListenConfig
		if o.devListener, err = lc.Listen(ctx, "tcp", *devIssuer); err != nil {
			return fmt.Errorf("dev issuer: %w", err)
		}
		defer o.devListener.Close()
		o.dev, cfg, err = devSetup(*devDir, "http://"+o.devListener.Addr().String(), true, false)
	case *cfgPath != "":
		cfg, err = config.Load(*cfgPath)
		if err != nil {
			err = fmt.Errorf("invalid configuration:\n%w", indent(err))
		}
	default:
		fmt.Fprintln(stderr, "mcpauthz serve: --config FILE or --dev is required")
		return &exitError{code: 2}
	}
	if err != nil {
		return err
	}
	if *grpcAddr != "" {
		cfg.GRPCAddr = *grpcAddr
	}
	if *httpAddr != "" {
		cfg.HTTPAddr = *httpAddr
	}
	if *shadow {
		cfg.Shadow = true
	}
	if *drain >= 0 {
		cfg.Shutdown.DrainDelay = config.Duration(*drain)
	}
	if *grace > 0 {
		cfg.Shutdown.Timeout = config.Duration(*grace)
	}
	return serve(ctx, cfg, newLogger(cfg, stderr), o)
}

type serveOptions struct {
	dev         *devissuer.Issuer
	devListener net.Listener
	devDir      string
	stdout      io.Writer
	// ready, if set, receives the bound addresses once listening (tests).
	ready chan<- [2]string
}

// serve compiles cfg and runs it until ctx is done, then shuts down
// gracefully: from the first moment of the drain gRPC health and /readyz
// report not serving, while checks keep being decided exactly as before
// (the runtime's background work runs on its own context, not on ctx);
// after the optional drain delay the gRPC server stops accepting checks
// and the ones in flight finish (up to the shutdown timeout); then the HTTP
// server stops and the runtime closes.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, o serveOptions) error {
	rt, err := compileConfig(cfg, app.Options{Logger: log, Observe: true})
	if err != nil {
		return err
	}
	defer rt.Close()

	var lc net.ListenConfig
	if o.dev != nil {
		issSrv := &http.Server{Handler: o.dev.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = issSrv.Serve(o.devListener) }()
		defer issSrv.Close()
	}
	grpcLn, err := lc.Listen(ctx, "tcp", rt.GRPCAddr)
	if err != nil {
		return fmt.Errorf("grpc_addr: %w", err)
	}
	httpLn, err := lc.Listen(ctx, "tcp", rt.HTTPAddr)
	if err != nil {
		grpcLn.Close()
		return fmt.Errorf("http_addr: %w", err)
	}
	rt.Start()
	gs := rt.GRPCServer()
	httpSrv := &http.Server{Handler: rt.HTTPHandler(), ReadHeaderTimeout: 5 * time.Second}

	log.Info("mcpauthz serving", "grpc_addr", grpcLn.Addr().String(), "http_addr", httpLn.Addr().String(),
		"resource", rt.Resource, "policy_revision", rt.Engine.Revision(), "shadow", rt.Shadow)
	if o.dev != nil {
		printDevBanner(o.stdout, o.dev, cfg, grpcLn.Addr().String(), httpLn.Addr().String(), o.devDir)
	}
	if o.ready != nil {
		o.ready <- [2]string{grpcLn.Addr().String(), httpLn.Addr().String()}
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return ignoreClosed(gs.Serve(grpcLn)) })
	g.Go(func() error { return ignoreClosed(httpSrv.Serve(httpLn)) })
	g.Go(func() error {
		<-gctx.Done()
		rt.Drain()
		if drain := rt.DrainDelay; drain > 0 {
			log.Info("draining", "delay", drain)
			time.Sleep(drain)
		}
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(rt.ShutdownTimeout):
			log.Warn("shutdown timeout: stopping with checks in flight")
			gs.Stop()
		}
		sctx, scancel := context.WithTimeout(context.WithoutCancel(gctx), 5*time.Second)
		defer scancel()
		_ = httpSrv.Shutdown(sctx)
		return nil
	})
	err = g.Wait()
	log.Info("mcpauthz stopped")
	return err
}

func ignoreClosed(err error) error {
	if err == nil || errors.Is(err, grpc.ErrServerStopped) || errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// devSetup prepares development mode: a signing key in dir (a fresh one when
// rotate), its public key set, and a configuration that trusts it. The
// issuer URL is recorded in dir so that `token` and `check --dev` mint and
// verify for the issuer a running `serve --dev` uses; an empty issuerURL
// reads it from there. With offline the issuer's keys are read from the key
// set file instead of the issuer's HTTP endpoint.
func devSetup(dir, issuerURL string, rotate, offline bool) (*devissuer.Issuer, *config.Config, error) {
	key, err := devissuer.LoadOrCreateKey(dir, rotate)
	if err != nil {
		return nil, nil, fmt.Errorf("dev issuer key: %w", err)
	}
	jwksFile := filepath.Join(dir, "jwks.json")
	if err := devissuer.WriteJWKS(jwksFile, key); err != nil {
		return nil, nil, fmt.Errorf("dev issuer key set: %w", err)
	}
	urlFile := filepath.Join(dir, "issuer")
	if issuerURL == "" {
		if b, err := os.ReadFile(urlFile); err == nil {
			issuerURL = strings.TrimSpace(string(b))
		} else {
			issuerURL = "http://" + devIssuerAddr
		}
	} else if err := os.WriteFile(urlFile, []byte(issuerURL+"\n"), 0o600); err != nil {
		return nil, nil, fmt.Errorf("dev issuer: %w", err)
	}
	iss := &devissuer.Issuer{URL: issuerURL, Key: key}
	issuer := config.Issuer{Issuer: iss.URL, JWKSURI: iss.URL + "/jwks"}
	if offline {
		issuer = config.Issuer{Issuer: iss.URL, JWKSFile: jwksFile}
	}
	cfg := &config.Config{
		Resource:             devResource,
		ResourceName:         "mcpauthz development server",
		AuthorizationServers: []string{iss.URL},
		Issuers:              []config.Issuer{issuer},
		Log:                  config.Log{Format: "text"},
	}
	return iss, cfg, nil
}

func printDevBanner(w io.Writer, iss *devissuer.Issuer, cfg *config.Config, grpcAddr, httpAddr, dir string) {
	tok, err := iss.Mint(devissuer.MintOptions{
		Subject:  "dev-user",
		ClientID: "mcpauthz-dev",
		Audience: []string{cfg.Resource},
		Scopes:   []string{"tools:*"},
		TTL:      time.Hour,
		Now:      time.Now(),
	})
	if err != nil {
		fmt.Fprintln(w, "cannot mint a sample token:", err)
		return
	}
	fmt.Fprintf(w, `
mcpauthz is running in development mode.
  ext_authz gRPC:   %s
  metadata/health:  http://%s%s
  dev issuer:       %s (key in %s)
  resource:         %s

A sample token (scope "tools:*", valid 1h):

  %s

Try a tool call through exactly the server's decision path:

  mcpauthz check --dev --token %s \
    --body '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_weather","arguments":{"city":"Paris"}}}'

Mint tokens with other scopes:  mcpauthz token --scope tools:get_weather

`, grpcAddr, httpAddr, "/.well-known/oauth-protected-resource/mcp", iss.URL, dir, cfg.Resource, tok, tok)
}
