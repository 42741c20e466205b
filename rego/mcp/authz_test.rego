package mcp.authz_test

import data.mcp.authz

# ---------------------------------------------------------------------------
# Fixtures. Most tests replace data.mcp.config with _cfg so that they test the
# rules, not the illustrative mapping shipped in rego/data.json.

_open_methods := [
	"initialize",
	"ping",
	"server/discover",
	"tools/list",
	"prompts/list",
	"resources/list",
	"resources/templates/list",
	"logging/setLevel",
	"tasks/get",
	"tasks/result",
	"tasks/cancel",
	"tasks/list",
	"tasks/update",
]

_cfg := {
	"open_methods": _open_methods,
	"baseline_scopes": ["mcp:connect"],
	"scopes": {
		"tools": {
			"weather:read": ["get_weather", "get_forecast"],
			"alpha:weather": ["get_weather"],
			"files:write": ["write_*"],
			"tools:read": ["read"],
			"misc:glob": ["report_?", "{start,stop}_job"],
		},
		"prompts": {"prompts:code": ["code_review", "explain_*"]},
		"resources": {
			"files:read": ["file:///srv/data/"],
			"archive:read": ["file:///srv/data/archive/", "s3://archive/"],
			"docs:read": ["https://docs.example/"],
		},
	},
	"revoked": {"jti": ["jti-revoked"], "subjects": ["mallory"]},
}

_request := {
	"method": "POST",
	"path": "/mcp",
	"host": "mcp.example",
	"headers": {"content-type": "application/json"},
	"query": {},
}

_token := {
	"issuer": "https://as.example",
	"subject": "alice",
	"client_id": "client-1",
	"audience": ["https://mcp.example/mcp"],
	"scopes": [],
	"claims": {"jti": "jti-1", "sub": "alice"},
}

_mcp(over) := object.union(
	{
		"protocol_version": "2025-11-25",
		"session_id": "session-1",
		"kind": "request",
		"id": 1,
		"method": "",
		"tool": "",
		"prompt": "",
		"arguments": null,
		"resource_uri": "",
		"resource_uris": [],
		"task_id": "",
	},
	over,
)

_input(scopes, over) := {
	"request": _request,
	"token": object.union(_token, {"scopes": scopes}),
	"mcp": _mcp(over),
}

# _decide evaluates the decision for a message with the given granted scopes
# under the test configuration.
_decide(scopes, over) := d if {
	d := authz.decision with input as _input(scopes, over) with data.mcp.config as _cfg
}

_tool(scopes, name) := _decide(scopes, {"method": "tools/call", "tool": name})

_prompt(scopes, name) := _decide(scopes, {"method": "prompts/get", "prompt": name})

_read(scopes, uri) := _decide(scopes, {"method": "resources/read", "resource_uri": uri})

_allow(reason) := {"allow": true, "reason": reason, "required_scopes": [], "headers": {}}

_deny(reason) := {"allow": false, "reason": reason, "required_scopes": [], "headers": {}}

_need(scopes) := {"allow": false, "reason": "insufficient_scope", "required_scopes": scopes, "headers": {}}

# ---------------------------------------------------------------------------
# Decision shape.

test_decision_always_defined_with_all_keys if {
	every x in [{}, {"mcp": {}}, {"token": {}}, _input([], {"method": "tools/call", "tool": "t"})] {
		d := authz.decision with input as x with data.mcp.config as _cfg
		object.keys(d) == {"allow", "reason", "required_scopes", "headers"}
		is_boolean(d.allow)
		is_string(d.reason)
		is_array(d.required_scopes)
		is_object(d.headers)
	}
}

test_empty_input_is_invalid_not_mcp if {
	# Without input.mcp the request is not an MCP request.
	authz.decision == _deny("not_mcp") with input as {} with data.mcp.config as _cfg
}

# ---------------------------------------------------------------------------
# Open methods and kinds.

test_open_methods_allowed_without_scopes if {
	every m in _open_methods {
		_decide([], {"method": m}) == _allow("open_method")
	}
}

