package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"go.yaml.in/yaml/v3"
)

// The configuration shape of docs/upstream-credentials.md
// (upstream_credentials: {NAME: source}). The configuration package owns
// the real one; this mirror keeps the guide's examples honest: every YAML
// block of the guide must decode strictly into it and build a source.
type docSource struct {
	Type                        string    `yaml:"type"`
	Profile                     string    `yaml:"profile"`
	Issuer                      string    `yaml:"issuer"`
	TokenEndpoint               string    `yaml:"token_endpoint"`
	Audiences                   []string  `yaml:"audiences"`
	Resources                   []string  `yaml:"resources"`
	Scopes                      []string  `yaml:"scopes"`
	SubjectTokenType            string    `yaml:"subject_token_type"`
	RequestedTokenType          string    `yaml:"requested_token_type"`
	AllowMissingIssuedTokenType bool      `yaml:"allow_missing_issued_token_type"`
	Client                      docClient `yaml:"client"`
	CAFile                      string    `yaml:"ca_file"`
	Header                      string    `yaml:"header"`
	Scheme                      string    `yaml:"scheme"`
	Timeout                     string    `yaml:"timeout"`
	CacheSize                   int       `yaml:"cache_size"`
	MaxConcurrent               int       `yaml:"max_concurrent"`
	File                        string    `yaml:"file"`
	PollInterval                string    `yaml:"poll_interval"`
}

type docClient struct {
	ID                string `yaml:"id"`
	Auth              string `yaml:"auth"`
	SecretFile        string `yaml:"secret_file"`
	PrivateKeyFile    string `yaml:"private_key_file"`
	KeyID             string `yaml:"key_id"`
	SigningAlg        string `yaml:"signing_alg"`
	AssertionAudience string `yaml:"assertion_audience"`
	CertificateFile   string `yaml:"certificate_file"`
	TLSCertFile       string `yaml:"tls_cert_file"`
	TLSKeyFile        string `yaml:"tls_key_file"`
}

func (c docClient) auth() ClientAuth {
	return ClientAuth{ID: c.ID, Method: c.Auth, SecretFile: c.SecretFile, PrivateKeyFile: c.PrivateKeyFile, KeyID: c.KeyID,
		SigningAlgorithm: c.SigningAlg, AssertionAudience: c.AssertionAudience, CertificateFile: c.CertificateFile,
		TLSCertFile: c.TLSCertFile, TLSKeyFile: c.TLSKeyFile}
}

func duration(t *testing.T, s string) time.Duration {
	t.Helper()
	if s == "" {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("duration %q: %v", s, err)
	}
	return d
}

// build maps one source of the guide's shape onto its constructor.
func (d docSource) build(t *testing.T, name string, opts Options) (interface{ Close() error }, error) {
	switch d.Type {
	case "token_exchange":
		return NewTokenExchange(TokenExchangeConfig{
			Name: name, Profile: d.Profile, TokenEndpoint: d.TokenEndpoint, Issuer: d.Issuer,
			Audiences: d.Audiences, Resources: d.Resources, Scopes: d.Scopes,
			SubjectTokenType: d.SubjectTokenType, RequestedTokenType: d.RequestedTokenType,
			AllowMissingIssuedTokenType: d.AllowMissingIssuedTokenType,
			Client:                      d.Client.auth(), CAFile: d.CAFile, Header: d.Header, Scheme: d.Scheme,
			Timeout: duration(t, d.Timeout), CacheSize: d.CacheSize, MaxConcurrent: d.MaxConcurrent,
		}, opts)
	case "client_credentials":
		return NewClientCredentials(ClientCredentialsConfig{
			Name: name, TokenEndpoint: d.TokenEndpoint, Issuer: d.Issuer,
			Audiences: d.Audiences, Resources: d.Resources, Scopes: d.Scopes,
			Client: d.Client.auth(), CAFile: d.CAFile, Header: d.Header, Scheme: d.Scheme, Timeout: duration(t, d.Timeout),
		}, opts)
	case "static":
		return NewStatic(StaticConfig{Name: name, File: d.File, Header: d.Header, Scheme: d.Scheme, PollInterval: duration(t, d.PollInterval)}, opts)
	}
	return nil, errors.New("unknown type " + d.Type)
}

// TestGuideExamples decodes every YAML block of the guide strictly into the
// guide's shape and builds each source, with the files it names replaced
// by generated ones and a network that refuses every connection.
func TestGuideExamples(t *testing.T) {
	raw, err := os.ReadFile("../../docs/upstream-credentials.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(raw, -1)
	if len(blocks) < 5 {
		t.Fatalf("found %d YAML examples in the guide, want at least 5", len(blocks))
	}
	noNetwork := &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("no network in this test")
	}}
	opts := Options{HTTPClient: &http.Client{Transport: noNetwork}, clock: newFakeClock()}
	for i, b := range blocks {
		var doc struct {
			Sources map[string]docSource `yaml:"upstream_credentials"`
		}
		dec := yaml.NewDecoder(strings.NewReader(string(b[1])))
		dec.KnownFields(true)
		if err := dec.Decode(&doc); err != nil {
			t.Errorf("example %d: %v", i+1, err)
			continue
		}
		if len(doc.Sources) == 0 {
			t.Errorf("example %d has no upstream_credentials", i+1)
		}
		for name, src := range doc.Sources {
			substituteFiles(t, &src)
			s, err := src.build(t, name, opts)
			if err != nil {
				t.Errorf("example %d, source %s: %v", i+1, name, err)
				continue
			}
			s.Close()
		}
	}
}

// substituteFiles replaces the paths of an example with generated files of
// the right kind.
func substituteFiles(t *testing.T, s *docSource) {
	k := keys()
	dir := t.TempDir()
	if s.Client.SecretFile != "" {
		s.Client.SecretFile = secretFile(t)
	}
	if s.File != "" {
		s.File = filepath.Join(dir, "static")
		writeFile(t, s.File, "static-value\n")
	}
	if s.Client.PrivateKeyFile != "" {
		if strings.HasSuffix(s.Client.PrivateKeyFile, ".jwk") {
			j, _ := jwk.FromRaw(k.ec)
			j.Set(jwk.KeyIDKey, "doc")
			b, _ := json.Marshal(j)
			s.Client.PrivateKeyFile = filepath.Join(dir, "key.jwk")
			writeFile(t, s.Client.PrivateKeyFile, string(b))
		} else {
			_, certFile, keyFile := selfSigned(t, k.rsa, "doc")
			s.Client.PrivateKeyFile = keyFile
			if s.Client.CertificateFile != "" {
				s.Client.CertificateFile = certFile
			}
		}
	}
	if s.Client.TLSCertFile != "" {
		_, s.Client.TLSCertFile, s.Client.TLSKeyFile = selfSigned(t, k.ec, "doc")
	}
}
