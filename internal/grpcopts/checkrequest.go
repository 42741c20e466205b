package grpcopts

import (
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// decodeCheckRequest decodes a CheckRequest into the empty message m, with
// the result proto.Unmarshal gives: the path mcpauthz reads
// (attributes.request.http, its headers above all) by hand, every other
// field by proto.Unmarshal merging it in. It reports false for anything it
// does not handle exactly as proto.Unmarshal would (a wrong wire type, a
// repeated sub-message, invalid UTF-8 in a string, unknown fields in a
// header entry, malformed wire data); the caller then decodes the whole
// message with proto.Unmarshal, which also gives the error, if any. A
// differential fuzz test holds the two equal.
//
// Why by hand: protobuf-go decodes map fields through reflection, and the
// header map is most of the request. Decoded here, the map is made at its
// final size, common header names and values are shared constants, and the
// check spends about half as long in decoding. Every string is copied out
// of b, so nothing keeps the gRPC buffer alive.
func decodeCheckRequest(b []byte, m *authv3.CheckRequest) bool {
	return decodeMessage(b, m, func(num protowire.Number, typ protowire.Type) bool {
		return num == 1 && typ == protowire.BytesType
	}, func(m *authv3.CheckRequest, _ []byte, _ protowire.Number, _ protowire.Type, field []byte) bool {
		if m.Attributes != nil {
			return false
		}
		m.Attributes = &authv3.AttributeContext{}
		return decodeAttributes(field, m.Attributes)
	})
}

func decodeAttributes(b []byte, m *authv3.AttributeContext) bool {
	return decodeMessage(b, m, func(num protowire.Number, typ protowire.Type) bool {
		return (num == 1 || num == 2 || num == 4) && typ == protowire.BytesType
	}, func(m *authv3.AttributeContext, _ []byte, num protowire.Number, _ protowire.Type, field []byte) bool {
		if num == 4 {
			if m.Request != nil {
				return false
			}
			m.Request = &authv3.AttributeContext_Request{}
			return decodeRequest(field, m.Request)
		}
		peer := &m.Source
		if num == 2 {
			peer = &m.Destination
		}
		if *peer != nil {
			return false
		}
		*peer = &authv3.AttributeContext_Peer{}
		return decodePeer(field, *peer)
	})
}

func decodeRequest(b []byte, m *authv3.AttributeContext_Request) bool {
	return decodeMessage(b, m, func(num protowire.Number, typ protowire.Type) bool {
		return num == 2 && typ == protowire.BytesType
	}, func(m *authv3.AttributeContext_Request, _ []byte, _ protowire.Number, _ protowire.Type, field []byte) bool {
		if m.Http != nil {
			return false
		}
		m.Http = &authv3.AttributeContext_HttpRequest{}
		return decodeHTTP(field, m.Http)
	})
}

// decodePeer decodes a peer's socket address and principal by hand, the
// rest of it (service, labels, certificate, other address kinds) through
// proto.Unmarshal.
func decodePeer(b []byte, m *authv3.AttributeContext_Peer) bool {
	return decodeMessage(b, m, func(num protowire.Number, typ protowire.Type) bool {
		return (num == 1 || num == 4) && typ == protowire.BytesType
	}, func(m *authv3.AttributeContext_Peer, _ []byte, num protowire.Number, _ protowire.Type, field []byte) bool {
		if num == 4 {
			m.Principal = string(field)
			return utf8.Valid(field)
		}
		if m.Address != nil {
			return false
		}
		m.Address = &corev3.Address{}
		return decodeAddress(field, m.Address)
	})
}

func decodeAddress(b []byte, m *corev3.Address) bool {
	return decodeMessage(b, m, func(num protowire.Number, typ protowire.Type) bool {
		return num == 1 && typ == protowire.BytesType
	}, func(m *corev3.Address, _ []byte, _ protowire.Number, _ protowire.Type, field []byte) bool {
		if m.Address != nil {
			return false // a second address of the oneof: proto merges or replaces
		}
		sa := &corev3.SocketAddress{}
		m.Address = &corev3.Address_SocketAddress{SocketAddress: sa}
		return decodeSocketAddress(field, sa)
	})
}

func decodeSocketAddress(b []byte, m *corev3.SocketAddress) bool {
	return decodeMessage(b, m, func(num protowire.Number, typ protowire.Type) bool {
		return num == 2 && typ == protowire.BytesType || num == 3 && typ == protowire.VarintType
	}, func(m *corev3.SocketAddress, _ []byte, num protowire.Number, _ protowire.Type, field []byte) bool {
		if num == 2 {
			m.Address = string(field)
			return utf8.Valid(field)
		}
		v, k := protowire.ConsumeVarint(field)
		m.PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: uint32(v)}
		return k >= 0
	})
}

