// Command inproc is the in-process mcpauthz that `mcpauthz-bench
// --cpuprofile FILE` builds and profiles: mcpauthz has no profiling
// endpoint, so this compiles the configuration with internal/app exactly
// as `mcpauthz serve` does (the same Runtime, gRPC server, recorders and
// interceptor) in a process that writes its CPU profile from the moment it
// serves until SIGINT/SIGTERM. Only the metadata/health HTTP server is
// left out.
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
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/mcpauthz/mcpauthz/extauthz"
	"github.com/mcpauthz/mcpauthz/internal/app"
	"github.com/mcpauthz/mcpauthz/internal/asynclog"
	"github.com/mcpauthz/mcpauthz/internal/config"
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
	// As serve: the log output is asynchronous.
	out := asynclog.New(stderr, asynclog.Options{})
	defer out.Close(context.Background())
	log := slog.New(extauthz.NewJSONHandler(out, &slog.HandlerOptions{Level: app.LogLevel(cfg)}))

	rt, err := app.Compile(cfg, app.Options{Logger: log, Observe: true, Trace: true}) // exactly what `mcpauthz serve` builds
	if err != nil {
		return err
	}
	defer rt.Close()
	rt.Start()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := rt.WaitReady(wctx); err != nil {
		return fmt.Errorf("not ready (%s): %w", rt.NotReadyReason(), err)
	}
	gs := rt.GRPCServer()
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", rt.GRPCAddr)
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
