package devauth_test

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/mcpauthz/mcpauthz/internal/devauth"
)

// The browser test drives the consent page in a real headless Chromium
// (Debian's chromium package). chromedp is a test-only dependency: it is
// not linked into the server binary.
var updateScreenshot = flag.Bool("update-screenshot", false, "write the consent page screenshot to docs/img/consent.png")

const screenshotPath = "../../docs/img/consent.png"

func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("chromium not found (install it with `apt-get install -y chromium`, or set CHROMIUM): skipping the consent page browser test")
	return ""
}

// newBrowser starts a headless Chromium with a fresh profile and returns a
// chromedp context for one tab.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	path := chromiumPath(t)
	profile := t.TempDir()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(profile),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.WindowSize(900, 600),
	}
	// The browser lives at most two minutes, whatever happens.
	bound, cancelBound := context.WithTimeout(context.Background(), 2*time.Minute)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(bound, opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
		cancelBound()
	})
	// The first Run starts the browser; it lives as long as ctx.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	return ctx
}

// callback is the client's loopback redirect endpoint.
type callback struct {
	*httptest.Server
	got chan url.Values
}

func newCallback(t *testing.T) *callback {
	c := &callback{got: make(chan url.Values, 1)}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		select {
		case c.got <- r.URL.Query():
		default:
		}
		fmt.Fprint(w, "<!doctype html><title>done</title><p>You may close this window.</p>")
	}))
	t.Cleanup(c.Close)
	return c
}

func (c *callback) wait(t *testing.T) url.Values {
	t.Helper()
	select {
	case q := <-c.got:
		return q
	case <-time.After(20 * time.Second):
		t.Fatal("the browser never reached the callback")
		return nil
	}
}

