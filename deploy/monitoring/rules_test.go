package monitoring

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/rules"
	"go.yaml.in/yaml/v2"
)

const (
	rulesFile     = "mcpauthz.rules.yml"
	rulesTestFile = "mcpauthz.rules.test.yml"
	runbookDoc    = "docs/operations.md"
)

// requiredAlerts must stay in the rule file (more may be added).
var requiredAlerts = []string{
	"McpauthzDenyRateHigh",        // denials well above their usual share
	"McpauthzCannotDecide",        // any 503: no keys, policy error, ...
	"McpauthzJWKSRefreshFailing",  // JWKS fetches fail, no success
	"McpauthzJWKSStale",           // last JWKS success too old
	"McpauthzPolicyReloadFailing", // policy loads fail
	"McpauthzCheckLatencyHigh",    // p99 check latency
}

func loadRules(t *testing.T) *rulefmt.RuleGroups {
	t.Helper()
	content, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	groups, errs := rulefmt.Parse(content, false, model.UTF8Validation, promqlParser, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("%s: %v", rulesFile, err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	return groups
}

// TestRuleFile parses the rules as Prometheus does (strict YAML, PromQL,
// templates) and checks the conventions every alert follows.
func TestRuleFile(t *testing.T) {
	exported := exportedMetrics(t)
	groups := loadRules(t)

	recorded := map[string]bool{}
	alerts := map[string]string{} // name → severity
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			name := r.Alert + r.Record
			expr, err := promqlParser.ParseExpr(r.Expr)
			if err != nil {
				t.Errorf("%s: %v", name, err) // rulefmt already checked it
				continue
			}
			names, err := metricNames(expr)
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			for _, n := range names {
				if exported[n] == "" && !recorded[n] {
					t.Errorf("%s: queries %s, which mcpauthz does not export (and no rule above records)", name, n)
				}
			}
			if r.Record != "" {
				// level:metric:operations, https://prometheus.io/docs/practices/rules/
				if strings.Count(r.Record, ":") != 2 {
					t.Errorf("recording rule %s: name it level:metric:operations", r.Record)
				}
				recorded[r.Record] = true
				continue
			}

			if _, dup := alerts[r.Alert]; dup {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			alerts[r.Alert] = r.Labels["severity"]
			if r.For <= 0 {
				t.Errorf("alert %s: no for", r.Alert)
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("alert %s: severity %q, want warning or critical", r.Alert, s)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("alert %s: no %s annotation", r.Alert, a)
				}
			}
			if !runbookURL.MatchString(r.Annotations["runbook_url"]) {
				t.Errorf("alert %s: runbook_url %q, want %s#<anchor>", r.Alert, r.Annotations["runbook_url"], runbookDoc)
			}
		}
	}
	for _, a := range requiredAlerts {
		if _, ok := alerts[a]; !ok {
			t.Errorf("alert %s is missing", a)
		}
	}
	if s, ok := alerts["McpauthzCannotDecide"]; ok && s != "critical" {
		t.Error("McpauthzCannotDecide must be critical: mcpauthz is locking clients out")
	}
}

// TestRunbookAnchors checks that docs/operations.md has a section for every
// runbook_url, once that document exists.
func TestRunbookAnchors(t *testing.T) {
	doc, err := os.ReadFile("../../" + runbookDoc)
	if os.IsNotExist(err) {
		t.Skipf("%s does not exist yet", runbookDoc)
	}
	if err != nil {
		t.Fatal(err)
	}
	anchors := markdownAnchors(doc)
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			u, ok := r.Annotations["runbook_url"]
			if !ok {
				continue
			}
			_, anchor, _ := strings.Cut(u, "#")
			if !anchors[anchor] {
				t.Errorf("alert %s: %s has no anchor %q (headings give %v)", r.Alert, runbookDoc, anchor, sortedKeys(anchors))
			}
		}
	}
}

var (
	runbookURL     = regexp.MustCompile(`^` + regexp.QuoteMeta(runbookDoc) + `#[a-z0-9-]+$`)
	explicitAnchor = regexp.MustCompile(`<a\s+(?:id|name)="([^"]+)"`)
	slugDrop       = regexp.MustCompile(`[^\p{L}\p{N}\- _]`)
)

// markdownAnchors returns the anchors GitHub generates for the headings of
// doc (duplicates get -1, -2, ...), plus explicit <a id> anchors.
func markdownAnchors(doc []byte) map[string]bool {
	anchors := map[string]bool{}
	seen := map[string]int{}
	inFence := false
	sc := bufio.NewScanner(bytes.NewReader(doc))
	for sc.Scan() {
		line := sc.Text()
		for _, m := range explicitAnchor.FindAllStringSubmatch(line, -1) {
			anchors[m[1]] = true
		}
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inFence = !inFence
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		text := strings.TrimSpace(strings.TrimLeft(line, "#"))
		text = strings.NewReplacer("`", "", "*", "").Replace(text)
		slug := strings.ReplaceAll(slugDrop.ReplaceAllString(strings.ToLower(text), ""), " ", "-")
		if n := seen[slug]; n > 0 {
			anchors[fmt.Sprintf("%s-%d", slug, n)] = true
		} else {
			anchors[slug] = true
		}
		seen[slug]++
	}
	return anchors
}

