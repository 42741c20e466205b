// Package devauth is a development OAuth 2.1 authorization server.
package devauth
