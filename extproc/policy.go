package extproc

import (
	"context"

	"github.com/go-json-experiment/json/jsontext"
)

// Kind is what a list lists.
type Kind string

// The four kinds of lists, named after their result member (resource
// templates after the method).
const (
	KindTools             Kind = "tools"
	KindPrompts           Kind = "prompts"
	KindResources         Kind = "resources"
	KindResourceTemplates Kind = "resource_templates"
)

// KindOf returns the kind listed by a list method, or "" for any other
// method.
func KindOf(method string) Kind {
	switch method {
	case "tools/list":
		return KindTools
	case "prompts/list":
		return KindPrompts
	case "resources/list":
		return KindResources
	case "resources/templates/list":
		return KindResourceTemplates
	}
	return ""
}

// Method returns the list method of the kind.
func (k Kind) Method() string {
	switch k {
	case KindTools:
		return "tools/list"
	case KindPrompts:
		return "prompts/list"
	case KindResources:
		return "resources/list"
	case KindResourceTemplates:
		return "resources/templates/list"
	}
	return ""
}

// member is the result member holding the items.
func (k Kind) member() string {
	if k == KindResourceTemplates {
		return "resourceTemplates"
	}
	return string(k)
}

// List is one list result, as the policy sees it.
type List struct {
	Kind Kind
	// ID is the raw JSON-RPC id of the response.
	ID jsontext.Value
	// Items are the items the caller could use at all, in result order.
	// Items that the call path rejects before policy (see Item) are removed
	// without being listed here.
	Items []Item
}

// Item is one list item. Which fields are set depends on the kind:
//
//	tools               Name: "name" (1–128 of A-Z a-z 0-9 _ - ., as
//	                    tools/call requires)
//	prompts             Name: "name" (non-empty, no control characters, as
//	                    prompts/get requires)
//	resources           URI: "uri" normalised as resources/read normalises
//	                    params.uri; Name: "name" when it is a string
//	resource_templates  URITemplate: "uriTemplate" as sent; URIPrefix: its
//	                    literal part before the first "{", normalised like a
//	                    URI; Name: "name" when it is a string
type Item struct {
	Name        string
	URI         string
	URITemplate string
	URIPrefix   string
}

// Visibility is the policy's answer for one List.
type Visibility struct {
	// Keep is parallel to List.Items: true keeps the item, false removes
	// it. A Keep of another length is a policy error.
	Keep []bool
}

// Policy decides which items of a list the caller may see, in one
// evaluation per list. The semantics the processor relies on: an item is
// kept iff the caller could use it, for the same caller and data as the
// call policy (lc.Input):
//
//   - a tool iff tools/call of it would be allowed;
//   - a prompt iff prompts/get of it would be allowed;
//   - a resource iff resources/read of its URI would be allowed;
//   - a resource template by the policy's answer for the template's URI
//     prefix (a read of a URI starting with URIPrefix).
//
// Visible must honour ctx (the processor bounds it with
// Options.PolicyTimeout), be safe for concurrent use, and not keep list
// after it returns (the processor reuses its Items). An error, a
// timeout or a Keep of the wrong length answers the list with a JSON-RPC
// error: never the unfiltered list.
type Policy interface {
	Visible(ctx context.Context, lc ListContext, list List) (Visibility, error)
}
