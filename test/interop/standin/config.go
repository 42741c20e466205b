package standin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	earlyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/early_header_mutation/header_mutation/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/mcpauthz/mcpauthz/internal/envoycheck"
)

// Config is what the stand-in takes from an Envoy bootstrap: the ext_authz
// filter's settings and the few connection-manager settings that change
// what reaches mcpauthz and the upstream.
type Config struct {
	// Timeout of one Check call (grpc_service.timeout; Envoy's default is
	// 200ms).
	Timeout time.Duration
	// FailureModeAllow lets a request through when the check fails
	// (failure_mode_allow); FailureModeAllowHeaderAdd then marks it with
	// x-envoy-auth-failure-mode-allowed: true.
	FailureModeAllow          bool
	FailureModeAllowHeaderAdd bool
	// StatusOnError answers a failed check when failure mode does not
	// allow it (status_on_error; Envoy's default is 403).
	StatusOnError int
	// WithRequestBody buffers request bodies for the check
	// (with_request_body), up to MaxRequestBytes; a longer body is
	// answered 413 unless AllowPartialMessage, which sends the first
	// MaxRequestBytes with x-envoy-auth-partial-body: true. PackAsBytes
	// puts the body in raw_body, else in body (UTF-8 sanitised).
	WithRequestBody     bool
	MaxRequestBytes     int
	AllowPartialMessage bool
	PackAsBytes         bool
	// EncodeRawHeaders sends the headers as header_map (one entry per
	// header line, raw bytes) instead of the headers map (values of repeated
	// headers joined with ",").
	EncodeRawHeaders bool
	// ValidateMutations answers 500 when the check's OK response carries an
	// invalid header mutation (validate_mutations).
	ValidateMutations bool

	// RemoveHeaders are removed from every request before anything else
	// sees it (early_header_mutation_extensions, remove).
	RemoveHeaders []string
	// RejectUnderscoreHeaders answers 400 for a header name containing "_"
	// (headers_with_underscores_action: REJECT_REQUEST).
	RejectUnderscoreHeaders bool
	// NormalizePath removes dot segments from the path (normalize_path),
	// MergeSlashes collapses repeated slashes (merge_slashes) and
	// RejectEscapedSlashes answers 400 for %2F, %5C in the path
	// (path_with_escaped_slashes_action: REJECT_REQUEST).
	NormalizePath        bool
	MergeSlashes         bool
	RejectEscapedSlashes bool
	// UseRemoteAddress appends the peer address to x-forwarded-for
	// (use_remote_address).
	UseRemoteAddress bool

	// ExtProc is the composite filter after ext_authz that runs an
	// ext_proc filter on the responses of matching requests (the mcpauthz
	// list filter); nil when the chain has none.
	ExtProc *ExtProcConfig
}

// Envoy's defaults where the bootstrap leaves a setting out.
const (
	defaultTimeout       = 200 * time.Millisecond
	defaultStatusOnError = 403
)

// extAuthzType is the type URL of the ext_authz filter configuration.
var extAuthzType = "type.googleapis.com/" + string((&extauthzv3.ExtAuthz{}).ProtoReflect().Descriptor().FullName())

// LoadConfig reads an Envoy bootstrap (YAML or JSON) and returns the
// settings of the first HTTP connection manager that has an ext_authz
// filter. Settings that would change behaviour and that the stand-in does
// not implement are errors, so that a configuration is never silently
// treated as something it is not.
func LoadConfig(path string) (Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	var bs bootstrapv3.Bootstrap
	if _, err := envoycheck.DecodeAs(context.Background(), raw, &bs); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	cfg, err := FromBootstrap(&bs)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// FromBootstrap is LoadConfig for a decoded bootstrap.
func FromBootstrap(bs *bootstrapv3.Bootstrap) (Config, error) {
	for _, lis := range bs.GetStaticResources().GetListeners() {
		for _, fc := range lis.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var hcm hcmv3.HttpConnectionManager
				if f.GetTypedConfig() == nil || f.GetTypedConfig().UnmarshalTo(&hcm) != nil {
					continue
				}
				cfg, ok, err := fromHCM(&hcm)
				if err != nil {
					return Config{}, fmt.Errorf("listener %q: %w", lis.GetName(), err)
				}
				if ok {
					return cfg, nil
				}
			}
		}
	}
	return Config{}, errors.New("no HTTP connection manager with an ext_authz filter")
}

