package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/open-policy-agent/opa/v1/ast"
)

// Keys of the input document, shared by every evaluation. Terms are never
// modified by evaluation, so sharing them across goroutines is safe.
var (
	keyRequest = ast.StringTerm("request")
	keyToken   = ast.StringTerm("token")
	keyMCP     = ast.StringTerm("mcp")

	keyMethod  = ast.StringTerm("method")
	keyPath    = ast.StringTerm("path")
	keyHost    = ast.StringTerm("host")
	keyHeaders = ast.StringTerm("headers")
	keyQuery   = ast.StringTerm("query")

	keyIssuer   = ast.StringTerm("issuer")
	keySubject  = ast.StringTerm("subject")
	keyClientID = ast.StringTerm("client_id")
	keyAudience = ast.StringTerm("audience")
	keyScopes   = ast.StringTerm("scopes")
	keyClaims   = ast.StringTerm("claims")
	keyAzp      = ast.StringTerm("azp")
	keyAct      = ast.StringTerm("act")
	keyMayAct   = ast.StringTerm("may_act")
	keySub      = ast.StringTerm("sub")
	keyIss      = ast.StringTerm("iss")

	keyProtocolVersion = ast.StringTerm("protocol_version")
	keySessionID       = ast.StringTerm("session_id")
	keyKind            = ast.StringTerm("kind")
	keyID              = ast.StringTerm("id")
	keyTool            = ast.StringTerm("tool")
	keyPrompt          = ast.StringTerm("prompt")
	keyArguments       = ast.StringTerm("arguments")
	keyResourceURI     = ast.StringTerm("resource_uri")
	keyResourceURIs    = ast.StringTerm("resource_uris")
	keyTaskID          = ast.StringTerm("task_id")

	keyAllow          = ast.StringTerm("allow")
	keyReason         = ast.StringTerm("reason")
	keyRequiredScopes = ast.StringTerm("required_scopes")
	keyShadow         = ast.StringTerm("shadow")

	keyUpstreamCredential = ast.StringTerm("upstream_credential")
	keyUpstreamScopes     = ast.StringTerm("upstream_scopes")
)

// vocabulary lists strings that recur in almost every input; their terms are
// built once and shared.
var vocabulary = []string{
	"",
	"request", "notification", "response", "stream", "session_end",
	"initialize", "ping", "server/discover", "tools/list", "tools/call",
	"prompts/list", "prompts/get", "resources/list", "resources/templates/list",
	"resources/read", "resources/subscribe", "resources/unsubscribe",
	"subscriptions/listen", "completion/complete", "logging/setLevel",
	"tasks/get", "tasks/result", "tasks/cancel", "tasks/list", "tasks/update",
	"notifications/initialized", "notifications/cancelled", "notifications/progress",
	"notifications/roots/list_changed", "notifications/tasks/status",
	"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28",
	"GET", "POST", "DELETE",
}

var sharedTerms = func() map[string]*ast.Term {
	m := make(map[string]*ast.Term, len(vocabulary))
	for _, s := range vocabulary {
		m[s] = ast.StringTerm(s)
	}
	return m
}()

// stringTerm returns a term for s, shared when s is in the vocabulary.
func stringTerm(s string) *ast.Term {
	if t, ok := sharedTerms[s]; ok {
		return t
	}
	return ast.StringTerm(s)
}

// requestValue builds input.request.
func requestValue(r *Request) ast.Value {
	headers := make([][2]*ast.Term, 0, len(r.Headers))
	for k, v := range r.Headers {
		if !credentialHeader(k) {
			headers = append(headers, [2]*ast.Term{ast.StringTerm(k), ast.StringTerm(v)})
		}
	}
	query := make([][2]*ast.Term, 0, len(r.Query))
	for k, vs := range r.Query {
		query = append(query, [2]*ast.Term{ast.StringTerm(k), ast.NewTerm(stringsValue(vs))})
	}
	return ast.NewObject(
		[2]*ast.Term{keyMethod, stringTerm(r.Method)},
		[2]*ast.Term{keyPath, stringTerm(r.Path)},
		[2]*ast.Term{keyHost, stringTerm(r.Host)},
		[2]*ast.Term{keyHeaders, ast.NewTerm(ast.NewObject(headers...))},
		[2]*ast.Term{keyQuery, ast.NewTerm(ast.NewObject(query...))},
	)
}

// credentialHeader reports whether a (lowercase) header carries credentials,
// which policy never sees: the verified token is input.token.
func credentialHeader(name string) bool {
	return name == "authorization" || name == "cookie" || name == "proxy-authorization"
}

