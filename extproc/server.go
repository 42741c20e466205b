package extproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Defaults of Options.
const (
	DefaultMaxBufferedBytes = 8 << 20
	DefaultPolicyTimeout    = time.Second
	DefaultMaxChunkBytes    = 64 << 10
)

// Options configure a Server.
type Options struct {
	// Policy decides visibility (required).
	Policy Policy
	// Logger receives fail-closed events; never token contents.
	Logger *slog.Logger
	// Recorder observes every outcome (optional).
	Recorder Recorder
	// MaxBufferedBytes bounds what one stream holds: the whole JSON body,
	// or the one SSE event being assembled (default 8 MiB).
	MaxBufferedBytes int
	// PolicyTimeout bounds one Policy.Visible call (default 1 s). Envoy
	// sets no timer on FULL_DUPLEX_STREAMED body messages, so this is what
	// keeps a slow policy from holding the response.
	PolicyTimeout time.Duration
	// MaxChunkBytes bounds the body chunks sent back to Envoy (default
	// 64 KiB, Envoy's recommendation for streamed responses).
	MaxChunkBytes int
	// ParseMemoSize bounds the list results whose strict parse is kept for
	// the next body with the same result (default DefaultParseMemoSize, -1
	// keeps none); ParseMemoBytes bounds their memory (default
	// DefaultParseMemoBytes; a result over half of it is not kept).
	ParseMemoSize, ParseMemoBytes int
}

// Server is the envoy.service.ext_proc.v3.ExternalProcessor service that
// filters MCP list responses. It is immutable and safe for concurrent use;
// each Process call owns the state of its one HTTP response.
type Server struct {
	extprocv3.UnimplementedExternalProcessorServer

	policy        Policy
	log           *slog.Logger
	rec           Recorder
	maxBuffered   int
	maxChunk      int
	policyTimeout time.Duration
	memo          *parseMemo // nil: no parse is remembered

	// exchanges reuses the per-stream buffers of finished streams.
	exchanges sync.Pool
}

// New returns a Server.
func New(opts Options) (*Server, error) {
	if opts.Policy == nil {
		return nil, errors.New("extproc: Options.Policy is required")
	}
	s := &Server{
		policy:        opts.Policy,
		log:           opts.Logger,
		rec:           opts.Recorder,
		maxBuffered:   opts.MaxBufferedBytes,
		maxChunk:      opts.MaxChunkBytes,
		policyTimeout: opts.PolicyTimeout,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.maxBuffered <= 0 {
		s.maxBuffered = DefaultMaxBufferedBytes
	}
	if s.maxChunk <= 0 {
		s.maxChunk = DefaultMaxChunkBytes
	}
	if s.policyTimeout <= 0 {
		s.policyTimeout = DefaultPolicyTimeout
	}
	size, bytes := opts.ParseMemoSize, opts.ParseMemoBytes
	if size == 0 {
		size = DefaultParseMemoSize
	}
	if bytes <= 0 {
		bytes = DefaultParseMemoBytes
	}
	s.memo = newParseMemo(size, bytes)
	return s, nil
}

// Process serves one ext_proc stream: one HTTP response. It returns only
// when Envoy ends the stream (half-close, or the reset that follows it:
// both are a normal end), or with a gRPC error when Envoy's messages do not
// follow the configured processing mode, which Envoy answers with
// status_on_error (fail closed). It never ends the stream with OK by
// itself: Envoy would forward the rest of the response unprocessed.
func (s *Server) Process(stream extprocv3.ExternalProcessor_ProcessServer) (err error) {
	ctx := stream.Context()
	x, _ := s.exchanges.Get().(*exchange)
	if x == nil {
		x = &exchange{srv: s}
	}
	x.send = stream.Send
	defer func() {
		if p := recover(); p != nil {
			s.log.ErrorContext(ctx, "panic in list filter", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = status.Error(codes.Internal, "list filter: internal error")
			func() {
				defer func() { _ = recover() }() // the panic may have come from the Recorder
				x.recordStream(ctx, ReasonInternal)
			}()
			return // a panicking exchange is not reused
		}
		x.reset()
		s.exchanges.Put(x)
	}()
	for {
		req, rerr := stream.Recv()
		if rerr != nil {
			return streamEnd(rerr)
		}
		if err := x.handle(ctx, req); err != nil {
			return err
		}
	}
}

// streamEnd maps the end of the request stream: Envoy closes with a
// half-close followed by a reset, which grpc-go reports as Canceled.
func streamEnd(err error) error {
	switch {
	case err == io.EOF, errors.Is(err, context.Canceled), status.Code(err) == codes.Canceled:
		return nil
	}
	return err
}
