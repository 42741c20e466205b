# Package mcp.authz is the default mcpauthz policy for MCP servers.
#
# The contract (input, output, reasons, data layout) is documented in
# rego/README.md. In short: the engine evaluates data.mcp.authz.decision once
# per JSON-RPC message and reads scopes_supported, baseline_scopes,
# scope_prefixes and known_tools once per policy load.
package mcp.authz

# decision is the entry point. It is always defined: anything the rules below
# do not recognise falls back to this denial.
default decision := {
	"allow": false,
	"reason": "invalid_input",
	"required_scopes": [],
	"headers": {},
}

# Revocation wins over everything else, then the request must be an MCP
# request, then the input must be well formed; only then do the method rules
# apply.
decision := _deny("revoked") if {
	_revoked
} else := _deny("not_mcp") if {
	# input.mcp.kind rather than input.mcp: the decision cache keys on the
	# input paths a policy reads, and input.mcp as a whole includes the
	# request id, which differs on every request.
	not input.mcp.kind
} else := _deny("invalid_input") if {
	not _valid_input
} else := _deny(_guard_denial) if {
	_guard_denial
} else := _method_decision

# Guards: any module of package mcp.guard may deny requests by adding a
# reason to data.mcp.guard.deny (a set of strings), on top of the rules
# below: who may act for whom, delegation depth, time of day. A guard's
# denial is final (never a step-up challenge); with several, the first in
# sorted order is the reason. rego/examples/agent-identity has examples.
_guard_denial := sort(data.mcp.guard.deny)[0]

# scopes_supported lists every scope named in the data mappings plus the
# baseline scopes, sorted. The engine reads it once per load (protected
# resource metadata, step-up challenges).
scopes_supported := sort(_supported_scopes)

# visible decides, for a whole list result at once, which items this caller
# may see: the subset of input.list.items (a set of call targets: tool or
# prompt names, resource URIs, resource template prefixes) whose call
# (tools/call, prompts/get, resources/read) decision would allow. The engine
# evaluates it once per list; a policy without a visible rule gets one
# derived from its decision, evaluated per item.
# With guards, which may judge each item, visible is left undefined: the
# engine then decides every item by the decision itself.
visible := _visible if not data.mcp.guard.deny

# The caller is judged once and the items in set operations: every rule
# reference and builtin call is a fixed cost of the evaluation, so the
# names and globs a caller's scopes grant are local to one body.
_visible := set() if {
	# The conditions of _revoked, inlined: here a rule reference is a
	# fixed cost of every first list.
	input.token.claims.jti in data.mcp.config.revoked.jti
} else := set() if {
	input.token.subject in data.mcp.config.revoked.subjects
} else := set() if {
	not is_string(input.token.subject)
} else := input.list.items if {
	# An open method is allowed whatever its target, even none.
	_list_methods[input.list.kind] in data.mcp.config.open_methods
} else := input.list.items - {""} if {
	# A wildcard scope covers every item with a target.
	_list_wildcards[input.list.kind] in input.token.scopes
} else := (names & input.list.items) | {t |
	# Items named by a granted glob entry: one match per item, and only
	# when a granted scope maps globs at all.
	count(globs) > 0
	some t in input.list.items
	some p in globs
	glob.match(p, null, t)
} if {
	# Tools and prompts: the names the granted scopes name exactly
	# (tools:<name>, prompts:<name>, or a plain mapping entry) and the
	# mapping entries of granted scopes that are globs.
	prefix := _list_prefixes[input.list.kind]
	mapping := object.get(data.mcp.config.scopes, input.list.kind, {})
	entries := {e | some es in object.filter(mapping, input.token.scopes); some e in es}
	globs := {p | some p in entries; regex.match(_glob_meta, p)}
	names := (({trim_prefix(s, prefix) | some s in input.token.scopes; startswith(s, prefix)} | entries) - globs) - {""}
} else := {u |
	input.list.kind in {"resources", "resource_templates"}
	some u in input.list.items
	_nonempty(u)
	_resource_granted(u)
}

# baseline_scopes are the scopes every client of this server needs
# (data.mcp.config.baseline_scopes), sorted. The engine reads them once per
# load: every 401 challenge asks for them, besides what the request needs.
baseline_scopes := sort({s | some s in data.mcp.config.baseline_scopes})

# scope_prefixes marks granted scopes that are still relevant to this
# resource when the engine builds a step-up challenge. Overridable with
# data.mcp.config.scope_prefixes.
default scope_prefixes := ["tools:", "prompts:", "resources:"]

