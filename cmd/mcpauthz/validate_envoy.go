//go:build !mcpauthz_slim

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/mcpauthz/mcpauthz/internal/envoycheck"
)

// validateEnvoy checks the Envoy bootstrap at path offline (internal/envoycheck:
// strict schema, constraints inside every typed_config, and the lints Envoy
// does not make: ext_authz cluster and HTTP/2, filter order, fail-open, body
// settings, SSE timeouts, CORS, identity headers). It prints every finding as
// "path:line: severity: field: message [rule]" and a summary, and returns an
// error when any finding is an error. The file is read up to
// envoycheck.MaxConfigBytes, and the check stops as soon as ctx ends.
func validateEnvoy(ctx context.Context, path string, stdout io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read Envoy configuration: %w", err)
	}
	raw, err := io.ReadAll(io.LimitReader(f, envoycheck.MaxConfigBytes+1))
	f.Close()
	if err != nil {
		return fmt.Errorf("read Envoy configuration: %w", err)
	}
	rep, verr := envoycheck.Validate(ctx, raw)
	if errors.Is(verr, context.Canceled) || errors.Is(verr, context.DeadlineExceeded) {
		return verr
	}
	for _, f := range rep.Findings {
		loc := path
		if f.Line > 0 {
			loc = fmt.Sprintf("%s:%d", path, f.Line)
		}
		field := ""
		if f.Path != "" {
			field = f.Path + ": "
		}
		fmt.Fprintf(stdout, "%s: %s: %s%s [%s]\n", loc, f.Severity, field, f.Message, f.Rule)
	}
	api := "the linked Envoy API"
	if v := envoycheck.APIVersion(); v != "" {
		api = "the Envoy " + minor(v) + " API (go-control-plane/envoy " + v + ")"
	}
	fmt.Fprintf(stdout, "%s: %d error(s), %d warning(s), %d note(s), checked against %s\n",
		path, rep.Count(envoycheck.Error), rep.Count(envoycheck.Warning), rep.Count(envoycheck.Info), api)
	if verr != nil {
		return fmt.Errorf("%s: invalid Envoy configuration (%d error(s))", path, rep.Count(envoycheck.Error))
	}
	return nil
}

// minor turns "v1.40.0" into "v1.40".
func minor(v string) string {
	if i := strings.LastIndexByte(v, '.'); i > strings.IndexByte(v, '.') {
		return v[:i]
	}
	return v
}
