//go:build mcpauthz_slim

package main

import (
	"context"
	"errors"
	"io"
)

// The slim server build (tag mcpauthz_slim) has no Envoy configuration
// check: go-control-plane's generated protos of every Envoy extension are a
// sixth of the binary, and a server in a pod never checks Envoy's files.
func validateEnvoy(context.Context, string, io.Writer) error {
	return errors.New("this is the slim server build of mcpauthz (build tag mcpauthz_slim), without the Envoy configuration check: validate --envoy needs the full build (make build-full, or go install github.com/mcpauthz/mcpauthz/cmd/mcpauthz@latest)")
}
