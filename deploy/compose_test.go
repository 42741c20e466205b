package deploy

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func readRoot(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decodeKnownFields(t *testing.T, rel string, v any) {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(readRoot(t, rel)))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
}

// envoyVersion is the one pinned Envoy version.
func envoyVersion(t *testing.T) string {
	t.Helper()
	return strings.TrimSpace(string(readRoot(t, "envoy/ENVOY_VERSION")))
}

// dockerfile is a parsed Dockerfile: instructions with continuation lines
// joined and comments dropped.
type instruction struct{ cmd, args string }

func parseDockerfile(t *testing.T, rel string) []instruction {
	t.Helper()
	var out []instruction
	var cur string
	for _, line := range strings.Split(string(readRoot(t, rel)), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur == "") {
			continue
		}
		if s, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur += s + " "
			continue
		}
		cur += trimmed
		cmd, args, _ := strings.Cut(cur, " ")
		out = append(out, instruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur = ""
	}
	return out
}

// args expands ${NAME} from ARG defaults.
func expand(s string, args map[string]string) string {
	return os.Expand(s, func(k string) string { return args[k] })
}

func TestDockerfile(t *testing.T) {
	ins := parseDockerfile(t, "Dockerfile")
	args := map[string]string{}
	var froms []string
	var runs, user, expose, entrypoint string
	for _, in := range ins {
		switch in.cmd {
		case "ARG":
			for _, a := range strings.Fields(in.args) {
				k, v, _ := strings.Cut(a, "=")
				if v != "" {
					args[k] = v
				}
			}
		case "FROM":
			f := strings.Fields(expand(in.args, args))
			f = slices.DeleteFunc(f, func(s string) bool { return strings.HasPrefix(s, "--platform") })
			froms = append(froms, f[0])
		case "RUN":
			runs += in.args + "\n"
		case "USER":
			user = in.args
		case "EXPOSE":
			expose = in.args
		case "ENTRYPOINT":
			entrypoint = in.args
		}
	}
	if len(froms) < 2 {
		t.Fatalf("FROM %v: want a multi-stage build", froms)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\S+)`).FindSubmatch(readRoot(t, "go.mod"))
	if img := froms[0]; !strings.HasPrefix(img, "golang:") || !strings.HasPrefix(strings.TrimPrefix(img, "golang:"), string(goVersion[1])) {
		t.Errorf("build stage %s: want golang:%s (go.mod's go version)", img, goVersion[1])
	}
	if last := froms[len(froms)-1]; last != "gcr.io/distroless/static-debian12:nonroot" {
		t.Errorf("runtime stage %s", last)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-tags "${BUILD_TAGS}"`, "./cmd/mcpauthz"} {
		if !strings.Contains(runs, want) {
			t.Errorf("the build does not use %s", want)
		}
	}
	// The image is the server build of make build: the slim one.
	if mk := regexp.MustCompile(`(?m)^SLIM_TAGS := (\S+)`).FindSubmatch(readRoot(t, "Makefile")); mk == nil || args["BUILD_TAGS"] != string(mk[1]) {
		t.Errorf("ARG BUILD_TAGS=%q, want the Makefile's SLIM_TAGS (%q)", args["BUILD_TAGS"], mk)
	}
	if u, _, _ := strings.Cut(user, ":"); u != strconv.Itoa(nonRootUID) {
		t.Errorf("USER %s, want %d (the pods' runAsUser)", user, nonRootUID)
	}
	if f := strings.Fields(expose); !slices.Contains(f, "9191") || !slices.Contains(f, "9192") {
		t.Errorf("EXPOSE %s", expose)
	}
	if !regexp.MustCompile(`^\["[^"]*/mcpauthz"\]$`).MatchString(entrypoint) {
		t.Errorf("ENTRYPOINT %s", entrypoint)
	}

	// .dockerignore must not drop anything the build needs.
	var ignored []string
	for _, l := range strings.Split(string(readRoot(t, ".dockerignore")), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			ignored = append(ignored, l)
		}
	}
	for _, need := range []string{"go.mod", "go.sum", "embed.go", "cmd", "internal", "extauthz", "policy", "rego"} {
		for _, pat := range ignored {
			if ok, _ := filepath.Match(pat, need); ok {
				t.Errorf(".dockerignore %q excludes %s, which the build needs", pat, need)
			}
		}
	}
}

