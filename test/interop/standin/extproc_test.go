package standin

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/go-json-experiment/json/jsontext"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mcpauthz/mcpauthz/extproc"
)

// keepWeather is a list policy that shows get_weather only.
type keepWeather struct{}

func (keepWeather) Visible(_ context.Context, _ extproc.ListContext, l extproc.List) (extproc.Visibility, error) {
	v := extproc.Visibility{Keep: make([]bool, len(l.Items))}
	for i, it := range l.Items {
		v.Keep[i] = it.Name == "get_weather"
	}
	return v, nil
}

// processorFunc is a scripted ext_proc server for the failure cases.
type processorFunc func(extprocv3.ExternalProcessor_ProcessServer) error

type scripted struct {
	extprocv3.UnimplementedExternalProcessorServer
	fn processorFunc
}

func (s scripted) Process(st extprocv3.ExternalProcessor_ProcessServer) error { return s.fn(st) }

// listAuthz allows every request; a POST whose body names tools/list gets
// the list metadata mcpauthz sets (list_filter: true, mcpauthz_list).
func listAuthz() *fakeAuthz {
	return &fakeAuthz{answer: func(_ context.Context, r *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		md := &structpb.Struct{Fields: map[string]*structpb.Value{"decision": structpb.NewStringValue("allow")}}
		if strings.Contains(string(r.GetAttributes().GetRequest().GetHttp().GetRawBody()), `"tools/list"`) {
			for k, v := range extproc.EncodeListMetadata(extproc.ListContext{
				ProtocolVersion: "2025-06-18",
				PolicyRevision:  "rev-1",
				Requests:        []extproc.ListRequest{{Method: "tools/list", ID: jsontext.Value(`1`)}},
				Input:           jsontext.Value(`{"request":{"method":"POST","path":"/mcp"},"token":{"sub":"alice"}}`),
			}).Fields {
				md.Fields[k] = v
			}
		}
		return &authv3.CheckResponse{
			Status:          &statuspb.Status{Code: int32(codes.OK)},
			HttpResponse:    &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
			DynamicMetadata: md,
		}, nil
	}}
}

// startMcpauthzLike serves ext_authz and ext_proc on one gRPC port, as
// mcpauthz does.
func startMcpauthzLike(t *testing.T, authz *fakeAuthz, proc extprocv3.ExternalProcessorServer) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, authz)
	extprocv3.RegisterExternalProcessorServer(gs, proc)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = gs.Serve(lis)
	}()
	t.Cleanup(func() {
		gs.Stop()
		<-done
	})
	return dial(t, lis.Addr().String())
}

func realProcessor(t *testing.T) *extproc.Server {
	t.Helper()
	srv, err := extproc.New(extproc.Options{Policy: keepWeather{}})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

const (
	listBody   = `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
	callBody   = `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_weather","arguments":{}}}`
	toolsJSON  = `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"get_weather","inputSchema":{"type":"object"}},{"name":"delete_file","inputSchema":{"type":"object"}}]}}`
	weatherOny = `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"get_weather","inputSchema":{"type":"object"}}]}}`
)

func post(t *testing.T, url, body string) (*http.Response, string, error) {
	t.Helper()
	resp, err := http.Post(url+"/mcp", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

// The real processor filters a list response, JSON or SSE split anywhere,
// through the stand-in; other responses never open a stream.
func TestListFilterWithTheRealProcessor(t *testing.T) {
	tests := []struct {
		name        string
		reqBody     string
		contentType string
		chunks      []string
		wantBody    string
		wantStreams int
		wantLength  string // the content-length the client gets
	}{
		{
			name: "JSON", reqBody: listBody, contentType: "application/json",
			chunks: []string{toolsJSON}, wantBody: weatherOny, wantStreams: 1,
		},
		{
			name: "JSON in pieces", reqBody: listBody, contentType: "application/json",
			chunks: []string{toolsJSON[:17], toolsJSON[17:60], toolsJSON[60:]}, wantBody: weatherOny, wantStreams: 1,
		},
		{
			name: "SSE split mid event", reqBody: listBody, contentType: "text/event-stream",
			chunks:   []string{"event: message\ndata: " + toolsJSON[:40], toolsJSON[40:] + "\n\n"},
			wantBody: "event: message\ndata: " + weatherOny + "\n\n", wantStreams: 1,
		},
		{
			name: "not a list", reqBody: callBody, contentType: "application/json",
			chunks: []string{toolsJSON}, wantBody: toolsJSON, wantStreams: 0, wantLength: strconv.Itoa(len(toolsJSON)),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := startMcpauthzLike(t, listAuthz(), realProcessor(t))
			url, p := startProxy(t, shipped, conn, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tt.contentType)
				if len(tt.chunks) == 1 {
					w.Header().Set("Content-Length", strconv.Itoa(len(tt.chunks[0])))
				}
				for _, c := range tt.chunks {
					_, _ = io.WriteString(w, c)
					w.(http.Flusher).Flush()
				}
			}))
			resp, body, err := post(t, url, tt.reqBody)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 || body != tt.wantBody {
				t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, tt.wantBody)
			}
			if got := resp.Header.Get("Content-Length"); got != tt.wantLength {
				t.Errorf("content-length %q, want %q", got, tt.wantLength)
			}
			if got := resp.Header.Get("Content-Type"); got != tt.contentType {
				t.Errorf("content-type %q, want %q", got, tt.contentType)
			}
			exs := waitExchanges(t, p, tt.wantStreams)
			for _, ex := range exs {
				if ex.Err != nil || ex.Reset || ex.FailOpen || ex.Status != 0 {
					t.Errorf("exchange: err %v reset %v fail-open %v status %d", ex.Err, ex.Reset, ex.FailOpen, ex.Status)
				}
				first := ex.Sent[0]
				if first.GetProtocolConfig() == nil || first.GetResponseHeaders() == nil {
					t.Errorf("first message: %v", first)
				}
				for _, h := range first.GetResponseHeaders().GetHeaders().GetHeaders() {
					if h.GetKey() == "content-length" || h.GetKey() != strings.ToLower(h.GetKey()) || h.GetValue() != "" {
						t.Errorf("header %q=%q sent (content-length is removed, keys lower-case, values in raw_value)", h.GetKey(), h.GetValue())
					}
				}
				for i, m := range ex.Sent {
					if i > 0 && m.GetProtocolConfig() != nil {
						t.Errorf("message %d has protocol_config", i)
					}
					if _, err := extproc.ParseMetadata(m.GetMetadataContext()); err != nil {
						t.Errorf("message %d: metadata_context: %v", i, err)
					}
				}
				if last := ex.Sent[len(ex.Sent)-1]; !last.GetResponseBody().GetEndOfStream() {
					t.Errorf("last message %v has no end_of_stream", last)
				}
			}
		})
	}
}

