package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/mcpauthz/mcpauthz/internal/app"
	"github.com/mcpauthz/mcpauthz/internal/asynclog"
	"github.com/mcpauthz/mcpauthz/internal/config"
	"github.com/mcpauthz/mcpauthz/internal/devissuer"
)

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", stderr)
	cfgPath := fs.String("config", "", "configuration file (YAML)")
	dev := fs.Bool("dev", false, "development mode: local issuer, embedded policy, no configuration needed")
	devDir := fs.String("dev-dir", defaultDevDir(), "where --dev keeps its signing key")
	shadow := fs.Bool("shadow", false, "shadow mode (overrides the config's shadow): allow everything policy denies, and log and count the would-be denials")
	drain := fs.Duration("drain-delay", -1, "override shutdown.drain_delay: on SIGTERM, report not ready but keep accepting checks this long (default 5s)")
	grace := fs.Duration("shutdown-timeout", 0, "override shutdown.timeout: the longest the shutdown may take, from the signal to the exit (default 15s)")
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
		if err == nil && df.introspect {
			err = df.useIntrospection(cfg, *devDir)
		}
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
		cfg.Shutdown.DrainDelay = new(config.Duration(*drain))
	}
	if *grace > 0 {
		cfg.Shutdown.Timeout = config.Duration(*grace)
	}
	// Every log line, the decision log's included, goes through a bounded
	// buffer written in batches by one goroutine: a check never waits for
	// stderr. What is buffered is written before the process exits.
	var log *slog.Logger
	out := asynclog.New(stderr, asynclog.Options{OnDrop: func(n uint64) {
		log.Warn("log lines dropped: the log output is slower than the lines arrive", "dropped", n)
	}})
	defer func() {
		fctx, cancel := context.WithTimeout(context.Background(), logFlushTimeout)
		defer cancel()
		_ = out.Close(fctx)
	}()
	log = newLogger(cfg, out)
	o.logDropped = out.Dropped
	if *dev {
		if o.devAuth, err = df.authorizationServer(o.dev, cfg, log); err != nil {
			return err
		}
	}
	return serve(ctx, cfg, log, o)
}

// logFlushTimeout bounds the writing of the last log lines at exit.
const logFlushTimeout = 2 * time.Second

type serveOptions struct {
	// logDropped counts the log lines dropped (a metric).
	logDropped  func() uint64
	dev         *devissuer.Issuer
	devAuth     devAuthServer // the development authorization server, with dev
	devListener net.Listener
	devDir      string
	stdout      io.Writer
	addrFile    string
	// ready, if set, receives the bound addresses once listening (tests).
	ready chan<- [2]string
}

// serve compiles cfg and runs it until ctx is done (the shutdown signal),
// then drains within the runtime's ShutdownTimeout of the signal:
//
//  1. gRPC health and /readyz report not serving at once, while checks
//     keep being decided exactly as before: the runtime's background work
//     (key refreshes, introspection calls, policy reloads) runs on its own
//     lifetime, which ends at Close, never on ctx;
//  2. for DrainDelay, new checks are still accepted, so that endpoint
//     lists and Envoy's health checks move away before the port closes;
//  3. the gRPC server stops accepting and the checks in flight finish with
//     their real decision, until shortly before the timeout, when the ones
//     left are stopped hard;
//  4. the HTTP server stops (by the timeout at the latest), then the
//     runtime closes.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, o serveOptions) error {
	rt, err := compileConfig(cfg, app.Options{Logger: log, Observe: true, Trace: true, Version: version, LogDropped: o.logDropped})
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
	httpSrv := rt.HTTPServer()

	log.Info("mcpauthz serving", "grpc_addr", grpcLn.Addr().String(), "http_addr", httpLn.Addr().String(),
		"resource", rt.Resource, "policy_revision", rt.Engine.Revision(), "shadow", rt.Shadow)
	// Compiling the configuration and the policy leaves the heap at about
	// twice its live size, and nothing collects while a replica is idle:
	// return what is free now, once (one collection of a few MB at start;
	// idle RSS −5 MiB).
	debug.FreeOSMemory()
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
	g.Go(func() error { return ignoreClosed(httpSrv.Serve(rt.HTTPListener(httpLn))) })
	g.Go(func() error {
		<-gctx.Done()
		drain(rt, gs, httpSrv, log)
		return nil
	})
	err = g.Wait()
	log.Info("mcpauthz stopped")
	return err
}

// drain runs steps 1 to 4 of serve.
func drain(rt *app.Runtime, gs *grpc.Server, httpSrv *http.Server, log *slog.Logger) {
	deadline := time.Now().Add(rt.ShutdownTimeout)
	rt.Drain()
	log.Info("draining: not ready, still deciding checks", "drain_delay", rt.DrainDelay, "shutdown_timeout", rt.ShutdownTimeout)
	time.Sleep(rt.DrainDelay)

	// What is left of the timeout after the checks in flight: enough to
	// stop them hard, finish the HTTP requests and close the runtime.
	reserve := min(time.Second, rt.ShutdownTimeout/10)
	log.Info("no new checks: waiting for the checks in flight")
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	t := time.NewTimer(time.Until(deadline) - reserve)
	select {
	case <-stopped:
	case <-t.C:
		log.Warn("shutdown timeout: stopping the checks still in flight")
		gs.Stop()
		<-stopped
	}
	t.Stop()

	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if err := httpSrv.Shutdown(ctx); err != nil {
		httpSrv.Close() // requests still running at the deadline
	}
}

func ignoreClosed(err error) error {
	if err == nil || errors.Is(err, grpc.ErrServerStopped) || errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
