package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/mcpauthz/mcpauthz/internal/app"
	"github.com/mcpauthz/mcpauthz/internal/config"
	"github.com/mcpauthz/mcpauthz/internal/devauth"
	"github.com/mcpauthz/mcpauthz/internal/devissuer"
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
	addrFile := fs.String("addr-file", "", "once listening, write the bound addresses to this file as JSON (grpc_addr, http_addr, dev_issuer): for scripts and tests that listen on port 0")
	df := devFlagSet(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	o := serveOptions{devDir: *devDir, stdout: stdout, addrFile: *addrFile}
	var (
		cfg *config.Config
		err error
	)
	switch {
	case *dev && *cfgPath != "":
		fmt.Fprintln(stderr, "mcpauthz serve: use either --config or --dev")
		return &exitError{code: 2}
	case *dev:
		if o.devListener, err = df.listen(ctx); err != nil {
			return err
		}
		defer o.devListener.Close()
		o.dev, cfg, err = devSetup(*devDir, df.issuerURL(o.devListener), df.resource, true, false)
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
	log := newLogger(cfg, stderr)
	if *dev {
		if o.devAuth, err = df.authorizationServer(o.dev, cfg, log); err != nil {
			return err
		}
	}
	return serve(ctx, cfg, log, o)
}

type serveOptions struct {
	dev         *devissuer.Issuer
	devAuth     *devauth.Server // the development authorization server, with dev
	devListener net.Listener
	devDir      string
	stdout      io.Writer
	addrFile    string
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
	if o.devAuth != nil {
		asSrv := &http.Server{Handler: o.devAuth.Handler(), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
		go func() { _ = asSrv.Serve(o.devListener) }()
		defer asSrv.Close()
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
		printDevBanner(o.stdout, o.dev, o.devAuth, cfg, grpcLn.Addr().String(), httpLn.Addr().String(), o.devDir)
	}
	if o.addrFile != "" {
		if err := writeAddrFile(o.addrFile, grpcLn.Addr().String(), httpLn.Addr().String(), o.dev); err != nil {
			grpcLn.Close()
			httpLn.Close()
			return err
		}
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
