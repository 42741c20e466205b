package deploy

// kustomization is the subset of kustomize's Kustomization
// (sigs.k8s.io/kustomize/api/types, kustomize v5) these manifests use;
// decoding is strict, so a field outside it fails the test. The rendered
// result is checked with `kubectl kustomize` where kubectl exists.
type kustomization struct {
	APIVersion         string                `json:"apiVersion"`
	Kind               string                `json:"kind"`
	Namespace          string                `json:"namespace,omitempty"`
	Resources          []string              `json:"resources,omitempty"`
	Labels             []kustomizeLabel      `json:"labels,omitempty"`
	ConfigMapGenerator []kustomizeGenerator  `json:"configMapGenerator,omitempty"`
	Images             []kustomizeImage      `json:"images,omitempty"`
	Patches            []kustomizePatch      `json:"patches,omitempty"`
	Components         []string              `json:"components,omitempty"`
	GeneratorOptions   *kustomizeGenOptions  `json:"generatorOptions,omitempty"`
	CommonAnnotations  map[string]string     `json:"commonAnnotations,omitempty"`
	Replicas           []kustomizeReplicaOpt `json:"replicas,omitempty"`
}

type kustomizeLabel struct {
	Pairs            map[string]string `json:"pairs"`
	IncludeSelectors bool              `json:"includeSelectors,omitempty"`
	IncludeTemplates bool              `json:"includeTemplates,omitempty"`
}

type kustomizeGenerator struct {
	Name     string               `json:"name"`
	Behavior string               `json:"behavior,omitempty"`
	Files    []string             `json:"files,omitempty"`
	Literals []string             `json:"literals,omitempty"`
	Options  *kustomizeGenOptions `json:"options,omitempty"`
}

type kustomizeGenOptions struct {
	DisableNameSuffixHash bool              `json:"disableNameSuffixHash,omitempty"`
	Labels                map[string]string `json:"labels,omitempty"`
}

type kustomizeImage struct {
	Name    string `json:"name"`
	NewName string `json:"newName,omitempty"`
	NewTag  string `json:"newTag,omitempty"`
	Digest  string `json:"digest,omitempty"`
}

type kustomizePatch struct {
	Path  string `json:"path,omitempty"`
	Patch string `json:"patch,omitempty"`
}

type kustomizeReplicaOpt struct {
	Name  string `json:"name"`
	Count int64  `json:"count"`
}

// egStatusOnError is the CRD's enum for extAuth.statusOnError and
// extProc[].statusOnError (v1.9.1; a kubebuilder marker, so not in the Go
// types).
var egStatusOnError = map[int32]bool{
	400: true, 401: true, 402: true, 403: true, 404: true, 405: true, 406: true, 407: true, 408: true, 409: true,
	410: true, 411: true, 412: true, 413: true, 414: true, 415: true, 416: true, 417: true, 421: true, 422: true,
	423: true, 424: true, 426: true, 428: true, 429: true, 431: true, 500: true, 501: true, 502: true, 503: true,
	504: true, 505: true, 506: true, 507: true, 508: true, 510: true, 511: true,
}

// composeFile is the part of the Compose specification docker-compose.yaml
// uses; decoding is strict.
type composeFile struct {
	Name     string                    `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Build       *composeBuild     `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	Ports       []string          `yaml:"ports"`
	Expose      []string          `yaml:"expose"`
	DependsOn   []string          `yaml:"depends_on"`
	Restart     string            `yaml:"restart"`
	ReadOnly    bool              `yaml:"read_only"`
	Tmpfs       []string          `yaml:"tmpfs"`
}

type composeBuild struct {
	Context    string            `yaml:"context"`
	Dockerfile string            `yaml:"dockerfile"`
	Args       map[string]string `yaml:"args"`
}

// prometheusConfig is the part of Prometheus' configuration file
// deploy/compose/prometheus.yml uses; decoding is strict.
type prometheusConfig struct {
	Global struct {
		ScrapeInterval string `yaml:"scrape_interval"`
	} `yaml:"global"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		MetricsPath   string `yaml:"metrics_path"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}
