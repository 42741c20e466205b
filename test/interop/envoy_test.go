package interop

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"

	"github.com/mcpauthz/mcpauthz/internal/envoycheck"
)

// socketAddresses returns the admin, listener and the two cluster endpoint
// addresses of a bootstrap decoded like envoy/envoy.yaml.
func socketAddresses(bs *bootstrapv3.Bootstrap) map[string]*corev3.SocketAddress {
	sr := bs.GetStaticResources()
	out := map[string]*corev3.SocketAddress{
		"admin":    bs.GetAdmin().GetAddress().GetSocketAddress(),
		"listener": sr.GetListeners()[0].GetAddress().GetSocketAddress(),
	}
	for _, c := range sr.GetClusters() {
		if c.GetName() == "mcp_upstream" || c.GetName() == "mcpauthz" {
			out[c.GetName()] = c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		}
	}
	return out
}

func decodeBootstrap(t *testing.T, raw []byte) *bootstrapv3.Bootstrap {
	t.Helper()
	var bs bootstrapv3.Bootstrap
	if _, err := envoycheck.DecodeAs(t.Context(), raw, &bs); err != nil {
		t.Fatal(err)
	}
	return &bs
}

// The real-Envoy run (test/e2e, skipped without an envoy binary) uses the
// shipped configuration with only its addresses changed: check that
// rendering here, where there is no Envoy.
func TestEnvoyConfig(t *testing.T) {
	path := filepath.Join(Root(), "envoy", "envoy.yaml")
	got, err := EnvoyConfig(path, 10001, 10002, "127.0.0.1:8081", "127.0.0.1:9191")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := envoycheck.Validate(t.Context(), got); err != nil {
		t.Fatalf("rendered configuration: %v", err)
	}
	rendered := decodeBootstrap(t, got)
	want := map[string]string{
		"admin":        "127.0.0.1:10002",
		"listener":     "127.0.0.1:10001",
		"mcp_upstream": "127.0.0.1:8081",
		"mcpauthz":     "127.0.0.1:9191",
	}
	addrs := socketAddresses(rendered)
	for name, w := range want {
		a := addrs[name]
		if g := fmt.Sprintf("%s:%d", a.GetAddress(), a.GetPortValue()); g != w {
			t.Errorf("%s: %s, want %s", name, g, w)
		}
	}

	// Nothing but those addresses differs from the shipped file.
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	orig := decodeBootstrap(t, raw)
	for _, bs := range []*bootstrapv3.Bootstrap{orig, rendered} {
		for _, a := range socketAddresses(bs) {
			a.Reset()
		}
	}
	if !proto.Equal(orig, rendered) {
		t.Error("the rendered configuration differs from envoy/envoy.yaml in more than its addresses")
	}
}
