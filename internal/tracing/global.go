package tracing

import (
	"log/slog"
	"os"

	"go.opentelemetry.io/otel"
)

func osGetenv(name string) string { return os.Getenv(name) }

// setErrorHandler routes the SDK's error reports (export failures) to the
// process log, rate-limited. The SDK has one handler per process, so the
// last runtime built with tracing on owns it; a nil logger leaves the
// SDK's default (the standard library log).
func setErrorHandler(log *slog.Logger) {
	if log == nil {
		return
	}
	otel.SetErrorHandler(&errorLog{log: log})
}
