// Package loadgen is the closed-loop ext_authz load generator behind
// cmd/mcpauthz-bench: callers that each send the next Envoy-shaped
// CheckRequest as soon as the previous answer arrives, a log-linear latency
// histogram, per-process CPU and memory from /proc, and the report.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// OutcomeAllow is the outcome of an allowed check. Denials are their HTTP
// status ("401", "403", "503"...), gRPC errors "grpc:<code>".
const OutcomeAllow = "allow"

// Classify names the answer Envoy would act on.
func Classify(resp *authv3.CheckResponse, err error) string {
	if err != nil {
		return "grpc:" + status.Code(err).String()
	}
	if d, ok := resp.GetHttpResponse().(*authv3.CheckResponse_DeniedResponse); ok {
		code := int(d.DeniedResponse.GetStatus().GetCode())
		if code == 0 {
			code = 403 // Envoy's default for a denial without a status
		}
		return strconv.Itoa(code)
	}
	if c := codes.Code(resp.GetStatus().GetCode()); c != codes.OK {
		return "status:" + c.String()
	}
	return OutcomeAllow
}

// describe is a short description of an unexpected answer.
func describe(outcome string, resp *authv3.CheckResponse, err error) string {
	if err != nil {
		return fmt.Sprintf("%s: %v", outcome, err)
	}
	s := outcome
	if d := resp.GetDeniedResponse(); d != nil {
		for _, h := range d.GetHeaders() {
			if h.GetHeader().GetKey() == "www-authenticate" {
				s += " www-authenticate: " + h.GetHeader().GetValue()
			}
		}
		if b := d.GetBody(); b != "" {
			if len(b) > 200 {
				b = b[:200] + "..."
			}
			s += " body: " + b
		}
	}
	return s
}

// Dial opens n gRPC client connections to addr (each one HTTP/2
// connection, as Envoy keeps one per worker thread) and waits until every
// one is ready.
func Dial(ctx context.Context, addr string, n int) ([]*grpc.ClientConn, error) {
	conns := make([]*grpc.ClientConn, 0, n)
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for range n {
		c, err := grpc.NewClient("passthrough:///"+addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(32<<20)))
		if err != nil {
			closeAll()
			return nil, err
		}
		conns = append(conns, c)
		c.Connect()
	}
	for _, c := range conns {
		for st := c.GetState(); st != connectivity.Ready; st = c.GetState() {
			if !c.WaitForStateChange(ctx, st) {
				closeAll()
				return nil, fmt.Errorf("connect to %s: %w (last state %s)", addr, ctx.Err(), st)
			}
		}
	}
	return conns, nil
}

// Round is one closed-loop run against one server.
type Round struct {
	// Clients are the connections; caller i uses Clients[i%len(Clients)].
	Clients []authv3.AuthorizationClient
	// Concurrency is the number of callers, each with one check in flight.
	Concurrency int
	// Warmup runs before the measured window and is not measured.
	Warmup, Duration time.Duration
	// Template is the request every caller starts from (cloned per caller);
	// it must carry the Envoy headers map (Attributes.Request.Http.Headers).
	Template *authv3.CheckRequest
	// The raw_body of each request is BodyPrefix, a JSON-RPC id unique in
	// the round, BodySuffix.
	BodyPrefix, BodySuffix string
	// Authorization returns the authorization header of the seq-th request
	// of caller c (both from 0); false means the credentials ran out, which
	// ends the round early (Exhausted).
	Authorization func(caller int, seq uint64) (string, bool)
	// Expect is the outcome every answer must have (see Classify).
	Expect string
	// ServerPID is the process whose CPU time is measured over the window
	// (0: none).
	ServerPID int
	// CallTimeout bounds one check (default 5s).
	CallTimeout time.Duration
}

// RoundResult is what a Round measured. Latency, Checks, ServerCPU and
// ClientCPU cover the measured window only; Answers, Unexpected and
// Examples cover every answer, warm-up included.
type RoundResult struct {
	Window     time.Duration
	Checks     uint64
	Latency    *Histogram
	ServerCPU  time.Duration
	ClientCPU  time.Duration
	Answers    map[string]uint64
	Unexpected uint64
	Examples   []string
	// Exhausted is set when Authorization ran out; the window then ended
	// ExhaustedAfter into it (0 if it ran out during the warm-up).
	Exhausted      bool
	ExhaustedAfter time.Duration
}

// Rate is the measured checks per second.
func (r *RoundResult) Rate() float64 {
	if r.Window <= 0 {
		return 0
	}
	return float64(r.Checks) / r.Window.Seconds()
}

// ErrExhaustedInWarmup is returned by Run when Authorization ran out
// before the measured window began.
var ErrExhaustedInWarmup = errors.New("loadgen: credentials ran out during the warm-up")

const (
	phaseWarmup int32 = iota
	phaseMeasure
	phaseStop
)

const maxExamples = 3

