# syntax=docker/dockerfile:1
# mcpauthz container image: a static binary on distroless, running as non-root.
#   docker build -t mcpauthz .                       (or: docker compose build)
#   docker build --build-arg VERSION=v0.1.0 -t registry.example.com/mcpauthz:v0.1.0 .
# Checked by `go test ./deploy/` (Go version = go.mod, user = the Kubernetes
# runAsUser, ports, entrypoint).

ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# BUILD_TAGS: the image is the slim server build (no serve --dev, no
# validate --envoy: a quarter less binary and resident memory); an empty
# BUILD_TAGS builds every command (docker-compose.yaml, which runs --dev).
ARG TARGETOS TARGETARCH VERSION=dev BUILD_TAGS=mcpauthz_slim
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -tags "${BUILD_TAGS}" -ldflags "-s -w -X main.version=${VERSION}" -o /out/mcpauthz ./cmd/mcpauthz

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/mcpauthz /usr/local/bin/mcpauthz
USER 65532:65532
# 9191 ext_authz gRPC, 9192 metadata/health/metrics
EXPOSE 9191 9192
ENTRYPOINT ["/usr/local/bin/mcpauthz"]
CMD ["serve", "--config", "/etc/mcpauthz/config.yaml"]
