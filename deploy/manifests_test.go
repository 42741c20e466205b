package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	securityv1beta1 "istio.io/api/security/v1beta1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	sigsjson "sigs.k8s.io/json"
	sigsyaml "sigs.k8s.io/yaml"
)

// root is the repository root (the mcpauthz module), relative to this
// package.
const root = ".."

// document is one YAML document of a manifest file.
type document struct {
	file       string // relative to root
	line       int
	raw        []byte // this document alone
	apiVersion string
	kind       string
}

func (d document) String() string {
	return fmt.Sprintf("%s:%d (%s %s)", d.file, d.line, d.apiVersion, d.kind)
}

// documents splits a YAML file into its documents.
func documents(t *testing.T, file string) []document {
	t.Helper()
	path := file
	if !filepath.IsAbs(path) {
		path = filepath.Join(root, file)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []document
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if len(n.Content) == 0 {
			continue
		}
		raw, err := yaml.Marshal(&n)
		if err != nil {
			t.Fatal(err)
		}
		var tm struct {
			APIVersion string `yaml:"apiVersion"`
			Kind       string `yaml:"kind"`
		}
		_ = n.Decode(&tm)
		out = append(out, document{file: file, line: n.Content[0].Line, raw: raw, apiVersion: tm.APIVersion, kind: tm.Kind})
	}
	return out
}

