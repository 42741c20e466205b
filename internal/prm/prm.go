// Package prm builds the OAuth 2.0 Protected Resource Metadata document
// (RFC 9728) that tells MCP clients which authorization server to use, and
// the well-known locations it is served at.
package prm

import (
	"net/url"
	"strings"

	"github.com/go-json-experiment/json"
)

// WellKnownPrefix is the RFC 9728 §3 well-known path.
const WellKnownPrefix = "/.well-known/oauth-protected-resource"

// Document is the RFC 9728 §2 metadata. Empty members are omitted.
type Document struct {
	Resource               string   `json:"resource"`
	AuthorizationServers   []string `json:"authorization_servers,omitempty"`
	ScopesSupported        []string `json:"scopes_supported,omitempty"`
	BearerMethodsSupported []string `json:"bearer_methods_supported,omitempty"`
	ResourceName           string   `json:"resource_name,omitempty"`
	ResourceDocumentation  string   `json:"resource_documentation,omitempty"`
}

// Marshal renders the document as compact JSON.
func (d Document) Marshal() []byte {
	b, err := json.Marshal(d, json.Deterministic(true))
	if err != nil {
		// Only strings and string slices: marshalling cannot fail.
		panic("prm: " + err.Error())
	}
	return b
}

// Locations are where the metadata of one resource is served.
type Locations struct {
	// PathForm is the RFC 9728 §3.1 path: the well-known prefix inserted
	// between host and path ("/.well-known/oauth-protected-resource/mcp").
	PathForm string
	// RootForm is the well-known prefix alone, probed by clients last.
	RootForm string
	// MetadataURL is the absolute URL of PathForm, sent in
	// WWW-Authenticate resource_metadata.
	MetadataURL string
}

// Locate computes the locations for a resource URI (an absolute URL without
// fragment or query).
func Locate(resource string) (Locations, error) {
	u, err := url.Parse(resource)
	if err != nil {
		return Locations{}, err
	}
	p := strings.TrimSuffix(u.EscapedPath(), "/")
	loc := Locations{PathForm: WellKnownPrefix + p, RootForm: WellKnownPrefix}
	loc.MetadataURL = u.Scheme + "://" + u.Host + loc.PathForm
	return loc, nil
}
