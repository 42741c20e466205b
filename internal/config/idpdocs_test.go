package config

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

const idpDoc = "../../docs/idp.md"

// docYAMLBlocks returns the ```yaml blocks of a Markdown file with the
// line each starts on.
func docYAMLBlocks(t *testing.T, path string) (blocks []string, lines []int) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cur []string
	in := false
	for i, l := range strings.Split(string(raw), "\n") {
		switch {
		case !in && strings.TrimSpace(l) == "```yaml":
			in, cur = true, nil
			lines = append(lines, i+2)
		case in && strings.TrimSpace(l) == "```":
			in = false
			blocks = append(blocks, strings.Join(cur, "\n")+"\n")
		case in:
			cur = append(cur, l)
		}
	}
	if in {
		t.Fatalf("%s: unterminated yaml block", path)
	}
	return blocks, lines
}

var (
	secretFileKey = regexp.MustCompile(`(?m)^(\s*client_secret_file:\s*)(\S+)\s*$`)
	secretEnvKey  = regexp.MustCompile(`(?m)^\s*client_secret_env:\s*(\S+)\s*$`)
)

// TestIDPDocExamples parses every YAML example of docs/idp.md with the
// real loader, so that the guide cannot rot. The top-level keys an
// issuers-only example lacks are filled in; secret files are replaced by
// a temporary file and secret variables are set.
func TestIDPDocExamples(t *testing.T) {
	blocks, lines := docYAMLBlocks(t, idpDoc)
	if len(blocks) < 10 {
		t.Fatalf("found %d yaml blocks in %s, want at least 10", len(blocks), idpDoc)
	}
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, b := range blocks {
		if !strings.HasPrefix(b, "issuers:\n") {
			t.Errorf("%s:%d: example does not start with issuers:", idpDoc, lines[i])
		}
		b = secretFileKey.ReplaceAllString(b, "${1}"+secret)
		for _, m := range secretEnvKey.FindAllStringSubmatch(b, -1) {
			t.Setenv(m[1], "s3cret")
		}
		doc := "resource: https://mcp.example.com/mcp\nauthorization_servers: [https://as.example.com]\n" + b
		cfg, err := Parse(idpDoc, []byte(doc))
		if err != nil {
			t.Errorf("%s:%d: example does not load:\n%v", idpDoc, lines[i], err)
			continue
		}
		if len(cfg.Issuers) == 0 {
			t.Errorf("%s:%d: example has no issuer", idpDoc, lines[i])
		}
	}
}

// TestIDPDocKeyTable checks that the per-issuer key table of docs/idp.md
// lists every key an issuers[] entry accepts.
func TestIDPDocKeyTable(t *testing.T) {
	raw, err := os.ReadFile(idpDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	var keys []string
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			name := strings.Split(f.Tag.Get("yaml"), ",")[0]
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && ft != reflect.TypeFor[Duration]() {
				walk(prefix+name+".", ft)
				continue
			}
			keys = append(keys, prefix+name)
		}
	}
	walk("", reflect.TypeFor[Issuer]())
	if len(keys) < 25 {
		t.Fatalf("found only %d keys: %q", len(keys), keys)
	}
	for _, k := range keys {
		if !strings.Contains(doc, "| `"+k+"` |") {
			t.Errorf("%s: the per-issuer key table has no row for %q", idpDoc, k)
		}
	}
}
