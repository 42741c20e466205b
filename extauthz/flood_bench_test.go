package extauthz_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// BenchmarkCheckUnderFlood measures, over a real gRPC connection, the
// latency of valid checks sent at a fixed rate (500/s, open loop: each
// check in its own goroutine, as Envoy's workers send them) while a flood
// of distinct invalid tokens arrives at 3000/s. Every iteration is one
// valid check, so run it with -benchtime=2500x (5 s); it reports the
// valid checks' p50 and p99 and the flood's answers. Client and server
// share the machine: on 2 cores the figures are pessimistic.
//
//	go test -run XXX -bench CheckUnderFlood -benchtime 2500x ./extauthz/
func BenchmarkCheckUnderFlood(b *testing.B) {
	e := newEnv(b)
	const validRate, floodRate, floodSeconds = 500, 3000, 12
	valid := make([]*authv3.CheckRequest, 8)
	for i := range valid {
		valid[i] = checkRequest(req{body: callWeather, headers: bearer(e.token(b, "tools:get_weather"))})
	}
	base := e.token(b, "tools:get_weather")
	floods := []struct {
		name  string
		token func(i int) string
	}{
		{"no_flood", nil},
		// The costly kind: a known kid, so every one is an RSA verification.
		{"forged_known_kid", func(i int) string { return forged(b, base, i) }},
		{"malformed", func(i int) string { return "eyJhbGciOiJSUzI1NiJ9.e30." + strconv.Itoa(i) }},
		{"unknown_kid", func(i int) string { return withKID(b, base, "unknown-"+strconv.Itoa(i), i) }},
	}
	for _, fl := range floods {
		b.Run(fl.name, func(b *testing.B) {
			ctx := context.Background()
			for _, r := range valid { // warm the caches
				if resp, err := e.client.Check(ctx, r); err != nil || resp.GetOkResponse() == nil {
					b.Fatalf("valid check: %v %v", resp, err)
				}
			}
			stop := make(chan struct{})
			var floodWG sync.WaitGroup
			var flooded, unexpected atomic.Int64
			if fl.token != nil {
				// Pre-built so that building them is not in the flood's
				// path: enough for floodSeconds.
				n := floodRate * floodSeconds
				reqs := make([]string, n)
				for i := range reqs {
					reqs[i] = fl.token(i)
				}
				floodWG.Add(1)
				go func() {
					defer floodWG.Done()
					t := time.NewTicker(time.Millisecond)
					defer t.Stop()
					start, sent := time.Now(), 0
					for {
						select {
						case <-stop:
							return
						case <-t.C:
						}
						due := min(n, int(time.Since(start).Seconds()*floodRate))
						for ; sent < due; sent++ {
							floodWG.Add(1)
							go func(tok string) {
								defer floodWG.Done()
								resp, err := e.client.Check(ctx, checkRequest(req{body: callWeather, headers: bearer(tok)}))
								flooded.Add(1)
								if err != nil || resp.GetDeniedResponse().GetStatus().GetCode() != 401 {
									unexpected.Add(1)
								}
							}(reqs[sent])
						}
					}
				}()
				time.Sleep(200 * time.Millisecond)
			}

			lat := make([]time.Duration, 0, b.N)
			var mu sync.Mutex
			var wg sync.WaitGroup
			var bad atomic.Int64
			interval := time.Second / validRate
			next := time.Now()
			i := 0
			b.ResetTimer()
			for b.Loop() {
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				}
				next = next.Add(interval)
				r := valid[i%len(valid)]
				i++
				wg.Add(1)
				go func() {
					defer wg.Done()
					t0 := time.Now()
					resp, err := e.client.Check(ctx, r)
					d := time.Since(t0)
					if err != nil || resp.GetOkResponse() == nil {
						bad.Add(1)
					}
					mu.Lock()
					lat = append(lat, d)
					mu.Unlock()
				}()
			}
			wg.Wait()
			b.StopTimer()
			close(stop)
			floodWG.Wait()
			if n := bad.Load(); n > 0 {
				b.Fatalf("%d valid checks were not allowed", n)
			}
			if n := unexpected.Load(); n > 0 {
				b.Fatalf("%d flood checks were not answered 401", n)
			}
			slices.Sort(lat)
			q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
			b.ReportMetric(q(0.5), "valid-p50-µs")
			b.ReportMetric(q(0.99), "valid-p99-µs")
			b.ReportMetric(float64(flooded.Load()), "flood-checks")
		})
	}
}

// forged returns tok with a distinct payload (jti) and a random signature
// of the right length: its kid is known, so only an RSA verification
// tells it from a real one.
func forged(tb testing.TB, tok string, i int) string {
	parts := strings.Split(tok, ".")
	sig := make([]byte, len(parts[2])*3/4)
	rand.Read(sig)
	return parts[0] + "." + withClaim(tb, parts[1], "jti", "forged-"+strconv.Itoa(i)) + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// withKID returns tok with the header's kid replaced (and a distinct jti).
func withKID(tb testing.TB, tok, kid string, i int) string {
	parts := strings.Split(tok, ".")
	return withClaim(tb, parts[0], "kid", kid) + "." + withClaim(tb, parts[1], "jti", "u-"+strconv.Itoa(i)) + "." + parts[2]
}

// withClaim sets name in the base64url JSON object seg.
func withClaim(tb testing.TB, seg, name, value string) string {
	raw, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		tb.Fatal(err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(raw, &m); err != nil {
		tb.Fatal(err)
	}
	m[name] = value
	out, _ := json.Marshal(m)
	return base64.RawURLEncoding.EncodeToString(out)
}
