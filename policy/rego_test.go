package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
)

// TestRegoUnitTests runs the Rego unit tests of the default policy exactly
// as "opa test rego/mcp rego/data.json policy/testdata" does, so "go test
// ./policy/" fails when a Rego test fails. testdata holds the tests of the
// shipped data file, which do not ship with the policy (see there).
func TestRegoUnitTests(t *testing.T) {
	modules, store, err := tester.Load([]string{"../rego/mcp", "../rego/data.json", "testdata/shipped_data_test.rego"}, nil)
	if err != nil {
		t.Fatalf("tester.Load(../rego) = %v", err)
	}
	runRegoTests(t, modules, store)
}

// TestRegoExamples runs the tests of every example under ../rego/examples
// with the default policy, as "opa test rego/mcp/authz.rego
// rego/examples/NAME" does: an example that the default policy no longer
// supports fails here.
func TestRegoExamples(t *testing.T) {
	entries, err := os.ReadDir("../rego/examples")
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, filepath.Join("../rego/examples", e.Name()))
		}
	}
	if len(dirs) == 0 {
		t.Fatal("no examples under ../rego/examples")
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			modules, store, err := tester.Load([]string{"../rego/mcp/authz.rego", dir}, nil)
			if err != nil {
				t.Fatalf("tester.Load = %v", err)
			}
			runRegoTests(t, modules, store)
		})
	}
}

// TestRegoUnitTestsEmbedded runs the same tests against the embedded copy,
// selected and loaded the way the engine does it, so the data layout the
// engine builds is the one the tests were written against.
func TestRegoUnitTestsEmbedded(t *testing.T) {
	src := DefaultSource()
	snap, err := readSource(src, true)
	if err != nil {
		t.Fatal(err)
	}
	res, err := loader.NewFileLoader().
		WithFS(&snapshotFS{base: src.FS, files: snap.files, read: map[string]bool{}}).
		WithRegoVersion(ast.RegoV1).
		WithProcessAnnotation(true).
		Filtered(src.Paths, newFilter(true))
	if err != nil {
		t.Fatal(err)
	}
	runRegoTests(t, res.ParsedModules(), inmem.NewFromObject(res.Documents))
}

func runRegoTests(t *testing.T, modules map[string]*ast.Module, store storage.Store) {
	t.Helper()
	var tests bool
	for name := range modules {
		tests = tests || strings.HasSuffix(name, "_test.rego")
	}
	if !tests {
		t.Fatal("no _test.rego module found")
	}
	ch, err := tester.NewRunner().
		SetStore(store).
		CapturePrintOutput(true).
		Run(t.Context(), modules)
	if err != nil {
		t.Fatalf("running Rego tests: %v", err)
	}
	var n int
	for r := range ch {
		n++
		switch {
		case r.Error != nil:
			t.Errorf("%s.%s (%v): error: %v", r.Package, r.Name, r.Location, r.Error)
		case r.Fail:
			t.Errorf("%s.%s (%v): FAIL\n%s", r.Package, r.Name, r.Location, r.Output)
		}
	}
	if n == 0 {
		t.Fatal("no Rego tests ran")
	}
	t.Logf("%d Rego tests", n)
}

// TestDefaultPolicyStrict compiles the default policy and its tests in
// strict mode, as "opa check --strict rego/" does.
func TestDefaultPolicyStrict(t *testing.T) {
	res, err := loader.NewFileLoader().WithRegoVersion(ast.RegoV1).Filtered([]string{"../rego"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := ast.NewCompiler().WithStrict(true).WithDefaultRegoVersion(ast.RegoV1).SetErrorLimit(0)
	if c.Compile(res.ParsedModules()); c.Failed() {
		t.Fatalf("strict compile of ../rego:\n%v", c.Errors)
	}
}