test_open_methods_come_from_data if {
	narrowed := object.union(_cfg, {"open_methods": ["initialize"]})
	d1 := authz.decision with input as _input([], {"method": "initialize"}) with data.mcp.config as narrowed
	d1 == _allow("open_method")
	d2 := authz.decision with input as _input([], {"method": "tools/list"}) with data.mcp.config as narrowed
	d2 == _deny("unknown_method")
}

test_no_open_methods_without_config if {
	d := authz.decision with input as _input([], {"method": "initialize"}) with data.mcp.config as {}
	d == _deny("unknown_method")
}

test_notifications_allowed if {
	every m in ["notifications/initialized", "notifications/cancelled", "notifications/progress", "notifications/roots/list_changed", "notifications/anything"] {
		_decide([], {"kind": "notification", "id": null, "method": m}) == _allow("open_method")
	}
}

test_notification_naming_a_request_method_is_judged_as_that_request if {
	# A tools/call without an id must not bypass the tool scope.
	_decide([], {"kind": "notification", "id": null, "method": "tools/call", "tool": "delete_repo"}) == _need(["tools:delete_repo"])
	_decide(["tools:delete_repo"], {"kind": "notification", "id": null, "method": "tools/call", "tool": "delete_repo"}) == _allow("tool_scope")
	_decide([], {"kind": "notification", "id": null, "method": "ping"}) == _allow("open_method")
	_decide([], {"kind": "notification", "id": null, "method": "sampling/createMessage"}) == _deny("unknown_method")
}

test_responses_allowed if {
	_decide([], {"kind": "response", "id": 7, "method": ""}) == _allow("open_method")
}

test_stream_and_session_end_allowed if {
	_decide([], {"kind": "stream", "id": null}) == _allow("open_method")
	_decide([], {"kind": "session_end", "id": null}) == _allow("open_method")
}

# ---------------------------------------------------------------------------
# tools/call.

test_tools_call if {
	cases := {
		"no scope, unmapped tool": [[], "delete_repo", _need(["tools:delete_repo"])],
		"direct scope": [["tools:delete_repo"], "delete_repo", _allow("tool_scope")],
		"wildcard scope": [["tools:*"], "delete_repo", _allow("tool_scope")],
		"mapped scope": [["weather:read"], "get_weather", _allow("tool_scope")],
		"mapped scope, second tool": [["weather:read"], "get_forecast", _allow("tool_scope")],
		"other mapped scope": [["alpha:weather"], "get_weather", _allow("tool_scope")],
		"mapped scope, other tool": [["alpha:weather"], "get_forecast", _need(["weather:read"])],
		"mapped tool, first sorted mapped scope challenged": [[], "get_weather", _need(["alpha:weather"])],
		"unmapped tool with unrelated scopes": [["weather:read", "files:write"], "get_alerts", _need(["tools:get_alerts"])],
		"glob mapping": [["files:write"], "write_file", _allow("tool_scope")],
		"glob without delimiters crosses dots and slashes": [["files:write"], "write_a.b/c", _allow("tool_scope")],
		"glob is anchored": [["files:write"], "rewrite_file", _need(["tools:rewrite_file"])],
		"glob mapped tool challenged with mapped scope": [[], "write_file", _need(["files:write"])],
		"glob ?": [["misc:glob"], "report_1", _allow("tool_scope")],
		"glob ? is one character": [["misc:glob"], "report_12", _need(["tools:report_12"])],
		"glob alternatives": [["misc:glob"], "stop_job", _allow("tool_scope")],
		"other tools: scope does not match": [["tools:get_weather"], "get_forecast", _need(["weather:read"])],
	}
	every name, c in cases {
		print(name)
		_tool(c[0], c[1]) == c[2]
	}
}

test_tools_call_scopes_are_case_sensitive if {
	every scopes in [["Tools:Call"], ["Tools:*"], ["TOOLS:*"], ["tools:Get_Weather"], ["Weather:Read"], ["tools:get_weather "]] {
		_tool(scopes, "get_weather") == _need(["alpha:weather"])
	}
	_tool(["weather:read"], "Get_Weather") == _need(["tools:Get_Weather"])
	_tool(["tools:call"], "call") == _allow("tool_scope")
	_tool(["Tools:Call"], "call") == _need(["tools:call"])
}