// addAnswers adds the answer counts of from to into, and appends examples
// up to maxExamples.
func addAnswers(into map[string]uint64, examples []string, from map[string]uint64, more []string) []string {
	for k, v := range from {
		into[k] += v
	}
	for _, e := range more {
		if len(examples) < maxExamples {
			examples = append(examples, e)
		}
	}
	return examples
}

type caller struct {
	id       int
	client   authv3.AuthorizationClient
	req      *authv3.CheckRequest
	http     *authv3.AttributeContext_HttpRequest
	headers  map[string]string
	body     []byte
	hist     Histogram
	answers  map[string]uint64
	unexp    uint64
	examples []string
}

// Run runs the round: the warm-up, then the measured window, then it waits
// for every caller's last answer.
func Run(ctx context.Context, r Round) (*RoundResult, error) {
	if r.Concurrency < 1 || len(r.Clients) == 0 || r.Authorization == nil {
		return nil, errors.New("loadgen: Concurrency, Clients and Authorization are required")
	}
	if r.Template.GetAttributes().GetRequest().GetHttp().GetHeaders() == nil {
		return nil, errors.New("loadgen: the template has no headers map")
	}
	callTimeout := r.CallTimeout
	if callTimeout <= 0 {
		callTimeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, r.Warmup+r.Duration+callTimeout)
	defer cancel()

	var phase atomic.Int32
	exhausted := make(chan struct{})
	var exOnce sync.Once
	ranOut := func() { exOnce.Do(func() { close(exhausted) }) }

	callers := make([]*caller, r.Concurrency)
	for i := range callers {
		req := proto.Clone(r.Template).(*authv3.CheckRequest)
		h := req.GetAttributes().GetRequest().GetHttp()
		callers[i] = &caller{
			id: i, client: r.Clients[i%len(r.Clients)],
			req: req, http: h, headers: h.GetHeaders(),
			answers: map[string]uint64{},
		}
	}
	var wg sync.WaitGroup
	for _, c := range callers {
		wg.Go(func() { c.loop(ctx, &r, &phase, ranOut) })
	}

	res := &RoundResult{Answers: map[string]uint64{}}
	sleep := func(d time.Duration) error {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-exhausted:
			res.Exhausted = true
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	}
	finish := func() {
		phase.Store(phaseStop)
		wg.Wait()
		for _, c := range callers {
			res.Unexpected += c.unexp
			res.Examples = addAnswers(res.Answers, res.Examples, c.answers, c.examples)
		}
	}

	if err := sleep(r.Warmup); err != nil || res.Exhausted {
		finish()
		if err == nil {
			err = ErrExhaustedInWarmup
		}
		return res, err
	}
	su0, ss0, serr := cpu(r.ServerPID)
	cu0, cs0, cerr := CPUTime(os.Getpid())
	t0 := time.Now()
	phase.Store(phaseMeasure)
	err := sleep(r.Duration)
	phase.Store(phaseStop)
	res.Window = time.Since(t0)
	if res.Exhausted {
		res.ExhaustedAfter = res.Window
	}
	su1, ss1, serr1 := cpu(r.ServerPID)
	cu1, cs1, cerr1 := CPUTime(os.Getpid())
	finish()
	if err != nil {
		return res, err
	}
	if err := errors.Join(serr, serr1, cerr, cerr1); err != nil {
		return res, fmt.Errorf("loadgen: CPU time: %w", err)
	}
	res.ServerCPU = su1 + ss1 - su0 - ss0
	res.ClientCPU = cu1 + cs1 - cu0 - cs0
	res.Latency = &Histogram{}
	for _, c := range callers {
		res.Latency.Merge(&c.hist)
	}
	res.Checks = res.Latency.Count()
	return res, nil
}

func cpu(pid int) (time.Duration, time.Duration, error) {
	if pid == 0 {
		return 0, 0, nil
	}
	return CPUTime(pid)
}

func (c *caller) loop(ctx context.Context, r *Round, phase *atomic.Int32, ranOut func()) {
	n := uint64(r.Concurrency)
	for seq := uint64(0); phase.Load() != phaseStop; seq++ {
		auth, ok := r.Authorization(c.id, seq)
		if !ok {
			ranOut()
			return
		}
		c.headers["authorization"] = auth
		c.body = append(c.body[:0], r.BodyPrefix...)
		c.body = strconv.AppendUint(c.body, seq*n+uint64(c.id)+1, 10)
		c.body = append(c.body, r.BodySuffix...)
		c.http.RawBody = c.body
		c.http.Size = int64(len(c.body))
		c.headers["content-length"] = strconv.Itoa(len(c.body))

		t0 := time.Now()
		resp, err := c.client.Check(ctx, c.req)
		d := time.Since(t0)
		if err != nil && ctx.Err() != nil {
			return // the round was cancelled: not an answer
		}
		p := phase.Load()
		out := Classify(resp, err)
		c.answers[out]++
		if out != r.Expect {
			c.unexp++
			if len(c.examples) < maxExamples {
				c.examples = append(c.examples, describe(out, resp, err))
			}
		}
		if p == phaseMeasure {
			c.hist.Record(d)
		}
	}
}