func TestConsentPageInBrowser(t *testing.T) {
	ctx := newBrowser(t)
	e := newEnv(t, func(o *devauth.Options) { o.Approve = devauth.ApprovePage })
	cb := newCallback(t)
	redirect := cb.URL + "/callback"
	reg := e.postJSON("/register", `{"client_name":"MCP Inspector","redirect_uris":["`+redirect+`"],"token_endpoint_auth_method":"none"}`)
	if reg.status != 201 {
		t.Fatalf("register: %d %s", reg.status, reg.body)
	}
	clientID := reg.json(t)["client_id"].(string)
	scopes := "tools:get_weather tools:search_docs tools:delete_file"

	step := func(name string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	eval := func(expr string) string {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		v, err := chromedp.Run(sctx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		return v
	}

	t.Run("approve with one scope unticked", func(t *testing.T) {
		p := newPKCE("browser")
		q := authorizeQuery(clientID, redirect, p, scopes)
		step("open the consent page",
			chromedp.EmulateViewport(900, 600),
			chromedp.Navigate(e.url("/authorize?"+q.Encode())),
			chromedp.WaitVisible(chromedp.CSS(`button.approve`)))

		if got := eval(`document.querySelector("h1").textContent`); got != "Authorize MCP Inspector" {
			t.Errorf("heading %q", got)
		}
		if got := eval(`[...document.querySelectorAll("input[name=scope]")].map(b => b.value + "=" + b.checked).join(" ")`); got != "tools:get_weather=true tools:search_docs=true tools:delete_file=true" {
			t.Errorf("scope boxes %q, want all ticked", got)
		}
		if got := eval(`document.querySelector("dl").innerText`); !strings.Contains(got, resource) || !strings.Contains(got, clientID) || !strings.Contains(got, redirect) {
			t.Errorf("details %q: want resource, client ID and redirect URI", got)
		}
		// The style sheet passed the Content-Security-Policy (hash source):
		// the Approve button has its colour.
		if got := eval(`getComputedStyle(document.querySelector("button.approve")).backgroundColor`); got != "rgb(31, 111, 235)" {
			t.Errorf("Approve button colour %q: the style sheet was blocked", got)
		}

		if *updateScreenshot {
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Dir(screenshotPath), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(screenshotPath, png, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("wrote %s (%d bytes)", screenshotPath, len(png))
		}

		step("untick delete_file and approve",
			chromedp.Click(chromedp.CSS(`input[value="tools:delete_file"]`)),
			chromedp.Click(chromedp.CSS(`button.approve`)))
		got := cb.wait(t)
		if got.Get("state") != "state-1234567890" || got.Get("iss") != e.issuer || got.Get("code") == "" {
			t.Fatalf("callback %v", got)
		}
		r := e.postForm("/token", url.Values{"grant_type": {"authorization_code"}, "code": {got.Get("code")}, "code_verifier": {p.verifier},
			"redirect_uri": {redirect}, "client_id": {clientID}, "resource": {resource}}, "")
		if r.status != 200 {
			t.Fatalf("exchange: %d %s", r.status, r.body)
		}
		if s := r.json(t)["scope"]; s != "tools:get_weather tools:search_docs" {
			t.Fatalf("granted %q, want the two ticked scopes", s)
		}
	})

	t.Run("deny", func(t *testing.T) {
		q := authorizeQuery(clientID, redirect, newPKCE("deny"), scopes)
		step("deny",
			chromedp.Navigate(e.url("/authorize?"+q.Encode())),
			chromedp.WaitVisible(chromedp.CSS(`button.deny`)),
			chromedp.Click(chromedp.CSS(`button.deny`)))
		got := cb.wait(t)
		if got.Get("error") != "access_denied" || got.Get("state") != "state-1234567890" || got.Get("iss") != e.issuer || got.Get("code") != "" {
			t.Fatalf("callback %v", got)
		}
	})

	t.Run("not framed", func(t *testing.T) {
		// A page of another origin frames the consent page, and, as a
		// control, a plain page: Chromium must render the plain one and
		// refuse the consent page (frame-ancestors 'none', X-Frame-Options).
		q := authorizeQuery(clientID, redirect, newPKCE("frame"), scopes)
		consentURL := e.url("/authorize?" + q.Encode())
		framer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/plain" {
				fmt.Fprint(w, "<!doctype html><p>plain</p>")
				return
			}
			fmt.Fprintf(w, `<!doctype html><iframe src="/plain"></iframe><iframe src="%s"></iframe>`, consentURL)
		}))
		defer framer.Close()
		// From a blank page, so that no navigation of the step before (the
		// deny's redirect) is still under way; Chromium reports a navigation
		// that another one superseded as ERR_ABORTED, which is retried.
		var err error
		for range 3 {
			sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			err = chromedp.Do(sctx, chromedp.Navigate("about:blank"), chromedp.Navigate(framer.URL))
			cancel()
			if err == nil || !strings.Contains(err.Error(), "ERR_ABORTED") {
				break
			}
		}
		if err != nil {
			t.Fatalf("open the framing page: %v", err)
		}
		var frames map[string]string // src prefix -> rendered URL
		deadline := time.Now().Add(10 * time.Second)
		for {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			tree, err := chromedp.Run(sctx, chromedp.Action[*page.FrameTree](func(ctx context.Context, tg *chromedp.Target) (*page.FrameTree, error) {
				r, err := cdp.Call(ctx, tg, page.GetFrameTree, cdp.Empty{})
				return r.FrameTree, err
			}))
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			frames = map[string]string{}
			for _, c := range tree.ChildFrames {
				u := c.Frame.URL
				if c.Frame.UnreachableURL != "" {
					u = "unreachable:" + c.Frame.UnreachableURL
				}
				frames[fmt.Sprint(len(frames))] = u
			}
			if len(frames) == 2 && frames["0"] != "about:blank" && frames["1"] != "about:blank" && frames["1"] != "" || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if frames["0"] != framer.URL+"/plain" {
			t.Fatalf("control frame rendered %q, want %s/plain (frames %v)", frames["0"], framer.URL, frames)
		}
		if got := frames["1"]; got == consentURL || !strings.HasPrefix(got, "chrome-error://") && !strings.HasPrefix(got, "unreachable:") {
			t.Fatalf("the consent page rendered inside a frame of another origin: %q", got)
		}
	})
}
