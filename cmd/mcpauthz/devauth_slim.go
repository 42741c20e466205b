//go:build mcpauthz_slim

package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"

	"github.com/mcpauthz/mcpauthz/internal/config"
	"github.com/mcpauthz/mcpauthz/internal/devissuer"
)

// The slim server build (tag mcpauthz_slim) has no development
// authorization server: serve --dev says which build has one.
type devAuthServer = *noDevAuth

type noDevAuth struct{}

func (*noDevAuth) Handler() http.Handler    { return http.NotFoundHandler() }
func (*noDevAuth) ApproveMode() approveMode { return "" }

type approveMode string

const devApproveAuto approveMode = "auto"

// slimBuild reports whether this is the slim server build (tag
// mcpauthz_slim).
const slimBuild = true

var errNoDevAuth = errors.New("this is the slim server build of mcpauthz (build tag mcpauthz_slim), without the development authorization server: serve --dev needs the full build (make build-full, or go install github.com/mcpauthz/mcpauthz/cmd/mcpauthz@latest)")

func devAuthListen(context.Context, string, bool) (net.Listener, error) { return nil, errNoDevAuth }

func (d *devFlags) authorizationServer(*devissuer.Issuer, *config.Config, *slog.Logger) (devAuthServer, error) {
	return nil, errNoDevAuth
}
