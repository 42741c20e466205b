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
// [Engine.Load] reads the policy files, compiles them (Rego v1), prepares
// the decision query into an immutable generation and checks it (see
// Activation check), and publishes it with an atomic pointer swap only if
// every step succeeded; on failure the previous generation keeps serving
// and the error lists every problem with its file:line. Decide loads the
// current generation once per call, so all messages of a batch see the
// same policy, and never blocks on a reload. Loads are serialised; loading content identical to the current
// generation keeps it. [Engine.Watch] polls file contents and calls Load on
// change, logging and skipping broken edits. [Compile] runs the same path
// without publishing, for configuration checks.
//
// The revision ([Engine.Revision], [Decision.Revision]) is a short SHA-256
// of the policy files' relative names and contents (tests included), so the
// same files give the same revision embedded or on disk.
//
// # Activation check
//
// A policy that compiles can still fail every request (two rules giving
// decision different values, a builtin error, a decision that is not a
// decision document). So a compiled generation becomes current only after
// it passed its own Rego tests, run by OPA's tester as "opa test" runs
// them (the *_test.rego files of the source or bundle, compiled for the
// check only, never into the decision), and a built-in set of smoke inputs
// evaluated through its decision and visibility queries (see
// activation.go). A generation that fails is refused with an
// [*ActivationError] listing every problem at its file:line: Load and
// Compile return it, OnReload receives it ([ReloadResult] says
// ReloadRefused), Watch and RunBundle log it at Error, and the last good
// generation keeps serving. [Engine.LastReload] reports the last attempt.
//
// # Bundles
//
// [Engine.RunBundle] loads the policy and its data from an OPA bundle server
// instead of local files ([BundleSource]), with OPA's own machinery: the
// v1/download downloader polls (If-None-Match with the last ETag, a 304
// keeps the policy, failed polls back off exponentially up to
// [BundleSource.PollMax]) and the v1/bundle reader reads the .tar.gz and, when
// [BundleSource.VerificationKey] is set, verifies its .signatures.json as OPA
// does with its "keys" and "signing" configuration. The bundle's Rego
// modules and data (a data.json or data.yaml at a path of the bundle is
// mounted at that path; the .manifest's roots are enforced) are compiled by
// the same code as local files, with the same checks, into the same kind of
// generation, published atomically only if everything succeeded. A failed
// download, a corrupt, unsigned or wrongly signed bundle, or one that does
// not compile leaves the last good policy serving, and is reported to
// [Options.OnReload] and logged. The engine is not Ready until the first
// bundle is activated. The revision of a bundle is its manifest's revision,
// or a short SHA-256 of its content when the manifest has none.
//
// Use [BundleSource.Validate] to check a bundle configuration.
package policy
