package deploy

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	sigsyaml "sigs.k8s.io/yaml"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/mcpauthz/mcpauthz/internal/app"
	"github.com/mcpauthz/mcpauthz/internal/config"
	"github.com/mcpauthz/mcpauthz/policy"
)

const (
	baseDir    = "deploy/kubernetes/base"
	overlayDir = "deploy/kubernetes/overlays/example"
	// nonRootUID is the distroless "nonroot" user: the Dockerfile's USER
	// and the pods' runAsUser.
	nonRootUID = 65532
)

func mustExist(t *testing.T, rel string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(filepath.Join(root, rel))
	if err != nil {
		t.Errorf("%s does not exist", rel)
	}
	return fi
}

// TestKustomizations: every file a kustomization names exists, and every
// manifest of the base is listed (nothing forgotten).
func TestKustomizations(t *testing.T) {
	for _, dir := range []string{baseDir, overlayDir} {
		k := load[kustomization](t, dir+"/kustomization.yaml")
		listed := map[string]bool{"kustomization.yaml": true}
		for _, r := range k.Resources {
			listed[r] = true
			if fi := mustExist(t, filepath.Join(dir, r)); fi != nil && fi.IsDir() {
				kustomizationFile(t, filepath.Join(dir, r))
			}
		}
		for _, g := range k.ConfigMapGenerator {
			for _, f := range g.Files {
				if _, path, ok := strings.Cut(f, "="); ok { // "key=path"
					f = path
				}
				listed[f] = true
				mustExist(t, filepath.Join(dir, f))
			}
		}
		for _, p := range k.Patches {
			if p.Path != "" {
				listed[p.Path] = true
				mustExist(t, filepath.Join(dir, p.Path))
			}
		}
		files, _ := filepath.Glob(filepath.Join(root, dir, "*.yaml"))
		for _, f := range files {
			rel, _ := filepath.Rel(filepath.Join(root, dir), f)
			if !listed[filepath.ToSlash(rel)] {
				t.Errorf("%s/%s is not used by its kustomization.yaml", dir, rel)
			}
		}
	}
}

// kustomizationFile returns the kustomization of dir (relative to root):
// kustomization.yaml, or Kustomization as rego/ names it so that policy
// loaders skip it.
func kustomizationFile(t *testing.T, dir string) string {
	t.Helper()
	for _, name := range []string{"kustomization.yaml", "Kustomization"} {
		if _, err := os.Stat(filepath.Join(root, dir, name)); err == nil {
			return filepath.Join(dir, name)
		}
	}
	t.Errorf("%s has no kustomization.yaml or Kustomization", dir)
	return filepath.Join(dir, "kustomization.yaml")
}

// generators returns the ConfigMap generators of the kustomization in dir
// and of the kustomizations it includes, by name.
func generators(t *testing.T, dir string) map[string]kustomizeGenerator {
	t.Helper()
	k := load[kustomization](t, kustomizationFile(t, dir))
	gens := map[string]kustomizeGenerator{}
	for _, g := range k.ConfigMapGenerator {
		gens[g.Name] = g
	}
	for _, r := range k.Resources {
		if fi, err := os.Stat(filepath.Join(root, dir, r)); err == nil && fi.IsDir() {
			for name, g := range generators(t, filepath.Join(dir, r)) {
				gens[name] = g
			}
		}
	}
	return gens
}

func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
		if a == "--"+name && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

func matches(t *testing.T, what string, sel *metav1.LabelSelector, set map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return false
	}
	if s.Empty() {
		t.Errorf("%s: empty selector", what)
	}
	return s.Matches(labels.Set(set))
}

