package deploy

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

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

// Envoy Gateway v1.9.1 API subset.
//
// github.com/envoyproxy/gateway/api/v1alpha1 is not imported: `go get
// github.com/envoyproxy/gateway@v1.9.1` upgrades eight modules the mcpauthz
// binary links (go-grpc-middleware/v2, go-control-plane, fatih/color, ...) and
// pulls a 290-line go.mod. These types copy, with the same JSON names and Go
// types, the fields our manifests use from api/v1alpha1
// (securitypolicy_types.go, ext_auth_types.go, cors_types.go,
// clienttrafficpolicy_types.go, shared_types.go, timeout_types.go,
// connection_types.go at v1.9.1); shared types come from
// sigs.k8s.io/gateway-api as upstream does. Decoding is strict: using a field
// outside the subset fails the test until it is copied here. The enums and
// patterns the CRD enforces on these fields are checked in the tests.

type egSecurityPolicy struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		TargetRefs []gwapiv1.LocalPolicyTargetReferenceWithSectionName `json:"targetRefs,omitempty"`
		CORS       *egCORS                                             `json:"cors,omitempty"`
		ExtAuth    *egExtAuth                                          `json:"extAuth,omitempty"`
	} `json:"spec"`
}

type egCORS struct {
	AllowOrigins     []string          `json:"allowOrigins,omitempty"`
	AllowMethods     []string          `json:"allowMethods,omitempty"`
	AllowHeaders     []string          `json:"allowHeaders,omitempty"`
	ExposeHeaders    []string          `json:"exposeHeaders,omitempty"`
	MaxAge           *gwapiv1.Duration `json:"maxAge,omitempty"`
	AllowCredentials *bool             `json:"allowCredentials,omitempty"`
}

type egExtAuth struct {
	GRPC                 *egBackendCluster `json:"grpc,omitempty"`
	HeadersToExtAuth     []string          `json:"headersToExtAuth,omitempty"`
	BodyToExtAuth        *egBodyToExtAuth  `json:"bodyToExtAuth,omitempty"`
	Timeout              *gwapiv1.Duration `json:"timeout,omitempty"`
	FailOpen             *bool             `json:"failOpen,omitempty"`
	RecomputeRoute       *bool             `json:"recomputeRoute,omitempty"`
	IncludeRouteMetadata *bool             `json:"includeRouteMetadata,omitempty"`
	StatusOnError        *int32            `json:"statusOnError,omitempty"`
}

type egBodyToExtAuth struct {
	MaxRequestBytes uint32 `json:"maxRequestBytes"`
}

type egBackendCluster struct {
	BackendRefs []egBackendRef `json:"backendRefs,omitempty"`
}

type egBackendRef struct {
	gwapiv1.BackendObjectReference `json:",inline"`
	Weight                         *int32 `json:"weight,omitempty"`
}

type egClientTrafficPolicy struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		TargetRefs []gwapiv1.LocalPolicyTargetReferenceWithSectionName `json:"targetRefs,omitempty"`
		Headers    *struct {
			WithUnderscoresAction *string `json:"withUnderscoresAction,omitempty"`
			EarlyRequestHeaders   *struct {
				Set    []gwapiv1.HTTPHeader `json:"set,omitempty"`
				Add    []gwapiv1.HTTPHeader `json:"add,omitempty"`
				Remove []string             `json:"remove,omitempty"`
			} `json:"earlyRequestHeaders,omitempty"`
		} `json:"headers,omitempty"`
		Timeout *struct {
			HTTP *struct {
				RequestReceivedTimeout *gwapiv1.Duration `json:"requestReceivedTimeout,omitempty"`
				IdleTimeout            *gwapiv1.Duration `json:"idleTimeout,omitempty"`
				StreamIdleTimeout      *gwapiv1.Duration `json:"streamIdleTimeout,omitempty"`
			} `json:"http,omitempty"`
		} `json:"timeout,omitempty"`
		Connection *struct {
			BufferLimit *resource.Quantity `json:"bufferLimit,omitempty"`
		} `json:"connection,omitempty"`
	} `json:"spec"`
}

// egStatusOnError is the CRD's enum for extAuth.statusOnError (v1.9.1).
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
