package grpcopts

import (
	"sync"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// codec is gRPC's proto codec, except that it sends the encoding of the
// messages Remember holds, made once; builds a denial from the remembered
// encodings of its parts (appendDenial); and decodes a CheckRequest's HTTP
// request by hand (decodeCheckRequest).
//
// (go-control-plane's vtprotobuf marshallers were measured here too: they
// are compiled only with the vtprotobuf build tag, and the dynamic
// metadata, a structpb.Struct, goes through reflection in them as well, so
// they marshal an allow no faster than the standard codec.)
type codec struct{ std encoding.CodecV2 }

// Codec returns the server codec of mcpauthz (name "proto").
func Codec() encoding.CodecV2 { return codec{std: encoding.GetCodecV2(grpcproto.Name)} }

func (c codec) Name() string { return grpcproto.Name }

// Unmarshal decodes a CheckRequest with decodeCheckRequest, and anything
// else, or a CheckRequest it does not take, with the standard codec.
func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	if req, ok := v.(*authv3.CheckRequest); ok {
		var b []byte
		if len(data) == 1 {
			b = data[0].ReadOnlyData() // decodeCheckRequest copies what it keeps
		} else {
			b = data.Materialize()
		}
		if decodeCheckRequest(b, req) {
			return nil
		}
		proto.Reset(req)
	}
	return c.std.Unmarshal(data, v)
}

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := rememberedBytes(v); ok {
		// Shared, read-only: gRPC only reads what it sends, and a
		// SliceBuffer's Free does nothing.
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	if resp, ok := v.(*authv3.CheckResponse); ok {
		if b, ok := appendDenial(make([]byte, 0, 512), resp); ok {
			return mem.BufferSlice{mem.SliceBuffer(b)}, nil
		}
	}
	return c.std.Marshal(v)
}

// Messages that are answered again and again (the allow of one identity
// for one tool) are marshalled once: Remember stores the encoding of an
// immutable message, and the codec sends those bytes for it. The message
// must never change after Remember. The store is bounded and cleared whole
// when full; a message it does not hold is marshalled as usual.
var remembered struct {
	sync.RWMutex
	m map[proto.Message][]byte
}

// maxRemembered bounds the messages whose encoding is kept.
const maxRemembered = 8192

// Remember marshals each message once and keeps the bytes for the codec,
// until Forget. The messages must not change afterwards. Past
// maxRemembered messages the codec forgets them all (it then marshals
// them each time, which is only slower): whoever keeps messages bounds
// them and forgets the ones it drops.
func Remember(msgs ...proto.Message) {
	enc := make([][]byte, len(msgs))
	for i, m := range msgs {
		if b, err := proto.Marshal(m); err == nil {
			enc[i] = b
		} // else the codec marshals it each time, and reports the error
	}
	remembered.Lock()
	for i, m := range msgs {
		if enc[i] == nil {
			continue
		}
		if remembered.m == nil || len(remembered.m) >= maxRemembered {
			remembered.m = make(map[proto.Message][]byte, 256)
		}
		remembered.m[m] = enc[i]
	}
	remembered.Unlock()
}

// Forget drops the encodings Remember kept for msgs.
func Forget(msgs ...proto.Message) {
	if len(msgs) == 0 {
		return
	}
	remembered.Lock()
	for _, m := range msgs {
		delete(remembered.m, m)
	}
	remembered.Unlock()
}

func rememberedBytes(v any) ([]byte, bool) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, false
	}
	remembered.RLock()
	b, ok := remembered.m[m]
	remembered.RUnlock()
	return b, ok
}
