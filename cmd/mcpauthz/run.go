package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/mcpauthz/mcpauthz/extauthz"
	"github.com/mcpauthz/mcpauthz/internal/app"
	"github.com/mcpauthz/mcpauthz/internal/config"
)

const usage = `mcpauthz: the MCP authorizer for Envoy ext_authz.

Usage:
  mcpauthz serve --config FILE     run the ext_authz gRPC server and the metadata/health/metrics HTTP server
  mcpauthz serve --dev             the same with a local development issuer and the embedded policy
  mcpauthz check [flags]           decide one request offline, exactly as the server would
  mcpauthz token [flags]           mint a token from the development issuer
  mcpauthz validate --config FILE  check a configuration and its policy
  mcpauthz version

Run 'mcpauthz COMMAND -h' for the flags of a command.
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return &exitError{code: 2}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(ctx, rest, stdout, stderr)
	case "check":
		return runCheck(ctx, rest, stdout, stderr)
	case "token":
		return runToken(ctx, rest, stdout, stderr)
	case "validate":
		return runValidate(ctx, rest, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "mcpauthz", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprintf(stderr, "mcpauthz: unknown command %q\n\n%s", cmd, usage)
		return &exitError{code: 2}
	}
}

// newFlagSet returns a FlagSet that reports errors instead of exiting.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("mcpauthz "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args; -h is a success, other errors are usage errors.
func parseFlags(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		return &exitError{code: 0}
	}
	if err != nil {
		return &exitError{code: 2}
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return &exitError{code: 2}
	}
	return nil
}

// defaultDevDir is where the development issuer keeps its key.
func defaultDevDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "mcpauthz", "dev")
}

// compile reads the configuration file at path and compiles it, so that
// every problem (keys, values, policy) is reported at once, each with its
// file:line.
func compile(path string, opts app.Options) (*config.Config, *app.Runtime, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, nil, fmt.Errorf("invalid configuration:\n%w", indent(err))
	}
	rt, err := compileConfig(cfg, opts)
	return cfg, rt, err
}

// compileConfig compiles a configuration, with the problems indented.
func compileConfig(cfg *config.Config, opts app.Options) (*app.Runtime, error) {
	rt, err := app.Compile(cfg, opts)
	if err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", indent(err))
	}
	return rt, nil
}

// indent puts each joined error on its own indented line.
func indent(err error) error {
	var lines []string
	for _, l := range strings.Split(err.Error(), "\n") {
		lines = append(lines, "  "+l)
	}
	return errors.New(strings.Join(lines, "\n"))
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: app.LogLevel(cfg)}
	if cfg.Log.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(extauthz.NewJSONHandler(w, opts)) // the decision log encodes its own lines for it
}

func runValidate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("validate", stderr)
	cfgPath := fs.String("config", "", "mcpauthz configuration file to validate (with its policy)")
	envoyPath := fs.String("envoy", "", "Envoy bootstrap (YAML) to check offline: schema, constraints inside every typed_config, and MCP lints")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *cfgPath == "" && *envoyPath == "" {
		fmt.Fprintln(stderr, "mcpauthz validate: --config FILE and/or --envoy FILE is required")
		return &exitError{code: 2}
	}
	var errs []error
	if *cfgPath != "" {
		// Exactly the construction serve does, without starting it: what
		// validate accepts, serve accepts.
		if _, rt, err := compile(*cfgPath, app.Options{Observe: true}); err != nil {
			errs = append(errs, err)
		} else {
			rt.Close()
			fmt.Fprintf(stdout, "%s: configuration and policy are valid\n", *cfgPath)
		}
	}
	if *envoyPath != "" {
		if err := validateEnvoy(ctx, *envoyPath, stdout); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
