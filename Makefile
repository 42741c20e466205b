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

.PHONY: build
build: ## Build bin/mcpauthz (static)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/mcpauthz

.PHONY: run
run: ## Run the server on its embedded default (development mode: local issuer, default policy)
	$(GO) run ./cmd/mcpauthz serve --dev

.PHONY: test
test: vet ## Run every test (Go and Rego) with the race detector
	$(GO) test -race -shuffle=on -count=1 ./...

.PHONY: vet
vet: ## go vet and gofmt check
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

.PHONY: fmt
fmt: ## Format the code
	gofmt -w $$(git ls-files '*.go')

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $$pkg; \
	  done; done

.PHONY: bench
bench: ## Run the Go benchmarks (BENCHCOUNT times, for benchstat)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count $(BENCHCOUNT) ./... | tee bench.out

.PHONY: e2e
e2e: ## End-to-end test through a real Envoy (needs `envoy` on PATH)
	@command -v envoy >/dev/null || { echo "e2e: no envoy binary on PATH; skipping"; exit 0; }
	$(GO) test -tags e2e -count=1 ./test/e2e/...

.PHONY: check
check: vet test ## Everything cheap, then fail if the tree changed
	@git diff --exit-code
