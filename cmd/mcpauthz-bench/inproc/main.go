// Command inproc is the in-process mcpauthz that `mcpauthz-bench
// --cpuprofile FILE` builds and profiles: mcpauthz has no profiling
// endpoint, so this builds the components of `mcpauthz serve` (policy
// engine, token verifier, ext_authz server with the metrics and
// decision-log recorders, the metrics gRPC interceptor, the same gRPC
// server options; keep them in step with cmd/mcpauthz) in a process that writes its CPU profile from the moment
// it serves until SIGINT/SIGTERM. It mirrors cmd/mcpauthz/serve.go without
// the metadata/health HTTP server and the health service.
//
// Usage: inproc --config FILE --cpuprofile FILE (prints "listening ADDR").
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/mcpauthz/mcpauthz/extauthz"
	"github.com/mcpauthz/mcpauthz/internal/config"
	"github.com/mcpauthz/mcpauthz/internal/jwtauth"
	"github.com/mcpauthz/mcpauthz/internal/metrics"
	"github.com/mcpauthz/mcpauthz/policy"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runInproc(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func runInproc(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("inproc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "mcpauthz configuration")
	profile := fs.String("cpuprofile", "", "CPU profile to write")
	if err := fs.Parse(args); err != nil || *cfgPath == "" || *profile == "" {
		fmt.Fprintln(stderr, "inproc: --config and --cpuprofile are required")
		return 2
	}
	if err := inproc(ctx, *cfgPath, *profile, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "inproc:", err)
		return 1
	}
	return 0
}

func inproc(ctx context.Context, cfgPath, profile string, stdout, stderr io.Writer) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))

	issuers := make([]string, len(cfg.Issuers))
	for i, is := range cfg.Issuers {
		issuers[i] = is.Issuer
	}
	m := metrics.New(prometheus.NewRegistry(), issuers)
	var engine *policy.Engine
	engine = policy.New(policy.Options{
		Logger:            log,
		EvalTimeout:       cfg.Policy.EvalTimeout.D(),
		DecisionCacheSize: cfg.Policy.DecisionCacheSize,
		OnReload: func(revision string, err error) {
			m.PolicyReload(revision, err)
			if err == nil {
				m.SetTools(engine.Tools())
			}
		},
	})
	src := policy.DefaultSource()
	if len(cfg.Policy.Paths) > 0 {
		src = policy.Source{Paths: cfg.Policy.Paths}
	}
	if err := engine.Load(ctx, src); err != nil {
		return err
	}
	verifier, err := jwtauth.NewVerifier(ctx, cfg.Issuers, cfg.Resource, jwtauth.Options{Logger: log, OnJWKSRefresh: m.JWKSRefresh, CacheSize: cfg.TokenCacheSize})
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := verifier.WaitReady(wctx); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	dl := cfg.Log.Decisions
	srv, err := extauthz.New(extauthz.Options{
		Config: cfg, Authenticator: verifier, Policy: engine, Logger: log,
		Recorders: []extauthz.Recorder{m, &extauthz.LogRecorder{
			Logger: log, AllowSampleRate: *dl.AllowSampleRate, Arguments: dl.Arguments, RedactKeys: dl.RedactKeys,
		}},
	})
	if err != nil {
		return err
	}
	gs := grpc.NewServer(
		grpc.MaxRecvMsgSize(32<<20),
		grpc.MaxConcurrentStreams(1024),
		grpc.NumStreamWorkers(uint32(32*runtime.GOMAXPROCS(0))),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.ChainUnaryInterceptor(m.GRPCUnaryInterceptor()),
	)
	authv3.RegisterAuthorizationServer(gs, srv)
	m.InitGRPC(gs)
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", cfg.GRPCAddr)
	if err != nil {
		return err
	}

	f, err := os.Create(profile)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return err
	}
	fmt.Fprintln(stdout, "listening", lis.Addr().String())
	go func() {
		<-ctx.Done()
		gs.Stop()
	}()
	serveErr := gs.Serve(lis)
	pprof.StopCPUProfile()
	if err := f.Close(); err != nil {
		return err
	}
	return serveErr
}
