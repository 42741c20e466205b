package interop

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/mcpauthz/mcpauthz/internal/envoycheck"
	"github.com/mcpauthz/mcpauthz/test/interop/standin"
)

// Envoy is a real Envoy running the shipped envoy/envoy.yaml, with only its
// addresses changed: the listener, the admin interface, and the endpoints
// of the clusters mcp_upstream and mcpauthz (test/e2e, `make e2e`).
type Envoy struct {
	bin         string
	port, admin int
}

// NewEnvoy reserves the loopback ports of an Envoy run by bin. Envoy cannot
// report the ports it binds, so free ones are picked (listen on :0, close);
// another process could take one in between, which fails the run loudly
// rather than silently.
func NewEnvoy(t *testing.T, bin string) *Envoy {
	t.Helper()
	return &Envoy{bin: bin, port: freePort(t), admin: freePort(t)}
}

func (e *Envoy) BaseURL() string { return fmt.Sprintf("http://127.0.0.1:%d", e.port) }

// Checks is nil: a real Envoy does not tell which checks it made.
func (e *Envoy) Checks() []standin.Check { return nil }

func (e *Envoy) Start(t *testing.T, grpcAddr, upstreamAddr string) {
	t.Helper()
	cfg, err := EnvoyConfig(filepath.Join(Root(), "envoy", "envoy.yaml"), e.port, e.admin, upstreamAddr, grpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "envoy.json")
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(e.bin, "-c", path, "--base-id", strconv.Itoa(e.port), "-l", "warning")
	start(t, "envoy", cmd, false)
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/ready", e.admin), 30*time.Second)
}

// EnvoyConfig is the bootstrap at path (envoy/envoy.yaml) with the
// listener on 127.0.0.1:port, the admin interface on 127.0.0.1:admin, and
// the clusters mcp_upstream and mcpauthz pointing at upstream and authz
// (host:port), as JSON for `envoy -c`. Nothing else changes.
func EnvoyConfig(path string, port, admin int, upstream, authz string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var bs bootstrapv3.Bootstrap
	if _, err := envoycheck.DecodeAs(context.Background(), raw, &bs); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	set := func(a *corev3.SocketAddress, hostport string) error {
		host, p, err := net.SplitHostPort(hostport)
		if err != nil {
			return err
		}
		n, err := strconv.Atoi(p)
		if err != nil {
			return err
		}
		a.Address = host
		a.PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: uint32(n)}
		return nil
	}
	if a := bs.GetAdmin().GetAddress().GetSocketAddress(); a != nil {
		if err := set(a, fmt.Sprintf("127.0.0.1:%d", admin)); err != nil {
			return nil, err
		}
	}
	lis := bs.GetStaticResources().GetListeners()
	if len(lis) != 1 || lis[0].GetAddress().GetSocketAddress() == nil {
		return nil, fmt.Errorf("%s: want exactly one listener with a socket address, have %d", path, len(lis))
	}
	if err := set(lis[0].GetAddress().GetSocketAddress(), fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
		return nil, err
	}
	targets := map[string]string{"mcp_upstream": upstream, "mcpauthz": authz}
	for _, c := range bs.GetStaticResources().GetClusters() {
		target, ok := targets[c.GetName()]
		if !ok {
			continue
		}
		delete(targets, c.GetName())
		eps := c.GetLoadAssignment().GetEndpoints()
		if len(eps) != 1 || len(eps[0].GetLbEndpoints()) != 1 {
			return nil, fmt.Errorf("%s: cluster %s: want one endpoint", path, c.GetName())
		}
		a := eps[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		if a == nil {
			return nil, fmt.Errorf("%s: cluster %s: the endpoint has no socket address", path, c.GetName())
		}
		if err := set(a, target); err != nil {
			return nil, err
		}
	}
	if len(targets) > 0 {
		return nil, fmt.Errorf("%s: no clusters %v", path, targets)
	}
	return protojson.MarshalOptions{Multiline: true}.Marshal(&bs)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
