package monitoring

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const dashboardFile = "grafana-dashboard.json"

// The parts of a Grafana dashboard the test looks at.
type dashboard struct {
	Inputs        []input `json:"__inputs"`
	SchemaVersion int     `json:"schemaVersion"`
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string      `json:"name"`
			Type       string      `json:"type"`
			Query      any         `json:"query"`
			Datasource *datasource `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

type input struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	PluginID string `json:"pluginId"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // collapsed rows
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

const dsUID = "${DS_PROMETHEUS}"

// grafanaVar matches $name, ${name} and ${name:format}.
var grafanaVar = regexp.MustCompile(`\$(?:\{(\w+)(?::\w+)?\}|(\w+))`)

// substitute replaces Grafana's variables with what they expand to for a
// range query: the interval variables by 5m, the others by their "All"
// value .*, and reports variables that are not defined.
func substitute(expr string, defined map[string]bool) (string, []string) {
	var undefined []string
	out := grafanaVar.ReplaceAllStringFunc(expr, func(m string) string {
		sub := grafanaVar.FindStringSubmatch(m)
		name := sub[1] + sub[2]
		switch name {
		case "__rate_interval", "__interval", "__range":
			return "5m"
		case "__interval_ms", "__range_ms":
			return "300000"
		case "__range_s":
			return "300"
		}
		if !defined[name] {
			undefined = append(undefined, name)
		}
		return ".*"
	})
	return out, undefined
}

// TestDashboard checks that the dashboard is importable (DS_PROMETHEUS
// input, schema version, unique ids, sane layout), that every query parses
// as PromQL and selects only metrics mcpauthz exports, and that every
// mcpauthz metric is shown somewhere.
func TestDashboard(t *testing.T) {
	exported := exportedMetrics(t)
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}

	if d.SchemaVersion < 36 || d.SchemaVersion > 41 {
		t.Errorf("schemaVersion %d, want about 39", d.SchemaVersion)
	}
	if d.UID == "" || d.Title == "" {
		t.Error("the dashboard needs a uid and a title")
	}
	if !slices.ContainsFunc(d.Inputs, func(in input) bool {
		return in.Name == "DS_PROMETHEUS" && in.Type == "datasource" && in.PluginID == "prometheus"
	}) {
		t.Error(`__inputs has no DS_PROMETHEUS datasource input (pluginId "prometheus")`)
	}
	defined := map[string]bool{}
	for _, v := range d.Templating.List {
		defined[v.Name] = true
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		if v.Datasource == nil || v.Datasource.UID != dsUID {
			t.Errorf("variable %s: datasource %v, want uid %s", v.Name, v.Datasource, dsUID)
		}
		q, _ := v.Query.(string)
		m := labelValues.FindStringSubmatch(q)
		if m == nil {
			t.Errorf("variable %s: query %v, want label_values(selector, label)", v.Name, v.Query)
			continue
		}
		sel, undefined := substitute(m[1], defined)
		if len(undefined) > 0 {
			t.Errorf("variable %s: undefined variables %v", v.Name, undefined)
		}
		checkExpr(t, "variable "+v.Name, sel, exported, nil)
	}
	if !defined["DS_PROMETHEUS"] {
		t.Error("no DS_PROMETHEUS datasource variable: provisioned (not imported) copies would have no data source")
	}

	var all []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			all = append(all, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)

	ids := map[int]string{}
	shown := map[string]bool{} // metric families on the dashboard
	for _, p := range all {
		name := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if other, dup := ids[p.ID]; dup || p.ID == 0 {
			t.Errorf("%s: id not unique (also %s)", name, other)
		}
		ids[p.ID] = name
		if g := p.GridPos; g.W < 1 || g.H < 1 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("%s: gridPos %+v out of the 24-column grid", name, g)
		}
		if p.Type == "row" {
			continue
		}
		if p.Title == "" {
			t.Errorf("panel %d: no title", p.ID)
		}
		if p.Datasource == nil || p.Datasource.UID != dsUID {
			t.Errorf("%s: datasource %v, want uid %s", name, p.Datasource, dsUID)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no query", name)
		}
		refIDs := map[string]bool{}
		for _, tg := range p.Targets {
			if refIDs[tg.RefID] || tg.RefID == "" {
				t.Errorf("%s: refId %q empty or repeated", name, tg.RefID)
			}
			refIDs[tg.RefID] = true
			if tg.Datasource != nil && tg.Datasource.UID != dsUID {
				t.Errorf("%s %s: datasource %v, want uid %s", name, tg.RefID, tg.Datasource, dsUID)
			}
			expr, undefined := substitute(tg.Expr, defined)
			if len(undefined) > 0 {
				t.Errorf("%s %s: undefined variables %v", name, tg.RefID, undefined)
			}
			checkExpr(t, name+" "+tg.RefID, expr, exported, shown)
		}
	}
	for _, n := range sortedKeys(exported) {
		if f := exported[n]; strings.HasPrefix(f, "mcpauthz_") && !shown[f] {
			t.Errorf("no panel shows %s", f)
		}
	}
	for _, f := range []string{"grpc_server_handled_total"} {
		if !shown[f] {
			t.Errorf("no panel shows %s", f)
		}
	}
}

var labelValues = regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`)

// checkExpr parses expr as PromQL and checks that it selects only metrics
// mcpauthz exports; it adds their families to shown.
func checkExpr(t *testing.T, what, expr string, exported map[string]string, shown map[string]bool) {
	t.Helper()
	parsed, err := promqlParser.ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: %v\n%s", what, err, expr)
		return
	}
	names, err := metricNames(parsed)
	if err != nil {
		t.Errorf("%s: %v", what, err)
	}
	for _, n := range names {
		family := exported[n]
		if family == "" {
			t.Errorf("%s: %s is not a metric mcpauthz exports", what, n)
			continue
		}
		if shown != nil {
			shown[family] = true
		}
	}
}

func TestSubstitute(t *testing.T) {
	got, undefined := substitute(`rate(x{job=~"$job", a=~"${inst:regex}", b="${nope}"}[$__rate_interval])`, map[string]bool{"job": true, "inst": true})
	if want := `rate(x{job=~".*", a=~".*", b=".*"}[5m])`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if !slices.Equal(undefined, []string{"nope"}) {
		t.Errorf("undefined %v", undefined)
	}
}