// strict decodes YAML into v as the Kubernetes API server does: duplicate
// keys, unknown fields and case-mismatched field names are errors.
func strict(raw []byte, v any) error {
	js, err := sigsyaml.YAMLToJSONStrict(raw)
	if err != nil {
		return err
	}
	strictErrs, err := sigsjson.UnmarshalStrict(js, v, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

// load decodes the single document of file into a T.
func load[T any](t *testing.T, file string) *T {
	t.Helper()
	all := loadAll[T](t, file)
	if len(all) != 1 {
		t.Fatalf("%s: %d documents, want 1", file, len(all))
	}
	return all[0]
}

// loadAll decodes every document of file into a T.
func loadAll[T any](t *testing.T, file string) []*T {
	t.Helper()
	var out []*T
	for _, d := range documents(t, file) {
		v := new(T)
		if err := strict(d.raw, v); err != nil {
			t.Fatalf("%v: %v", d, err)
		}
		out = append(out, v)
	}
	return out
}

// istioObject is an Istio resource: Kubernetes envelope, protobuf spec.
type istioObject struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            json.RawMessage   `json:"spec"`
}

// loadIstio decodes an Istio resource: the envelope strictly, the spec with
// strict protojson into spec, in the camelCase field names Istio's CRD
// schemas require (protojson alone would also accept snake_case).
func loadIstio(t *testing.T, file string, spec proto.Message) *istioObject {
	t.Helper()
	o := load[istioObject](t, file)
	if err := protoJSONStrict(o.Spec, spec); err != nil {
		t.Fatalf("%s: spec: %v", file, err)
	}
	return o
}

func protoJSONStrict(js []byte, m proto.Message) error {
	if err := protojson.Unmarshal(js, m); err != nil {
		return err
	}
	var v any
	if err := json.Unmarshal(js, &v); err != nil {
		return err
	}
	return jsonNames(v, m.ProtoReflect().Descriptor(), "")
}

// jsonNames rejects proto field names written in snake_case where Istio's
// CRDs accept only the JSON (camelCase) name. Struct values (EnvoyFilter
// patches: Envoy's own snake_case API) are free-form.
func jsonNames(v any, md protoreflect.MessageDescriptor, path string) error {
	switch md.FullName() {
	case "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue", "google.protobuf.Any":
		return nil
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	var errs []error
	for k, val := range obj {
		fd := md.Fields().ByJSONName(k)
		if fd == nil {
			if fd = md.Fields().ByName(protoreflect.Name(k)); fd != nil && fd.JSONName() != k {
				errs = append(errs, fmt.Errorf("%s%s: write %q (Istio's CRD schema has only the JSON name)", path, k, fd.JSONName()))
			}
			continue
		}
		if fd.Message() == nil || fd.IsMap() {
			continue
		}
		if fd.IsList() {
			list, _ := val.([]any)
			for i, item := range list {
				errs = append(errs, jsonNames(item, fd.Message(), fmt.Sprintf("%s%s[%d].", path, k, i)))
			}
			continue
		}
		errs = append(errs, jsonNames(val, fd.Message(), path+k+"."))
	}
	return errors.Join(errs...)
}

// decoders decode one document strictly into its upstream type, by
// apiVersion/kind.
var decoders = map[string]func(raw []byte) error{
	"v1/Namespace":                                        k8s[corev1.Namespace],
	"v1/ServiceAccount":                                   k8s[corev1.ServiceAccount],
	"v1/Service":                                          k8s[corev1.Service],
	"apps/v1/Deployment":                                  k8s[appsv1.Deployment],
	"policy/v1/PodDisruptionBudget":                       k8s[policyv1.PodDisruptionBudget],
	"networking.k8s.io/v1/NetworkPolicy":                  k8s[networkingv1.NetworkPolicy],
	"monitoring.coreos.com/v1/ServiceMonitor":             k8s[monitoringv1.ServiceMonitor],
	"gateway.networking.k8s.io/v1/Gateway":                k8s[gwapiv1.Gateway],
	"gateway.networking.k8s.io/v1/HTTPRoute":              k8s[gwapiv1.HTTPRoute],
	"gateway.networking.k8s.io/v1/ReferenceGrant":         k8s[gwapiv1.ReferenceGrant],
	"gateway.envoyproxy.io/v1alpha1/SecurityPolicy":       k8s[egv1a1.SecurityPolicy],
	"gateway.envoyproxy.io/v1alpha1/ClientTrafficPolicy":  k8s[egv1a1.ClientTrafficPolicy],
	"gateway.envoyproxy.io/v1alpha1/EnvoyExtensionPolicy": k8s[egv1a1.EnvoyExtensionPolicy],
	"kustomize.config.k8s.io/v1beta1/Kustomization":       k8s[kustomization],
	"security.istio.io/v1/AuthorizationPolicy":            istio(func() proto.Message { return &securityv1beta1.AuthorizationPolicy{} }),
	"networking.istio.io/v1alpha3/EnvoyFilter":            istio(func() proto.Message { return &networkingv1alpha3.EnvoyFilter{} }),
}

func k8s[T any](raw []byte) error { return strict(raw, new(T)) }

func istio(spec func() proto.Message) func([]byte) error {
	return func(raw []byte) error {
		var o istioObject
		if err := strict(raw, &o); err != nil {
			return err
		}
		return protoJSONStrict(o.Spec, spec())
	}
}

// TestEveryManifestDecodesStrictly walks deploy/ and decodes every YAML file
// into the type it claims to be; a file no decoder covers is an error, so
// nothing ships unvalidated.
func TestEveryManifestDecodesStrictly(t *testing.T) {
	n := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ext := filepath.Ext(path); ext != ".yaml" && ext != ".yml" {
			return nil
		}
		file := filepath.ToSlash(filepath.Join("deploy", path))
		switch {
		case strings.HasSuffix(file, "/config.yaml"):
			n++ // mcpauthz configurations: TestMcpauthzConfigs
			return nil
		case strings.HasSuffix(file, "istiod-values.yaml"):
			n++ // TestIstio
			return nil
		case file == "deploy/compose/prometheus.yml":
			n++ // TestCompose
			return nil
		case strings.HasPrefix(file, "deploy/monitoring/"):
			n++ // Prometheus rules and their unit tests: validated in deploy/monitoring
			return nil
		}
		for _, doc := range documents(t, file) {
			dec, ok := decoders[doc.apiVersion+"/"+doc.kind]
			if !ok {
				t.Errorf("%v: no strict decoder for this kind: add one to decoders", doc)
				continue
			}
			if err := dec(doc.raw); err != nil {
				t.Errorf("%v: %v", doc, err)
			}
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 20 {
		t.Errorf("only %d manifests found", n)
	}
}

// TestStrictDecodingCatches makes sure the strict decoding really is strict.
func TestStrictDecodingCatches(t *testing.T) {
	cases := map[string]string{
		"unknown field":     "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {portz: []}\n",
		"wrong case":        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {Type: ClusterIP}\n",
		"duplicate key":     "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {type: ClusterIP, type: NodePort}\n",
		"wrong type":        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: http}]}\n",
		"unknown EG field":  "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: SecurityPolicy\nmetadata: {name: x}\nspec: {extAuth: {failClosed: true}}\n",
		"istio snake_case":  "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: x}\nspec: {action: CUSTOM, provider: {name: p}, rules: [{to: [{operation: {not_paths: [/x]}}]}]}\n",
		"istio enum":        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: x}\nspec: {action: CUSTOMER}\n",
		"istio unknown":     "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: x}\nspec: {configPatches: [{applyTo: HTTP_FILTER, patchh: {}}]}\n",
		"kustomize unknown": "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresource: [a.yaml]\n",
	}
	for name, in := range cases {
		var tm struct {
			APIVersion string `yaml:"apiVersion"`
			Kind       string `yaml:"kind"`
		}
		if err := yaml.Unmarshal([]byte(in), &tm); err != nil {
			t.Fatal(err)
		}
		if err := decoders[tm.APIVersion+"/"+tm.Kind]([]byte(in)); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

// TestServerBinaryHasNoManifestDeps: the API modules above are for these
// tests only; the mcpauthz binary must not link them.
func TestServerBinaryHasNoManifestDeps(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	out, err := exec.Command(goBin, "-C", root, "list", "-e", "-deps", "-f", "{{.ImportPath}}", "./cmd/mcpauthz").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	if !strings.Contains(string(out), "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3") {
		t.Fatalf("go list output does not look like mcpauthz's dependencies:\n%s", out)
	}
	bad := regexp.MustCompile(`^(k8s\.io/|istio\.io/|sigs\.k8s\.io/|github\.com/prometheus-operator/|github\.com/envoyproxy/gateway)`)
	for _, p := range strings.Fields(string(out)) {
		if bad.MatchString(p) {
			t.Errorf("cmd/mcpauthz links %s: validation-only modules must stay in _test.go files", p)
		}
	}
}
