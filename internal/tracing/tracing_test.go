package tracing

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func ptr[T any](v T) *T { return &v }

func TestResolve(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		env  func(string) string
		want settings
	}{
		{"nothing set: off", Config{}, env(), settings{protocol: ProtocolHTTP}},
		{"endpoint variable: on, http/protobuf", Config{}, env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
			settings{enabled: true, protocol: ProtocolHTTP}},
		{"traces endpoint variable and its protocol", Config{}, env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc", "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
			settings{enabled: true, protocol: ProtocolGRPC}},
		{"exporter otlp alone: on (the SDK's default endpoint)", Config{}, env("OTEL_TRACES_EXPORTER", "otlp"),
			settings{enabled: true, protocol: ProtocolHTTP}},
		{"exporter none wins over an endpoint", Config{}, env("OTEL_TRACES_EXPORTER", "none", "OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
			settings{protocol: ProtocolHTTP}},
		{"SDK disabled wins over an endpoint", Config{}, env("OTEL_SDK_DISABLED", "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
			settings{protocol: ProtocolHTTP}},
		{"config enabled false wins over the environment", Config{Enabled: ptr(false)}, env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
			settings{protocol: ProtocolHTTP}},
		{"config enabled true wins over OTEL_SDK_DISABLED", Config{Enabled: ptr(true)}, env("OTEL_SDK_DISABLED", "true"),
			settings{enabled: true, protocol: ProtocolHTTP}},
		{"config endpoint: on; http gets /v1/traces", Config{Endpoint: "http://collector:4318"}, env(),
			settings{enabled: true, protocol: ProtocolHTTP, endpoint: "http://collector:4318/v1/traces"}},
		{"config endpoint with a path keeps it", Config{Endpoint: "https://collector/otlp/v1/traces"}, env(),
			settings{enabled: true, protocol: ProtocolHTTP, endpoint: "https://collector/otlp/v1/traces"}},
		{"config protocol overrides the variable", Config{Endpoint: "http://collector:4317", Protocol: "grpc"}, env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
			settings{enabled: true, protocol: ProtocolGRPC, endpoint: "http://collector:4317"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resolve(tt.cfg, Options{Getenv: tt.env})
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("resolve = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestResolveProblems(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		env  func(string) string
		want []string
	}{
		{"every problem at once", Config{Endpoint: "collector:4317", Protocol: "thrift", SampleRatio: ptr(1.5)}, env(), []string{
			`sample_ratio: must be between 0 and 1`,
			`protocol: "thrift" is not one of grpc, http/protobuf`,
			`endpoint: "collector:4317" is not an http or https URL with a host`,
		}},
		{"endpoint with credentials", Config{Endpoint: "https://user:pw@collector/v1/traces"}, env(), []string{
			`endpoint: must not have user information, a query or a fragment`,
		}},
		{"a variable's problem names it", Config{}, env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "OTEL_TRACES_EXPORTER", "zipkin"), []string{
			`OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" is not supported by mcpauthz (grpc or http/protobuf)`,
			`OTEL_TRACES_EXPORTER: "zipkin" is not supported (otlp or none)`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.cfg, Options{Getenv: tt.env})
			if err == nil {
				t.Fatal("no problem reported")
			}
			if got := strings.Split(err.Error(), "\n"); strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("problems:\n%s\nwant:\n%s", err, strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestDisabledProviderIsInert(t *testing.T) {
	p, err := New(context.Background(), Config{}, Options{Getenv: env()})
	if err != nil {
		t.Fatal(err)
	}
	if p.Enabled() || p.Tracer() != nil || p.TracerProvider() != nil {
		t.Errorf("disabled provider: enabled %v, tracer %v", p.Enabled(), p.Tracer())
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	var nilP *Provider
	if nilP.Enabled() || nilP.Shutdown(context.Background()) != nil {
		t.Error("a nil Provider must be disabled and shut down cleanly")
	}
}

// TestExportErrorsRateLimited: a collector that is down produces one log
// line per ErrorLogInterval, not one per failed export.
func TestExportErrorsRateLimited(t *testing.T) {
	var buf strings.Builder
	e := &errorLog{log: slog.New(slog.NewTextHandler(&buf, nil))}
	for range 5 {
		e.Handle(errors.New("connection refused"))
	}
	if n := strings.Count(buf.String(), "span export failed"); n != 1 {
		t.Fatalf("%d log lines for 5 failures within the interval, want 1:\n%s", n, buf.String())
	}
	e.last = e.last.Add(-ErrorLogInterval)
	e.Handle(errors.New("connection refused"))
	if !strings.Contains(buf.String(), "suppressed_since_last=4") {
		t.Errorf("the next line does not count the 4 suppressed failures:\n%s", buf.String())
	}
}