scope_prefixes := data.mcp.config.scope_prefixes

# known_tools are the tool names the data mappings name literally (globs
# excluded). The engine reads it once per load: only these names appear as
# the tool label of mcpauthz_decisions_total, so clients cannot create
# metric series.
known_tools := sort({t |
	some patterns in data.mcp.config.scopes.tools
	some t in patterns
	not regex.match(`[*?\[{]`, t)
})

# ---------------------------------------------------------------------------
# Decision builders.

_allow(reason) := {
	"allow": true,
	"reason": reason,
	"required_scopes": [],
	"headers": {},
}

_deny(reason) := {
	"allow": false,
	"reason": reason,
	"required_scopes": [],
	"headers": {},
}

_deny_scope(required) := {
	"allow": false,
	"reason": "insufficient_scope",
	"required_scopes": required,
	"headers": {},
}

# ---------------------------------------------------------------------------
# Input checks.

_kinds := {"request", "notification", "response", "stream", "session_end"}

# Kinds that carry a JSON-RPC method.
_method_kinds := {"request", "notification"}

_revoked if input.token.claims.jti in data.mcp.config.revoked.jti

_revoked if input.token.subject in data.mcp.config.revoked.subjects

_valid_input if {
	is_string(input.token.subject)
	input.mcp.kind in _kinds
	_valid_method
}

_valid_method if not input.mcp.kind in _method_kinds

_valid_method if {
	input.mcp.kind in _method_kinds
	_nonempty(input.mcp.method)
}

_nonempty(s) if {
	is_string(s)
	s != ""
}

# ---------------------------------------------------------------------------
# Method rules. A notification is open when its method is a notifications/*
# method; a notification that names a request method (a request without an
# id) is judged like that request, so dropping the id cannot bypass a scope
# check.

_open if input.mcp.kind in {"response", "stream", "session_end"}

_open if {
	input.mcp.kind == "notification"
	startswith(input.mcp.method, "notifications/")
}

_open if {
	input.mcp.kind in _method_kinds
	input.mcp.method in data.mcp.config.open_methods
}

_resource_methods := {"resources/read", "resources/subscribe", "resources/unsubscribe"}

_method_decision := _allow("open_method") if {
	_open
} else := _deny("invalid_input") if {
	_missing_target
} else := _tool_decision(input.mcp.tool) if {
	input.mcp.method == "tools/call"
} else := _prompt_decision(input.mcp.prompt) if {
	input.mcp.method == "prompts/get"
} else := _resources_decision([input.mcp.resource_uri]) if {
	input.mcp.method in _resource_methods
} else := _prompt_decision(input.mcp.prompt) if {
	input.mcp.method == "completion/complete"
	_nonempty(input.mcp.prompt)
} else := _resources_decision([input.mcp.resource_uri]) if {
	input.mcp.method == "completion/complete"
} else := _resources_decision(input.mcp.resource_uris) if {
	input.mcp.method == "subscriptions/listen"
} else := _deny("unknown_method")

# _missing_target holds when a method that is judged by its target lacks it.
_missing_target if {
	input.mcp.method == "tools/call"
	not _nonempty(input.mcp.tool)
}

_missing_target if {
	input.mcp.method == "prompts/get"
	not _nonempty(input.mcp.prompt)
}

_missing_target if {
	input.mcp.method in _resource_methods
	not _nonempty(input.mcp.resource_uri)
}

_missing_target if {
	input.mcp.method == "completion/complete"
	not _nonempty(input.mcp.prompt)
	not _nonempty(input.mcp.resource_uri)
}

_missing_target if {
	input.mcp.method == "subscriptions/listen"
	not is_array(input.mcp.resource_uris)
}

_missing_target if {
	input.mcp.method == "subscriptions/listen"
	some uri in input.mcp.resource_uris
	not _nonempty(uri)
}

# ---------------------------------------------------------------------------
# Scopes. Scope strings are compared exactly and case-sensitively; a scope
# never matches by prefix.

_granted := {s | some s in input.token.scopes}

# A mapping entry for a tool or prompt names it exactly or, if it contains a
# glob metacharacter, as a glob without delimiters (so "*" also crosses "."
# and "/"); glob.match is never called for plain names.
_glob_meta := `[*?\[{\\]`

# _names reports whether the entries of one scope name n.
_names(entries, n) if n in entries

_names(entries, n) if {
	some p in entries
	regex.match(_glob_meta, p)
	glob.match(p, null, n)
}