test_tools_call_scope_prefix_never_matches if {
	# A scope prefix is never a match: "tools:read" must not grant "readx"
	# and "tools:readx" must not grant "read"; neither do truncated or
	# extended data-mapped scopes.
	_tool(["tools:read"], "readx") == _need(["tools:readx"])
	_tool(["tools:readx"], "read") == _need(["tools:read"])
	_tool(["tools:read"], "read") == _allow("tool_scope")
	_tool(["tools:rea"], "read") == _need(["tools:read"])
	_tool(["weather:rea"], "get_weather") == _need(["alpha:weather"])
	_tool(["weather:readx"], "get_weather") == _need(["alpha:weather"])
	_tool(["tools"], "tools") == _need(["tools:tools"])
	_tool(["tools:"], "") == _deny("invalid_input")
}

test_tools_call_star_mapping if {
	cfg := json.patch(_cfg, [{"op": "replace", "path": "/scopes/tools", "value": {"admin": ["*"]}}])
	d1 := authz.decision with input as _input(["admin"], {"method": "tools/call", "tool": "anything"}) with data.mcp.config as cfg
	d1 == _allow("tool_scope")
	d2 := authz.decision with input as _input([], {"method": "tools/call", "tool": "anything"}) with data.mcp.config as cfg
	d2 == _need(["admin"])
}

test_tools_call_without_tool_is_invalid if {
	_tool(["tools:*"], "") == _deny("invalid_input")
	_decide(["tools:*"], {"method": "tools/call", "tool": null}) == _deny("invalid_input")
}

test_tools_call_malformed_mapping_denies if {
	# A string instead of an array, and a pattern that is not a valid glob:
	# neither grants anything, and neither breaks evaluation.
	cfg := json.patch(_cfg, [{"op": "replace", "path": "/scopes/tools", "value": {"broken": "get_weather", "bad_glob": ["[get_weather"]}}])
	d1 := authz.decision with input as _input(["broken", "bad_glob"], {"method": "tools/call", "tool": "get_weather"}) with data.mcp.config as cfg
	d1 == _need(["tools:get_weather"])
	d2 := authz.decision with input as _input(["bad_glob"], {"method": "tools/call", "tool": "[get_weather"}) with data.mcp.config as cfg
	d2 == _allow("tool_scope")
}

test_batch_elements_are_decided_alone if {
	# The engine evaluates each batch element with its own input.mcp; the
	# same token yields independent decisions.
	scopes := ["weather:read"]
	_tool(scopes, "get_weather") == _allow("tool_scope")
	_tool(scopes, "delete_repo") == _need(["tools:delete_repo"])
	_decide(scopes, {"method": "tools/list"}) == _allow("open_method")
}

# ---------------------------------------------------------------------------
# prompts/get.

test_prompts_get if {
	cases := {
		"no scope, unmapped": [[], "summarise", _need(["prompts:summarise"])],
		"direct scope": [["prompts:summarise"], "summarise", _allow("prompt_scope")],
		"wildcard scope": [["prompts:*"], "summarise", _allow("prompt_scope")],
		"mapped exact": [["prompts:code"], "code_review", _allow("prompt_scope")],
		"mapped glob": [["prompts:code"], "explain_diff", _allow("prompt_scope")],
		"mapped, challenged": [[], "explain_diff", _need(["prompts:code"])],
		"tools scope does not grant prompts": [["tools:*"], "summarise", _need(["prompts:summarise"])],
		"case-sensitive": [["Prompts:*"], "summarise", _need(["prompts:summarise"])],
		"prefix never matches": [["prompts:summ"], "summarise", _need(["prompts:summarise"])],
		"empty name": [["prompts:*"], "", _deny("invalid_input")],
	}
	every name, c in cases {
		print(name)
		_prompt(c[0], c[1]) == c[2]
	}
}

# ---------------------------------------------------------------------------
# resources/read, subscribe, unsubscribe.

