// Command mcpauthz is the MCP authorizer for Envoy and Istio: an ext_authz
// gRPC service that validates OAuth bearer tokens, parses MCP JSON-RPC and
// evaluates Rego policy. See `mcpauthz help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// The first signal starts the graceful shutdown; a second one
		// gets the default behaviour and ends the process at once.
		<-ctx.Done()
		stop()
	}()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode reports err on stderr and maps it to the process exit code: 0
// success, 1 a denied `check`, 2 usage or configuration errors.
func exitCode(err error, stderr *os.File) int {
	var ex *exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ex):
		return ex.code
	default:
		fmt.Fprintln(stderr, "mcpauthz:", err)
		return 2
	}
}

// exitError ends the process with code without printing anything more.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }
