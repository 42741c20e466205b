package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// idpDoc is the identity provider guide; its YAML examples are compiled by
// cmd/mcpauthz's TestValidateAgreesWithServe.
const idpDoc = "../../docs/idp.md"

// TestIDPDocKeyTable checks that the per-issuer key table of docs/idp.md
// lists every key an issuers[] entry accepts.
func TestIDPDocKeyTable(t *testing.T) {
	raw, err := os.ReadFile(idpDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	var keys []string
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			name := strings.Split(f.Tag.Get("yaml"), ",")[0]
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && ft != reflect.TypeFor[Duration]() {
				walk(prefix+name+".", ft)
				continue
			}
			keys = append(keys, prefix+name)
		}
	}
	walk("", reflect.TypeFor[Issuer]())
	if len(keys) < 25 {
		t.Fatalf("found only %d keys: %q", len(keys), keys)
	}
	for _, k := range keys {
		if !strings.Contains(doc, "| `"+k+"` |") {
			t.Errorf("%s: the per-issuer key table has no row for %q", idpDoc, k)
		}
	}
}