// waitExchanges waits for n exchanges: one is recorded when the proxy
// closes the response body, just after the client has read it.
func waitExchanges(t *testing.T, p *Proxy, n int) []Exchange {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		exs := p.Exchanges()
		if len(exs) >= n || time.Now().After(deadline) {
			if len(exs) != n {
				t.Fatalf("%d ext_proc exchanges, want %d", len(exs), n)
			}
			return exs
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recvHeaders reads the response headers message.
func recvHeaders(st extprocv3.ExternalProcessor_ProcessServer) error {
	m, err := st.Recv()
	if err != nil {
		return err
	}
	if m.GetResponseHeaders() == nil {
		return status.Error(codes.InvalidArgument, "first message is not response headers")
	}
	return nil
}

func headersReply(set map[string]string, remove ...string) *extprocv3.ProcessingResponse {
	hm := &extprocv3.HeaderMutation{RemoveHeaders: remove}
	for k, v := range set {
		hm.SetHeaders = append(hm.SetHeaders, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, RawValue: []byte(v)}})
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
		ResponseHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{HeaderMutation: hm}},
	}}
}

func bodyReply(b string, eos bool) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
		ResponseBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{
			Mutation: &extprocv3.BodyMutation_StreamedResponse{StreamedResponse: &extprocv3.StreamedBodyResponse{Body: []byte(b), EndOfStream: eos}},
		}}},
	}}
}

// drainToEOS reads body messages until end_of_stream.
func drainToEOS(st extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		m, err := st.Recv()
		if err != nil {
			return err
		}
		if m.GetResponseBody().GetEndOfStream() {
			return nil
		}
	}
}