// TestKubernetesBase cross-checks the base manifests: selectors, ports and
// probes, mounts against the configuration, shutdown timing, hardening.
func TestKubernetesBase(t *testing.T) {
	k := load[kustomization](t, baseDir+"/kustomization.yaml")
	dep := load[appsv1.Deployment](t, baseDir+"/deployment.yaml")
	svcs := loadAll[corev1.Service](t, baseDir+"/service.yaml")
	sa := load[corev1.ServiceAccount](t, baseDir+"/serviceaccount.yaml")
	pdb := load[policyv1.PodDisruptionBudget](t, baseDir+"/pdb.yaml")
	np := load[networkingv1.NetworkPolicy](t, baseDir+"/networkpolicy.yaml")
	sm := load[monitoringv1.ServiceMonitor](t, baseDir+"/servicemonitor.yaml")

	pod := dep.Spec.Template
	podLabels := pod.Labels
	if !matches(t, "Deployment selector", dep.Spec.Selector, podLabels) {
		t.Error("the Deployment's selector does not match its pod template")
	}
	if !matches(t, "PodDisruptionBudget selector", pdb.Spec.Selector, podLabels) {
		t.Error("the PodDisruptionBudget does not select the pods")
	}
	if !matches(t, "NetworkPolicy podSelector", &np.Spec.PodSelector, podLabels) {
		t.Error("the NetworkPolicy does not select the pods")
	}
	if len(pod.Spec.TopologySpreadConstraints) == 0 {
		t.Error("no topologySpreadConstraints")
	}
	for _, c := range pod.Spec.TopologySpreadConstraints {
		if !matches(t, "topology spread", c.LabelSelector, podLabels) {
			t.Errorf("topology spread on %s does not select the pods", c.TopologyKey)
		}
	}
	if r := dep.Spec.Replicas; r == nil || *r < 2 {
		t.Error("fewer than 2 replicas: every request needs an authorizer")
	}
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() >= int(*dep.Spec.Replicas) {
		t.Error("the PodDisruptionBudget allows every replica to go")
	}

	// The container and its ports.
	var c *corev1.Container
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == "mcpauthz" {
			c = &pod.Spec.Containers[i]
		}
	}
	if c == nil {
		t.Fatal("no container named mcpauthz")
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["grpc-authz"] != 9191 || ports["http"] != 9192 {
		t.Errorf("container ports %v, want grpc-authz 9191 and http 9192", ports)
	}
	if !slices.ContainsFunc(k.Images, func(i kustomizeImage) bool { return i.Name == c.Image }) {
		t.Errorf("image %q is not in the kustomization's images (overlays could not set it)", c.Image)
	}

	// Services.
	byName := map[string]*corev1.Service{}
	for _, s := range svcs {
		byName[s.Name] = s
		if !labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(podLabels)) || len(s.Spec.Selector) == 0 {
			t.Errorf("Service %s does not select the pods", s.Name)
		}
		for _, p := range s.Spec.Ports {
			if _, ok := ports[p.TargetPort.String()]; !ok {
				t.Errorf("Service %s port %s targets %q, not a container port", s.Name, p.Name, p.TargetPort.String())
			}
			if p.Name == "grpc-authz" && (p.Port != 9191 || p.AppProtocol == nil || *p.AppProtocol != "grpc") {
				t.Errorf("Service %s: grpc-authz must be port 9191 with appProtocol grpc (Istio needs it to use HTTP/2)", s.Name)
			}
		}
	}
	main, headless := byName["mcpauthz"], byName["mcpauthz-headless"]
	if main == nil || headless == nil {
		t.Fatalf("want Services mcpauthz and mcpauthz-headless, got %v", byName)
	}
	if headless.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Error("mcpauthz-headless is not headless")
	}
	if !slices.ContainsFunc(main.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "http" && p.Port == 9192 }) {
		t.Error("Service mcpauthz has no http port 9192")
	}

	// ServiceMonitor: the main Service only, on a port it has.
	if !matches(t, "ServiceMonitor selector", &sm.Spec.Selector, main.Labels) {
		t.Error("the ServiceMonitor does not select Service mcpauthz")
	}
	if matches(t, "ServiceMonitor selector", &sm.Spec.Selector, headless.Labels) {
		t.Error("the ServiceMonitor also selects the headless Service: every pod would be scraped twice")
	}
	for _, e := range sm.Spec.Endpoints {
		if !slices.ContainsFunc(main.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == e.Port }) || e.Path != "/metrics" {
			t.Errorf("ServiceMonitor endpoint %s%s: want a port of Service mcpauthz and /metrics", e.Port, e.Path)
		}
	}

	// NetworkPolicy: named ports exist; ext_authz is reachable.
	grpcOpen := false
	for _, r := range np.Spec.Ingress {
		for _, p := range r.Ports {
			if p.Port != nil && p.Port.String() != "" && ports[p.Port.String()] == 0 {
				t.Errorf("NetworkPolicy port %s is not a container port", p.Port.String())
			}
			grpcOpen = grpcOpen || p.Port.String() == "grpc-authz"
		}
	}
	if !grpcOpen {
		t.Error("the NetworkPolicy lets nobody reach ext_authz")
	}

	// Probes on the HTTP endpoint.
	for _, pr := range []struct {
		name string
		p    *corev1.Probe
		path string
	}{{"readiness", c.ReadinessProbe, "/readyz"}, {"liveness", c.LivenessProbe, "/healthz"}} {
		if pr.p == nil || pr.p.HTTPGet == nil || pr.p.HTTPGet.Path != pr.path || ports[pr.p.HTTPGet.Port.String()] != 9192 {
			t.Errorf("%s probe: want GET %s on the http port (9192)", pr.name, pr.path)
		}
	}

	// Arguments, shutdown timing.
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Fatalf("args %v: want serve ...", c.Args)
	}
	cfgPath, ok := flagValue(c.Args, "config")
	if !ok {
		t.Fatal("no --config")
	}
	// The flags override shutdown.drain_delay and shutdown.timeout.
	cfg := loadConfig(t, baseDir+"/config.yaml")
	// Defaults as internal/app.Compile applies them.
	shutdown := durationFlag(t, c.Args, "shutdown-timeout", cmp.Or(cfg.Shutdown.Timeout.D(), 15*time.Second))
	drainDefault := min(5*time.Second, shutdown/3)
	if d := cfg.Shutdown.DrainDelay; d != nil {
		drainDefault = d.D()
	}
	drain := durationFlag(t, c.Args, "drain-delay", drainDefault)
	if drain <= 0 {
		t.Error("no drain delay: Envoys keep sending checks to a pod that has stopped accepting them")
	}
	// shutdown-timeout bounds the whole shutdown, from SIGTERM to the exit:
	// the drain, then the checks in flight.
	if shutdown-drain < 5*time.Second {
		t.Errorf("shutdown-timeout %v - drain-delay %v leaves the checks in flight less than 5s", shutdown, drain)
	}
	need := shutdown + 5*time.Second // and a margin for the kubelet
	if g := pod.Spec.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second < need {
		t.Errorf("terminationGracePeriodSeconds must be at least shutdown-timeout + 5s = %v", need)
	}

	// Mounts: --config and policy.paths are the generated ConfigMaps.
	gens := generators(t, baseDir)
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = v
	}
	mountOf := func(path string) (corev1.VolumeMount, corev1.Volume) {
		for _, m := range c.VolumeMounts {
			if m.MountPath == path {
				return m, volumes[m.Name]
			}
		}
		t.Errorf("nothing is mounted at %s", path)
		return corev1.VolumeMount{}, corev1.Volume{}
	}
	m, v := mountOf(cfgPath)
	if v.ConfigMap == nil || gens[v.ConfigMap.Name].Name == "" || !slices.Contains(gens[v.ConfigMap.Name].Files, m.SubPath) {
		t.Errorf("--config %s is not a file of a generated ConfigMap", cfgPath)
	}
	if len(cfg.Policy.Paths) != 1 {
		t.Fatalf("policy.paths %v: want the one mounted directory", cfg.Policy.Paths)
	}
	if _, v := mountOf(cfg.Policy.Paths[0]); v.ConfigMap == nil || gens[v.ConfigMap.Name].Name == "" {
		t.Errorf("policy.paths %s is not a generated ConfigMap", cfg.Policy.Paths[0])
	}
	for _, m := range c.VolumeMounts {
		if !m.ReadOnly && volumes[m.Name].EmptyDir == nil {
			t.Errorf("volume mount %s is writable", m.MountPath)
		}
	}
	for flag, want := range map[string]int32{cfg.GRPCAddr: 9191, cfg.HTTPAddr: 9192} {
		if _, port, _ := net.SplitHostPort(flag); port != fmt.Sprint(want) {
			t.Errorf("config address %s does not listen on the container port %d", flag, want)
		}
	}

	// Hardening (Pod Security Standard "restricted", which the overlay's
	// namespace enforces).
	psc, csc := pod.Spec.SecurityContext, c.SecurityContext
	switch {
	case psc == nil || csc == nil:
		t.Fatal("no securityContext")
	case psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot, psc.RunAsUser == nil || *psc.RunAsUser != nonRootUID:
		t.Errorf("pods must run as non-root user %d", nonRootUID)
	case psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Error("seccompProfile must be RuntimeDefault")
	case csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation:
		t.Error("allowPrivilegeEscalation must be false")
	case csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem:
		t.Error("readOnlyRootFilesystem must be true")
	case csc.Capabilities == nil || !slices.Equal(csc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(csc.Capabilities.Add) > 0:
		t.Error("capabilities must drop ALL and add none")
	}
	res := c.Resources
	if res.Requests.Cpu().IsZero() || res.Requests.Memory().IsZero() || res.Limits.Memory().IsZero() {
		t.Error("resources: want cpu and memory requests and a memory limit")
	}
	if pod.Spec.ServiceAccountName != sa.Name || sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Error("the pods must use the mcpauthz ServiceAccount, without a token")
	}
}

