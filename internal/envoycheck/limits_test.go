package envoycheck

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// nestedAnchors is the "billion laughs" shape: level i is a list (or, with
// merge set, a mapping merging with "<<") of width aliases of level i-1.
func nestedAnchors(levels, width int, merge bool) string {
	var b strings.Builder
	b.WriteString("a0: &a0 [lol]\n")
	if merge {
		b.WriteString("m0: &m0 {k0: lol}\n")
	}
	for i := 1; i <= levels; i++ {
		refs := make([]string, width)
		for j := range refs {
			if merge {
				refs[j] = fmt.Sprintf("*m%d", i-1)
			} else {
				refs[j] = fmt.Sprintf("*a%d", i-1)
			}
		}
		if merge {
			fmt.Fprintf(&b, "m%d: &m%d {<<: [%s], k%d: x}\n", i, i, strings.Join(refs, ","), i)
		} else {
			fmt.Fprintf(&b, "a%d: &a%d [%s]\n", i, i, strings.Join(refs, ","))
		}
	}
	return b.String()
}

func indent(s string, n int) string {
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n"+pad) + "\n"
}

// TestAliasBombs: documents whose aliases expand to far more than MaxNodes
// or MaxExpandedBytes are refused with one finding that names the problem,
// before anything is expanded: cheaply in memory (asserted) and in time.
func TestAliasBombs(t *testing.T) {
	longScalar := strings.Repeat("x", 512<<10)
	tests := []struct {
		name string
		doc  string
		want string // in the finding's message
	}{
		{"billion_laughs_nested_sequences", nestedAnchors(9, 9, false), "alias *a"},
		{"short_file_306_bytes_shape", nestedAnchors(7, 10, false), "alias *a"},
		{"nested_merge_keys", nestedAnchors(9, 9, true), "alias *m"},
		{"deep_binary_chain", nestedAnchors(40, 2, false), "alias *a"},
		{"wide_one_anchor_many_aliases", "big: &big [" + strings.Repeat("v,", 999) + "v]\nuse: [" +
			strings.Repeat("*big,", 999) + "*big]\n", "alias *big on line 2 alone expands to 1001 nodes"},
		{"long_scalar_aliased", "s: &s " + longScalar + "\nuse: [" + strings.Repeat("*s,", 39) + "*s]\n",
			"more than 16 MiB of scalar values (an alias bomb?): alias *s on line 2 alone expands to 512.0 KiB"},
		// filter_metadata holds free-form Structs: a bomb there is valid
		// Envoy configuration in shape, and must still be refused.
		{"inside_free_form_metadata", "static_resources:\n  clusters:\n  - name: c\n    metadata:\n      filter_metadata:\n" +
			indent(nestedAnchors(8, 9, false), 8), "alias *a"},
		{"alias_cycle", "a: &x [b, *x]\n", "refers to a node that contains it"},
		{"merge_key_cycle", "a: &x\n  <<: *x\n", "refers to a node that contains it"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			r, err := Validate(t.Context(), []byte(tc.doc))
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatal("Validate accepted an alias bomb")
			}
			if len(r.Findings) != 1 || r.Findings[0].Rule != RuleYAML || r.Findings[0].Severity != Error {
				t.Fatalf("findings = %v, want one yaml error", r.Findings)
			}
			msg := r.Findings[0].Message
			if !strings.Contains(msg, tc.want) || (!strings.Contains(msg, "expands") && !strings.Contains(msg, "infinite") && !strings.Contains(msg, "aliases")) {
				t.Errorf("message %q does not name the problem (want %q)", msg, tc.want)
			}
			// The input is at most 0.5 MiB; expanding any of these would
			// take gigabytes. 64 MiB covers the decoded tree with room.
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
				t.Errorf("Validate allocated %d MiB on a %d-byte input", alloc>>20, len(tc.doc))
			}
			// A generous bound (the rejection takes milliseconds), for the
			// record: the unbounded validator took 12 s on a 306-byte file.
			if elapsed > time.Second {
				t.Errorf("Validate took %v to reject the bomb", elapsed)
			}
			t.Logf("%d bytes: %s (%v)", len(tc.doc), r.Findings[0], elapsed)
		})
	}
}

