// Package grpcopts holds the gRPC server transport settings of mcpauthz,
// its codec included (codec.go: CheckRequests decoded by hand, remembered
// answers sent as encoded once, denials built from remembered parts). The
// benchmark's do-nothing server uses them too, so that the two servers
// differ only in what Check does; the package imports nothing of the
// decision path.
package grpcopts

import (
	"runtime"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// ServerOptions are the transport settings of the ext_authz gRPC server.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		// Bodies up to Envoy's max_request_bytes plus headers.
		grpc.MaxRecvMsgSize(32 << 20),
		// Envoy multiplexes checks over few connections and opens more
		// when a connection's stream limit is reached, so the limit bounds
		// the work one connection can queue without refusing checks.
		grpc.MaxConcurrentStreams(1024),
		// A pool of stream workers instead of a goroutine per check: no
		// goroutine start or stack growth per request. Sized for the checks
		// Envoy keeps in flight; beyond it gRPC starts goroutines again.
		grpc.NumStreamWorkers(uint32(32 * runtime.GOMAXPROCS(0))),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// The standard proto codec, but remembered answers go out as
		// the bytes they were encoded to once (Remember).
		grpc.ForceServerCodecV2(Codec()),
	}
}
