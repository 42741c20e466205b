# Tests of the data file shipped with the default policy (rego/data.json).
#
# They live here, not in rego/mcp/authz_test.rego, because the tests that
# ship with a policy run before every activation against the data it is
# loaded with: an operator who edits data.json (the documented way to map
# scopes) must not have the policy refused because it no longer maps
# nothing. TestRegoUnitTests runs them with ../rego/mcp and
# ../rego/data.json, sharing the fixtures of package mcp.authz_test.
package mcp.authz_test

import data.mcp.authz

test_shipped_data_open_methods if {
	count(data.mcp.config.open_methods) > 0
	every m in data.mcp.config.open_methods {
		authz.decision == _allow("open_method") with input as _input([], {"method": m})
	}
}

# The embedded default maps no scope to any tool, prompt or resource: only
# tools:<name>, tools:*, prompts:<name>, prompts:* and resources:* grant
# anything, and nothing is advertised. (Example mappings live in
# rego/examples/scope-mappings.)
test_shipped_data_maps_nothing if {
	data.mcp.config.scopes == {"tools": {}, "prompts": {}, "resources": {}}
	authz.scopes_supported == []
	authz.baseline_scopes == []
	authz.known_tools == []
	authz.decision == _need(["tools:get_weather"]) with input as _input(["weather:read", "files:write"], {"method": "tools/call", "tool": "get_weather"})
	authz.decision == _allow("tool_scope") with input as _input(["tools:write_file"], {"method": "tools/call", "tool": "write_file"})
	authz.decision == _need(["resources:*"]) with input as _input(["files:read"], {"method": "resources/read", "resource_uri": "file:///srv/data/a.csv"})
}
