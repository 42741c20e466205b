package interop

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpauthz/mcpauthz/test/interop/standin"
)

// tokenResults are the precise token verdicts mcpauthz must log for the
// 401s of these steps (the challenge itself says only invalid_token).
var tokenResults = map[string]string{
	"expiry":         "expired",
	"wrong_audience": "wrong_audience",
}

// serverSide checks what mcpauthz decided for each request of a step that
// passed the front: one check per request, in order, for the reason the
// client's answer implies, and for a 401 the precise token verdict, which
// mcpauthz reports in the check's dynamic metadata and in its decision
// log. Only a front that records its checks (the stand-in) can tell.
func (x *expect) serverSide(t *testing.T, scenario string, s *step) {
	t.Helper()
	checks := x.front.Checks()
	if checks == nil {
		return
	}
	logged := x.loggedTokenResults()
	var got []string
	for _, c := range checks {
		if c.Header("x-interop-step") != scenario+"/"+s.Step {
			continue
		}
		got = append(got, checkLine(c))
		if r := c.Metadata("token_result"); r != "" && logged[c.Header("x-request-id")] != r {
			t.Errorf("check %s %s: token_result %q in the answer, %q in mcpauthz's decision log", c.Header(":method"), c.Header(":path"), r, logged[c.Header("x-request-id")])
		}
		if c.Metadata("token_result") == "expired" && s.Step != "expiry" {
			t.Errorf("an access token expired during step %s: the machine was too slow for the row's token lifetime (%s)", s.Step, x.dep.LongTTL)
		}
	}
	var want []string
	for _, e := range s.Exchanges {
		if e.Kind != "mcp" && e.Kind != "discovery" {
			continue
		}
		path := strings.TrimPrefix(e.URL, strings.TrimSuffix(x.env.Resource, "/mcp"))
		outcome := "ok policy_allow"
		switch {
		case e.Kind == "discovery":
			outcome = "200 metadata"
		case e.Status == 401 && e.Request.Authorization == nil:
			outcome = "401 no_token"
		case e.Status == 401:
			outcome = "401 invalid_token/" + tokenResults[s.Step]
		case e.Status == 403:
			outcome = "403 insufficient_scope"
		case e.Status >= 400:
			outcome = fmt.Sprintf("%d ?", e.Status)
		}
		want = append(want, fmt.Sprintf("%s %s → %s", e.Method, path, outcome))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("mcpauthz's decisions for step %s (-want +got):\n%s", s.Step, diff)
	}
}

func checkLine(c standin.Check) string {
	outcome := "ok"
	if c.Outcome != standin.OutcomeOK {
		outcome = fmt.Sprint(c.Status)
	}
	reason := c.Metadata("reason")
	if r := c.Metadata("token_result"); r != "" {
		reason += "/" + r
	}
	return fmt.Sprintf("%s %s → %s %s", c.Header(":method"), c.Header(":path"), outcome, reason)
}

// loggedTokenResults maps request ids to the token_result of mcpauthz's
// decision log (JSON with a configuration file, text in development mode).
func (x *expect) loggedTokenResults() map[string]string {
	out := map[string]string{}
	for _, l := range x.dep.Mcpauthz.Log() {
		f := logFields(l)
		if f["msg"] == "decision" && f["token_result"] != "" {
			out[f["request_id"]] = f["token_result"]
		}
	}
	return out
}

// logFields reads the string attributes of one slog line, JSON or text
// (key=value, values quoted as Go strings when they need it).
func logFields(l string) map[string]string {
	out := map[string]string{}
	if strings.HasPrefix(l, "{") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			for k, v := range m {
				if s, ok := v.(string); ok {
					out[k] = s
				}
			}
		}
		return out
	}
	for {
		l = strings.TrimLeft(l, " ")
		key, rest, ok := strings.Cut(l, "=")
		if !ok || key == "" || strings.ContainsRune(key, ' ') {
			return out
		}
		var val string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return out
			}
			val, _ = strconv.Unquote(q)
			rest = rest[len(q):]
		} else {
			val, rest, _ = strings.Cut(rest, " ")
		}
		out[key] = val
		l = rest
	}
}

// upstream checks every request the MCP server received: the identity
// mcpauthz verified, never the client's token, and exactly the requests
// the client saw answered by the server.
func (x *expect) upstream(t *testing.T, lines []string, runs map[string]*clientRun) {
	type request struct {
		Method  string            `json:"method"`
		Path    string            `json:"path"`
		Headers map[string]string `json:"headers"`
	}
	got := map[string]int{}
	for _, l := range lines {
		var line struct {
			Request *request `json:"request"`
		}
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			t.Fatalf("upstream line %q: %v", l, err)
		}
		r := line.Request
		if r == nil {
			continue
		}
		stepName := r.Headers["x-interop-step"]
		got[stepName]++
		scenario, name, _ := strings.Cut(stepName, "/")
		run := runs[scenario]
		if run == nil {
			t.Errorf("upstream got %s %s from no scenario (step %q)", r.Method, r.Path, stepName)
			continue
		}
		st := findStep(run, name)
		if st == nil {
			t.Errorf("upstream got %s %s in step %q, which the client did not report", r.Method, r.Path, stepName)
			continue
		}
		// The token of the step's requests that the server answered.
		var tok *jwtParts
		for _, e := range st.Exchanges {
			if e.Kind == "mcp" && e.Status < 400 && e.Request.Authorization != nil {
				tok = e.Request.Authorization.JWT
			}
		}
		want := map[string]string{
			"authorization":   "",
			"x-mcp-subject":   x.dep.Subject,
			"x-mcp-issuer":    x.dep.Issuer,
			"x-mcp-client-id": claim(tok, "client_id"),
			"x-mcp-scopes":    sortedScopes(claim(tok, "scope")),
		}
		have := map[string]string{}
		for k := range want {
			have[k] = r.Headers[k]
		}
		if diff := cmp.Diff(want, have); diff != "" {
			t.Errorf("upstream %s %s in step %s (-want +got):\n%s", r.Method, r.Path, stepName, diff)
		}
	}
	want := map[string]int{}
	for scenario, run := range runs {
		for _, st := range run.steps {
			for _, e := range st.Exchanges {
				if e.Kind == "mcp" && e.Status < 400 {
					want[scenario+"/"+st.Step]++
				}
			}
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("requests at the upstream per step (-want +got); a denied request must never arrive, an allowed one always:\n%s", diff)
	}
}

func findStep(r *clientRun, name string) *step {
	for i := range r.steps {
		if r.steps[i].Step == name {
			return &r.steps[i]
		}
	}
	return nil
}