// hostPort splits "host:port".
func hostPort(t *testing.T, s string) (string, int) {
	t.Helper()
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	n, _ := strconv.Atoi(p)
	return h, n
}

func TestCompose(t *testing.T) {
	var c composeFile
	decodeKnownFields(t, "docker-compose.yaml", &c)
	for _, name := range []string{"envoy", "mcpauthz", "mcp-server", "prometheus"} {
		if _, ok := c.Services[name]; !ok {
			t.Fatalf("no service %s", name)
		}
	}
	for name, s := range c.Services {
		if (s.Image == "") == (s.Build == nil) {
			t.Errorf("%s: want exactly one of image and build", name)
		}
		if s.Build != nil {
			mustExist(t, filepath.Join(s.Build.Context, s.Build.Dockerfile))
		}
		for _, v := range s.Volumes {
			if host, _, _ := strings.Cut(v, ":"); strings.HasPrefix(host, ".") {
				mustExist(t, host)
			}
		}
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("%s publishes %s on every host interface", name, p)
			}
		}
		for _, d := range s.DependsOn {
			if _, ok := c.Services[d]; !ok {
				t.Errorf("%s depends on unknown service %s", name, d)
			}
		}
	}

	// Envoy: the pinned version, and envoy/envoy.yaml.
	envoy := c.Services["envoy"]
	if want := "envoyproxy/envoy:" + envoyVersion(t); envoy.Image != want {
		t.Errorf("envoy image %s, want %s (envoy/ENVOY_VERSION)", envoy.Image, want)
	}
	if !slices.ContainsFunc(envoy.Volumes, func(v string) bool { return strings.HasPrefix(v, "./envoy/envoy.yaml:") }) {
		t.Error("envoy does not mount envoy/envoy.yaml")
	}

	// mcpauthz: real serve flags, listening where Envoy and Prometheus look.
	m := c.Services["mcpauthz"]
	if len(m.Command) == 0 || m.Command[0] != "serve" {
		t.Fatalf("mcpauthz command %v", m.Command)
	}
	// The image is the slim server build unless BUILD_TAGS says otherwise;
	// --dev needs the full build.
	if slices.Contains(m.Command, "--dev") {
		if tags, ok := m.Build.Args["BUILD_TAGS"]; !ok || strings.Contains(tags, "mcpauthz_slim") {
			t.Errorf("mcpauthz runs serve --dev but builds BUILD_TAGS=%q (set: %v): the slim build has no --dev; want BUILD_TAGS \"\"", tags, ok)
		}
	}
	serveSrc := append(readRoot(t, "cmd/mcpauthz/serve.go"), readRoot(t, "cmd/mcpauthz/dev.go")...)
	listen := map[string]int{}
	for i, a := range m.Command[1:] {
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") {
			continue
		}
		if !regexp.MustCompile(`fs\.\w+\((?:&[\w.]+, )?"` + regexp.QuoteMeta(name) + `"`).Match(serveSrc) {
			t.Errorf("mcpauthz serve has no flag --%s", name)
		}
		if name == "grpc-addr" || name == "http-addr" {
			host, port := hostPort(t, m.Command[i+2])
			if host != "0.0.0.0" {
				t.Errorf("--%s %s: other containers cannot reach a loopback address", name, m.Command[i+2])
			}
			listen[name] = port
		}
	}

	// The Envoy clusters reach compose services on the ports they listen on.
	var bs struct {
		StaticResources struct {
			Clusters []struct {
				Name           string `yaml:"name"`
				LoadAssignment struct {
					Endpoints []struct {
						LbEndpoints []struct {
							Endpoint struct {
								Address struct {
									SocketAddress struct {
										Address   string `yaml:"address"`
										PortValue int    `yaml:"port_value"`
									} `yaml:"socket_address"`
								} `yaml:"address"`
							} `yaml:"endpoint"`
						} `yaml:"lb_endpoints"`
					} `yaml:"endpoints"`
				} `yaml:"load_assignment"`
			} `yaml:"clusters"`
		} `yaml:"static_resources"`
	}
	if err := yaml.Unmarshal(readRoot(t, "envoy/envoy.yaml"), &bs); err != nil {
		t.Fatal(err)
	}
	mcpPort := mcpServerPort(t, c)
	want := map[string]int{"mcpauthz": listen["grpc-addr"], "mcp-server": mcpPort}
	for _, cl := range bs.StaticResources.Clusters {
		for _, e := range cl.LoadAssignment.Endpoints {
			for _, lb := range e.LbEndpoints {
				sa := lb.Endpoint.Address.SocketAddress
				p, ok := want[sa.Address]
				switch {
				case !ok:
					t.Errorf("envoy.yaml cluster %s: %s is not a compose service", cl.Name, sa.Address)
				case p != sa.PortValue:
					t.Errorf("envoy.yaml cluster %s: %s:%d, but the service listens on %d", cl.Name, sa.Address, sa.PortValue, p)
				}
			}
		}
	}

	// Prometheus scrapes mcpauthz's HTTP port.
	var prom prometheusConfig
	decodeKnownFields(t, "deploy/compose/prometheus.yml", &prom)
	scraped := false
	for _, sc := range prom.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				host, port := hostPort(t, target)
				if host == "mcpauthz" && port == listen["http-addr"] && sc.MetricsPath == "/metrics" {
					scraped = true
				}
			}
		}
	}
	if !scraped {
		t.Errorf("Prometheus does not scrape mcpauthz:%d/metrics", listen["http-addr"])
	}
}

