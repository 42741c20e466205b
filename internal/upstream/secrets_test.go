package upstream

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNoSecretInErrorsOrLogs drives every failure path of every source
// against an authorization server that echoes what it was sent (subject
// token, client secret, assertion) in its error descriptions, and checks
// that no error string and no log line contains any of them.
func TestNoSecretInErrorsOrLogs(t *testing.T) {
	k := keys()
	logs := &logBuffer{}
	log := newLogger(logs)
	var errs []string
	var assertions []string

	for _, auth := range []string{AuthClientSecretBasic, AuthClientSecretPost, AuthPrivateKeyJWT} {
		for _, profile := range []string{ProfileRFC8693, ProfileEntraOBO} {
			t.Run(auth+"/"+profile, func(t *testing.T) {
				as := newFakeAS(t, false, func(as *fakeAS) { as.echo = true })
				cfg := baseExchangeConfig(t, as)
				cfg.Profile = profile
				if profile == ProfileEntraOBO {
					cfg.Audiences, cfg.Resources, cfg.Scopes = nil, nil, []string{"api://x/.default"}
				}
				cfg.Client.Method = auth
				if auth == AuthPrivateKeyJWT {
					cfg.Client = ClientAuth{ID: testClientID, Method: auth, PrivateKeyFile: pemFile(t, k.rsa, "PRIVATE KEY")}
					as.expect = asExpect{clientAuth: auth, clientID: testClientID, assertKey: &k.rsa.PublicKey, assertAlg: "RS256", now: time.Now}
				}
				s := mustExchange(t, cfg, Options{Logger: log})
				_, err := s.Credential(t.Context(), testSubject(testSubjectToken))
				if ReasonOf(err) != ReasonRejected {
					t.Fatalf("Credential: %v, want rejected", err)
				}
				errs = append(errs, err.Error(), fmt.Sprintf("%v %+v %#v", err, err, err))
				as.mu.Lock()
				assertions = append(assertions, as.assertions...)
				as.mu.Unlock()
			})
		}
	}
	// Failures of the other kinds, for the log lines they produce.
	t.Run("client_credentials refresh failure", func(t *testing.T) {
		as := newFakeAS(t, false, func(as *fakeAS) { as.echo = true })
		cfg := ccConfig(t, as)
		cfg.Client.Method = AuthClientSecretPost
		s := mustCC(t, cfg, Options{Logger: log, clock: newFakeClock()})
		_, err := ccValue(t, s)
		if err == nil {
			t.Fatal("Credential succeeded")
		}
		errs = append(errs, err.Error())
	})
	t.Run("static file failures", func(t *testing.T) {
		clk := newFakeClock()
		rec := newRecorder()
		p := filepath.Join(t.TempDir(), "secret")
		writeFile(t, p, "static-secret-value-1234567890\n")
		s := mustStatic(t, StaticConfig{Name: "gh", File: p, PollInterval: time.Second}, Options{Logger: log, clock: clk, Observer: rec})
		clk.waitTimers(t, 1)
		writeFile(t, p, "static-secret-value-1234567890\x01\n")
		clk.Advance(time.Second)
		rec.nextFetch(t)
		_, err := staticValue(t, s)
		errs = append(errs, err.Error())
		if l := leaked(err.Error()+logs.String(), "static-secret-value"); l != "" {
			t.Errorf("static failure leaks the file content")
		}
	})

	secrets := []string{testSubjectToken, testSubjectToken[:10], testSubjectToken[len(testSubjectToken)-12:], testClientSecret, testClientSecret[:10]}
	for _, a := range assertions {
		secrets = append(secrets, a, a[len(a)-12:])
	}
	if len(assertions) == 0 {
		t.Fatal("no assertion was captured")
	}
	for _, e := range errs {
		if l := leaked(e, secrets...); l != "" {
			t.Errorf("error %q leaks a secret (%.12s...)", e, l)
		}
	}
	if l := leaked(logs.String(), secrets...); l != "" {
		t.Errorf("logs leak a secret (%.12s...):\n%s", l, logs)
	}
	if !strings.Contains(strings.Join(errs, "\n"), "[redacted]") {
		t.Errorf("no description was redacted; the test does not exercise the filter: %q", errs)
	}
}

// TestCredentialFormatting: a Credential printed or logged by mistake
// shows its header, not its value.
func TestCredentialFormatting(t *testing.T) {
	c := Credential{Header: "authorization", Value: "Bearer top-secret-upstream-token"}
	logs := &logBuffer{}
	newLogger(logs).Info("credential", "cred", c, slog.Any("any", c))
	slog.New(slog.NewTextHandler(logs, nil)).Info("credential", "cred", c)
	outs := []string{
		fmt.Sprint(c),
		fmt.Sprintf("%v %+v %#v %s %q %x", c, c, c, c, c, c),
		fmt.Sprint([]Credential{c}),
		fmt.Sprint(&c),
		logs.String(),
	}
	for _, out := range outs {
		if strings.Contains(out, "top-secret") {
			t.Errorf("formatted credential leaks its value: %s", out)
		}
		if !strings.Contains(out, "authorization") {
			t.Errorf("formatted credential does not name its header: %s", out)
		}
	}
}
