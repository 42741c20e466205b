// Package policy evaluates the Rego authorization policy of mcpauthz.
//
// # Flow
//
// For every request the ext_authz server has verified, it calls
// [Engine.Decide] with the HTTP request ([Request]), the verified token
// ([Token]) and the JSON-RPC messages of the body ([MCP], one per batch
// element). Decide converts the request and the token to Rego values once,
// then evaluates data.mcp.authz.decision once per message, with input.mcp
// set to that message, and returns one [Decision] per message. A request to
// a non-MCP path is evaluated once, without input.mcp.
//
// The contract between this package and the policy (every input field, the
// decision document, the reasons of the default policy, the layout of
// data.mcp.config, scopes_supported and scope_prefixes) is documented in
// rego/README.md. The default policy is embedded (see [DefaultSource]).
//
// # Failing closed
//
// Decide returns an error when it cannot decide: no policy loaded
// ([ErrNotReady]), an evaluation error, a timeout ([Options.EvalTimeout] or
// the caller's ctx), a panic inside the evaluator, or a decision that is
// undefined or not shaped as documented ([ErrInvalidDecision]). The caller
// answers 503 and never allows on error.
//
// # Reload and concurrency
//
// [Engine.Load] reads the policy files, compiles them (Rego v1) and
// prepares the decision query into an immutable generation, which it
// publishes with an atomic pointer swap only if every step succeeded; on
// failure the previous generation keeps serving and the error lists every
// problem with its file:line. Decide loads the current generation once per
// call, so all messages of a batch see the same policy, and never blocks on
// a reload. Loads are serialised; loading content identical to the current
// generation keeps it. [Engine.Watch] polls file contents and calls Load on
// change, logging and skipping broken edits. [Compile] runs the same path
// without publishing, for configuration checks.
//
// The revision ([Engine.Revision], [Decision.Revision]) is a short SHA-256
// of the policy files' relative names and contents, so the same files give
// the same revision embedded or on disk.
package policy