func durationFlag(t *testing.T, args []string, name string, def time.Duration) time.Duration {
	t.Helper()
	s, ok := flagValue(args, name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Errorf("--%s %q: %v", name, s, err)
	}
	return d
}

// policyDir lays out the files of the generated policy ConfigMap (the way
// the pod sees the mounted volume: one file per key) in a temporary
// directory.
func policyDir(t *testing.T) string {
	t.Helper()
	g, ok := generators(t, baseDir)["mcpauthz-policy"]
	if !ok {
		t.Fatal("no mcpauthz-policy ConfigMap generator")
	}
	dir := t.TempDir()
	for _, f := range g.Files {
		key, path, ok := strings.Cut(f, "=")
		if !ok {
			key, path = filepath.Base(f), f
		}
		b, err := os.ReadFile(filepath.Join(root, "rego", path))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, key), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// loadConfig parses an mcpauthz configuration with mcpauthz's own loader,
// with the mounted policy directory pointed at the generated ConfigMap's
// files.
func loadConfig(t *testing.T, file string) *config.Config {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, file))
	if err != nil {
		t.Fatal(err)
	}
	local := policyDir(t)
	cfg, err := config.Parse(file, bytes.ReplaceAll(raw, []byte("/etc/mcpauthz/policy"), []byte(local)))
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	for i, p := range cfg.Policy.Paths {
		if p == local {
			cfg.Policy.Paths[i] = "/etc/mcpauthz/policy"
		}
	}
	return cfg
}