// tokenValue builds input.token. Claims must be a JSON object; nil Claims
// become {}.
func tokenValue(t *Token) (ast.Value, error) {
	var claims ast.Value = ast.NewObject()
	if len(t.Claims) > 0 {
		v, err := jsonValue(t.Claims)
		if err != nil {
			return nil, fmt.Errorf("claims: %w", err)
		}
		if _, ok := v.(ast.Object); !ok {
			return nil, errors.New("claims: not a JSON object")
		}
		claims = v
	}
	actors := make([]*ast.Term, len(t.Actors))
	for i, a := range t.Actors {
		actors[i] = ast.ObjectTerm(
			[2]*ast.Term{keySub, stringTerm(a.Subject)},
			[2]*ast.Term{keyIss, stringTerm(a.Issuer)},
			[2]*ast.Term{keyClientID, stringTerm(a.ClientID)},
		)
	}
	mayAct, err := rawOrNull(t.MayAct)
	if err != nil {
		return nil, fmt.Errorf("may_act: %w", err)
	}
	return ast.NewObject(
		[2]*ast.Term{keyIssuer, stringTerm(t.Issuer)},
		[2]*ast.Term{keySubject, stringTerm(t.Subject)},
		[2]*ast.Term{keyClientID, stringTerm(t.ClientID)},
		[2]*ast.Term{keyAzp, stringTerm(t.Azp)},
		[2]*ast.Term{keyAudience, ast.NewTerm(stringsValue(t.Audience))},
		[2]*ast.Term{keyScopes, ast.NewTerm(stringsValue(t.Scopes))},
		[2]*ast.Term{keyAct, ast.ArrayTerm(actors...)},
		[2]*ast.Term{keyMayAct, mayAct},
		[2]*ast.Term{keyClaims, ast.NewTerm(claims)},
	), nil
}

// mcpValue builds input.mcp. Every field is always present: absent strings
// are "", absent raw JSON (id, arguments) is null, resource_uris is an array.
func mcpValue(m *MCP) (ast.Value, error) {
	id, err := rawOrNull(m.ID)
	if err != nil {
		return nil, fmt.Errorf("id: %w", err)
	}
	args, err := rawOrNull(m.Arguments)
	if err != nil {
		return nil, fmt.Errorf("arguments: %w", err)
	}
	return ast.NewObject(
		[2]*ast.Term{keyProtocolVersion, stringTerm(m.ProtocolVersion)},
		[2]*ast.Term{keySessionID, stringTerm(m.SessionID)},
		[2]*ast.Term{keyKind, stringTerm(m.Kind)},
		[2]*ast.Term{keyID, id},
		[2]*ast.Term{keyMethod, stringTerm(m.Method)},
		[2]*ast.Term{keyTool, stringTerm(m.Tool)},
		[2]*ast.Term{keyPrompt, stringTerm(m.Prompt)},
		[2]*ast.Term{keyArguments, args},
		[2]*ast.Term{keyResourceURI, stringTerm(m.ResourceURI)},
		[2]*ast.Term{keyResourceURIs, ast.NewTerm(stringsValue(m.ResourceURIs))},
		[2]*ast.Term{keyTaskID, stringTerm(m.TaskID)},
	), nil
}

func stringsValue(s []string) *ast.Array {
	terms := make([]*ast.Term, len(s))
	for i, v := range s {
		terms[i] = ast.StringTerm(v)
	}
	return ast.NewArray(terms...)
}

// rawOrNull converts raw JSON; absent JSON becomes null.
func rawOrNull(raw jsontext.Value) (*ast.Term, error) {
	if len(raw) == 0 {
		return ast.InternedNullTerm, nil
	}
	v, err := jsonValue(raw)
	if err != nil {
		return nil, err
	}
	return ast.NewTerm(v), nil
}

