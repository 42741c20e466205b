# Tests of the example upstream-credential mapping in data.json beside this
# file, with the default policy:
# opa test rego/mcp/authz.rego rego/examples/upstream-credentials
package mcp.examples.upstream_credentials_test

import data.mcp.authz

_input(scopes, tool) := {
	"request": {"method": "POST", "path": "/mcp", "host": "mcp.example", "headers": {}, "query": {}},
	"token": {
		"issuer": "https://as.example", "subject": "alice", "client_id": "client-1", "azp": "",
		"audience": ["https://mcp.example/mcp"], "scopes": scopes, "act": [], "may_act": null, "claims": {"sub": "alice"},
	},
	"mcp": {
		"protocol_version": "2025-11-25", "session_id": "", "kind": "request", "id": 1, "method": "tools/call",
		"tool": tool, "prompt": "", "arguments": null, "resource_uri": "", "resource_uris": [], "task_id": "",
	},
}

# create_issue gets a token exchanged for GitHub, narrowed to the repo
# scope; query_db gets the static database secret.
test_each_tool_gets_its_credential if {
	d := authz.decision with input as _input(["tools:create_issue"], "create_issue")
	d.allow
	d.upstream_credential == "github"
	d.upstream_scopes == ["repo"]

	q := authz.decision with input as _input(["tools:*"], "query_db")
	q.allow
	q.upstream_credential == "db"
	not q.upstream_scopes
}

test_other_tools_get_none if {
	d := authz.decision with input as _input(["tools:*"], "get_weather")
	d.allow
	not d.upstream_credential
}

test_denied_calls_get_none if {
	d := authz.decision with input as _input([], "create_issue")
	not d.allow
	not d.upstream_credential
}
