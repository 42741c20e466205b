package devauth_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestDocsAutoModeRecipe runs the curl recipe of docs/dev-oauth.md against
// a server in auto mode.
func TestDocsAutoModeRecipe(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "openssl", "sed"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: skipping the documented recipe", tool)
		}
	}
	doc, err := os.ReadFile("../../docs/dev-oauth.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(doc), "<!-- auto-mode-recipe -->\n```sh\n")
	block, _, ok2 := strings.Cut(block, "```\n<!-- /auto-mode-recipe -->")
	if !ok || !ok2 {
		t.Fatal("docs/dev-oauth.md has no auto-mode-recipe block")
	}
	e := newEnv(t)
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", block)
	cmd.Env = append(os.Environ(), "ISS="+e.issuer, "RESOURCE="+resource)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("recipe: %v\n%s", err, out)
	}
	var tk tokens
	if err := json.Unmarshal(out, &tk); err != nil || tk.Access == "" || tk.Refresh == "" || tk.Scope != "tools:get_weather" {
		t.Fatalf("recipe printed %s", out)
	}
	if in := introspect(t, e, tk.Access); in["aud"] != resource || in["client_id"] != "mcpauthz-dev" {
		t.Fatalf("token of the recipe: %v", in)
	}
}
