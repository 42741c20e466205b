package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/mcpauthz/mcpauthz/internal/devissuer"
	"github.com/mcpauthz/mcpauthz/internal/loadgen"
)

// BenchmarkScrapeFlood measures what a flood of /metrics scrapes costs the
// decision path: gRPC check latency of mcpauthz (its own process, as
// served) under the closed-loop load of mcpauthz-bench's hot workload (16
// callers over 4 connections), first alone, then while 50 connections send
// pipelined GET /metrics as fast as the server answers. It is a load run,
// not a unit benchmark: run it alone, once, with
//
//	go test -run '^$' -bench ScrapeFlood -benchtime 1x ./cmd/mcpauthz/
//
// and read p99-base-ms, p99-flood-ms and their ratio (the target: ≤ 2).
func BenchmarkScrapeFlood(b *testing.B) {
	const (
		concurrency, conns = 16, 4
		floodConns         = 50
		warmup, duration   = time.Second, 5 * time.Second
	)
	dev := b.TempDir()
	iss, cfg, err := devSetup(dev, "", "", true, true)
	if err != nil {
		b.Fatal(err)
	}
	yaml := "resource: " + cfg.Resource + "\nauthorization_servers: [\"" + iss.URL + "\"]\n" +
		"grpc_addr: 127.0.0.1:0\nhttp_addr: 127.0.0.1:0\n" +
		"issuers: [{issuer: \"" + iss.URL + "\", token_type: at+jwt, jwks_file: \"" + filepath.Join(dev, "jwks.json") + "\"}]\n" +
		"log: {level: warn}\nshutdown: {drain_delay: 0s, timeout: 2s}\n"
	cfgFile := filepath.Join(b.TempDir(), "c.yaml")
	write(b, cfgFile, yaml)
	p := startProcess(b, cfgFile)
	waitReadyz(b, p.httpBase)

	ctx := context.Background()
	cc, err := loadgen.Dial(ctx, p.grpcAddr, conns)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		for _, c := range cc {
			c.Close()
		}
	}()
	clients := make([]authv3.AuthorizationClient, len(cc))
	for i, c := range cc {
		clients[i] = authv3.NewAuthorizationClient(c)
	}
	var tokens []string
	for i := range 8 {
		tok, err := iss.Mint(devissuer.MintOptions{Subject: "user" + strconv.Itoa(i), Audience: []string{cfg.Resource}, Scopes: []string{"tools:get_weather"}, TTL: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		tokens = append(tokens, "Bearer "+tok)
	}
	tmpl, err := buildCheckRequest(cfg, "POST", "", "x", nil, []byte("{}"))
	if err != nil {
		b.Fatal(err)
	}
	round := func() *loadgen.RoundResult {
		b.Helper()
		res, err := loadgen.Run(ctx, loadgen.Round{
			Clients: clients, Concurrency: concurrency, Warmup: warmup, Duration: duration, Template: tmpl,
			BodyPrefix: `{"jsonrpc":"2.0","id":`, BodySuffix: `,"method":"tools/call","params":{"name":"get_weather","arguments":{"city":"Paris"}}}`,
			Authorization: func(c int, seq uint64) (string, bool) { return tokens[(uint64(c)+seq)%uint64(len(tokens))], true },
			Expect:        loadgen.OutcomeAllow, ServerPID: p.cmd.Process.Pid,
		})
		if err != nil || res.Unexpected > 0 {
			b.Fatalf("round: %v, %d unexpected answers %v", err, res.Unexpected, res.Examples)
		}
		return res
	}

	b.ResetTimer()
	for range b.N {
		base := round()
		stop, scraped := flood(b, p.httpBase[len("http://"):], floodConns)
		flooded := round()
		stop()
		b.ReportMetric(float64(base.Latency.Quantile(0.99))/1e6, "p99-base-ms")
		b.ReportMetric(float64(flooded.Latency.Quantile(0.99))/1e6, "p99-flood-ms")
		b.ReportMetric(float64(flooded.Latency.Quantile(0.99))/float64(base.Latency.Quantile(0.99)), "p99-ratio")
		b.ReportMetric(base.Rate(), "checks/s-base")
		b.ReportMetric(flooded.Rate(), "checks/s-flood")
		b.ReportMetric(base.ServerCPU.Seconds()/base.Window.Seconds(), "server-cores-base")
		b.ReportMetric(flooded.ServerCPU.Seconds()/flooded.Window.Seconds(), "server-cores-flood")
		b.ReportMetric(float64(scraped.Load())/flooded.Window.Seconds()/1e6, "flood-MB/s")
	}
}

// flood opens n connections to addr that send pipelined GET /metrics as
// fast as the server reads them, and read every answer; stop closes them.
func flood(b *testing.B, addr string, n int) (stop func(), read *atomic.Int64) {
	b.Helper()
	read = &atomic.Int64{}
	var wg sync.WaitGroup
	var conns []net.Conn
	req := []byte("GET /metrics HTTP/1.1\r\nHost: mcpauthz\r\nAccept-Encoding: gzip\r\n\r\n")
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
		wg.Go(func() {
			w := bufio.NewWriterSize(c, 64<<10)
			for {
				for range 64 {
					w.Write(req)
				}
				if w.Flush() != nil {
					return
				}
			}
		})
		wg.Go(func() {
			n, _ := io.Copy(io.Discard, c)
			read.Add(n)
		})
	}
	return func() {
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	}, read
}