// jsonValue converts one JSON value to an ast.Value by walking its tokens.
// The bytes were validated upstream, but malformed input (invalid syntax or
// UTF-8, duplicate names, trailing data) is still an error, never a panic.
// Numbers keep their exact text.
func jsonValue(raw jsontext.Value) (ast.Value, error) {
	dec := jsontext.NewDecoder(bytes.NewBuffer(raw))
	v, err := readJSON(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.ReadToken(); err != io.EOF {
		if err == nil {
			err = errors.New("invalid JSON: data after the top-level value")
		}
		return nil, err
	}
	return v, nil
}

func readJSON(dec *jsontext.Decoder) (ast.Value, error) {
	tok, err := dec.ReadToken()
	if err != nil {
		return nil, unexpectedEOF(err)
	}
	switch tok.Kind() {
	case 'n':
		return ast.Null{}, nil
	case 'f':
		return ast.Boolean(false), nil
	case 't':
		return ast.Boolean(true), nil
	case '"':
		return ast.String(tok.String()), nil
	case '0':
		return ast.Number(tok.String()), nil
	case '[':
		var terms []*ast.Term
		for dec.PeekKind() != ']' {
			v, err := readJSON(dec)
			if err != nil {
				return nil, err
			}
			terms = append(terms, ast.NewTerm(v))
		}
		if _, err := dec.ReadToken(); err != nil {
			return nil, err
		}
		return ast.NewArray(terms...), nil
	case '{':
		var pairs [][2]*ast.Term
		for dec.PeekKind() != '}' {
			name, err := dec.ReadToken()
			if err != nil {
				return nil, unexpectedEOF(err)
			}
			// A Token is only valid until the next read.
			key := ast.StringTerm(name.String())
			v, err := readJSON(dec)
			if err != nil {
				return nil, err
			}
			pairs = append(pairs, [2]*ast.Term{key, ast.NewTerm(v)})
		}
		if _, err := dec.ReadToken(); err != nil {
			return nil, err
		}
		return ast.NewObject(pairs...), nil
	}
	return nil, fmt.Errorf("invalid JSON: unexpected token %v", tok.Kind())
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// decisionFromValue converts the decision document. allow is required;
// reason, required_scopes, headers and shadow are optional but must have the
// documented types; other keys are ignored.
func decisionFromValue(v ast.Value) (Decision, error) {
	obj, ok := v.(ast.Object)
	if !ok {
		return Decision{}, fmt.Errorf("decision is %s, want an object", ast.ValueName(v))
	}
	var d Decision
	t := obj.Get(keyAllow)
	if t == nil {
		return Decision{}, errors.New("decision.allow: missing")
	}
	allow, ok := t.Value.(ast.Boolean)
	if !ok {
		return Decision{}, errors.New("decision.allow: want a boolean")
	}
	d.Allow = bool(allow)
	if t := obj.Get(keyReason); t != nil {
		s, ok := t.Value.(ast.String)
		if !ok {
			return Decision{}, errors.New("decision.reason: want a string")
		}
		d.Reason = string(s)
	}
	if t := obj.Get(keyRequiredScopes); t != nil {
		s, err := stringList(t.Value)
		if err != nil {
			return Decision{}, fmt.Errorf("decision.required_scopes: %w", err)
		}
		d.RequiredScopes = s
	}
	if t := obj.Get(keyHeaders); t != nil {
		h, ok := t.Value.(ast.Object)
		if !ok {
			return Decision{}, errors.New("decision.headers: want an object")
		}
		if h.Len() > 0 {
			d.Headers = make(map[string]string, h.Len())
			err := h.Iter(func(k, v *ast.Term) error {
				ks, ok1 := k.Value.(ast.String)
				vs, ok2 := v.Value.(ast.String)
				if !ok1 || !ok2 {
					return errors.New("decision.headers: want string names and values")
				}
				d.Headers[string(ks)] = string(vs)
				return nil
			})
			if err != nil {
				return Decision{}, err
			}
		}
	}
	if t := obj.Get(keyShadow); t != nil {
		b, ok := t.Value.(ast.Boolean)
		if !ok {
			return Decision{}, errors.New("decision.shadow: want a boolean")
		}
		d.Shadow = bool(b)
	}
	if t := obj.Get(keyUpstreamCredential); t != nil {
		s, ok := t.Value.(ast.String)
		if !ok {
			return Decision{}, errors.New("decision.upstream_credential: want a string")
		}
		d.UpstreamCredential = string(s)
	}
	if t := obj.Get(keyUpstreamScopes); t != nil {
		s, err := stringList(t.Value)
		if err != nil {
			return Decision{}, fmt.Errorf("decision.upstream_scopes: %w", err)
		}
		if s == nil {
			s = []string{} // present and empty: distinct from "not chosen"
		}
		d.UpstreamScopes = s
	}
	return d, nil
}

// stringList converts an array or set of strings; empty yields nil. Sets
// come out sorted, arrays in order.
func stringList(v ast.Value) ([]string, error) {
	var arr *ast.Array
	switch x := v.(type) {
	case *ast.Array:
		arr = x
	case ast.Set:
		arr = x.Sorted()
	default:
		return nil, fmt.Errorf("got %s, want an array of strings", ast.ValueName(v))
	}
	if arr.Len() == 0 {
		return nil, nil
	}
	out := make([]string, arr.Len())
	for i := range out {
		s, ok := arr.Elem(i).Value.(ast.String)
		if !ok {
			return nil, fmt.Errorf("element %d is %s, want a string", i, ast.ValueName(arr.Elem(i).Value))
		}
		out[i] = string(s)
	}
	return out, nil
}
