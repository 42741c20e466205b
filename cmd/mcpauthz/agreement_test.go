package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/config"
)

// corpusConfig is one configuration of the corpus, as a file.
type corpusConfig struct {
	name string // where it comes from (file:line)
	path string
	// valid is what the corpus says of it: documented and shipped
	// configurations must be valid; testdata names its invalid ones.
	valid bool
}

// TestValidateAgreesWithServe: over every configuration the project ships
// or documents (docs/idp.md, docs/operations.md, the README, the Kubernetes
// configurations) and the test corpus in testdata/configs, `mcpauthz
// validate` accepts exactly the configurations `mcpauthz serve` starts
// with, and rejects the others with the same problems. Both run the one
// construction internal/app.Compile; this proves nothing else decides.
func TestValidateAgreesWithServe(t *testing.T) {
	corpus := configCorpus(t)
	if len(corpus) < 20 {
		t.Fatalf("corpus has %d configurations, want at least 20", len(corpus))
	}
	for _, c := range corpus {
		t.Run(c.name, func(t *testing.T) {
			_, _, verr := runCmd(t, "validate", "--config", c.path)
			serr := serveOnce(t, c.path)
			switch {
			case (verr == nil) != (serr == nil):
				t.Fatalf("validate = %v\nserve = %v\nthey must agree", verr, serr)
			case verr != nil && verr.Error() != serr.Error():
				t.Fatalf("validate and serve report different problems:\nvalidate: %v\nserve:    %v", verr, serr)
			case c.valid && verr != nil:
				t.Fatalf("a shipped or documented configuration is rejected:\n%v", verr)
			case !c.valid && verr == nil:
				t.Fatalf("an invalid configuration of the corpus is accepted")
			}
		})
	}
}

// serveOnce runs `serve --config path` on loopback ports until it is
// serving (nil) or fails (its error).
func serveOnce(t *testing.T, path string) error {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0" // as --grpc-addr/--http-addr do
	if cfg.Shutdown.DrainDelay == nil {
		cfg.Shutdown.DrainDelay = new(config.Duration(0)) // nothing routes to it: stop at once
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, cfg, newLogger(cfg, io.Discard), serveOptions{stdout: io.Discard, ready: ready})
	}()
	select {
	case <-ready:
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve stopped with %v", err)
		}
		return nil
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("serve neither started nor failed")
		return nil
	}
}

var (
	secretFileKey = regexp.MustCompile(`(?m)^(\s*(?:client_secret_file|hmac_secret_file|bearer_token_file):\s*)(\S+)\s*$`)
	publicKeyKey  = regexp.MustCompile(`(?m)^(\s*public_key_file:\s*)(\S+)\s*$`)
	secretEnvKey  = regexp.MustCompile(`(?m)^\s*client_secret_env:\s*(\S+)\s*$`)
)

// configCorpus writes every configuration of the corpus to a file. Examples
// that show only some keys get the keys every configuration needs; files
// they name (secrets, keys, the mounted policy) are replaced by real ones.
func configCorpus(t *testing.T) []corpusConfig {
	t.Helper()
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte(strings.Repeat("s", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pubKey := filepath.Join(dir, "bundle.pem")
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err := os.WriteFile(pubKey, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	// The mounted policy of the Kubernetes configurations: the generated
	// ConfigMap, one file per key.
	policyDir := filepath.Join(dir, "policy")
	for src, key := range map[string]string{"../../rego/mcp/authz.rego": "authz.rego", "../../rego/data.json": "data.json"} {
		b, err := os.ReadFile(src)
		if err == nil {
			err = os.MkdirAll(policyDir, 0o755)
		}
		if err == nil {
			err = os.WriteFile(filepath.Join(policyDir, key), b, 0o600)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	const head = "resource: https://mcp.example.com/mcp\nauthorization_servers: [https://as.example.com]\n"
	var out []corpusConfig
	add := func(name, yaml string, valid bool) {
		yaml = secretFileKey.ReplaceAllString(yaml, "${1}"+secret)
		yaml = publicKeyKey.ReplaceAllString(yaml, "${1}"+pubKey)
		for _, m := range secretEnvKey.FindAllStringSubmatch(yaml, -1) {
			t.Setenv(m[1], "s3cret")
		}
		yaml = strings.ReplaceAll(yaml, "/etc/mcpauthz/policy", policyDir)
		if !strings.Contains(yaml, "\nissuers:") && !strings.HasPrefix(yaml, "issuers:") {
			yaml += "issuers: [{issuer: https://as.example.com}]\n"
		}
		if !strings.Contains(yaml, "resource:") {
			yaml = head + yaml
		}
		p := filepath.Join(dir, regexp.MustCompile(`[^A-Za-z0-9.-]+`).ReplaceAllString(name, "_")+".yaml")
		if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		out = append(out, corpusConfig{name: name, path: p, valid: valid})
	}
	for _, doc := range []string{"../../docs/idp.md", "../../docs/operations.md", "../../README.md"} {
		blocks, lines := yamlBlocks(t, doc)
		for i, b := range blocks {
			add(strings.TrimPrefix(doc, "../../")+":"+itoa(lines[i]), b, true)
		}
	}
	for _, f := range []string{"../../deploy/kubernetes/base/config.yaml", "../../deploy/kubernetes/overlays/example/config.yaml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		add(strings.TrimPrefix(f, "../../"), string(b), true)
	}
	// The test corpus: files named bad-* are invalid. They name their own
	// secrets and policies, relative to this package.
	files, _ := filepath.Glob("testdata/configs/*.yaml")
	for _, f := range files {
		out = append(out, corpusConfig{name: f, path: f, valid: !strings.HasPrefix(filepath.Base(f), "bad-")})
	}
	return out
}

// yamlBlocks returns the ```yaml blocks of a Markdown file with the line
// each starts on.
func yamlBlocks(t *testing.T, path string) (blocks []string, lines []int) {
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

func itoa(i int) string { return strconv.Itoa(i) }
