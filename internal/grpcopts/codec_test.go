package grpcopts

import (
	"bytes"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

func allow(t testing.TB) *authv3.CheckResponse {
	md, err := structpb.NewStruct(map[string]any{"decision": "allow", "reason": "policy_allow", "mcp_method": "tools/call", "tool": "get_weather", "subject": "alice"})
	if err != nil {
		t.Fatal(err)
	}
	return &authv3.CheckResponse{Status: &rpcstatus.Status{}, DynamicMetadata: md, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
		Headers:         []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-mcp-subject", Value: "alice"}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}},
		HeadersToRemove: []string{"authorization"},
	}}}
}

// TestCodec: a remembered message is sent as its encoding made once; any
// other message (an equal one too) as the standard codec marshals it; and
// both decode to the message.
func TestCodec(t *testing.T) {
	c, std := Codec(), encoding.GetCodecV2("proto")
	kept, other := allow(t), allow(t)
	Remember(kept)
	for name, m := range map[string]*authv3.CheckResponse{"remembered": kept, "not remembered": other} {
		got, err := c.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		back := &authv3.CheckResponse{}
		if err := std.Unmarshal(got, back); err != nil || !proto.Equal(back, m) {
			t.Errorf("%s: decodes to %v, %v", name, back, err)
		}
	}
	b1, _ := c.Marshal(kept)
	b2, _ := c.Marshal(kept)
	if !bytes.Equal(b1.Materialize(), b2.Materialize()) {
		t.Error("a remembered message's encoding changed")
	}
	if _, ok := rememberedBytes(other); ok {
		t.Error("an equal but distinct message is taken for the remembered one")
	}
}

// TestForget: after Forget the codec marshals the message as it is now,
// not the encoding it remembered; the other remembered messages are kept.
func TestForget(t *testing.T) {
	c := Codec()
	gone, kept := allow(t), allow(t)
	Remember(gone, kept)
	Forget(gone)
	gone.DynamicMetadata.Fields["subject"] = structpb.NewStringValue("mallory")
	got, err := c.Marshal(gone)
	if err != nil {
		t.Fatal(err)
	}
	back := &authv3.CheckResponse{}
	if err := proto.Unmarshal(got.Materialize(), back); err != nil || back.DynamicMetadata.Fields["subject"].GetStringValue() != "mallory" {
		t.Errorf("a forgotten message is sent as remembered: %v, %v", back, err)
	}
	if _, ok := rememberedBytes(gone); ok {
		t.Error("Forget kept the encoding")
	}
	if _, ok := rememberedBytes(kept); !ok {
		t.Error("Forget dropped another message's encoding")
	}
	Forget() // no messages: nothing to do
}

// BenchmarkMarshal: an allow marshalled by the standard codec, and
// remembered.
func BenchmarkMarshal(b *testing.B) {
	kept := allow(b)
	Remember(kept)
	for name, m := range map[string]*authv3.CheckResponse{"std": allow(b), "remembered": kept} {
		b.Run(name, func(b *testing.B) {
			c := Codec()
			b.ReportAllocs()
			for b.Loop() {
				d, err := c.Marshal(m)
				if err != nil {
					b.Fatal(err)
				}
				d.Free()
			}
		})
	}
}
