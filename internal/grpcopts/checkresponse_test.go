package grpcopts

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// denial is a 403 as extauthz builds it; remember says whether its parts
// are remembered, as extauthz's shared denials are.
func denial(t testing.TB, id string, remember bool) *authv3.CheckResponse {
	md, err := structpb.NewStruct(map[string]any{"decision": "deny", "reason": "insufficient_scope", "tool": "get_weather", "subject": "alice"})
	if err != nil {
		t.Fatal(err)
	}
	h := func(k, v string) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}
	}
	d := &authv3.DeniedHttpResponse{
		Status: &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden},
		Headers: []*corev3.HeaderValueOption{
			h("cache-control", "no-store"), h("content-type", "application/json"),
			h("www-authenticate", `Bearer error="insufficient_scope", scope="tools:get_weather", resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"`),
		},
		Body: `{"jsonrpc":"2.0","id":` + id + `,"error":{"code":-32003,"message":"forbidden"}}`,
	}
	m := &authv3.CheckResponse{Status: &rpcstatus.Status{Code: 7}, HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: d}, DynamicMetadata: md}
	if remember {
		Remember(m.Status)
		Remember(d.Status)
		for _, h := range d.Headers {
			Remember(h)
		}
		Remember(md)
	}
	return m
}

// TestAppendDenial: a denial built from its parts' encodings decodes to
// the message, remembered parts or not; what appendDenial does not encode
// it leaves to proto.Marshal.
func TestAppendDenial(t *testing.T) {
	std := encoding.GetCodecV2("proto")
	bare := func(f func(m *authv3.CheckResponse)) *authv3.CheckResponse {
		m := denial(t, "1", false)
		f(m)
		return m
	}
	for _, tc := range []struct {
		name string
		m    *authv3.CheckResponse
		by   bool // encoded by appendDenial
	}{
		{"remembered parts", denial(t, "1", true), true},
		{"remembered parts, another id", denial(t, `"req-7"`, true), true},
		{"no part remembered", denial(t, "2", false), true},
		{"no body", bare(func(m *authv3.CheckResponse) { m.GetDeniedResponse().Body = "" }), true},
		{"no headers", bare(func(m *authv3.CheckResponse) { m.GetDeniedResponse().Headers = nil }), true},
		{"no status, no metadata", bare(func(m *authv3.CheckResponse) { m.Status, m.DynamicMetadata = nil, nil }), true},
		{"no HTTP status", bare(func(m *authv3.CheckResponse) { m.GetDeniedResponse().Status = nil }), true},
		{"a large body", bare(func(m *authv3.CheckResponse) { m.GetDeniedResponse().Body = string(make([]byte, 70000)) }), true},
		{"allow", allow(t), false},
		{"nil header", bare(func(m *authv3.CheckResponse) { m.GetDeniedResponse().Headers[1] = nil }), false},
		{"unknown field", bare(func(m *authv3.CheckResponse) {
			m.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1))
		}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, ok := appendDenial(nil, tc.m)
			if ok != tc.by {
				t.Fatalf("encoded by appendDenial: %v, want %v", ok, tc.by)
			}
			if !ok {
				return
			}
			back := &authv3.CheckResponse{}
			if err := proto.Unmarshal(b, back); err != nil || !proto.Equal(back, tc.m) {
				t.Fatalf("decodes to %v, %v; want %v", back, err, tc.m)
			}
			sent, err := Codec().Marshal(tc.m)
			if err != nil {
				t.Fatal(err)
			}
			back = &authv3.CheckResponse{}
			if err := std.Unmarshal(sent, back); err != nil || !proto.Equal(back, tc.m) {
				t.Fatalf("the codec sends %v, %v", back, err)
			}
		})
	}
}

// BenchmarkMarshalDenial: a 403 marshalled by the standard codec, and by
// mcpauthz's from its remembered parts.
func BenchmarkMarshalDenial(b *testing.B) {
	for _, c := range []struct {
		name  string
		codec encoding.CodecV2
	}{{"std", encoding.GetCodecV2("proto")}, {"mcpauthz", Codec()}} {
		m := denial(b, "42", true)
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				out, err := c.codec.Marshal(m)
				if err != nil {
					b.Fatal(err)
				}
				out.Free()
			}
		})
	}
}
