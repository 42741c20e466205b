//go:build !mcpauthz_slim

package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/mcpauthz/mcpauthz/internal/config"
	"github.com/mcpauthz/mcpauthz/internal/devauth"
	"github.com/mcpauthz/mcpauthz/internal/devissuer"
	"github.com/mcpauthz/mcpauthz/internal/oauth"
)

// The development authorization server (internal/devauth, on ory/fosite)
// is linked unless the build has the tag mcpauthz_slim (the server build of
// `make build` and the container image): it is a sixteenth of the binary
// and allocates at start-up, and the whole binary ends up resident.
type devAuthServer = *devauth.Server

const devApproveAuto = devauth.ApproveAuto

// slimBuild reports whether this is the slim server build (tag
// mcpauthz_slim).
const slimBuild = false

func devAuthListen(ctx context.Context, addr string, allowRemote bool) (net.Listener, error) {
	return devauth.Listen(ctx, addr, allowRemote)
}

// authorizationServer builds the development authorization server for the
// issuer iss, issuing tokens for the resource of cfg.
func (d *devFlags) authorizationServer(iss *devissuer.Issuer, cfg *config.Config, log *slog.Logger) (*devauth.Server, error) {
	mode, err := devauth.ParseApproveMode(d.approve)
	if err != nil {
		return nil, fmt.Errorf("--dev-approve: %w", err)
	}
	u, _ := oauth.ParseEndpointURL(iss.URL)
	opts := devauth.Options{
		Issuer:      iss.URL,
		AllowRemote: u == nil || !oauth.IsLoopbackHost(u.Hostname()),
		Key:         iss.Key,
		Resources:   []string{cfg.Resource},
		Scopes:      cfg.ScopesSupported,
		Approve:     mode,
		TokenTTL:    d.tokenTTL,
		Logger:      log.With("component", "devauth"),
	}
	if d.introspect {
		opts.OpaqueAccessTokens = true
		opts.Clients = []devauth.Client{{ID: devIntrospectClient, Secret: d.introspectSecret, Name: "mcpauthz", Introspect: true}}
	}
	srv, err := devauth.New(opts)
	if err != nil {
		return nil, fmt.Errorf("dev authorization server: %w", err)
	}
	return srv, nil
}