// TestDocumentLimits: size, node count, scalar bytes and depth are bounded
// with or without aliases; documents within the bounds are unaffected.
func TestDocumentLimits(t *testing.T) {
	small := limits{bytes: 1 << 10, nodes: 100, scalarBytes: 1 << 10}
	tests := []struct {
		name string
		doc  string
		lim  limits
		want string // "" = no finding
	}{
		{"too_many_bytes", "a: b\n" + strings.Repeat("# padding\n", 200), small, "reads at most 1.0 KiB"},
		{"too_many_nodes_without_aliases", "a: [" + strings.Repeat("1,", 200) + "1]\n", small, "has more than 100 YAML nodes"},
		{"too_many_scalar_bytes_without_aliases", "a: " + strings.Repeat("x", 1000) + "\nb: " + strings.Repeat("y", 30) + "\n",
			limits{bytes: 4 << 10, nodes: 100, scalarBytes: 1 << 10}, "more than 1.0 KiB of scalar values"},
		{"aliases_just_within_bounds", "a: &a [1,2,3,4,5,6,7,8,9]\nb: [*a,*a,*a,*a,*a,*a,*a,*a]\n", small, ""},
		{"aliases_one_node_over", "a: &a [1,2,3,4,5,6,7,8,9]\nb: [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n", small, "alias *a on line 2 alone expands to 10 nodes"},
		{"deep_nesting", "a: " + strings.Repeat("[", maxDepth+5) + strings.Repeat("]", maxDepth+5) + "\n", defaultLimits, "nesting deeper than 200 levels"},
		{"deep_nesting_within_bound", "a: " + strings.Repeat("[", maxDepth-2) + strings.Repeat("]", maxDepth-2) + "\n", defaultLimits, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc, fs, err := parseYAML(t.Context(), []byte(tc.doc), tc.lim)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				if len(fs) != 0 || doc == nil {
					t.Fatalf("findings %v, want none", fs)
				}
				return
			}
			if doc != nil || len(fs) != 1 || !strings.Contains(fs[0].Message, tc.want) || fs[0].Rule != RuleYAML {
				t.Fatalf("findings %v, want one yaml finding containing %q", fs, tc.want)
			}
		})
	}
}

// TestMaxConfigBytes checks the exported bound on the real entry point.
func TestMaxConfigBytes(t *testing.T) {
	doc := []byte("admin: {}\n" + strings.Repeat("#", MaxConfigBytes))
	r, err := Validate(t.Context(), doc)
	if err == nil || len(r.Findings) != 1 || !strings.Contains(r.Findings[0].Message, "reads at most 2 MiB") {
		t.Fatalf("Validate(%d bytes) = %v, %v", len(doc), r.Findings, err)
	}
}

// TestAliasesInRealConfigurations: anchors used the way people use them in
// Envoy files (one value shared by several clusters) still validate.
func TestAliasesInRealConfigurations(t *testing.T) {
	cfg := strings.Replace(string(readFile(t, "../../envoy/envoy.yaml")), "connect_timeout: 5s", "connect_timeout: &timeout 1s", 1)
	cfg = strings.Replace(cfg, "connect_timeout: 1s", "connect_timeout: *timeout", 1)
	if !strings.Contains(cfg, "*timeout") {
		t.Fatal("envoy.yaml changed: no connect_timeout to share")
	}
	if r, err := Validate(t.Context(), []byte(cfg)); err != nil {
		t.Fatalf("Validate: %v\n%v", err, r.Findings)
	}
}

// countdownCtx is a context whose Err starts returning context.Canceled at
// its n-th call: it cancels a validation at an exact point of its progress,
// deterministically, in whichever phase that point is.
type countdownCtx struct {
	context.Context
	left  atomic.Int64
	calls atomic.Int64
	once  sync.Once
	done  chan struct{}
}