func fromHCM(hcm *hcmv3.HttpConnectionManager) (Config, bool, error) {
	var (
		ea   extauthzv3.ExtAuthz
		name string
	)
	for _, hf := range hcm.GetHttpFilters() {
		if hf.GetTypedConfig().GetTypeUrl() == extAuthzType {
			if name != "" {
				return Config{}, false, errors.New("more than one ext_authz filter: not supported by the stand-in")
			}
			if err := hf.GetTypedConfig().UnmarshalTo(&ea); err != nil {
				return Config{}, false, err
			}
			name = hf.GetName()
		}
	}
	if name == "" {
		return Config{}, false, nil
	}
	if err := unsupportedExtAuthz(&ea); err != nil {
		return Config{}, false, err
	}
	if err := noPerRouteConfig(hcm, name); err != nil {
		return Config{}, false, err
	}
	ep, err := extProcFromHCM(hcm, ea.GetGrpcService().GetEnvoyGrpc().GetClusterName())
	if err != nil {
		return Config{}, false, err
	}
	if ep != nil {
		if err := noPerRouteConfig(hcm, ep.Name); err != nil {
			return Config{}, false, err
		}
	}
	cfg := Config{
		Timeout:                   defaultTimeout,
		FailureModeAllow:          ea.GetFailureModeAllow(),
		FailureModeAllowHeaderAdd: ea.GetFailureModeAllowHeaderAdd(),
		StatusOnError:             defaultStatusOnError,
		EncodeRawHeaders:          ea.GetEncodeRawHeaders(),
		ValidateMutations:         ea.GetValidateMutations(),
		RejectUnderscoreHeaders:   hcm.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction() == corev3.HttpProtocolOptions_REJECT_REQUEST,
		NormalizePath:             hcm.GetNormalizePath().GetValue(),
		MergeSlashes:              hcm.GetMergeSlashes(),
		RejectEscapedSlashes:      hcm.GetPathWithEscapedSlashesAction() == hcmv3.HttpConnectionManager_REJECT_REQUEST,
		UseRemoteAddress:          hcm.GetUseRemoteAddress().GetValue(),
		ExtProc:                   ep,
	}
	if t := ea.GetGrpcService().GetTimeout(); t != nil {
		cfg.Timeout = t.AsDuration()
	}
	if c := ea.GetStatusOnError().GetCode(); c != 0 {
		cfg.StatusOnError = int(c)
	}
	if b := ea.GetWithRequestBody(); b != nil {
		cfg.WithRequestBody = true
		cfg.MaxRequestBytes = int(b.GetMaxRequestBytes())
		cfg.AllowPartialMessage = b.GetAllowPartialMessage()
		cfg.PackAsBytes = b.GetPackAsBytes()
	}
	for _, ext := range hcm.GetEarlyHeaderMutationExtensions() {
		var hm earlyv3.HeaderMutation
		if err := ext.GetTypedConfig().UnmarshalTo(&hm); err != nil {
			return Config{}, false, fmt.Errorf("early header mutation %q: not supported by the stand-in: %w", ext.GetName(), err)
		}
		for _, m := range hm.GetMutations() {
			if m.GetRemove() == "" {
				return Config{}, false, fmt.Errorf("early header mutation %q: only remove is supported by the stand-in", ext.GetName())
			}
			cfg.RemoveHeaders = append(cfg.RemoveHeaders, strings.ToLower(m.GetRemove()))
		}
	}
	return cfg, true, nil
}

// unsupportedExtAuthz rejects ext_authz settings the stand-in does not
// implement and that would change what mcpauthz sees or what the client
// gets.
func unsupportedExtAuthz(ea *extauthzv3.ExtAuthz) error {
	var bad []string
	check := func(set bool, field string) {
		if set {
			bad = append(bad, field)
		}
	}
	check(ea.GetGrpcService() == nil, "http_service (only grpc_service is supported)")
	check(ea.GetGrpcService().GetGoogleGrpc() != nil, "grpc_service.google_grpc")
	check(ea.GetClearRouteCache(), "clear_route_cache")
	check(ea.GetAllowedHeaders() != nil, "allowed_headers")
	check(ea.GetDisallowedHeaders() != nil, "disallowed_headers")
	check(ea.GetFilterEnabled() != nil || ea.GetFilterEnabledMetadata() != nil || ea.GetDenyAtDisable() != nil, "filter_enabled / deny_at_disable")
	check(len(ea.GetMetadataContextNamespaces())+len(ea.GetTypedMetadataContextNamespaces())+
		len(ea.GetRouteMetadataContextNamespaces())+len(ea.GetRouteTypedMetadataContextNamespaces()) > 0, "metadata context namespaces")
	check(ea.GetDecoderHeaderMutationRules() != nil, "decoder_header_mutation_rules")
	check(ea.GetShadowMode(), "shadow_mode")
	check(ea.GetEnableDynamicMetadataIngestion() != nil && !ea.GetEnableDynamicMetadataIngestion().GetValue(), "enable_dynamic_metadata_ingestion: false")
	check(ea.GetMaxDeniedResponseBodyBytes() != 0, "max_denied_response_body_bytes")
	check(len(ea.GetGrpcService().GetInitialMetadata()) > 0, "grpc_service.initial_metadata")
	if len(bad) > 0 {
		return fmt.Errorf("ext_authz settings not supported by the stand-in: %s", strings.Join(bad, ", "))
	}
	return nil
}

// noPerRouteConfig rejects per-route settings of a filter (ext_authz, the
// list filter): the stand-in has one route, so a configuration that
// disables the filter or changes its settings somewhere cannot be followed. A route that answers itself
// (direct_response, redirect: the shipped 404 for every path that is not
// MCP or metadata) may disable it: in Envoy nothing reaches the upstream
// there, and the stand-in, which does not route, checks and forwards those
// paths like any other.
func noPerRouteConfig(hcm *hcmv3.HttpConnectionManager, filter string) error {
	has := func(m map[string]*anypb.Any) bool {
		_, ok := m[filter]
		return ok
	}
	for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
		if has(vh.GetTypedPerFilterConfig()) {
			return fmt.Errorf("virtual host %q: per-route %s settings are not supported by the stand-in", vh.GetName(), filter)
		}
		for _, r := range vh.GetRoutes() {
			if has(r.GetTypedPerFilterConfig()) && r.GetRoute() != nil {
				return fmt.Errorf("route %q: per-route %s settings are not supported by the stand-in", r.GetName()+r.GetMatch().GetPath()+r.GetMatch().GetPrefix(), filter)
			}
		}
	}
	if hcm.GetRds() != nil {
		return errors.New("rds: not supported by the stand-in (it must see every route)")
	}
	return nil
}