# _mapped returns every scope of a mapping with an entry naming n. It runs
# on denials only and visits the whole mapping, so it checks exact names
# with one membership test per scope and looks at single entries only for
# scopes that contain a glob.
_mapped(mapping, n) := {s | some s, entries in mapping; n in entries} | {s |
	some s, entries in mapping
	regex.match(_glob_meta, concat("\n", entries))
	some p in entries
	regex.match(_glob_meta, p)
	glob.match(p, null, n)
}

# Tools.

_tool_decision(t) := object.union(_allow("tool_scope"), _credential("tools", t)) if {
	_tool_granted(t)
} else := _deny_scope(_tool_required(t))

_tool_granted(_) if "tools:*" in _granted

_tool_granted(t) if concat("", ["tools:", t]) in _granted

_tool_granted(t) if {
	some s in _granted
	_names(data.mcp.config.scopes.tools[s], t)
}

# One scope is challenged: the first data-mapped scope, else tools:<name>.
_tool_required(t) := [m[0]] if {
	m := sort(_mapped(data.mcp.config.scopes.tools, t))
	count(m) > 0
} else := [concat("", ["tools:", t])]

# Prompts.

_prompt_decision(n) := object.union(_allow("prompt_scope"), _credential("prompts", n)) if {
	_prompt_granted(n)
} else := _deny_scope(_prompt_required(n))

# Upstream credentials: data.mcp.config.upstream_credentials.{tools,prompts}
# maps a name to the configured credential source (upstream_credentials in
# the mcpauthz configuration) whose credential the MCP server gets for that
# call, as the source's name or {"source": name, "scopes": [...]} to narrow
# its scopes. The default data maps none.
_credential(kind, n) := {"upstream_credential": c} if {
	c := data.mcp.config.upstream_credentials[kind][n]
	is_string(c)
} else := {"upstream_credential": c.source, "upstream_scopes": c.scopes} if {
	c := data.mcp.config.upstream_credentials[kind][n]
	is_string(c.source)
	is_array(c.scopes)
} else := {"upstream_credential": c.source} if {
	c := data.mcp.config.upstream_credentials[kind][n]
	is_string(c.source)
} else := {}

_prompt_granted(_) if "prompts:*" in _granted

_prompt_granted(n) if concat("", ["prompts:", n]) in _granted

_prompt_granted(n) if {
	some s in _granted
	_names(data.mcp.config.scopes.prompts[s], n)
}

_prompt_required(n) := [m[0]] if {
	m := sort(_mapped(data.mcp.config.scopes.prompts, n))
	count(m) > 0
} else := [concat("", ["prompts:", n])]

# Resources. Mapping entries are URI prefixes matched against the normalised
# URI as plain strings: end them with "/" so that "file:///data/" does not
# also cover "file:///database".

_resources_decision(uris) := _allow("resource_scope") if {
	every uri in uris {
		_resource_granted(uri)
	}
} else := _deny_scope(sort({s |
	some uri in uris
	not _resource_granted(uri)
	some s in _resource_required(uri)
}))

_resource_granted(_) if "resources:*" in _granted

_resource_granted(uri) if {
	some s in _granted
	strings.any_prefix_match(uri, data.mcp.config.scopes.resources[s])
}

# One scope per URI is challenged: the first data-mapped scope, else
# resources:*.
_resource_required(uri) := [m[0]] if {
	m := sort({s |
		some s, prefixes in data.mcp.config.scopes.resources
		strings.any_prefix_match(uri, prefixes)
	})
	count(m) > 0
} else := ["resources:*"]

# ---------------------------------------------------------------------------
# List visibility: the rules of the call decision, applied to every item of
# a list without a decision per item. The caller is judged once; each item
# costs one lookup (or a glob or prefix match when the data maps some).

_list_methods := {
	"tools": "tools/call",
	"prompts": "prompts/get",
	"resources": "resources/read",
	"resource_templates": "resources/read",
}

_list_wildcards := {
	"tools": "tools:*",
	"prompts": "prompts:*",
	"resources": "resources:*",
	"resource_templates": "resources:*",
}

_list_prefixes := {"tools": "tools:", "prompts": "prompts:"}

# ---------------------------------------------------------------------------
# Metadata.

_supported_scopes contains s if some s, _ in data.mcp.config.scopes.tools

_supported_scopes contains s if some s, _ in data.mcp.config.scopes.prompts

_supported_scopes contains s if some s, _ in data.mcp.config.scopes.resources

_supported_scopes contains s if some s in data.mcp.config.baseline_scopes