func newCountdownCtx(n int64) *countdownCtx {
	c := &countdownCtx{Context: context.Background(), done: make(chan struct{})}
	c.left.Store(n)
	return c
}

func (c *countdownCtx) Done() <-chan struct{} { return c.done }

func (c *countdownCtx) Err() error {
	c.calls.Add(1)
	if c.left.Add(-1) > 0 {
		return nil
	}
	c.once.Do(func() { close(c.done) })
	return context.Canceled
}

// largeConfig returns envoy.yaml with clusters appended up to about size
// bytes: a big but ordinary bootstrap.
func largeConfig(t *testing.T, size int) []byte {
	t.Helper()
	var b strings.Builder
	b.Write(readFile(t, "../../envoy/envoy.yaml"))
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, `  - name: extra_%d
    type: STRICT_DNS
    connect_timeout: 5s
    load_assignment:
      cluster_name: extra_%d
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: host-%d.example, port_value: 8080 } } }
`, i, i, i)
	}
	return []byte(b.String())
}

// TestValidateCancelled: a cancelled validation returns an error wrapping
// context.Canceled and no report, whether ctx is done before it starts or
// at any point of its progress (YAML decoding, measuring, converting,
// walking).
func TestValidateCancelled(t *testing.T) {
	entry := map[string]func(context.Context, []byte) (Report, error){
		"Validate":   Validate,
		"ValidateAs": func(ctx context.Context, d []byte) (Report, error) { return ValidateAs(ctx, d, &hcmv3.HttpFilter{}) },
		"DecodeAs":   func(ctx context.Context, d []byte) (Report, error) { return DecodeAs(ctx, d, &hcmv3.HttpFilter{}) },
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for name, f := range entry {
		r, err := f(ctx, readFile(t, "../../envoy/envoy.yaml"))
		if !errors.Is(err, context.Canceled) || len(r.Findings) != 0 {
			t.Errorf("%s(cancelled ctx) = %v, %v; want context.Canceled and no findings", name, r.Findings, err)
		}
	}

	data := largeConfig(t, 64<<10)
	probe := newCountdownCtx(1 << 62)
	if _, err := Validate(probe, data); err != nil {
		t.Fatalf("Validate(%d bytes): %v", len(data), err)
	}
	total := probe.calls.Load()
	if total < 20 {
		t.Fatalf("Validate checked ctx only %d times on %d bytes", total, len(data))
	}
	for n := int64(1); n <= total; n = n*3/2 + 1 {
		ctx := newCountdownCtx(n)
		r, err := Validate(ctx, data)
		if !errors.Is(err, context.Canceled) || len(r.Findings) != 0 {
			t.Fatalf("cancelled at ctx check %d of %d: Validate = %d findings, %v; want context.Canceled", n, total, len(r.Findings), err)
		}
		if extra := ctx.calls.Load() - n; extra > 2 {
			t.Errorf("cancelled at ctx check %d of %d: %d more checks before returning", n, total, extra)
		}
	}
}

// TestValidateCancelledPromptly cancels a real context while a large
// (MaxConfigBytes-sized) bootstrap is being validated and bounds how long
// Validate takes to return after the cancellation.
func TestValidateCancelledPromptly(t *testing.T) {
	data := largeConfig(t, MaxConfigBytes-64<<10)
	ctx, cancel := context.WithCancel(t.Context())
	var cancelledAt atomic.Int64
	timer := time.AfterFunc(20*time.Millisecond, func() {
		cancelledAt.Store(time.Now().UnixNano())
		cancel()
	})
	defer timer.Stop()
	_, err := Validate(ctx, data)
	returned := time.Now()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Validate = %v, want context.Canceled (the validation finished in under 20ms?)", err)
	}
	if lag := returned.Sub(time.Unix(0, cancelledAt.Load())); lag > time.Second {
		t.Errorf("Validate returned %v after ctx was cancelled", lag)
	}
}
