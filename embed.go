// Package mcpauthz holds assets shared by the mcpauthz packages: the embedded
// default policy.
package mcpauthz

import "embed"

// DefaultPolicy is the embedded default policy: the Rego modules, their unit
// tests and data.json of the rego directory. Load it with the root "rego"
// (policy.DefaultSource does), so that data files are mounted exactly as
// "opa test rego/" mounts them.
//
//go:embed rego
var DefaultPolicy embed.FS
