# Tests of the agent-identity guards beside this file, with the default
# policy: opa test rego/mcp/authz.rego rego/examples/agent-identity
package mcp.examples.agent_identity_test

import data.mcp.authz

_input(client, act, groups, tool) := {
	"request": {"method": "POST", "path": "/mcp", "host": "mcp.example", "headers": {}, "query": {}},
	"token": {
		"issuer": "https://as.example", "subject": "alice", "client_id": client, "azp": "",
		"audience": ["https://mcp.example/mcp"], "scopes": ["tools:*"], "act": act, "may_act": null,
		"claims": {"sub": "alice", "groups": groups},
	},
	"mcp": {
		"protocol_version": "2025-11-25", "session_id": "", "kind": "request", "id": 1, "method": "tools/call",
		"tool": tool, "prompt": "", "arguments": null, "resource_uri": "", "resource_uris": [], "task_id": "",
	},
}

_deny(reason) := {"allow": false, "reason": reason, "required_scopes": [], "headers": {}}

test_agent_may_deploy_only_for_sre if {
	authz.decision.allow with input as _input("deploy-bot", [], ["sre"], "deploy_production")
	authz.decision == _deny("agent_not_allowed_for_user") with input as _input("deploy-bot", [], ["dev"], "deploy_production")
	authz.decision == _deny("agent_not_allowed_for_user") with input as _input("deploy-bot", [], [], "deploy_production")
}

test_rule_applies_to_that_client_and_tool_only if {
	# Another client, for a user outside sre: the rule does not apply.
	authz.decision.allow with input as _input("ide", [], ["dev"], "deploy_production")
	# The same client, another tool.
	authz.decision.allow with input as _input("deploy-bot", [], ["dev"], "get_weather")
}

test_acting_client_is_the_current_actor if {
	# The user's own client delegates to deploy-bot: the actor is judged.
	act := [{"sub": "svc-deploy", "iss": "https://as.example", "client_id": "deploy-bot"}]
	authz.decision == _deny("agent_not_allowed_for_user") with input as _input("ide", act, ["dev"], "deploy_production")
	authz.decision.allow with input as _input("ide", act, ["sre"], "deploy_production")
}

test_delegation_depth if {
	one := [{"sub": "agent-a", "iss": "", "client_id": "a"}]
	two := [{"sub": "agent-b", "iss": "", "client_id": "b"}, {"sub": "agent-a", "iss": "", "client_id": "a"}]
	authz.decision.allow with input as _input("ide", one, [], "get_weather")
	authz.decision == _deny("delegation_too_deep") with input as _input("ide", two, [], "get_weather")
	# The guard applies to every method, open ones included.
	authz.decision == _deny("delegation_too_deep") with input as object.union(_input("ide", two, [], ""), {"mcp": {"method": "tools/list", "tool": ""}})
}