// decodeHTTP decodes every field of HttpRequest by hand except unknown ones.
func decodeHTTP(b []byte, m *authv3.AttributeContext_HttpRequest) bool {
	return decodeMessage(b, m, func(num protowire.Number, _ protowire.Type) bool {
		return num >= 1 && num <= 13
	}, decodeHTTPField)
}

func decodeHTTPField(m *authv3.AttributeContext_HttpRequest, msg []byte, num protowire.Number, typ protowire.Type, field []byte) bool {
	if num == 9 {
		v, k := protowire.ConsumeVarint(field)
		m.Size = int64(v)
		return typ == protowire.VarintType && k >= 0
	}
	if typ != protowire.BytesType {
		return false
	}
	switch num {
	case 3:
		if m.Headers == nil {
			m.Headers = make(map[string]string, countField(msg, 3))
		}
		k, v, ok := decodeHeaderEntry(field)
		m.Headers[k] = v
		return ok
	case 12:
		m.RawBody = append(make([]byte, 0, len(field)), field...)
		return true
	case 13:
		if m.HeaderMap == nil {
			m.HeaderMap = &corev3.HeaderMap{}
		}
		return decodeHeaderMap(field, m.HeaderMap)
	}
	if !utf8.Valid(field) {
		return false
	}
	s := common(field)
	switch num {
	case 1:
		m.Id = s
	case 2:
		m.Method = s
	case 4:
		m.Path = s
	case 5:
		m.Host = s
	case 6:
		m.Scheme = s
	case 7:
		m.Query = s
	case 8:
		m.Fragment = s
	case 10:
		m.Protocol = s
	case 11:
		m.Body = s
	}
	return true
}

// decodeMessage walks the fields of b, the encoding of m: the fields known
// reports are set by decode (which reports false where it cannot decode
// one as proto.Unmarshal would); runs of the other fields are merged in by
// proto.Unmarshal. A run is merged before the known field that ends it, so
// that the last of a oneof wins and unknown fields keep their order. The
// callbacks are package functions, so the walk allocates nothing of its own.
func decodeMessage[M proto.Message](b []byte, m M, known func(protowire.Number, protowire.Type) bool,
	decode func(m M, msg []byte, num protowire.Number, typ protowire.Type, field []byte) bool) bool {
	var rest passthrough
	for i := 0; i < len(b); {
		num, typ, field, n := nextField(b[i:])
		if n < 0 {
			return false
		}
		if !known(num, typ) {
			rest.add(i, n)
		} else if !rest.flush(b, m) || !decode(m, b, num, typ, field) {
			return false
		}
		i += n
	}
	return rest.flush(b, m)
}

// decodeHeaderEntry decodes one entry of the headers map (key 1, value 2).
func decodeHeaderEntry(b []byte) (key, value string, ok bool) {
	var k, v []byte
	for len(b) > 0 {
		num, typ, field, n := nextField(b)
		if n < 0 || typ != protowire.BytesType || !utf8.Valid(field) {
			return "", "", false
		}
		switch num {
		case 1:
			k = field
		case 2:
			v = field
		default:
			return "", "", false // proto.Unmarshal drops it; let it
		}
		b = b[n:]
	}
	return common(k), common(v), true
}

// decodeHeaderMap appends the HeaderValues of b to m.Headers.
func decodeHeaderMap(b []byte, m *corev3.HeaderMap) bool {
	if m.Headers == nil {
		m.Headers = make([]*corev3.HeaderValue, 0, countField(b, 1))
	}
	for len(b) > 0 {
		num, typ, field, n := nextField(b)
		if n < 0 || num != 1 || typ != protowire.BytesType {
			return false
		}
		h := &corev3.HeaderValue{}
		for f := field; len(f) > 0; {
			fnum, ftyp, v, k := nextField(f)
			if k < 0 || ftyp != protowire.BytesType {
				return false
			}
			switch fnum {
			case 1, 2:
				if !utf8.Valid(v) {
					return false
				}
				if fnum == 1 {
					h.Key = common(v)
				} else {
					h.Value = common(v)
				}
			case 3:
				h.RawValue = append(make([]byte, 0, len(v)), v...)
			default:
				return false
			}
			f = f[k:]
		}
		m.Headers = append(m.Headers, h)
		b = b[n:]
	}
	return true
}

