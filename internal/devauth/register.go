package devauth

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"net/http"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
)

// registrationResponse is the client information response of RFC 7591
// §3.2.1: the registered metadata plus the credentials.
type registrationResponse struct {
	clientMetadata
	ClientIDIssuedAt      int64  `json:"client_id_issued_at"`
	ClientSecretExpiresAt *int64 `json:"client_secret_expires_at,omitempty"`
}

// handleRegister is the dynamic client registration endpoint (RFC 7591).
// Anyone may register (the server is local); registered clients live in
// memory, the oldest evicted beyond a thousand.
func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	md, e := readRegistration(r)
	if e != nil {
		s.log.Info("devauth: registration refused", "error", e.code, "error_description", e.desc)
		writeError(w, e)
		return
	}
	id := "dcr_" + randomString(16)
	var secret string
	var hash []byte
	if md.AuthMethod != authNone {
		secret = randomString(32)
		hash = hashSecret(secret)
	}
	c := newOAuthClient(id, hash, md, nil, s.cfg.resources)
	c.issuedAt = time.Now()
	s.store.addClient(c)
	s.log.Info("devauth: client registered", "client_id", id, "client_name", md.ClientName,
		"token_endpoint_auth_method", md.AuthMethod, "redirect_uris", len(md.RedirectURIs))

	resp := registrationResponse{clientMetadata: md, ClientIDIssuedAt: c.issuedAt.Unix()}
	resp.ClientID, resp.ClientSecret = id, secret
	if secret != "" {
		never := int64(0)
		resp.ClientSecretExpiresAt = &never
	}
	writeJSON(w, http.StatusCreated, resp)
}

// readRegistration decodes and validates a registration request: a JSON
// object (duplicate or mistyped members refused, unknown ones ignored) of
// client metadata.
func readRegistration(r *http.Request) (clientMetadata, *oauthError) {
	var md clientMetadata
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return md, invalidMetadata("The registration request must be application/json.")
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			return md, invalidMetadata("The registration request is larger than 64 KiB.")
		}
		return md, invalidMetadata("The registration request could not be read.")
	}
	if e := parseRegistration(body, &md); e != nil {
		return md, e
	}
	return md, nil
}

// parseRegistration is the body half of readRegistration.
func parseRegistration(body []byte, md *clientMetadata) *oauthError {
	if b := bytes.TrimSpace(body); len(b) == 0 || b[0] != '{' {
		return invalidMetadata("The registration request is not a JSON object.")
	}
	if err := jsonv2.Unmarshal(body, md); err != nil {
		return invalidMetadata("The registration request is not a JSON object of client metadata (duplicate or mistyped members are refused).")
	}
	// The server assigns the credentials.
	md.ClientID, md.ClientSecret = "", ""
	if md.AuthMethod == "" {
		md.AuthMethod = authBasic // RFC 7591 §2
	}
	return md.check()
}
