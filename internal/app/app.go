// Package app wires the request path of mcpauthz from a configuration: the
// policy engine, the token verifier and the ext_authz server, with or
// without metrics and the decision log. `mcpauthz serve`, `mcpauthz check`
// and the benchmark's in-process server all build through Build, so they
// decide exactly alike.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/mcpauthz/mcpauthz/extauthz"
	"github.com/mcpauthz/mcpauthz/internal/config"
	"github.com/mcpauthz/mcpauthz/internal/grpcopts"
	"github.com/mcpauthz/mcpauthz/internal/jwtauth"
	"github.com/mcpauthz/mcpauthz/internal/metrics"
	"github.com/mcpauthz/mcpauthz/policy"
)

// Components are the request-path parts built from a configuration.
type Components struct {
	Engine   *policy.Engine
	Verifier *jwtauth.Verifier
	Server   *extauthz.Server
	// Metrics and Registry are nil unless Build was asked to observe.
	Metrics  *metrics.Metrics
	Registry *prometheus.Registry
}

// Build constructs the components. With observe, decisions are counted in a
// fresh Prometheus registry and written to the decision log on log. The
// engine loads policy.paths (or the embedded policy) before Build returns;
// a policy.bundle is polled in the background until ctx ends, and the
// engine is not ready until the first bundle is active.
func Build(ctx context.Context, cfg *config.Config, log *slog.Logger, observe bool) (*Components, error) {
	c := &Components{}
	var recorders []extauthz.Recorder
	var onJWKS func(string, int, error)
	if observe {
		c.Registry = prometheus.NewRegistry()
		issuers := make([]string, len(cfg.Issuers))
		for i, is := range cfg.Issuers {
			issuers[i] = is.Issuer
		}
		c.Metrics = metrics.New(c.Registry, issuers)
		dl := cfg.Log.Decisions
		rate := 1.0
		if dl.AllowSampleRate != nil {
			rate = *dl.AllowSampleRate
		}
		recorders = []extauthz.Recorder{c.Metrics, &extauthz.LogRecorder{
			Logger:          log,
			AllowSampleRate: rate,
			Arguments:       dl.Arguments,
			RedactKeys:      dl.RedactKeys,
		}}
		onJWKS = c.Metrics.JWKSRefresh
	}
	c.Engine = policy.New(policy.Options{
		Logger:            log,
		EvalTimeout:       cfg.Policy.EvalTimeout.D(),
		DecisionCacheSize: cfg.Policy.DecisionCacheSize,
		OnReload: func(revision string, err error) {
			if c.Metrics == nil {
				return
			}
			c.Metrics.PolicyReload(revision, err)
			if err == nil {
				c.Metrics.SetTools(c.Engine.Tools())
			}
		},
	})
	if b := cfg.Policy.Bundle; b != nil {
		src, err := BundleSource(b)
		if err != nil {
			return nil, err
		}
		go func() { _ = c.Engine.RunBundle(ctx, src) }()
	} else if err := c.Engine.Load(ctx, PolicySource(cfg)); err != nil {
		return nil, fmt.Errorf("load policy: %w", err)
	}
	var err error
	c.Verifier, err = jwtauth.NewVerifier(ctx, cfg.Issuers, cfg.Resource, jwtauth.Options{Logger: log, OnJWKSRefresh: onJWKS, CacheSize: cfg.TokenCacheSize})
	if err != nil {
		return nil, fmt.Errorf("token verifier: %w", err)
	}
	c.Server, err = extauthz.New(extauthz.Options{
		Config:        cfg,
		Authenticator: c.Verifier,
		Policy:        c.Engine,
		Logger:        log,
		Recorders:     recorders,
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Ready reports whether the policy is compiled and every issuer has keys.
func (c *Components) Ready() bool { return c.Engine.Ready() && c.Verifier.Ready() }

// GRPCServer returns a gRPC server with the ext_authz service registered,
// the transport settings of grpcopts and, when observing, the metrics
// interceptor.
func (c *Components) GRPCServer() *grpc.Server {
	opts := grpcopts.ServerOptions()
	if c.Metrics != nil {
		opts = append(opts, grpc.ChainUnaryInterceptor(c.Metrics.GRPCUnaryInterceptor()))
	}
	gs := grpc.NewServer(opts...)
	authv3.RegisterAuthorizationServer(gs, c.Server)
	return gs
}

// PolicySource maps policy.paths to a Source: the embedded default policy
// when empty.
func PolicySource(cfg *config.Config) policy.Source {
	if len(cfg.Policy.Paths) == 0 {
		return policy.DefaultSource()
	}
	return policy.Source{Paths: cfg.Policy.Paths}
}

// BundleSource maps policy.bundle to a policy.BundleSource, reading the
// verification key, and validates it.
func BundleSource(b *config.Bundle) (policy.BundleSource, error) {
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