// TestMcpauthzConfigs: every mcpauthz configuration under deploy/ compiles
// exactly as `mcpauthz serve` would compile it, against the generated policy.
func TestMcpauthzConfigs(t *testing.T) {
	local := policyDir(t)
	for _, f := range []string{baseDir + "/config.yaml", overlayDir + "/config.yaml"} {
		raw, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Parse(f, bytes.ReplaceAll(raw, []byte("/etc/mcpauthz/policy"), []byte(local)))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		rt, err := app.Compile(cfg, app.Options{Observe: true})
		if err != nil {
			t.Errorf("%s does not compile:\n%v", f, err)
			continue
		}
		rt.Close()
		if cfg.Upstream.ForwardToken {
			t.Errorf("%s: forward_token: MCP forbids token passthrough", f)
		}
	}
}

// TestKubernetesPolicy: the policy ConfigMap is generated from the embedded
// default policy itself, file for file: rego/Kustomization lists exactly
// the files policy.DefaultSource loads, so there is no copy to drift.
func TestKubernetesPolicy(t *testing.T) {
	g := generators(t, "rego")["mcpauthz-policy"]
	var listed []string
	for _, f := range g.Files {
		listed = append(listed, f)
	}
	var loaded []string
	src := policy.DefaultSource()
	for _, p := range src.Paths {
		err := fs.WalkDir(src.FS, p, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || strings.HasSuffix(path, "_test.rego") {
				return err
			}
			switch filepath.Ext(path) {
			case ".rego", ".json", ".yaml", ".yml":
				loaded = append(loaded, strings.TrimPrefix(path, "rego/"))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(listed)
	slices.Sort(loaded)
	if !slices.Equal(listed, loaded) {
		t.Errorf("rego/Kustomization generates %v, the embedded default policy is %v", listed, loaded)
	}
	if err := policy.Compile(context.Background(), policy.Source{Paths: []string{policyDir(t)}}); err != nil {
		t.Fatalf("the policy ConfigMap does not compile: %v", err)
	}
}

// TestKustomizeBuild renders the overlay with kustomize itself (the
// library kubectl kustomize is built on) and decodes the result strictly.
func TestKustomizeBuild(t *testing.T) {
	opts := krusty.MakeDefaultOptions()
	resMap, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), filepath.Join(root, overlayDir))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", overlayDir, err)
	}
	out, err := resMap.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(t.TempDir(), "rendered.yaml")
	if err := os.WriteFile(tmp, out, 0o600); err != nil {
		t.Fatal(err)
	}
	overlay := load[kustomization](t, overlayDir+"/kustomization.yaml")
	configMaps := map[string]bool{}
	configMapData := map[string]map[string]string{}
	var dep *appsv1.Deployment
	for _, d := range documents(t, tmp) {
		dec, ok := decoders[d.apiVersion+"/"+d.kind]
		if d.kind == "ConfigMap" {
			var cm corev1.ConfigMap
			if err := strict(d.raw, &cm); err != nil {
				t.Error(err)
			}
			configMaps[cm.Name] = true
			configMapData[cm.Name] = cm.Data
			continue
		}
		if !ok {
			t.Errorf("rendered %s %s: no decoder", d.apiVersion, d.kind)
			continue
		}
		if err := dec(d.raw); err != nil {
			t.Errorf("rendered %s: %v", d.kind, err)
		}
		var meta struct {
			Metadata metav1.ObjectMeta `json:"metadata"`
		}
		_ = sigsyaml.Unmarshal(d.raw, &meta)
		if d.kind != "Namespace" && meta.Metadata.Namespace != overlay.Namespace {
			t.Errorf("rendered %s %s in namespace %q, want %q", d.kind, meta.Metadata.Name, meta.Metadata.Namespace, overlay.Namespace)
		}
		if d.kind == "Deployment" {
			dep = new(appsv1.Deployment)
			_ = strict(d.raw, dep)
		}
	}
	if dep == nil {
		t.Fatal("no Deployment rendered")
	}
	for _, v := range dep.Spec.Template.Spec.Volumes {
		if v.ConfigMap != nil && !configMaps[v.ConfigMap.Name] {
			t.Errorf("volume %s references ConfigMap %s, which is not rendered", v.Name, v.ConfigMap.Name)
		}
	}
	// The rendered policy ConfigMap holds the embedded default policy.
	policyMaps := 0
	for name, data := range configMapData {
		if !strings.HasPrefix(name, "mcpauthz-policy-") {
			continue
		}
		policyMaps++
		for key, content := range data {
			want, err := os.ReadFile(filepath.Join(policyDir(t), key))
			if err != nil || string(want) != content {
				t.Errorf("rendered ConfigMap %s key %s differs from the embedded policy", name, key)
			}
		}
	}
	if policyMaps != 1 {
		t.Errorf("%d rendered policy ConfigMaps, want 1", policyMaps)
	}
	img := dep.Spec.Template.Spec.Containers[0].Image
	if want := overlay.Images[0].NewName + ":" + overlay.Images[0].NewTag; img != want {
		t.Errorf("image %s, want %s", img, want)
	}
}
