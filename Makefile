# mcpauthz — run `make help` for the targets.
GO        ?= go
BIN       ?= bin/mcpauthz
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
FUZZTIME  ?= 10s
BENCHTIME ?= 1s
BENCHCOUNT ?= 6

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# The server build (bin/mcpauthz, the container image) is slim: without
# serve --dev's authorization server and validate --envoy, a quarter of the
# binary, all of it resident (docs/performance.md). The full build has
# every command: make build-full, go install, go run (make run).
SLIM_TAGS := mcpauthz_slim

.PHONY: build
build: ## Build bin/mcpauthz, the slim server binary (static; no serve --dev, no validate --envoy)
	CGO_ENABLED=0 $(GO) build -trimpath -tags $(SLIM_TAGS) -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/mcpauthz

.PHONY: build-full
build-full: ## Build bin/mcpauthz with every command (serve --dev, validate --envoy)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/mcpauthz

.PHONY: run
run: ## Run the server on its embedded default (development mode: local issuer, default policy)
	$(GO) run ./cmd/mcpauthz serve --dev

# The deployment assets' tests live in their own module (deploy/go.mod), so
# that Kubernetes, Istio, Gateway API, kustomize and the Prometheus server
# stay out of the main module; every target below covers both.
MODULES := . deploy

.PHONY: test
test: vet test/interop/node/node_modules/.package-lock.json ## Run every test (Go and Rego) with the race detector, in both modules
	$(GO) test -race -shuffle=on -count=1 ./...
	$(GO) test -race -shuffle=on -count=1 -tags $(SLIM_TAGS) ./cmd/mcpauthz
	cd deploy && $(GO) test -race -shuffle=on -count=1 ./...

.PHONY: vet
vet: ## go vet and gofmt check
	@for m in $(MODULES); do echo "go vet ($$m)"; (cd $$m && $(GO) vet ./...) || exit 1; done
	@echo "go vet -tags $(SLIM_TAGS) ./cmd/..."; $(GO) vet -tags $(SLIM_TAGS) ./cmd/...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

.PHONY: fmt
fmt: ## Format the code
	gofmt -w $$(git ls-files '*.go')

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each
	FUZZTIME=$(FUZZTIME) GO=$(GO) .ci/fuzz

.PHONY: bench
bench: ## Run the Go benchmarks (BENCHCOUNT times, for benchstat)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count $(BENCHCOUNT) ./... | tee bench.out

.PHONY: e2e
e2e: ## End-to-end test through a real Envoy (needs `envoy` on PATH)
	@command -v envoy >/dev/null || { echo "e2e: no envoy binary on PATH; skipping"; exit 0; }
	$(GO) test -tags e2e -count=1 ./test/e2e/...

.PHONY: consent-screenshot
consent-screenshot: ## Regenerate docs/img/consent.png with headless Chromium (apt-get install -y chromium)
	$(GO) test -count=1 -run 'TestConsentPageInBrowser/approve' ./internal/devauth/ -args -update-screenshot

.PHONY: check
check: vet test ## Everything cheap, then fail if the tree changed
	@git diff --exit-code

# --- Interop test: the MCP TypeScript SDK and oidc-provider (test/interop) ---
INTEROP_NODE := test/interop/node

# npm ci whenever node_modules is missing or older than the lock file.
# Without npm the interop test skips itself (and fails under CI=true).
$(INTEROP_NODE)/node_modules/.package-lock.json: $(INTEROP_NODE)/package.json $(INTEROP_NODE)/package-lock.json
	@if command -v npm >/dev/null; then \
	  echo "npm ci in $(INTEROP_NODE)" && cd $(INTEROP_NODE) && npm ci --no-audit --no-fund && touch node_modules/.package-lock.json; \
	else echo "npm not found: test/interop will be skipped"; fi

.PHONY: test-interop
test-interop: $(INTEROP_NODE)/node_modules/.package-lock.json ## The end-to-end OAuth test with real MCP clients (npm ci first when needed)
	$(GO) test -race -count=1 ./test/interop/...

# --- Deployment: envoy/, deploy/, Dockerfile, docker-compose.yaml -----------
ENVOY_VERSION := $(shell cat envoy/ENVOY_VERSION)
ENVOY_IMAGE   ?= envoyproxy/envoy:$(ENVOY_VERSION)

.PHONY: manifests
manifests: ## Check every Envoy configuration and deployment manifest (kustomize build included)
	$(GO) test -count=1 ./internal/envoycheck/
	cd deploy && $(GO) test -count=1 ./...

.PHONY: envoy-validate
envoy-validate: ## Validate envoy/*.yaml with Envoy itself (envoy --mode validate; needs Docker)
	@command -v docker >/dev/null || { echo "envoy-validate: needs docker"; exit 1; }
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 1 \
	  -keyout "$$tmp/tls.key" -out "$$tmp/tls.crt" 2>/dev/null && chmod 644 "$$tmp/tls.key" && \
	for f in envoy.yaml envoy-tls.yaml; do \
	  echo "$(ENVOY_IMAGE) --mode validate envoy/$$f"; \
	  docker run --rm -v "$(CURDIR)/envoy/$$f:/etc/envoy/$$f:ro" -v "$$tmp:/etc/envoy/tls:ro" \
	    $(ENVOY_IMAGE) --mode validate -c /etc/envoy/$$f || exit 1; \
	done

# --- Load harness --------------------------------------------------------------
BENCH_ARGS ?=

.PHONY: bench-load
bench-load: ## Closed-loop load comparison against a do-nothing ext_authz server (see docs/performance.md)
	$(GO) run ./cmd/mcpauthz-bench --json bench-load.json $(BENCH_ARGS)

.PHONY: pgo
pgo: ## Refresh cmd/mcpauthz/default.pgo (profile-guided optimisation) from the load harness: an allow round and a 403 round, merged
	$(GO) run ./cmd/mcpauthz-bench --workloads hot --rounds 1 --duration 10s --cpuprofile pgo-hot.prof --profile-workload hot >/dev/null
	$(GO) run ./cmd/mcpauthz-bench --workloads forbidden --rounds 1 --duration 5s --cpuprofile pgo-forbidden.prof --profile-workload forbidden >/dev/null
	$(GO) tool pprof -proto pgo-hot.prof pgo-forbidden.prof > cmd/mcpauthz/default.pgo
	rm -f pgo-hot.prof pgo-forbidden.prof
