// Package deploy holds the deployment configuration of mcpauthz: Kubernetes
// (kustomize base and example overlay), Istio, Envoy Gateway and the Docker
// Compose extras. It has no code.
//
// Its tests decode every manifest strictly (unknown fields are errors) into
// the upstream API types and cross-check the manifests against each other,
// against the Envoy configurations, the Dockerfile, docker-compose.yaml and
// mcpauthz's own configuration and policy (go test ./deploy/). The API
// modules they need (k8s.io/api, istio.io/api, sigs.k8s.io/gateway-api,
// github.com/envoyproxy/gateway, prometheus-operator) are imported by
// _test.go files only, so they never reach the mcpauthz binary.
package deploy
