package extproc

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/go-json-experiment/json/jsontext"
	"google.golang.org/protobuf/types/known/structpb"
)

// The dynamic metadata contract between the ext_authz side (which encodes)
// and the processor (which parses). Envoy stores ext_authz's
// CheckResponse.dynamic_metadata under MetadataNamespace; ext_proc forwards
// that namespace on every message (metadata_options.forwarding_namespaces).
const (
	// MetadataNamespace is the namespace Envoy's ext_authz filter writes
	// its dynamic metadata to (hard-coded in Envoy, not the filter name).
	MetadataNamespace = "envoy.filters.http.ext_authz"
	// KeyListFilter is the bool the composite filter matches on to run
	// ext_proc at all.
	KeyListFilter = "list_filter"
	// KeyList holds the Struct described by ListContext.
	KeyList = "mcpauthz_list"
	// MetadataVersion is the value of "v" in KeyList.
	MetadataVersion = 1
)

// Bounds of what ParseMetadata accepts.
const (
	maxListRequests = 1000
	maxInputBytes   = 1 << 20
)

// ListContext is what the ext_authz side knew when it allowed a request
// carrying list requests: the protocol version, the policy revision that
// decided, the list requests themselves, and the policy input of the call
// (so that visibility is decided for the same caller, with the same data).
type ListContext struct {
	// ProtocolVersion is the request's MCP-Protocol-Version ("" when absent).
	ProtocolVersion string
	// PolicyRevision is the revision of the policy that allowed the request.
	PolicyRevision string
	// Requests are the list requests of the body, in body order: one for a
	// single request, several for a 2025-03-26 batch.
	Requests []ListRequest
	// Input is the compact JSON object {"request": {...}, "token": {...}}:
	// exactly input.request and input.token as the call policy saw them.
	// It holds token claims: never log it.
	Input jsontext.Value
}

// ListRequest is one list request of the body.
type ListRequest struct {
	// Method is tools/list, prompts/list, resources/list or
	// resources/templates/list.
	Method string
	// ID is the raw JSON text of the JSON-RPC id: a string or an integer,
	// e.g. 1 or "abc" with its quotes.
	ID jsontext.Value
}

// ErrNoListFilter is returned by ParseMetadata when ext_authz did run but
// did not ask for list filtering (list_filter absent or false): the
// response is not a list response and passes unchanged.
var ErrNoListFilter = errors.New("extproc: request is not a list request")

// MetadataError is metadata that is missing or cannot be trusted; the
// processor answers list responses with JSON-RPC errors.
type MetadataError struct {
	// Reason is ReasonMissingMetadata or ReasonBadMetadata.
	Reason Reason
	Detail string
}

func (e *MetadataError) Error() string { return "extproc: " + string(e.Reason) + ": " + e.Detail }

func badMetadata(format string, args ...any) error {
	return &MetadataError{Reason: ReasonBadMetadata, Detail: fmt.Sprintf(format, args...)}
}

// EncodeListMetadata returns the two fields the ext_authz side adds to its
// CheckResponse.dynamic_metadata when it allows a request with list
// requests: KeyListFilter (true) and KeyList (lc). Copy both fields into the
// dynamic_metadata Struct next to the existing keys. The caller is
// responsible for lc being valid (ParseMetadata is the check).
func EncodeListMetadata(lc ListContext) *structpb.Struct {
	reqs := make([]*structpb.Value, len(lc.Requests))
	for i, r := range lc.Requests {
		reqs[i] = structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			"method": structpb.NewStringValue(r.Method),
			"id":     structpb.NewStringValue(string(r.ID)),
		}})
	}
	list := &structpb.Struct{Fields: map[string]*structpb.Value{
		"v":                structpb.NewNumberValue(MetadataVersion),
		"protocol_version": structpb.NewStringValue(lc.ProtocolVersion),
		"policy_revision":  structpb.NewStringValue(lc.PolicyRevision),
		"requests":         structpb.NewListValue(&structpb.ListValue{Values: reqs}),
		"input":            structpb.NewStringValue(string(lc.Input)),
	}}
	return &structpb.Struct{Fields: map[string]*structpb.Value{
		KeyListFilter: structpb.NewBoolValue(true),
		KeyList:       structpb.NewStructValue(list),
	}}
}

