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
	"github.com/mcpauthz/mcpauthz/internal/config"
	"github.com/mcpauthz/mcpauthz/internal/jwtauth"
	"github.com/mcpauthz/mcpauthz/policy"
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

// policySource maps policy.paths to a Source: the embedded default policy
// when empty.
func policySource(cfg *config.Config) policy.Source {
	if len(cfg.Policy.Paths) == 0 {
		return policy.DefaultSource()
	}
	return policy.Source{Paths: cfg.Policy.Paths}
}

// bundleSource maps policy.bundle to a policy.BundleSource, reading the
// verification key.
func bundleSource(b *config.Bundle) (policy.BundleSource, error) {
	src := policy.BundleSource{URL: b.URL, PollMin: b.PollMin.D(), PollMax: b.PollMax.D(), BearerTokenFile: b.BearerTokenFile}
	if sg := b.Signing; sg != nil {
		file := sg.PublicKeyFile
		if file == "" {
			file = sg.SecretFile
		}
		key, err := os.ReadFile(file)
		if err != nil {
			return src, fmt.Errorf("policy.bundle.signing: %w", err)
		}
		alg := sg.Algorithm
		if alg == "" {
			alg = "RS256"
		}
		src.VerificationKey = &policy.BundleKey{KeyID: sg.KeyID, Key: string(key), Algorithm: alg, Scope: sg.Scope}
	}
	return src, src.Validate()
}

// loadConfig reads and validates a configuration file together with its
// policy, so that every problem is reported at once.
func loadConfig(ctx context.Context, path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", indent(err))
	}
	if cfg.Policy.Bundle != nil {
		if _, err := bundleSource(cfg.Policy.Bundle); err != nil {
			return nil, fmt.Errorf("invalid policy bundle:\n%w", indent(err))
		}
		return cfg, nil
	}
	if err := policy.Compile(ctx, policySource(cfg)); err != nil {
		return nil, fmt.Errorf("invalid policy:\n%w", indent(err))
	}
	return cfg, nil
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
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// components are the request-path parts built from a configuration; serve
// and check share them, so check decides exactly as the server does.
type components struct {
	engine   *policy.Engine
	verifier *jwtauth.Verifier
	server   *extauthz.Server
}

// observers are the optional hooks of the serving path (metrics, decision
// log); check runs without them.
type observers struct {
	recorders     []extauthz.Recorder
	onReload      func(revision string, err error)
	onJWKSRefresh func(issuer string, keys int, err error)
	// onTools receives the tool names of each loaded policy (metric labels).
	onTools func(tools []string)
}

func buildComponents(ctx context.Context, cfg *config.Config, log *slog.Logger, obs observers) (*components, error) {
	var engine *policy.Engine
	engine = policy.New(policy.Options{
		Logger:            log,
		EvalTimeout:       cfg.Policy.EvalTimeout.D(),
		DecisionCacheSize: cfg.Policy.DecisionCacheSize,
		OnReload: func(revision string, err error) {
			if obs.onReload != nil {
				obs.onReload(revision, err)
			}
			if err == nil && obs.onTools != nil {
				obs.onTools(engine.Tools())
			}
		},
	})
	if b := cfg.Policy.Bundle; b != nil {
		// The bundle is polled until ctx ends; the engine is not ready (and
		// every check answers 503) until the first bundle is active.
		src, err := bundleSource(b)
		if err != nil {
			return nil, err
		}
		go func() { _ = engine.RunBundle(ctx, src) }()
	} else if err := engine.Load(ctx, policySource(cfg)); err != nil {
		return nil, fmt.Errorf("load policy:\n%w", indent(err))
	}
	verifier, err := jwtauth.NewVerifier(ctx, cfg.Issuers, cfg.Resource, jwtauth.Options{Logger: log, OnJWKSRefresh: obs.onJWKSRefresh, CacheSize: cfg.TokenCacheSize})
	if err != nil {
		return nil, fmt.Errorf("token verifier: %w", err)
	}
	srv, err := extauthz.New(extauthz.Options{
		Config:        cfg,
		Authenticator: verifier,
		Policy:        engine,
		Logger:        log,
		Recorders:     obs.recorders,
	})
	if err != nil {
		return nil, err
	}
	return &components{engine: engine, verifier: verifier, server: srv}, nil
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
		if _, err := loadConfig(ctx, *cfgPath); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Fprintf(stdout, "%s: configuration and policy are valid\n", *cfgPath)
		}
	}
	if *envoyPath != "" {
		if err := validateEnvoy(*envoyPath, stdout); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
