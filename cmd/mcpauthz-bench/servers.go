package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"

	"github.com/mcpauthz/mcpauthz/internal/grpcopts"
)

// newGRPCServer has the transport settings of `mcpauthz serve`
// (internal/grpcopts), so that the do-nothing server differs from mcpauthz
// only by what Check does. (grpcopts imports nothing of the decision path,
// so the do-nothing server's memory and start-up are those of a plain gRPC
// server.)
func newGRPCServer() *grpc.Server {
	return grpc.NewServer(grpcopts.ServerOptions()...)
}

// noopServer answers every check OK at once, with an empty OkResponse.
type noopServer struct {
	authv3.UnimplementedAuthorizationServer
}

func (noopServer) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{
		Status:       &statuspb.Status{},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
	}, nil
}

// runNoop is the hidden "noop" subcommand: the do-nothing ext_authz server.
// It prints "listening ADDR" once it serves and stops on SIGINT/SIGTERM.
func runNoop(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mcpauthz-bench noop", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", *addr)
	if err != nil {
		fmt.Fprintln(stderr, "noop:", err)
		return 1
	}
	gs := newGRPCServer()
	authv3.RegisterAuthorizationServer(gs, noopServer{})
	fmt.Fprintln(stdout, "listening", lis.Addr().String())
	go func() {
		<-ctx.Done()
		gs.Stop()
	}()
	if err := gs.Serve(lis); err != nil {
		fmt.Fprintln(stderr, "noop:", err)
		return 1
	}
	return 0
}
