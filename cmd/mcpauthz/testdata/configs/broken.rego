package mcp.authz

decision := {
