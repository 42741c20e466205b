package grpcopts

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// envoyCheck is the CheckRequest Envoy sends for a POST of a JSON-RPC body
// with with_request_body and pack_as_bytes, peers, time and metadata
// included.
func envoyCheck() *authv3.CheckRequest {
	peer := func(ip string, port uint32) *authv3.AttributeContext_Peer {
		return &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}},
		}}, Principal: "spiffe://cluster.local/ns/a/sa/agent"}
	}
	md, _ := structpb.NewStruct(map[string]any{"route": "mcp"})
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      peer("10.0.0.7", 51234),
		Destination: peer("10.0.0.2", 10000),
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.New(timestamppb.Now().AsTime()),
			Http: &authv3.AttributeContext_HttpRequest{
				Id: "17340327188866394451", Method: "POST", Path: "/mcp?x=1", Host: "mcp.example.com",
				Scheme: "https", Protocol: "HTTP/2", Size: 93, Query: "x=1", Fragment: "",
				Headers: map[string]string{
					":method": "POST", ":path": "/mcp", ":authority": "mcp.example.com", ":scheme": "https",
					"content-type": "application/json", "accept": "application/json, text/event-stream",
					"mcp-protocol-version": "2025-11-25", "authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig",
					"x-request-id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "x-custom": "ünïcode",
				},
				RawBody: []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_weather"}}`),
			},
		},
		ContextExtensions:    map[string]string{"virtual_host": "mcp"},
		MetadataContext:      &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.filters.http.jwt_authn": md}},
		RouteMetadataContext: &corev3.Metadata{},
		TlsSession:           &authv3.AttributeContext_TLSSession{Sni: "mcp.example.com"},
	}}
}

func marshal(t testing.TB, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func field(num protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), v)
}

// wrap nests http (an encoded HttpRequest) in a CheckRequest.
func wrap(http []byte) []byte {
	return field(1, field(4, field(2, http)))
}

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

type decodeRow struct {
	name string
	wire []byte
	fast bool // taken by decodeCheckRequest, not handed to proto.Unmarshal
}

// decodeRows are the wire forms TestDecodeCheckRequest checks and
// FuzzDecodeCheckRequest starts from.
func decodeRows(t testing.TB) []decodeRow {
	rawHeaders := envoyCheck()
	rawHeaders.Attributes.Request.Http.Headers = nil
	rawHeaders.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: ":method", RawValue: []byte("POST")}, {Key: "authorization", RawValue: []byte("Bearer x")}, {Key: "x-a", Value: "1"},
	}}
	stringBody := envoyCheck()
	stringBody.Attributes.Request.Http.RawBody = nil
	stringBody.Attributes.Request.Http.Body = `{"jsonrpc":"2.0","id":"é","method":"ping"}`
	entry := func(k, v string) []byte { return field(3, cat(field(1, []byte(k)), field(2, []byte(v)))) }
	unknown := protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 7)

	return []decodeRow{
		{"envoy request", marshal(t, envoyCheck()), true},
		{"raw headers (encode_raw_headers)", marshal(t, rawHeaders), true},
		{"string body", marshal(t, stringBody), true},
		{"empty message", nil, true},
		{"empty http", wrap(nil), true},
		{"repeated header key, last wins", wrap(cat(entry("a", "1"), entry("a", "2"))), true},
		{"entry with the key twice, last wins", wrap(field(3, cat(field(1, []byte("a")), field(1, []byte("b")), field(2, []byte("v"))))), true},
		{"entry without a value", wrap(field(3, field(1, []byte("k")))), true},
		{"repeated scalar, last wins", wrap(cat(field(4, []byte("/a")), field(4, []byte("/b")))), true},
		{"header_map twice, appended", wrap(cat(field(13, field(1, field(1, []byte("a")))), field(13, field(1, field(1, []byte("b")))))), true},
		{"unknown fields kept in order at every level", cat(unknown, field(1, cat(unknown, field(4, cat(unknown, field(2, cat(unknown, entry("a", "b"), unknown)), unknown)), unknown)), unknown), true},
		{"negative size", wrap(protowire.AppendVarint(protowire.AppendTag(nil, 9, protowire.VarintType), uint64(1<<64-5))), true},

		{"peer with labels, service and certificate", marshal(t, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Source: &authv3.AttributeContext_Peer{
			Service: "agent", Labels: map[string]string{"app": "a"}, Certificate: "-----BEGIN", Principal: "p",
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "::1", Protocol: corev3.SocketAddress_UDP, PortSpecifier: &corev3.SocketAddress_NamedPort{NamedPort: "http"}, Ipv4Compat: true}}},
		}}}), true},
		{"pipe peer", marshal(t, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Destination: &authv3.AttributeContext_Peer{
			Address: &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/run/envoy.sock", Mode: 0o600}}},
		}}}), true},
		{"port, then named port: the last of the oneof", field(1, field(1, field(1, field(1, cat(protowire.AppendVarint(protowire.AppendTag(nil, 3, protowire.VarintType), 443), field(4, []byte("https"))))))), true},
		{"named port, then port", field(1, field(1, field(1, field(1, cat(field(4, []byte("https")), protowire.AppendVarint(protowire.AppendTag(nil, 3, protowire.VarintType), 1<<33+8)))))), true},
		{"socket address twice (merged by proto)", field(1, field(1, field(1, cat(field(1, field(2, []byte("a"))), field(1, protowire.AppendVarint(protowire.AppendTag(nil, 3, protowire.VarintType), 1)))))), false},
		{"source twice (merged by proto)", field(1, cat(field(1, field(4, []byte("a"))), field(1, field(2, []byte("s"))))), false},
		{"attributes twice (merged by proto)", cat(marshal(t, envoyCheck()), marshal(t, stringBody)), false},
		{"invalid UTF-8 in a header value", wrap(entry("a", "\xff")), false},
		{"invalid UTF-8 in a header name", wrap(entry("\xc3", "v")), false},
		{"invalid UTF-8 in the path", wrap(field(4, []byte("/\xff"))), false},
		{"invalid UTF-8 in the body", wrap(field(11, []byte("\xed\xa0\x80"))), false},
		{"unknown field in a header entry", wrap(field(3, cat(field(1, []byte("a")), field(7, []byte("x"))))), false},
		{"size as bytes", wrap(field(9, []byte("1"))), false},
		{"path as varint", wrap(protowire.AppendVarint(protowire.AppendTag(nil, 4, protowire.VarintType), 1)), false},
		{"truncated", marshal(t, envoyCheck())[:40], false},
		{"length past the end", []byte{0x0a, 0x7f, 0x22}, false},
		{"group", []byte{0x0b, 0x0c}, false},
		{"field number zero", []byte{0x02, 0x00}, false},
	}
}

