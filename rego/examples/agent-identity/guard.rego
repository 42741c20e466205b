# Guards on agent identity, on top of the default policy: who (which OAuth
# client) may act for whom, and how deep a delegation chain may be. The
# default policy denies a request when data.mcp.guard.deny has a reason.
#
# data.mcp.config.agents:
#   max_delegation_depth: the longest act chain accepted (RFC 8693 §4.1)
#   rules: [{client_id, tool, group}]: the client may call the tool only for
#          users whose groups claim holds the group
package mcp.guard

# A delegation chain deeper than allowed: an agent acting for an agent
# acting for the user, beyond what the deployment trusts.
deny contains "delegation_too_deep" if {
	count(input.token.act) > data.mcp.config.agents.max_delegation_depth
}

# The acting client: the current actor of a delegation, else the token's
# client.
_acting_client := input.token.act[0].client_id if {
	count(input.token.act) > 0
	input.token.act[0].client_id != ""
} else := input.token.client_id

deny contains "agent_not_allowed_for_user" if {
	some rule in data.mcp.config.agents.rules
	input.mcp.method == "tools/call"
	input.mcp.tool == rule.tool
	_acting_client == rule.client_id
	not rule.group in _groups
}

_groups := {g | some g in input.token.claims.groups}
