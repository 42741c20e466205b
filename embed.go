// Package mcpauthz holds assets shared by the mcpauthz packages: the embedded
// default policy.
package mcpauthz

import "embed"

// DefaultPolicy is the embedded default policy: the Rego modules of
// rego/mcp, their unit tests and rego/data.json. Load it with the root
// "rego" (policy.DefaultSource does), so that data files are mounted exactly
// as "opa test rego/mcp rego/data.json" mounts them. The examples of
// rego/examples are not embedded.
//
//go:embed rego/mcp rego/data.json
var DefaultPolicy embed.FS
