package upstream

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
)

func TestLoadPrivateKeyErrors(t *testing.T) {
	k := keys()
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		writeFile(t, p, content)
		return p
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := jwk.FromRaw(&k.rsa.PublicKey)
	pubJSON, _ := json.Marshal(pub)
	der, _ := x509.MarshalPKCS8PrivateKey(k.ec)
	//nolint:staticcheck // an encrypted key, to check that it is refused
	enc, err := x509.EncryptPEMBlock(rand.Reader, "PRIVATE KEY", der, []byte("pw"), x509.PEMCipherAES256)
	if err != nil {
		t.Fatal(err)
	}
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	tests := []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "none"), "no such file"},
		{"garbage", file("g", "not a key"), "neither PEM nor JWK"},
		{"certificate", file("c", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}))), "not a private key"},
		{"two blocks", file("two", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))+string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))), "more than one PEM block"},
		{"encrypted", file("enc", string(pem.EncodeToMemory(enc))), "encrypted"},
		{"RSA 1024", pemFile(t, small, "RSA PRIVATE KEY"), "at least 2048"},
		{"public JWK", file("pub.jwk", string(pubJSON)), "no private part"},
		{"P-224", pemFile(t, p224, "PRIVATE KEY"), "unsupported EC curve"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newAssertionSigner(ClientAuth{ID: "c", Method: AuthPrivateKeyJWT, PrivateKeyFile: tt.path})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("newAssertionSigner(%s) error %v, want %q", tt.name, err, tt.want)
			}
		})
	}
}

func TestSigningAlgorithm(t *testing.T) {
	k := keys()
	tests := []struct {
		name       string
		key        crypto.Signer
		configured string
		want       string
		wantErr    bool
	}{
		{"RSA default", k.rsa, "", "RS256", false},
		{"RSA PS384", k.rsa, "PS384", "PS384", false},
		{"RSA with ES256", k.rsa, "ES256", "", true},
		{"P-256 default", k.ec, "", "ES256", false},
		{"P-256 with ES384", k.ec, "ES384", "", true},
		{"Ed25519", k.ed, "", "EdDSA", false},
		{"none refused", k.rsa, "none", "", true},
		{"HS256 refused", k.rsa, "HS256", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := signingAlgorithm(tt.key, tt.configured)
			if (err != nil) != tt.wantErr || string(got) != tt.want {
				t.Errorf("signingAlgorithm(%s, %q) = %q, %v; want %q (error %v)", tt.name, tt.configured, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestCertificateMismatch: the certificate for x5t must be the signing
// key's.
func TestCertificateMismatch(t *testing.T) {
	k := keys()
	_, certFile, _ := selfSigned(t, k.ec, "other")
	_, err := newAssertionSigner(ClientAuth{ID: "c", Method: AuthPrivateKeyJWT, PrivateKeyFile: pemFile(t, k.rsa, "PRIVATE KEY"), CertificateFile: certFile})
	if err == nil || !strings.Contains(err.Error(), "not for private_key_file") {
		t.Errorf("newAssertionSigner with another key's certificate: %v", err)
	}
}

// TestClientCertificateReload: a rotated tls_client_auth certificate is
// picked up at the next handshake; a broken rotation keeps the old one.
func TestClientCertificateReload(t *testing.T) {
	k := keys()
	cert1, certFile, keyFile := selfSigned(t, k.ec, "one")
	l := &certLoader{certFile: certFile, keyFile: keyFile, log: newLogger(&logBuffer{})}
	if err := l.load(); err != nil {
		t.Fatal(err)
	}
	leaf := func() *x509.Certificate {
		t.Helper()
		c, err := l.get(nil)
		if err != nil {
			t.Fatal(err)
		}
		x, _ := x509.ParseCertificate(c.Certificate[0])
		return x
	}
	if !leaf().Equal(cert1) {
		t.Fatal("first certificate not served")
	}
	cert2, certFile2, _ := selfSigned(t, k.ec, "two")
	b, _ := os.ReadFile(certFile2)
	writeFile(t, certFile, string(b))
	future := time.Now().Add(time.Minute)
	os.Chtimes(certFile, future, future)
	if !leaf().Equal(cert2) {
		t.Error("rotated certificate not served")
	}
	writeFile(t, certFile, "broken")
	later := future.Add(time.Minute)
	os.Chtimes(certFile, later, later)
	if !leaf().Equal(cert2) {
		t.Error("a broken rotation replaced the certificate")
	}
}