test_resources_read if {
	cases := {
		"no scope, unmapped": [[], "file:///etc/passwd", _need(["resources:*"])],
		"wildcard scope": [["resources:*"], "file:///etc/passwd", _allow("resource_scope")],
		"mapped prefix": [["files:read"], "file:///srv/data/report.csv", _allow("resource_scope")],
		"mapped prefix, challenged": [[], "file:///srv/data/report.csv", _need(["files:read"])],
		"prefix is not a substring": [["files:read"], "file:///srv/database", _need(["resources:*"])],
		"prefix anchored at start": [["files:read"], "x-file:///srv/data/a", _need(["resources:*"])],
		"second prefix of a scope": [["archive:read"], "s3://archive/2020.tar", _allow("resource_scope")],
		"first sorted matching scope challenged": [[], "file:///srv/data/archive/2020.tar", _need(["archive:read"])],
		"either matching scope grants": [["files:read"], "file:///srv/data/archive/2020.tar", _allow("resource_scope")],
		"other scope does not grant": [["docs:read"], "file:///srv/data/a", _need(["files:read"])],
		"case-sensitive scope": [["Resources:*"], "file:///srv/data/a", _need(["files:read"])],
		"no direct resources:<uri> scope": [["resources:file:///srv/data/a"], "file:///srv/data/a", _need(["files:read"])],
		"empty uri": [["resources:*"], "", _deny("invalid_input")],
	}
	every name, c in cases {
		print(name)
		_read(c[0], c[1]) == c[2]
	}
}

test_resources_subscribe_and_unsubscribe if {
	every m in ["resources/subscribe", "resources/unsubscribe"] {
		_decide(["files:read"], {"method": m, "resource_uri": "file:///srv/data/a"}) == _allow("resource_scope")
		_decide([], {"method": m, "resource_uri": "file:///srv/data/a"}) == _need(["files:read"])
	}
}

# ---------------------------------------------------------------------------
# completion/complete follows its reference.

test_completion_follows_prompt if {
	m := {"method": "completion/complete", "prompt": "code_review"}
	_decide(["prompts:code"], m) == _allow("prompt_scope")
	_decide(["tools:*", "resources:*"], m) == _need(["prompts:code"])
}

test_completion_follows_resource if {
	m := {"method": "completion/complete", "resource_uri": "https://docs.example/{page}"}
	_decide(["docs:read"], m) == _allow("resource_scope")
	_decide(["prompts:*"], m) == _need(["docs:read"])
}

test_completion_without_reference_is_invalid if {
	_decide(["prompts:*", "resources:*"], {"method": "completion/complete"}) == _deny("invalid_input")
}

# ---------------------------------------------------------------------------
# subscriptions/listen needs read access to every URI.

_listen(scopes, uris) := _decide(scopes, {"method": "subscriptions/listen", "resource_uris": uris})

test_subscriptions_listen if {
	uris := ["file:///srv/data/a", "https://docs.example/b"]
	_listen(["files:read", "docs:read"], uris) == _allow("resource_scope")
	_listen(["resources:*"], uris) == _allow("resource_scope")
	_listen(["files:read"], uris) == _need(["docs:read"])
	_listen([], uris) == _need(["docs:read", "files:read"])
	_listen([], ["file:///srv/data/a", "file:///elsewhere", "file:///srv/data/b"]) == _need(["files:read", "resources:*"])
	_listen(["files:read"], ["file:///srv/data/a", "file:///elsewhere"]) == _need(["resources:*"])
}

test_subscriptions_listen_without_uris_is_allowed if {
	_listen([], []) == _allow("resource_scope")
}

test_subscriptions_listen_malformed_uris_are_invalid if {
	_listen(["resources:*"], [""]) == _deny("invalid_input")
	_listen(["resources:*"], "file:///srv/data/a") == _deny("invalid_input")
}

# ---------------------------------------------------------------------------
# Unknown methods.

