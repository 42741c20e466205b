package mcpauthz

import (
	"os"
	"strings"
	"testing"
)

// TestModuleHasNoDeploymentDependencies: the main module lists only what
// the binary and its own tests use. The Kubernetes, Istio, Gateway API,
// kustomize and Prometheus server modules that the deployment assets are
// checked with belong to deploy/go.mod.
func TestModuleHasNoDeploymentDependencies(t *testing.T) {
	b, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		mod := f[0]
		if mod == "require" && len(f) > 1 {
			mod = f[1]
		}
		for _, p := range []string{"k8s.io/", "sigs.k8s.io/", "istio.io/", "github.com/prometheus/prometheus", "github.com/prometheus-operator/"} {
			if strings.HasPrefix(mod, p) {
				t.Errorf("go.mod requires %s: deployment-only dependencies belong to deploy/go.mod", mod)
			}
		}
	}
	if _, err := os.Stat("deploy/go.mod"); err != nil {
		t.Errorf("deploy/go.mod: %v", err)
	}
}
