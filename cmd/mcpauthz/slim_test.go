package main

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mcpauthz/mcpauthz/internal/devauth"
)

// TestSlimBuildCommands: the slim server build (make build, the container
// image) refuses serve --dev and validate --envoy with an error naming the
// build that has them, and still validates and serves a configuration
// (the rest of this package's tests run in it too: make test).
func TestSlimBuildCommands(t *testing.T) {
	if !slimBuild {
		t.Skip("the full build: run with -tags mcpauthz_slim (make test does)")
	}
	envoyYAML := filepath.Join("..", "..", "envoy", "envoy.yaml")
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"serve --dev", []string{"serve", "--dev", "--dev-dir", t.TempDir(), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--dev-issuer-addr", "127.0.0.1:0"},
			"this is the slim server build of mcpauthz (build tag mcpauthz_slim), without the development authorization server: serve --dev needs the full build (make build-full, or go install github.com/mcpauthz/mcpauthz/cmd/mcpauthz@latest)"},
		{"validate --envoy", []string{"validate", "--envoy", envoyYAML},
			"this is the slim server build of mcpauthz (build tag mcpauthz_slim), without the Envoy configuration check: validate --envoy needs the full build (make build-full, or go install github.com/mcpauthz/mcpauthz/cmd/mcpauthz@latest)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, err := runCmd(t, tt.args...)
			if err == nil || !strings.Contains(err.Error()+stdout+stderr, tt.want) {
				t.Fatalf("%v = %v\nstdout: %s\nstderr: %s\nwant the error %q", tt.args, err, stdout, stderr, tt.want)
			}
		})
	}
}

// TestDevConstantsMatchDevauth: the names and lifetime `token` and the
// --dev banner mint with are the development authorization server's.
func TestDevConstantsMatchDevauth(t *testing.T) {
	if devSubject != devauth.DefaultSubject || devClientID != devauth.DevClientID || devTokenTTL != devauth.DefaultTokenTTL {
		t.Errorf("cmd/mcpauthz mints for %q, %q, %v; internal/devauth: %q, %q, %v",
			devSubject, devClientID, devTokenTTL, devauth.DefaultSubject, devauth.DevClientID, devauth.DefaultTokenTTL)
	}
}

// TestSlimBuildLeavesOut: the slim server build links neither the
// development authorization server (and its OAuth library) nor the Envoy
// configuration check (and the protos of every Envoy extension), which
// the full build has: together about a quarter of the binary, all of
// it resident.
func TestSlimBuildLeavesOut(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go not on PATH: %v", err)
	}
	deps := func(tags string) []string {
		t.Helper()
		out, err := exec.CommandContext(t.Context(), goBin, "list", "-deps", "-tags", tags, "-f", "{{.ImportPath}}", ".").Output()
		if err != nil {
			t.Fatalf("go list -tags %q: %v", tags, err)
		}
		return strings.Fields(string(out))
	}
	full, slim := deps(""), deps("mcpauthz_slim")
	for _, pkg := range []string{
		"github.com/mcpauthz/mcpauthz/internal/devauth",
		"github.com/ory/fosite",
		"github.com/mcpauthz/mcpauthz/internal/envoycheck",
		"github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3",
	} {
		if !slices.Contains(full, pkg) {
			t.Errorf("the full build does not link %s", pkg)
		}
		if slices.Contains(slim, pkg) {
			t.Errorf("the slim build links %s", pkg)
		}
	}
	for _, pkg := range []string{"github.com/mcpauthz/mcpauthz/internal/app", "github.com/mcpauthz/mcpauthz/extauthz", "github.com/mcpauthz/mcpauthz/extproc"} {
		if !slices.Contains(slim, pkg) {
			t.Errorf("the slim build does not link %s", pkg)
		}
	}
}