test_unknown_methods_denied if {
	every m in ["tools/delete", "sampling/createMessage", "roots/list", "elicitation/create", "Tools/call", "initialize ", "notifications/initialized"] {
		_decide(["tools:*", "prompts:*", "resources:*"], {"method": m}) == _deny("unknown_method")
	}
}

# ---------------------------------------------------------------------------
# Revocation comes first.

test_revoked_jti if {
	x := object.union(_input(["tools:*"], {"method": "initialize"}), {"token": {"claims": {"jti": "jti-revoked"}}})
	d := authz.decision with input as x with data.mcp.config as _cfg
	d == _deny("revoked")
}

test_revoked_subject if {
	x := object.union(_input(["tools:*"], {"method": "tools/call", "tool": "t"}), {"token": {"subject": "mallory"}})
	d := authz.decision with input as x with data.mcp.config as _cfg
	d == _deny("revoked")
}

test_revoked_before_not_mcp if {
	x := {"request": _request, "token": object.union(_token, {"subject": "mallory"})}
	d := authz.decision with input as x with data.mcp.config as _cfg
	d == _deny("revoked")
}

test_revoked_before_invalid_input if {
	x := object.union(_input([], {"kind": "bogus"}), {"token": {"subject": "mallory"}})
	d := authz.decision with input as x with data.mcp.config as _cfg
	d == _deny("revoked")
}

test_not_revoked if {
	_decide([], {"method": "initialize"}) == _allow("open_method")
	x := object.union(_input([], {"method": "initialize"}), {"token": {"claims": {}}})
	d := authz.decision with input as x with data.mcp.config as _cfg
	d == _allow("open_method")
}

# ---------------------------------------------------------------------------
# Non-MCP and malformed input.

test_not_mcp if {
	x := {"request": object.union(_request, {"method": "GET", "path": "/healthz"}), "token": _token}
	d := authz.decision with input as x with data.mcp.config as _cfg
	d == _deny("not_mcp")
}

test_invalid_input if {
	_decide(["tools:*"], {"kind": "bogus"}) == _deny("invalid_input")
	_decide(["tools:*"], {"kind": "request", "method": ""}) == _deny("invalid_input")
	_decide(["tools:*"], {"kind": "notification", "method": ""}) == _deny("invalid_input")
	_decide(["tools:*"], {"kind": "request", "method": 7}) == _deny("invalid_input")
	x := {"request": _request, "mcp": _mcp({"method": "initialize"})}
	d := authz.decision with input as x with data.mcp.config as _cfg
	d == _deny("invalid_input")
}

# ---------------------------------------------------------------------------
# Metadata rules.

test_scopes_supported if {
	s := authz.scopes_supported with data.mcp.config as _cfg
	s == [
		"alpha:weather", "archive:read", "docs:read", "files:read", "files:write",
		"mcp:connect", "misc:glob", "prompts:code", "tools:read", "weather:read",
	]
}

test_scopes_supported_empty_without_config if {
	s := authz.scopes_supported with data.mcp.config as {}
	s == []
}

test_scope_prefixes if {
	p1 := authz.scope_prefixes with data.mcp.config as _cfg
	p1 == ["tools:", "prompts:", "resources:"]
	p2 := authz.scope_prefixes with data.mcp.config as object.union(_cfg, {"scope_prefixes": ["mcp:"]})
	p2 == ["mcp:"]
}

# ---------------------------------------------------------------------------
# Metadata rules. (The tests of the shipped rego/data.json itself are in
# policy/testdata: these tests run before every activation against whatever
# data the policy is loaded with, so they must not depend on it.)

test_baseline_scopes_sorted_unique if {
	authz.baseline_scopes == ["a", "mcp:connect"] with data.mcp.config.baseline_scopes as ["mcp:connect", "a", "a"]
}

test_known_tools_lists_literal_names_only if {
	authz.known_tools == ["a", "b"] with data.mcp.config.scopes.tools as {"s1": ["b", "x_*"], "s2": ["a", "b", "c?", "[d]"]}
}

test_known_tools_empty_without_mappings if {
	authz.known_tools == [] with data.mcp.config.scopes as {}
}

# ---------------------------------------------------------------------------
# List visibility: visible agrees with the call decision for every item.

