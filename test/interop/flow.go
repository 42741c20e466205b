package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// OtherResource is the audience of the wrong-audience case's token, which
// mcpauthz must refuse: oidc-provider issues it for this resource
// indicator, the development server's row mints it.
const OtherResource = "https://other.example/mcp"

// RequireNode skips (or, in CI, fails) the test when the Node side is not
// installed: node on PATH and test/interop/node/node_modules from `npm ci`
// (`make test-interop`).
func RequireNode(t *testing.T) {
	t.Helper()
	var missing string
	if _, err := exec.LookPath("node"); err != nil {
		missing = "node is not on PATH"
	} else if _, err := os.Stat(filepath.Join(NodeDir(), "node_modules", "@modelcontextprotocol", "sdk")); err != nil {
		missing = "test/interop/node/node_modules is missing: run `make test-interop` (npm ci in test/interop/node)"
	}
	if missing == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal(missing)
	}
	t.Skip(missing)
}

// clientScopes are what each scenario's client asks for by itself (its
// client metadata's scope), used by the SDK when a challenge names none:
// the public client knows the tools it wants, the refreshing client asks
// for nothing and gets a token without scope. mcpauthz advertises no
// scopes_supported in either row.
var clientScopes = map[string]string{
	"public":  "tools:announce tools:get_weather tools:whoami",
	"refresh": "",
}

// Run runs the client scenarios through front against the authorization
// server of as, and checks every step.
func Run(t *testing.T, bin string, front Front, as AuthServer) {
	RequireNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := &Env{Bin: bin, Resource: front.BaseURL() + "/mcp", OtherResource: OtherResource, Dir: t.TempDir()}

	up := startNode(t, "upstream", "upstream.mjs")
	var upReady struct{ Addr string }
	if err := up.ready(ctx, &upReady); err != nil {
		t.Fatal(err)
	}
	dep := as.Start(t, env)
	front.Start(t, dep.Mcpauthz.GRPCAddr, upReady.Addr)
	dep.Mcpauthz.WaitReady(t)
	waitHTTP(t, front.BaseURL()+"/.well-known/oauth-protected-resource/mcp", 30*time.Second)

	scenarios := []string{"public", "refresh"}
	runs := make(map[string]*clientRun, len(scenarios))
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, sc := range scenarios {
		// The scenarios are independent clients of the same servers: they
		// run at the same time, so the refresh scenario's wait for expiry
		// costs no extra time.
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := runClient(ctx, t, env, dep, sc)
			mu.Lock()
			runs[sc] = r
			mu.Unlock()
		}()
	}
	wg.Wait()
	x := &expect{env: env, dep: dep, front: front}
	for _, sc := range scenarios {
		t.Run(sc, func(t *testing.T) {
			r := runs[sc]
			if r.err != nil {
				t.Fatal(r.err)
			}
			if os.Getenv("INTEROP_DUMP") != "" {
				t.Logf("client output:\n%s", strings.Join(r.lines, "\n"))
			}
			x.forScenario(sc).scenario(t, sc, r)
		})
	}
	t.Run("upstream", func(t *testing.T) { x.upstream(t, up.snapshot(), runs) })
	t.Run("probes", func(t *testing.T) { x.probes(t) })
}

// clientRun is the output of one run of client.mjs.
type clientRun struct {
	lines  []string
	steps  []step
	events []sseEvent
	ends   map[int]bool // exchanges whose event stream ended
	// endSteps says in which step each stream ended.
	endSteps []streamEnd
	exit     error
	err      error // the run could not be read at all
}

func runClient(ctx context.Context, t *testing.T, env *Env, dep *Deployment, scenario string) *clientRun {
	args := []string{"client.mjs", "--url", env.Resource, "--scenario", scenario, "--scope", clientScopes[scenario],
		"--login", dep.Login, "--password", dep.Password, "--other-resource", env.OtherResource,
		"--leeway", fmt.Sprint(dep.Leeway.Seconds())}
	if dep.MintOtherAudience != nil {
		args = append(args, "--mint-other-audience", mustJSON(dep.MintOtherAudience))
	}
	cmd := exec.CommandContext(ctx, "node", args...)
	cmd.Dir = NodeDir()
	p := start(t, "client "+scenario, cmd, false)
	r := &clientRun{ends: map[int]bool{}}
	r.exit = p.wait(ctx)
	r.lines = p.snapshot()
	for _, l := range r.lines {
		var line struct {
			Step   string    `json:"step"`
			SSE    *sseEvent `json:"sse"`
			SSEEnd *struct {
				Exchange int    `json:"exchange"`
				Step     string `json:"step"`
			} `json:"sseEnd"`
		}
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			r.err = fmt.Errorf("client output line %q: %v\nstderr:\n%s", l, err, p.otherText())
			return r
		}
		switch {
		case line.Step != "":
			var s step
			if err := json.Unmarshal([]byte(l), &s); err != nil {
				r.err = fmt.Errorf("client step %q: %v", l, err)
				return r
			}
			r.steps = append(r.steps, s)
		case line.SSE != nil:
			r.events = append(r.events, *line.SSE)
		case line.SSEEnd != nil:
			r.ends[line.SSEEnd.Exchange] = true
			r.endSteps = append(r.endSteps, streamEnd{line.SSEEnd.Exchange, line.SSEEnd.Step})
		}
	}
	if r.exit != nil && len(r.steps) == 0 {
		r.err = fmt.Errorf("client %s: %v\nstderr:\n%s", scenario, r.exit, p.otherText())
	}
	return r
}

type streamEnd struct {
	exchange int
	step     string
}

// step is one step of client.mjs's output.
type step struct {
	Step      string          `json:"step"`
	Ms        int             `json:"ms"`
	Error     string          `json:"error"`
	Result    json.RawMessage `json:"result"`
	Exchanges []exchange      `json:"exchanges"`
}

// exchange is one HTTP request and its response, as the client saw it.
type exchange struct {
	ID     int            `json:"id"`
	Kind   string         `json:"kind"` // mcp, discovery, auth, browser, callback
	Method string         `json:"method"`
	URL    string         `json:"url"` // without the query
	Query  map[string]any `json:"query"`
	// Request as sent by the SDK (mcp, discovery, auth).
	Request struct {
		Headers       map[string]string `json:"headers"`
		Authorization *struct {
			Scheme string    `json:"scheme"`
			JWT    *jwtParts `json:"jwt"`
		} `json:"authorization"`
		Body json.RawMessage `json:"body"`
		Form map[string]any  `json:"form"`
	} `json:"request"`
	Status          int               `json:"status"`
	ResponseHeaders map[string]string `json:"responseHeaders"`
	Body            json.RawMessage   `json:"body"`
	SSE             bool              `json:"sse"`
	// Browser exchanges.
	Location *struct {
		URL   string         `json:"url"`
		Query map[string]any `json:"query"`
	} `json:"location"`
	Page       string         `json:"page"`
	FormFields []string       `json:"formFields"`
	Form       map[string]any `json:"form"`
}

type jwtParts struct {
	Header map[string]any `json:"header"`
	Claims map[string]any `json:"claims"`
}

// sseEvent is one event of an event stream the client read.
type sseEvent struct {
	Exchange int    `json:"exchange"`
	Step     string `json:"step"`
	Event    string `json:"event"`
	Message  *struct {
		ID     any             `json:"id"`
		Method string          `json:"method"`
		Result json.RawMessage `json:"result"`
		Error  json.RawMessage `json:"error"`
		Params json.RawMessage `json:"params"`
	} `json:"message"`
}
