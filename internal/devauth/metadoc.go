package devauth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	jsonv2 "github.com/go-json-experiment/json"

	"github.com/mcpauthz/mcpauthz/internal/oauth"
)

// Limits of a client ID metadata document fetch.
const (
	maxDocumentBytes     = 16 << 10
	documentFetchTimeout = 5 * time.Second
)

// docFetcher fetches and checks client ID metadata documents: a client
// whose client_id is an https URL (or http on a loopback host) describes
// itself in the JSON document at that URL.
type docFetcher struct {
	client   *http.Client
	audience []string
}

func newDocFetcher(base *http.Client, audience []string) *docFetcher {
	c := *base
	// A redirect would let the document live elsewhere than the URL that
	// names the client.
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &docFetcher{client: &c, audience: audience}
}

func docError(id, format string, args ...any) *oauthError {
	return newError(http.StatusUnauthorized, errInvalidClient, "client ID metadata document "+quote(id)+": "+fmt.Sprintf(format, args...))
}

// checkDocumentURL enforces the shape of a client ID URL: https (http only
// on loopback hosts), a path, no fragment, no user info, no dot segments.
func checkDocumentURL(id string) *oauthError {
	u, err := url.Parse(id)
	switch {
	case len(id) > maxURILen:
		return docError(id, "the URL is longer than 2000 characters")
	case err != nil:
		return docError(id, "not a URL")
	case u.Scheme != "https" && !(u.Scheme == "http" && oauth.IsLoopbackHost(u.Hostname())):
		return docError(id, "the client ID must be an https URL (http only on a loopback host)")
	case u.Host == "" || u.User != nil || u.Fragment != "" || strings.Contains(id, "#"):
		return docError(id, "the URL must have a host, and no user info or fragment")
	case u.Path == "" || u.Path == "/":
		return docError(id, "the URL must have a path")
	case slices.ContainsFunc(strings.Split(u.Path, "/"), func(seg string) bool { return seg == "." || seg == ".." }):
		return docError(id, "the URL must not have dot segments")
	}
	return nil
}

func (f *docFetcher) fetch(ctx context.Context, id string) (*oauthClient, error) {
	if err := checkDocumentURL(id); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, documentFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, id, nil)
	if err != nil {
		return nil, docError(id, "not a URL")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := f.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			return nil, docError(id, "the fetch timed out")
		}
		return nil, docError(id, "the document could not be fetched")
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return nil, docError(id, "the server answered a redirect (%d), which is not followed", resp.StatusCode)
	case resp.StatusCode != http.StatusOK:
		return nil, docError(id, "the server answered HTTP %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocumentBytes+1))
	switch {
	case err != nil:
		if isTimeout(err) || errors.Is(err, context.DeadlineExceeded) {
			return nil, docError(id, "the fetch timed out")
		}
		return nil, docError(id, "the document could not be read")
	case len(body) > maxDocumentBytes:
		return nil, docError(id, "the document is larger than %d bytes", maxDocumentBytes)
	}
	var md clientMetadata
	if err := jsonv2.Unmarshal(body, &md); err != nil {
		return nil, docError(id, "not a JSON object of client metadata (duplicate or mistyped members are refused)")
	}
	switch {
	case md.ClientID != id:
		return nil, docError(id, "its client_id %s does not equal the document URL", quote(md.ClientID))
	case md.ClientSecret != "":
		return nil, docError(id, "a metadata document must not contain a client_secret")
	case len(md.RedirectURIs) == 0:
		return nil, docError(id, "the document has no redirect_uris")
	case md.AuthMethod == "":
		md.AuthMethod = authNone
	case md.AuthMethod != authNone:
		return nil, docError(id, "token_endpoint_auth_method %s: only public clients (none) are supported", quote(md.AuthMethod))
	}
	if err := md.check(); err != nil {
		return nil, docError(id, "%s", err.desc)
	}
	c := newOAuthClient(id, nil, md, nil, f.audience)
	c.document = true
	return c, nil
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}