_list_input(scopes, kind, items) := {
	"request": _request,
	"token": object.union(_token, {"scopes": scopes}),
	"mcp": _mcp({"method": "tools/list"}),
	"list": {"kind": kind, "protocol_version": "2025-11-25", "items": {t | some t in items}},
}

_call_of(kind, t) := _mcp({"method": "tools/call", "tool": t}) if kind == "tools"

_call_of(kind, t) := _mcp({"method": "prompts/get", "prompt": t}) if kind == "prompts"

_call_of(kind, t) := _mcp({"method": "resources/read", "resource_uri": t}) if kind in {"resources", "resource_templates"}

# _agrees holds when visible is exactly the set of items whose call the
# decision allows, with the same token and data.
_agrees(cfg, scopes, kind, items) if {
	got := authz.visible with input as _list_input(scopes, kind, items) with data.mcp.config as cfg
	want := {t |
		some t in items
		d := authz.decision with input as object.union(_list_input(scopes, kind, items), {"mcp": _call_of(kind, t)})
			with data.mcp.config as cfg
		d.allow
	}
	got == want
}

_tools := ["get_weather", "get_forecast", "write_file", "read", "readx", "report_1", "start_job", "delete_repo", ""]

_prompts := ["code_review", "explain_diff", "summarise", ""]

_resources := ["file:///srv/data/a.csv", "file:///srv/database", "s3://archive/x", "https://docs.example/p", "file:///etc/passwd", ""]

test_visible_agrees_with_decision if {
	every scopes in [
		[],
		["weather:read"],
		["files:write", "misc:glob"],
		["tools:read", "tools:delete_repo"],
		["tools:*"],
		["Tools:*", "tools:readx"],
		["prompts:code", "prompts:summarise"],
		["prompts:code"],
		["prompts:explain_diff"],
		["files:read"],
		["tools:get_weather"],
		["tools:"],
		["prompts:*"],
		["files:read", "docs:read"],
		["archive:read"],
		["resources:*"],
	] {
		_agrees(_cfg, scopes, "tools", _tools)
		_agrees(_cfg, scopes, "prompts", _prompts)
		_agrees(_cfg, scopes, "resources", _resources)
		_agrees(_cfg, scopes, "resource_templates", _resources)
	}
}

test_visible_hides_everything_from_a_revoked_token if {
	input_ := object.union(_list_input(["tools:*"], "tools", _tools), {"token": {"subject": "mallory"}})
	authz.visible == set() with input as input_ with data.mcp.config as _cfg
	by_jti := object.union(_list_input(["tools:*"], "tools", _tools), {"token": {"claims": {"jti": "stolen-jti"}}})
	authz.visible == set() with input as by_jti with data.mcp.config as object.union(_cfg, {"revoked": {"jti": ["stolen-jti"]}})
	authz.visible == {t | some t in _tools; t != ""} with input as by_jti with data.mcp.config as _cfg
}

test_visible_shows_everything_of_an_open_method if {
	cfg := object.union(_cfg, {"open_methods": ["tools/call"]})
	authz.visible == {t | some t in _tools} with input as _list_input([], "tools", _tools) with data.mcp.config as cfg
	_agrees(cfg, [], "tools", _tools)
}

test_visible_empty_list if {
	authz.visible == set() with input as _list_input(["tools:*"], "tools", []) with data.mcp.config as _cfg
}

test_visible_agrees_without_a_mapping_of_the_kind if {
	cfg := json.remove(_cfg, ["scopes/prompts", "scopes/resources"])
	every scopes in [["prompts:code_review", "files:read"], ["prompts:*"], ["resources:*"], []] {
		_agrees(cfg, scopes, "prompts", _prompts)
		_agrees(cfg, scopes, "resources", _resources)
	}
}

test_visible_hides_everything_without_a_subject if {
	input_ := json.patch(_list_input(["tools:*"], "tools", _tools), [{"op": "replace", "path": "/token/subject", "value": 42}])
	authz.visible == set() with input as input_ with data.mcp.config as _cfg
}
