package grpcopts

import (
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// appendDenial encodes a denied CheckResponse from the remembered
// encodings of its parts (status, HTTP status, each header option,
// dynamic metadata), marshalling only the parts that are not remembered
// and the body. It reports false for a message it does not encode this way
// (not a denial, or with unknown fields), which the caller marshals whole.
//
// A denial differs from the last one like it only in its body, which
// echoes the request's JSON-RPC id; its other parts are shared and
// remembered by extauthz.
func appendDenial(b []byte, m *authv3.CheckResponse) ([]byte, bool) {
	denied := m.GetDeniedResponse()
	if denied == nil || len(m.ProtoReflect().GetUnknown()) > 0 || len(denied.ProtoReflect().GetUnknown()) > 0 {
		return nil, false
	}
	var err error
	if m.Status != nil {
		if b, err = appendMessage(b, 1, m.Status); err != nil {
			return nil, false
		}
	}
	// DeniedHttpResponse, field 2, its length first.
	size := 0
	parts := make([][]byte, 0, 1+len(denied.Headers))
	if denied.Status != nil {
		p, err := encodingOf(denied.Status)
		if err != nil {
			return nil, false
		}
		parts = append(parts, p)
		size += protowire.SizeTag(1) + protowire.SizeBytes(len(p))
	}
	for _, h := range denied.Headers {
		if h == nil {
			return nil, false // proto.Marshal refuses it; let it say so
		}
		p, err := encodingOf(h)
		if err != nil {
			return nil, false
		}
		parts = append(parts, p)
		size += protowire.SizeTag(2) + protowire.SizeBytes(len(p))
	}
	if denied.Body != "" {
		size += protowire.SizeTag(3) + protowire.SizeBytes(len(denied.Body))
	}
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	i := 0
	if denied.Status != nil {
		b = protowire.AppendBytes(protowire.AppendTag(b, 1, protowire.BytesType), parts[0])
		i = 1
	}
	for _, p := range parts[i:] {
		b = protowire.AppendBytes(protowire.AppendTag(b, 2, protowire.BytesType), p)
	}
	if denied.Body != "" {
		b = protowire.AppendString(protowire.AppendTag(b, 3, protowire.BytesType), denied.Body)
	}
	if m.DynamicMetadata != nil {
		if b, err = appendMessage(b, 4, m.DynamicMetadata); err != nil {
			return nil, false
		}
	}
	return b, true
}

// appendMessage appends message field num holding m.
func appendMessage(b []byte, num protowire.Number, m proto.Message) ([]byte, error) {
	p, err := encodingOf(m)
	if err != nil {
		return nil, err
	}
	return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), p), nil
}

// encodingOf is m's remembered encoding, or m marshalled now.
func encodingOf(m proto.Message) ([]byte, error) {
	if p, ok := rememberedBytes(m); ok {
		return p, nil
	}
	return proto.Marshal(m)
}