// The subset of promtool's unit test file format that
// mcpauthz.rules.test.yml uses; decoding is strict, so anything else fails.
type unitTestFile struct {
	RuleFiles          []string       `yaml:"rule_files"`
	EvaluationInterval model.Duration `yaml:"evaluation_interval"`
	GroupEvalOrder     []string       `yaml:"group_eval_order"`
	Tests              []testGroup    `yaml:"tests"`
}

type testGroup struct {
	Name           string          `yaml:"name"`
	Interval       model.Duration  `yaml:"interval"`
	InputSeries    []inputSeries   `yaml:"input_series"`
	AlertRuleTests []alertTestCase `yaml:"alert_rule_test"`
}

type inputSeries struct {
	Series string `yaml:"series"`
	Values string `yaml:"values"`
}

type alertTestCase struct {
	EvalTime  model.Duration `yaml:"eval_time"`
	Alertname string         `yaml:"alertname"`
	ExpAlerts []expAlert     `yaml:"exp_alerts"`
}

type expAlert struct {
	ExpLabels      map[string]string `yaml:"exp_labels"`
	ExpAnnotations map[string]string `yaml:"exp_annotations"`
}

// firedAlert is a firing alert: its labels (alertname included) and its
// expanded annotations.
type firedAlert struct {
	Labels      map[string]string
	Annotations map[string]string
}

func (a firedAlert) String() string {
	return fmt.Sprintf("%v %v", labels.FromMap(a.Labels), labels.FromMap(a.Annotations))
}

// TestAlertScenarios replays mcpauthz.rules.test.yml the way promtool test
// rules does: the input series are loaded minute by minute ("load 1m"), the
// rule groups are evaluated with Prometheus's rule manager and PromQL engine
// at every evaluation interval, and at each eval_time the firing alerts must
// be exactly the expected ones, labels and expanded annotations. One subtest
// per test group (in parallel), and in it one per alert and eval_time.
// Every alert of the rule file must be shown firing in one case and silent
// in another.
func TestAlertScenarios(t *testing.T) {
	raw, err := os.ReadFile(rulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	var tf unitTestFile
	if err := yaml.UnmarshalStrict(raw, &tf); err != nil {
		t.Fatalf("%s: %v", rulesTestFile, err)
	}
	if !slices.Equal(tf.RuleFiles, []string{rulesFile}) {
		t.Fatalf("%s: rule_files %v, want [%s]", rulesTestFile, tf.RuleFiles, rulesFile)
	}
	evalInterval := time.Duration(cmp.Or(tf.EvaluationInterval, model.Duration(time.Minute)))

	alertNames := map[string]bool{}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				alertNames[r.Alert] = true
			}
		}
	}

	fires, silent := map[string]bool{}, map[string]bool{}
	for _, tg := range tf.Tests {
		for _, tc := range tg.AlertRuleTests {
			if !alertNames[tc.Alertname] {
				t.Errorf("%s at %v: no alert %s in %s", tg.Name, tc.EvalTime, tc.Alertname, rulesFile)
			}
			if len(tc.ExpAlerts) == 0 {
				silent[tc.Alertname] = true
			} else {
				fires[tc.Alertname] = true
			}
		}
	}
	for _, a := range sortedKeys(alertNames) {
		if !fires[a] {
			t.Errorf("%s: no scenario shows %s firing", rulesTestFile, a)
		}
		if !silent[a] {
			t.Errorf("%s: no scenario shows %s silent", rulesTestFile, a)
		}
	}

	for _, tg := range tf.Tests {
		t.Run(tg.Name, func(t *testing.T) {
			t.Parallel()
			got := replay(t, tf, tg, evalInterval)
			for _, tc := range tg.AlertRuleTests {
				t.Run(fmt.Sprintf("%s@%v", tc.Alertname, tc.EvalTime), func(t *testing.T) {
					var want []firedAlert
					for _, e := range tc.ExpAlerts {
						l := maps.Clone(e.ExpLabels)
						if l == nil {
							l = map[string]string{}
						}
						l[labels.AlertName] = tc.Alertname
						a := e.ExpAnnotations
						if a == nil {
							a = map[string]string{}
						}
						want = append(want, firedAlert{Labels: l, Annotations: a})
					}
					have := got[evalKey{tc.EvalTime, tc.Alertname}]
					sortAlerts(want)
					sortAlerts(have)
					if !slices.EqualFunc(want, have, func(a, b firedAlert) bool {
						return maps.Equal(a.Labels, b.Labels) && maps.Equal(a.Annotations, b.Annotations)
					}) {
						t.Errorf("firing alerts:\n got %v\nwant %v", have, want)
					}
					for _, a := range have {
						for k, v := range a.Annotations {
							if strings.Contains(v, "error expanding template") || strings.Contains(v, "<no value>") {
								t.Errorf("annotation %s does not expand: %s", k, v)
							}
						}
					}
				})
			}
		})
	}
}