// Envoy's answers to what a processor does, before and after the response
// headers left.
func TestListFilterConversation(t *testing.T) {
	tests := []struct {
		name       string
		timeout    time.Duration
		proc       processorFunc
		wantStatus int
		wantBody   string
		wantHeader map[string]string
		wantErr    bool // the client's read fails: the stream was reset
		check      func(t *testing.T, ex Exchange)
	}{
		{
			name: "header mutations and a replaced body",
			proc: func(st extprocv3.ExternalProcessor_ProcessServer) error {
				if err := recvHeaders(st); err != nil {
					return err
				}
				if err := st.Send(headersReply(map[string]string{"x-filtered": "yes", "content-length": "3", "x-envoy-mine": "1"}, "x-drop")); err != nil {
					return err
				}
				if err := drainToEOS(st); err != nil {
					return err
				}
				_ = st.Send(bodyReply("ab", false))
				_ = st.Send(bodyReply("c", true))
				_, err := st.Recv() // the half-close and the reset
				return err
			},
			wantStatus: 200, wantBody: "abc",
			wantHeader: map[string]string{"X-Filtered": "yes", "X-Drop": "", "Content-Length": "", "X-Envoy-Mine": "", "Content-Type": "application/json"},
			check: func(t *testing.T, ex Exchange) {
				if ex.Err != nil || ex.Reset || ex.Status != 0 {
					t.Errorf("exchange: %+v", ex)
				}
			},
		},
		{
			name: "immediate response",
			proc: func(st extprocv3.ExternalProcessor_ProcessServer) error {
				if err := recvHeaders(st); err != nil {
					return err
				}
				return st.Send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
					Status: &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden}, Body: []byte("no"),
				}}})
			},
			wantStatus: 403, wantBody: "no",
			check: func(t *testing.T, ex Exchange) {
				if ex.Status != 403 {
					t.Errorf("exchange status %d", ex.Status)
				}
			},
		},
		{
			name:       "gRPC error before the headers left",
			proc:       func(extprocv3.ExternalProcessor_ProcessServer) error { return status.Error(codes.Internal, "boom") },
			wantStatus: 503, wantBody: "ext_proc error",
			check: func(t *testing.T, ex Exchange) {
				if status.Code(ex.Err) != codes.Internal || ex.Status != 503 {
					t.Errorf("exchange: err %v status %d", ex.Err, ex.Status)
				}
			},
		},
		{
			name: "spurious body reply before the header reply",
			proc: func(st extprocv3.ExternalProcessor_ProcessServer) error {
				if err := recvHeaders(st); err != nil {
					return err
				}
				_ = st.Send(bodyReply("x", false))
				_, err := st.Recv()
				<-st.Context().Done()
				return err
			},
			wantStatus: 503, wantBody: "ext_proc error",
		},
		{
			name:    "no header reply within message_timeout",
			timeout: 50 * time.Millisecond,
			proc: func(st extprocv3.ExternalProcessor_ProcessServer) error {
				<-st.Context().Done()
				return nil
			},
			wantStatus: 504, wantBody: "ext_proc error",
		},
		{
			name: "error after the headers left",
			proc: func(st extprocv3.ExternalProcessor_ProcessServer) error {
				if err := recvHeaders(st); err != nil {
					return err
				}
				_ = st.Send(headersReply(nil))
				_ = st.Send(bodyReply("partial", false))
				return status.Error(codes.Internal, "boom")
			},
			wantStatus: 200, wantErr: true,
			check: func(t *testing.T, ex Exchange) {
				if !ex.Reset || status.Code(ex.Err) != codes.Internal {
					t.Errorf("exchange: reset %v err %v", ex.Reset, ex.Err)
				}
			},
		},
		{
			name: "end_of_stream before Envoy's",
			proc: func(st extprocv3.ExternalProcessor_ProcessServer) error {
				if err := recvHeaders(st); err != nil {
					return err
				}
				_ = st.Send(headersReply(nil))
				_ = st.Send(bodyReply("early", true))
				<-st.Context().Done()
				return nil
			},
			wantStatus: 503, wantBody: "ext_proc error",
		},
		{
			name: "the processor ends the stream with OK",
			proc: func(st extprocv3.ExternalProcessor_ProcessServer) error {
				return recvHeaders(st)
			},
			wantStatus: 503, wantBody: "ext_proc error",
			check: func(t *testing.T, ex Exchange) {
				if !ex.FailOpen {
					t.Errorf("FailOpen not recorded: %+v", ex)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := shipped
			ep := *shipped.ExtProc
			if tt.timeout > 0 {
				ep.MessageTimeout = tt.timeout
			}
			cfg.ExtProc = &ep
			conn := startMcpauthzLike(t, listAuthz(), scripted{fn: tt.proc})
			// The upstream holds the end of its body until the client is
			// done, so every case sees the body still streaming.
			release := make(chan struct{})
			defer close(release)
			url, p := startProxy(t, cfg, conn, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("X-Drop", "1")
				_, _ = io.WriteString(w, toolsJSON)
				w.(http.Flusher).Flush()
				select {
				case <-release:
				case <-r.Context().Done():
				case <-time.After(200 * time.Millisecond):
				}
			}))
			resp, body, err := post(t, url, listBody)
			if (err != nil) != tt.wantErr {
				t.Fatalf("read error %v, want an error: %v", err, tt.wantErr)
			}
			if resp.StatusCode != tt.wantStatus || !tt.wantErr && body != tt.wantBody {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, body, tt.wantStatus, tt.wantBody)
			}
			for k, v := range tt.wantHeader {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			exs := waitExchanges(t, p, 1)
			if tt.check != nil {
				tt.check(t, exs[0])
			}
		})
	}
}
