# Tests of the example scope mappings in data.json beside this file, run
# with the default policy: opa test rego/mcp/authz.rego rego/examples/scope-mappings
package mcp.examples.scope_mappings_test

import data.mcp.authz

_input(scopes, mcp) := {
	"request": {"method": "POST", "path": "/mcp", "host": "mcp.example", "headers": {}, "query": {}},
	"token": {
		"issuer": "https://as.example", "subject": "alice", "client_id": "client-1",
		"audience": ["https://mcp.example/mcp"], "scopes": scopes, "claims": {"sub": "alice"},
	},
	"mcp": object.union(
		{
			"protocol_version": "2025-11-25", "session_id": "", "kind": "request", "id": 1, "method": "",
			"tool": "", "prompt": "", "arguments": null, "resource_uri": "", "resource_uris": [], "task_id": "",
		},
		mcp,
	),
}

_allow(reason) := {"allow": true, "reason": reason, "required_scopes": [], "headers": {}}

_need(scopes) := {"allow": false, "reason": "insufficient_scope", "required_scopes": scopes, "headers": {}}

test_mapped_scopes_grant_their_tools if {
	authz.decision == _allow("tool_scope") with input as _input(["weather:read"], {"method": "tools/call", "tool": "get_forecast"})
	authz.decision == _allow("tool_scope") with input as _input(["files:write"], {"method": "tools/call", "tool": "write_file"})
	authz.decision == _allow("prompt_scope") with input as _input(["prompts:code"], {"method": "prompts/get", "prompt": "explain_diff"})
	authz.decision == _allow("resource_scope") with input as _input(["files:read"], {"method": "resources/read", "resource_uri": "file:///srv/data/a.csv"})
}

test_denials_challenge_the_mapped_scope if {
	authz.decision == _need(["weather:read"]) with input as _input([], {"method": "tools/call", "tool": "get_weather"})
	authz.decision == _need(["files:write"]) with input as _input(["weather:read"], {"method": "tools/call", "tool": "write_file"})
	authz.decision == _need(["files:read"]) with input as _input([], {"method": "resources/read", "resource_uri": "file:///srv/data/a.csv"})
	authz.decision == _need(["tools:delete_repo"]) with input as _input(["weather:read"], {"method": "tools/call", "tool": "delete_repo"})
}

# Every entry of every mapping grants what it names, and every mapped scope
# is advertised.
test_every_mapping_grants if {
	every s, patterns in data.mcp.config.scopes.tools {
		s in authz.scopes_supported
		every p in patterns {
			# Each pattern itself as the tool name: exact entries match
			# themselves, and so does "*" in a glob.
			authz.decision == _allow("tool_scope") with input as _input([s], {"method": "tools/call", "tool": p})
		}
	}
	every s, patterns in data.mcp.config.scopes.prompts {
		s in authz.scopes_supported
		every p in patterns {
			authz.decision == _allow("prompt_scope") with input as _input([s], {"method": "prompts/get", "prompt": p})
		}
	}
	every s, prefixes in data.mcp.config.scopes.resources {
		s in authz.scopes_supported
		every p in prefixes {
			authz.decision == _allow("resource_scope") with input as _input([s], {"method": "resources/read", "resource_uri": concat("", [p, "x"])})
		}
	}
	authz.scopes_supported == ["files:read", "files:write", "prompts:code", "weather:read"]
	authz.known_tools == ["get_forecast", "get_weather"]
}