// ParseMetadata reads the list context from the metadata_context of an
// ext_proc message. It returns ErrNoListFilter when ext_authz's namespace is
// present without list_filter true, and a *MetadataError when the namespace
// is missing (ext_authz did not run, or the namespace is not forwarded) or
// anything in it is malformed: wrong types, another version, a method that
// is not a list method, an id that is not a JSON string or integer, an input
// that is not the documented object.
//
// Only the request-level namespace is read; Envoy fills metadata_context
// from its own dynamic metadata, which no client header can write.
func ParseMetadata(md *corev3.Metadata) (ListContext, error) {
	ns, ok := md.GetFilterMetadata()[MetadataNamespace]
	if !ok || ns == nil {
		return ListContext{}, &MetadataError{Reason: ReasonMissingMetadata, Detail: "no " + MetadataNamespace + " metadata"}
	}
	flag, ok := ns.Fields[KeyListFilter]
	if !ok {
		return ListContext{}, ErrNoListFilter
	}
	b, isBool := flag.GetKind().(*structpb.Value_BoolValue)
	if !isBool {
		return ListContext{}, badMetadata("%s is not a bool", KeyListFilter)
	}
	if !b.BoolValue {
		return ListContext{}, ErrNoListFilter
	}
	sv, isStruct := ns.Fields[KeyList].GetKind().(*structpb.Value_StructValue)
	if !isStruct || sv.StructValue == nil {
		return ListContext{}, badMetadata("%s missing or not a struct", KeyList)
	}
	f := sv.StructValue.Fields
	v, isNum := f["v"].GetKind().(*structpb.Value_NumberValue)
	if !isNum || v.NumberValue != MetadataVersion {
		return ListContext{}, badMetadata("%s.v is not %d", KeyList, MetadataVersion)
	}
	var lc ListContext
	var err error
	if lc.ProtocolVersion, err = stringField(f, "protocol_version"); err != nil {
		return ListContext{}, err
	}
	if lc.PolicyRevision, err = stringField(f, "policy_revision"); err != nil {
		return ListContext{}, err
	}
	input, err := stringField(f, "input")
	if err != nil {
		return ListContext{}, err
	}
	if err := checkInput(input); err != nil {
		return ListContext{}, err
	}
	lc.Input = jsontext.Value(input)
	lv, isList := f["requests"].GetKind().(*structpb.Value_ListValue)
	if !isList || lv.ListValue == nil || len(lv.ListValue.Values) == 0 {
		return ListContext{}, badMetadata("%s.requests missing or empty", KeyList)
	}
	if len(lv.ListValue.Values) > maxListRequests {
		return ListContext{}, badMetadata("%s.requests has more than %d elements", KeyList, maxListRequests)
	}
	lc.Requests = make([]ListRequest, len(lv.ListValue.Values))
	for i, rv := range lv.ListValue.Values {
		rs, isStruct := rv.GetKind().(*structpb.Value_StructValue)
		if !isStruct || rs.StructValue == nil {
			return ListContext{}, badMetadata("%s.requests[%d] is not a struct", KeyList, i)
		}
		method, err := stringField(rs.StructValue.Fields, "method")
		if err != nil {
			return ListContext{}, err
		}
		if KindOf(method) == "" {
			return ListContext{}, badMetadata("%s.requests[%d].method is not a list method", KeyList, i)
		}
		id, err := stringField(rs.StructValue.Fields, "id")
		if err != nil {
			return ListContext{}, err
		}
		if !validRequestID([]byte(id)) {
			return ListContext{}, badMetadata("%s.requests[%d].id is not a JSON string or integer", KeyList, i)
		}
		lc.Requests[i] = ListRequest{Method: method, ID: jsontext.Value(id)}
	}
	return lc, nil
}

func stringField(f map[string]*structpb.Value, name string) (string, error) {
	s, ok := f[name].GetKind().(*structpb.Value_StringValue)
	if !ok {
		return "", badMetadata("%s.%s missing or not a string", KeyList, name)
	}
	return s.StringValue, nil
}

// validRequestID accepts what the request parser accepts as an id: one JSON
// string, or an integer -?(0|[1-9][0-9]*), and nothing around it. The id is
// echoed into error bodies verbatim, so it must be exactly one JSON value.
func validRequestID(id []byte) bool {
	if len(id) == 0 {
		return false
	}
	if id[0] == '"' {
		var d jsontext.Decoder
		d.Reset(bytes.NewBuffer(id))
		v, err := d.ReadValue()
		if err != nil || len(v) != len(id) {
			return false
		}
		_, err = d.ReadToken()
		return err == io.EOF
	}
	i := 0
	if id[0] == '-' {
		i++
	}
	if i == len(id) {
		return false
	}
	if id[i] == '0' {
		return i+1 == len(id)
	}
	for ; i < len(id); i++ {
		if id[i] < '0' || id[i] > '9' {
			return false
		}
	}
	return true
}

// checkInput verifies that input is one strict JSON object (no duplicate
// names, valid UTF-8) whose "request" and "token" members are objects.
func checkInput(input string) error {
	if len(input) > maxInputBytes {
		return badMetadata("%s.input larger than %d bytes", KeyList, maxInputBytes)
	}
	var d jsontext.Decoder
	d.Reset(bytes.NewBufferString(input))
	if d.PeekKind() != '{' {
		return badMetadata("%s.input is not a JSON object", KeyList)
	}
	if _, err := d.ReadToken(); err != nil {
		return badMetadata("%s.input is not JSON", KeyList)
	}
	var request, token bool
	for d.PeekKind() != '}' {
		tok, err := d.ReadToken()
		if err != nil {
			return badMetadata("%s.input is not JSON", KeyList)
		}
		name := tok.String() // before the next read voids tok
		kind := d.PeekKind()
		if _, err := d.ReadValue(); err != nil {
			return badMetadata("%s.input is not JSON", KeyList)
		}
		switch name {
		case "request":
			request = kind == '{'
		case "token":
			token = kind == '{'
		}
	}
	if _, err := d.ReadToken(); err != nil {
		return badMetadata("%s.input is not JSON", KeyList)
	}
	if _, err := d.ReadToken(); err != io.EOF {
		return badMetadata("%s.input has data after the object", KeyList)
	}
	if !request || !token {
		return badMetadata("%s.input lacks the request or token object", KeyList)
	}
	return nil
}
