package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/mcpauthz/mcpauthz/internal/config"
	"github.com/mcpauthz/mcpauthz/internal/devissuer"
)

// drainIdP is an authorization server on 127.0.0.1: a key set to which a
// second key can be published, and an introspection endpoint that holds
// the answer for one token until released.
type drainIdP struct {
	srv      *httptest.Server
	keys     []jwk.Key
	mu       sync.Mutex
	slow     string        // the opaque token whose answer is held
	held     chan struct{} // closed when the held request has arrived
	heldOnce sync.Once
	release  chan struct{}
	calls    atomic.Int32 // introspection calls answered
}

func newDrainIdP(t *testing.T, key jwk.Key, issuer, resource string) *drainIdP {
	t.Helper()
	p := &drainIdP{keys: []jwk.Key{key}, slow: "opaque-held-token", held: make(chan struct{}), release: make(chan struct{})}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/jwks":
			p.mu.Lock()
			set := jwk.NewSet()
			for _, k := range p.keys {
				pub, _ := k.PublicKey()
				set.AddKey(pub)
			}
			p.mu.Unlock()
			json.NewEncoder(w).Encode(set)
		case "/introspect":
			if err := r.ParseForm(); err != nil {
				http.Error(w, "bad form", 400)
				return
			}
			if r.PostForm.Get("token") == p.slow {
				p.heldOnce.Do(func() { close(p.held) })
				select {
				case <-p.release:
				case <-r.Context().Done():
					return
				}
			}
			p.calls.Add(1)
			fmt.Fprintf(w, `{"active":true,"iss":%q,"sub":"opaque-user","client_id":"c1","aud":%q,"exp":%d}`,
				issuer, resource, time.Now().Add(time.Hour).Unix())
		default:
			http.NotFound(w, r)
		}
	}))
	return p
}

func (p *drainIdP) publish(k jwk.Key) {
	p.mu.Lock()
	p.keys = append(p.keys, k)
	p.mu.Unlock()
}

// TestDrainDecidesEveryCheck plays a SIGTERM while a check waits on
// introspection: /readyz and gRPC health fail from the first moment, checks
// keep being decided with full verification (an opaque token introspected
// anew, a JWT signed by a key published after start), the held check gets
// its real allow once the endpoint answers, and serve returns within
// shutdown.timeout of the signal.
func TestDrainDecidesEveryCheck(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	iss, cfg, idp := drainSetup(t)
	defer idp.srv.Close()
	defer close(idp.release) // on failure paths; released below otherwise
	const drainDelay, timeout = 2 * time.Second, 10 * time.Second
	cfg.Shutdown.DrainDelay = new(config.Duration(drainDelay))
	cfg.Shutdown.Timeout = config.Duration(timeout)
	srv := startServer(t, cfg)
	waitReadyz(t, srv.httpBase)

	check := func(client authv3.AuthorizationClient, token string) (*authv3.CheckResponse, error) {
		req, err := buildCheckRequest(cfg, "POST", "", token, nil, []byte(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return client.Check(ctx, req)
	}
	type result struct {
		resp *authv3.CheckResponse
		err  error
	}
	heldDone := make(chan result, 1)
	go func() {
		resp, err := check(srv.client, idp.slow)
		heldDone <- result{resp, err}
	}()
	select {
	case <-idp.held:
	case <-time.After(10 * time.Second):
		t.Fatal("the check never reached the introspection endpoint")
	}

	signalled := time.Now()
	go srv.cancel() // the signal
	// From the first moment of the drain: /readyz 503 draining, health
	// NOT_SERVING. A probe that raced the signal may still see 200; none
	// may after the first 503.
	var sawDraining bool
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline) && !sawDraining; time.Sleep(5 * time.Millisecond) {
		code, body := getStatus(t, srv.httpBase+"/readyz")
		sawDraining = code == 503 && drainingBody(body)
	}
	if !sawDraining {
		t.Fatal("/readyz never answered 503 draining after the signal")
	}
	hc := healthpb.NewHealthClient(srv.conn)
	if st, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"}); err != nil || st.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("gRPC health during the drain = %v, %v; want NOT_SERVING", st, err)
	}

	// During the drain, on the existing connection and on a new one, checks
	// are decided as before: an opaque token needs a new introspection call,
	// a JWT signed by a newly published key needs a key set refetch.
	newKey, err := devissuer.LoadOrCreateKey(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	idp.publish(newKey)
	newKid, err := (&devissuer.Issuer{URL: iss.URL, Key: newKey}).Mint(devissuer.MintOptions{Subject: "rotated", Audience: []string{cfg.Resource}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	conn2, err := grpc.NewClient(srv.conn.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	for name, c := range map[string]struct {
		client authv3.AuthorizationClient
		token  string
	}{
		"opaque token, same connection": {srv.client, "opaque-token-during-drain"},
		"new kid, same connection":      {srv.client, newKid},
		"opaque token, new connection":  {authv3.NewAuthorizationClient(conn2), "another-opaque-token"},
	} {
		resp, err := check(c.client, c.token)
		if err != nil || resp.GetOkResponse() == nil {
			t.Errorf("%s during the drain: %v, %v; want an allow", name, resp, err)
		}
	}
	if code, _ := getStatus(t, srv.httpBase+"/readyz"); code != 503 {
		t.Errorf("/readyz later in the drain = %d, want 503", code)
	}

	idp.release <- struct{}{} // the held introspection answers now
	r := <-heldDone
	if r.err != nil || r.resp.GetOkResponse() == nil {
		t.Errorf("the check in flight at the signal = %v, %v; want its real allow", r.resp, r.err)
	}
	if err := srv.stop(t); err != nil {
		t.Errorf("serve() = %v after the drain, want nil", err)
	}
	if d := time.Since(signalled); d > timeout {
		t.Errorf("serve returned %v after the signal, want within shutdown.timeout (%v)", d, timeout)
	}
	srv.conn.Close()
}

// drainSetup is a development configuration whose one issuer has its keys
// and its introspection endpoint at a drainIdP.
func drainSetup(t *testing.T) (*devissuer.Issuer, *config.Config, *drainIdP) {
	t.Helper()
	iss, cfg, err := devSetup(t.TempDir(), "", "", true, true)
	if err != nil {
		t.Fatal(err)
	}
	idp := newDrainIdP(t, iss.Key, iss.URL, cfg.Resource)
	secret := filepath.Join(t.TempDir(), "secret")
	write(t, secret, "s3cret")
	is := &cfg.Issuers[0]
	is.JWKSFile, is.JWKSURI = "", idp.srv.URL+"/jwks"
	is.JWKS.UnknownKIDInterval = config.Duration(time.Second) // the smallest allowed
	is.Introspection = &config.Introspection{Endpoint: idp.srv.URL + "/introspect", ClientID: "mcpauthz", ClientSecretFile: secret,
		Timeout: config.Duration(20 * time.Second)}
	return iss, cfg, idp
}

func waitReadyz(t testing.TB, base string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if code, _ := getStatus(t, base+"/readyz"); code == 200 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("never ready")
		}
	}
}

// getStatus GETs url on a new connection; a refused connection is 0.
func getStatus(t testing.TB, url string) (int, string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// drainingBody reports whether a /readyz body says not ready because of
// the drain.
func drainingBody(body string) bool {
	var r struct{ Status, Reason string }
	return json.Unmarshal([]byte(body), &r) == nil && r.Status == "not ready" && r.Reason == "draining"
}