// mcpServerPort is the port the example MCP server listens on (its
// Dockerfile's ENV PORT), which compose must expose.
func mcpServerPort(t *testing.T, c composeFile) int {
	t.Helper()
	s := c.Services["mcp-server"]
	ins := parseDockerfile(t, filepath.Join(s.Build.Context, s.Build.Dockerfile))
	port := 0
	for _, in := range ins {
		switch in.cmd {
		case "ENV":
			if v, ok := strings.CutPrefix(in.args, "PORT="); ok {
				port, _ = strconv.Atoi(v)
			}
		case "FROM":
			if !strings.HasPrefix(in.args, "node:") {
				t.Errorf("mcp-server image %s", in.args)
			}
		case "RUN":
			if !regexp.MustCompile(`@modelcontextprotocol/server-everything@\d`).MatchString(in.args) {
				t.Errorf("the example MCP server is not pinned: %s", in.args)
			}
		}
	}
	if port == 0 || !slices.Contains(s.Expose, strconv.Itoa(port)) {
		t.Errorf("mcp-server listens on %d (ENV PORT) and exposes %v", port, s.Expose)
	}
	return port
}

// TestDocs: the documentation names the pinned versions, and its relative
// links resolve.
func TestDocs(t *testing.T) {
	v := envoyVersion(t)
	minor := v[:strings.LastIndexByte(v, '.')]
	for _, f := range []string{"docs/deployment.md", "envoy/README.md", "README.md"} {
		doc := string(readRoot(t, f))
		if !strings.Contains(doc, minor) {
			t.Errorf("%s does not mention Envoy %s (envoy/ENVOY_VERSION)", f, minor)
		}
		if f == "README.md" {
			continue // the top-level README links the code of other packages too
		}
		for _, m := range regexp.MustCompile(`\]\(([^)#\s]+)(#[^)]*)?\)`).FindAllStringSubmatch(doc, -1) {
			link := m[1]
			if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
				continue
			}
			if _, err := os.Stat(filepath.Join(root, filepath.Dir(f), link)); err != nil {
				t.Errorf("%s: broken link %s", f, link)
			}
		}
	}
	dep := string(readRoot(t, "docs/deployment.md"))
	for _, want := range []string{"Istio 1.32", "Envoy Gateway v1.9", fmt.Sprintf("Envoy %s", minor)} {
		if !strings.Contains(dep, want) {
			t.Errorf("docs/deployment.md does not mention %q", want)
		}
	}
}
