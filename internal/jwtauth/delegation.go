package jwtauth

import (
	"fmt"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// Actor is one party of a delegation chain (RFC 8693 §4.1): who acts, for
// the subject, or for the actor after it.
type Actor struct {
	Subject  string
	Issuer   string
	ClientID string
}

// maxActors bounds a delegation chain read from a token: a chain is a
// nesting of act claims, and the bound keeps a crafted token from costing
// more than a real one.
const maxActors = 16

// readDelegation reads azp, the act chain (outermost, the current actor,
// first) and may_act of verified claims. act must be an object with a
// string sub (RFC 8693 §4.1), optionally iss, client_id and a nested act;
// may_act must be an object. Any other shape is an error: a token whose
// delegation cannot be read is refused, never read as having none.
func readDelegation(c map[string]jsontext.Value) (azp string, actors []Actor, mayAct []byte, err error) {
	if azp, _, err = stringMember(c, "azp"); err != nil {
		return "", nil, nil, err
	}
	act, ok := c["act"]
	for ok {
		if len(actors) == maxActors {
			return "", nil, nil, fmt.Errorf("act: delegation chain longer than %d", maxActors)
		}
		if act.Kind() != jsontext.KindBeginObject {
			return "", nil, nil, fmt.Errorf("act is not an object")
		}
		var m map[string]jsontext.Value
		if err := json.Unmarshal(act, &m); err != nil {
			return "", nil, nil, fmt.Errorf("act is not an object")
		}
		var a Actor
		var present bool
		if a.Subject, present, err = stringMember(m, "sub"); err != nil || !present {
			return "", nil, nil, fmt.Errorf("act has no string sub")
		}
		if a.Issuer, _, err = stringMember(m, "iss"); err != nil {
			return "", nil, nil, fmt.Errorf("act: %w", err)
		}
		if a.ClientID, _, err = stringMember(m, "client_id"); err != nil {
			return "", nil, nil, fmt.Errorf("act: %w", err)
		}
		actors = append(actors, a)
		act, ok = m["act"]
	}
	if v, ok := c["may_act"]; ok {
		if v.Kind() != jsontext.KindBeginObject {
			return "", nil, nil, fmt.Errorf("may_act is not an object")
		}
		mayAct = v
	}
	return azp, actors, mayAct, nil
}
