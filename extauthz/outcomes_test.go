package extauthz

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/mcpauthz/mcpauthz/internal/mcprpc"
)

// TestOutcomesCoverTheLadder reads the package's sources and collects every
// status and reason the decision ladder can end a Decision with (the calls
// of deny, direct, allow, unavailable, unauthenticated and badCredentials),
// and checks that Outcomes lists exactly those: a new reason without an
// entry would appear in metrics only once it happened, a removed one would
// linger as a series that can never move.
func TestOutcomesCoverTheLadder(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	found := map[DecisionLabels]string{} // → where
	var transportReasons []string
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			if fn.Recv != nil && slices.Contains([]string{"deny", "direct", "allow", "unavailable", "unauthenticated", "badCredentials"}, fn.Name.Name) {
				continue // the helpers themselves pass their arguments on
			}
			if fn.Name.Name == "transportProblem" {
				ast.Inspect(fn.Body, func(n ast.Node) bool {
					if r, ok := n.(*ast.ReturnStmt); ok && len(r.Results) == 1 {
						if s := stringLit(r.Results[0]); s != "" {
							transportReasons = append(transportReasons, s)
						}
					}
					return true
				})
			}
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				where := fset.Position(call.Pos()).String()
				var status int
				var reason ast.Expr
				outcome := "deny"
				switch sel.Sel.Name {
				case "deny", "direct":
					if len(call.Args) < 2 {
						return true
					}
					lit, ok := call.Args[0].(*ast.BasicLit)
					if !ok {
						t.Errorf("%s: %s with a status that is not a literal", where, sel.Sel.Name)
						return true
					}
					status, _ = strconv.Atoi(lit.Value)
					reason = call.Args[1]
				case "allow":
					outcome, status, reason = "allow", 200, call.Args[0]
				case "unavailable":
					status, reason = 503, call.Args[0]
				case "unauthenticated":
					status, reason = 401, call.Args[0]
				case "badCredentials":
					status, reason = 400, call.Args[0]
				default:
					return true
				}
				switch r := exprString(reason); {
				case stringLit(reason) != "":
					found[DecisionLabels{outcome, status, stringLit(reason)}] = where
				case r == "perr.Reason":
					// The body parser's reasons: Outcomes adds every one of
					// mcprpc.Reasons (checked below).
				case r == "reason" && status == 400:
					found[DecisionLabels{outcome, status, "<transportProblem>"}] = where
				default:
					t.Errorf("%s: %s(%s): a reason this test cannot tell; list it in Outcomes and here", where, sel.Sel.Name, r)
				}
				return true
			})
		}
	}
	if _, ok := found[DecisionLabels{"deny", 400, "<transportProblem>"}]; ok {
		delete(found, DecisionLabels{"deny", 400, "<transportProblem>"})
		for _, r := range transportReasons {
			found[DecisionLabels{"deny", 400, r}] = "transportProblem"
		}
	}
	// Allowed with denials the policy or shadow mode did not enforce.
	found[DecisionLabels{"shadow_deny", 200, "policy_allow"}] = "Decision.Outcome"
	for _, r := range mcprpc.Reasons() {
		status := 400
		if r == mcprpc.ReasonContentType {
			status = 415
		}
		found[DecisionLabels{"deny", status, r}] = "mcprpc.Reasons"
	}

	listed := Outcomes()
	for l, where := range found {
		if !slices.Contains(listed, l) {
			t.Errorf("%s ends a decision with %+v, which Outcomes does not list", where, l)
		}
	}
	seen := map[DecisionLabels]bool{}
	for _, l := range listed {
		if seen[l] {
			t.Errorf("Outcomes lists %+v twice", l)
		}
		seen[l] = true
		if _, ok := found[l]; !ok {
			t.Errorf("Outcomes lists %+v, which no code path ends a decision with", l)
		}
	}
	if len(found) < 30 {
		t.Errorf("found only %d outcomes in the sources; the scan is broken", len(found))
	}
}

func stringLit(e ast.Expr) string {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return ""
	}
	s, _ := strconv.Unquote(lit.Value)
	return s
}

// exprString renders a simple expression (x, x.y) for messages and matching.
func exprString(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.Ident:
		return x.Name
	case *ast.SelectorExpr:
		return exprString(x.X) + "." + x.Sel.Name
	case *ast.BasicLit:
		return x.Value
	}
	return "?"
}