// TestDecodeCheckRequest: the codec decodes every row exactly as
// proto.Unmarshal does, the same message or an error both times, and the
// rows Envoy sends take the hand-written path.
func TestDecodeCheckRequest(t *testing.T) {
	for _, tc := range decodeRows(t) {
		t.Run(tc.name, func(t *testing.T) {
			if got := decodeCheckRequest(tc.wire, &authv3.CheckRequest{}); got != tc.fast {
				t.Errorf("decodeCheckRequest took it: %v, want %v", got, tc.fast)
			}
			sameAsProto(t, tc.wire)
		})
	}
}

// sameAsProto fails unless the codec and proto.Unmarshal agree on wire.
func sameAsProto(t *testing.T, wire []byte) {
	t.Helper()
	want := &authv3.CheckRequest{}
	wantErr := proto.Unmarshal(wire, want)
	got := &authv3.CheckRequest{}
	// Split across two buffers, as gRPC hands over a large message.
	var data mem.BufferSlice
	if h := len(wire) / 2; h > 0 {
		data = mem.BufferSlice{mem.SliceBuffer(wire[:h]), mem.SliceBuffer(wire[h:])}
	} else {
		data = mem.BufferSlice{mem.SliceBuffer(wire)}
	}
	gotErr := Codec().Unmarshal(data, got)
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("codec error %v, proto.Unmarshal error %v", gotErr, wantErr)
	}
	if wantErr == nil && !proto.Equal(got, want) {
		t.Fatalf("codec decodes\n%v\nproto.Unmarshal\n%v", got, want)
	}
}

// TestDecodeCheckRequestCopies: the message shares no memory with the
// buffer gRPC reuses once Unmarshal returns.
func TestDecodeCheckRequestCopies(t *testing.T) {
	buf := marshal(t, envoyCheck())
	got := &authv3.CheckRequest{}
	if !decodeCheckRequest(buf, got) {
		t.Fatal("not decoded by hand")
	}
	for i := range buf {
		buf[i] = 'X'
	}
	if want := envoyCheck(); !proto.Equal(got.GetAttributes().GetRequest().GetHttp(), want.GetAttributes().GetRequest().GetHttp()) {
		t.Fatalf("overwriting the buffer changed the message: %v", got.GetAttributes().GetRequest().GetHttp())
	}
}

// FuzzDecodeCheckRequest: on any input, the codec's CheckRequest equals
// proto.Unmarshal's, or both fail.
func FuzzDecodeCheckRequest(f *testing.F) {
	for _, row := range decodeRows(f) {
		f.Add(row.wire)
	}
	f.Fuzz(func(t *testing.T, wire []byte) {
		sameAsProto(t, wire)
	})
}

// BenchmarkUnmarshalCheckRequest: Envoy's request decoded by the standard
// codec and by mcpauthz's, with the peers and HTTP request only (what the
// load harness sends) and with time, metadata and TLS too.
func BenchmarkUnmarshalCheckRequest(b *testing.B) {
	lean := envoyCheck()
	a := lean.Attributes
	a.Request.Time, a.ContextExtensions, a.MetadataContext, a.RouteMetadataContext, a.TlsSession = nil, nil, nil, nil, nil
	for _, req := range []struct {
		name string
		m    *authv3.CheckRequest
	}{{"http", lean}, {"full", envoyCheck()}} {
		wire := marshal(b, req.m)
		for _, c := range []struct {
			name  string
			codec encoding.CodecV2
		}{{"std", encoding.GetCodecV2("proto")}, {"mcpauthz", Codec()}} {
			b.Run(req.name+"/"+c.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if err := c.codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, &authv3.CheckRequest{}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