type evalKey struct {
	at        model.Duration
	alertname string
}

func sortAlerts(as []firedAlert) {
	slices.SortFunc(as, func(a, b firedAlert) int {
		return labels.Compare(labels.FromMap(a.Labels), labels.FromMap(b.Labels))
	})
}

// replay evaluates the rule file on the series of tg, from t=0 to the last
// eval_time, and returns the firing alerts at every eval_time.
func replay(t *testing.T, tf unitTestFile, tg testGroup, evalInterval time.Duration) map[evalKey][]firedAlert {
	t.Helper()
	interval := time.Duration(cmp.Or(tg.Interval, model.Duration(evalInterval)))
	var load strings.Builder
	fmt.Fprintf(&load, "load %s\n", model.Duration(interval))
	for _, s := range tg.InputSeries {
		fmt.Fprintf(&load, "  %s %s\n", s.Series, s.Values)
	}
	ll, err := promqltest.NewLazyLoader(load.String(), promqltest.LazyLoaderOpts{
		EnableAtModifier: true, EnableNegativeOffset: true, Parser: promqlParser,
	})
	if err != nil {
		t.Fatalf("input_series: %v", err)
	}
	defer func() {
		if err := ll.Close(); err != nil {
			t.Error(err)
		}
	}()
	ll.SubqueryInterval = evalInterval

	m := rules.NewManager(&rules.ManagerOptions{
		QueryFunc:    rules.EngineQueryFunc(ll.QueryEngine(), ll.Storage()),
		AppendableV2: ll.Storage(),
		Context:      context.Background(),
		NotifyFunc:   func(context.Context, string, ...*rules.Alert) {},
		Logger:       slog.New(slog.DiscardHandler),
		Parser:       promqlParser,
	})
	groupMap, errs := m.LoadGroups(interval, labels.EmptyLabels(), "", nil, false, tf.RuleFiles...)
	for _, err := range errs {
		t.Error(err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	// Evaluate in group_eval_order, then by name (as promtool does).
	groups := slices.Collect(maps.Values(groupMap))
	order := func(g *rules.Group) int {
		if i := slices.Index(tf.GroupEvalOrder, g.Name()); i >= 0 {
			return i
		}
		return len(tf.GroupEvalOrder)
	}
	slices.SortFunc(groups, func(a, b *rules.Group) int {
		return cmp.Or(cmp.Compare(order(a), order(b)), cmp.Compare(a.Name(), b.Name()))
	})
	for _, g := range groups {
		for _, r := range g.Rules() {
			if ar, ok := r.(*rules.AlertingRule); ok {
				ar.SetRestored(true) // as after a restart with restored state
			}
		}
	}

	evalTimes := map[model.Duration][]string{}
	var maxEval model.Duration
	for _, tc := range tg.AlertRuleTests {
		evalTimes[tc.EvalTime] = append(evalTimes[tc.EvalTime], tc.Alertname)
		maxEval = max(maxEval, tc.EvalTime)
	}
	times := slices.Sorted(maps.Keys(evalTimes))

	got := map[evalKey][]firedAlert{}
	start := time.Unix(0, 0).UTC()
	next := 0
	for ts := start; !ts.After(start.Add(time.Duration(maxEval))); ts = ts.Add(evalInterval) {
		ll.WithSamplesTill(ts, func(err error) {
			if err != nil {
				t.Fatalf("loading samples till %v: %v", ts.Sub(start), err)
			}
			for _, g := range groups {
				g.Eval(ll.Context(), ts)
				for _, r := range g.Rules() {
					if err := r.LastError(); err != nil {
						t.Fatalf("rule %s at %v: %v", r.Name(), ts.Sub(start), err)
					}
				}
			}
		})
		// An eval_time between two evaluations sees the earlier one.
		for next < len(times) && time.Duration(times[next]) < ts.Sub(start)+evalInterval {
			at := times[next]
			for _, g := range groups {
				for _, r := range g.Rules() {
					ar, ok := r.(*rules.AlertingRule)
					if !ok || !slices.Contains(evalTimes[at], ar.Name()) {
						continue
					}
					key := evalKey{at, ar.Name()}
					for _, a := range ar.ActiveAlerts() {
						if a.State == rules.StateFiring {
							got[key] = append(got[key], firedAlert{Labels: a.Labels.Map(), Annotations: a.Annotations.Map()})
						}
					}
				}
			}
			next++
		}
	}
	return got
}

// TestPromtool runs promtool check rules and promtool test rules when
// promtool is installed.
func TestPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not on PATH: TestRuleFile and TestAlertScenarios cover the same ground with the Prometheus packages")
	}
	for _, args := range [][]string{{"check", "rules", rulesFile}, {"test", "rules", rulesTestFile}} {
		t.Run(strings.Join(args[:2], "_"), func(t *testing.T) {
			out, err := exec.CommandContext(t.Context(), promtool, args...).CombinedOutput()
			if err != nil {
				t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		})
	}
}
