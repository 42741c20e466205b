// Package monitoring holds the monitoring assets of mcpauthz and their
// tests; it has no code.
//
//   - mcpauthz.rules.yml: Prometheus recording and alerting rules (plain
//     rule-file format). Every alert has a severity label and summary,
//     description and runbook_url annotations; runbook_url points at the
//     alert's section in docs/operations.md (TestRunbookAnchors checks that
//     the section exists).
//   - mcpauthz.rules.test.yml: unit tests of the rules in promtool's format
//     (promtool test rules mcpauthz.rules.test.yml): synthetic series for a
//     healthy deployment and one failure scenario per alert.
//   - grafana-dashboard.json: a Grafana dashboard (schema 39) to import; it
//     asks for its Prometheus data source (DS_PROMETHEUS) and filters by job
//     and instance.
//
// The tests (go test ./deploy/monitoring/) parse the rules with Prometheus's
// rulefmt, so invalid PromQL or templates fail them; replay
// mcpauthz.rules.test.yml with Prometheus's rule manager and PromQL engine,
// as promtool does, and require every alert to be shown both firing and
// silent there; run promtool itself when it is on PATH; and check that every
// metric the rules and the dashboard query is one mcpauthz exports (taken
// from a registry filled by internal/metrics) and that the dashboard shows
// every mcpauthz metric. github.com/prometheus/prometheus is imported by
// _test.go files only, so it never reaches the mcpauthz binary.
package monitoring