// nextField reads the field at the start of b: its number, wire type, the
// value of a length-delimited field, and the field's whole length (negative
// when malformed). Groups are refused: proto3 messages have none.
func nextField(b []byte) (protowire.Number, protowire.Type, []byte, int) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		return 0, 0, nil, -1
	}
	switch typ {
	case protowire.BytesType:
		v, k := protowire.ConsumeBytes(b[n:])
		if k < 0 {
			return 0, 0, nil, -1
		}
		return num, typ, v, n + k
	case protowire.VarintType, protowire.Fixed32Type, protowire.Fixed64Type:
		k := protowire.ConsumeFieldValue(num, typ, b[n:])
		if k < 0 {
			return 0, 0, nil, -1
		}
		return num, typ, b[n : n+k], n + k
	default:
		return 0, 0, nil, -1
	}
}

// countField counts the well-formed occurrences of field num in b, to size
// what holds them.
func countField(b []byte, num protowire.Number) int {
	c := 0
	for len(b) > 0 {
		f, _, _, n := nextField(b)
		if n < 0 {
			break
		}
		if f == num {
			c++
		}
		b = b[n:]
	}
	return c
}

// passthrough is the pending run of fields decodeMessage leaves to
// proto.Unmarshal.
type passthrough struct{ start, end int }

func (p *passthrough) add(at, n int) {
	if p.end == 0 {
		p.start = at
	}
	p.end = at + n
}

// flush merges the pending run of b into m.
func (p *passthrough) flush(b []byte, m proto.Message) bool {
	if p.end == 0 {
		return true
	}
	run := b[p.start:p.end]
	p.start, p.end = 0, 0
	return proto.UnmarshalOptions{Merge: true}.Unmarshal(run, m) == nil
}

// common returns b as a string, shared for the header names and values
// Envoy sends on every MCP request, copied otherwise.
func common(b []byte) string {
	switch string(b) { // the compiler does not allocate for this switch
	case "":
		return ""
	case ":authority":
		return ":authority"
	case ":method":
		return ":method"
	case ":path":
		return ":path"
	case ":scheme":
		return ":scheme"
	case "accept":
		return "accept"
	case "authorization":
		return "authorization"
	case "content-length":
		return "content-length"
	case "content-type":
		return "content-type"
	case "mcp-protocol-version":
		return "mcp-protocol-version"
	case "mcp-session-id":
		return "mcp-session-id"
	case "user-agent":
		return "user-agent"
	case "x-forwarded-for":
		return "x-forwarded-for"
	case "x-forwarded-proto":
		return "x-forwarded-proto"
	case "x-request-id":
		return "x-request-id"
	case "x-envoy-auth-partial-body":
		return "x-envoy-auth-partial-body"
	case "x-envoy-expected-rq-timeout-ms":
		return "x-envoy-expected-rq-timeout-ms"
	case "x-envoy-internal":
		return "x-envoy-internal"
	case "traceparent":
		return "traceparent"
	case "tracestate":
		return "tracestate"
	case "POST":
		return "POST"
	case "GET":
		return "GET"
	case "DELETE":
		return "DELETE"
	case "OPTIONS":
		return "OPTIONS"
	case "http":
		return "http"
	case "https":
		return "https"
	case "HTTP/1.1":
		return "HTTP/1.1"
	case "HTTP/2":
		return "HTTP/2"
	case "false":
		return "false"
	case "true":
		return "true"
	case "application/json":
		return "application/json"
	case "application/json, text/event-stream":
		return "application/json, text/event-stream"
	case "text/event-stream":
		return "text/event-stream"
	case "2025-03-26":
		return "2025-03-26"
	case "2025-06-18":
		return "2025-06-18"
	case "2025-11-25":
		return "2025-11-25"
	case "2026-07-28":
		return "2026-07-28"
	}
	return string(b)
}
