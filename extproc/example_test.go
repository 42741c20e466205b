package extproc_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/go-json-experiment/json/jsontext"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mcpauthz/mcpauthz/extproc"
)

// The ext_authz side adds the list fields to the dynamic metadata of an
// allowed list request; the processor reads them back from the
// metadata_context Envoy forwards.
func ExampleEncodeListMetadata() {
	dynamicMetadata := &structpb.Struct{Fields: map[string]*structpb.Value{
		"decision":   structpb.NewStringValue("allow"),
		"mcp_method": structpb.NewStringValue("tools/list"),
	}}
	lc := extproc.ListContext{
		ProtocolVersion: "2025-06-18",
		PolicyRevision:  "3f2a9c",
		Requests:        []extproc.ListRequest{{Method: "tools/list", ID: jsontext.Value(`1`)}},
		Input:           jsontext.Value(`{"request":{"method":"POST","path":"/mcp"},"token":{"sub":"alice"}}`),
	}
	for k, v := range extproc.EncodeListMetadata(lc).Fields {
		dynamicMetadata.Fields[k] = v
	}

	md := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{extproc.MetadataNamespace: dynamicMetadata}}
	back, err := extproc.ParseMetadata(md)
	fmt.Println(back.Requests[0].Method, string(back.Requests[0].ID), err)
	// Output: tools/list 1 <nil>
}

// allowAll is a Policy that keeps every item.
type allowAll struct{}

func (allowAll) Visible(_ context.Context, _ extproc.ListContext, list extproc.List) (extproc.Visibility, error) {
	keep := make([]bool, len(list.Items))
	for i := range keep {
		keep[i] = true
	}
	return extproc.Visibility{Keep: keep}, nil
}

// The processor is registered on the gRPC server that serves ext_authz.
func ExampleNew() {
	srv, err := extproc.New(extproc.Options{
		Policy:        allowAll{},
		Logger:        slog.New(slog.DiscardHandler),
		PolicyTimeout: 500 * time.Millisecond,
	})
	if err != nil {
		panic(err)
	}
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(16 << 20)) // Envoy sends body chunks as they come
	extprocv3.RegisterExternalProcessorServer(gs, srv)
	fmt.Println(gs.GetServiceInfo()["envoy.service.ext_proc.v3.ExternalProcessor"].Methods[0].Name)
	// Output: Process
}
