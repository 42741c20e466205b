package envoycheck

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/envoyproxy/go-control-plane/envoy/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"
)

// walk visits every message of m, unpacking every Any, and reports
// protoc-gen-validate violations of each message's own fields (PGV's
// generated ValidateAll never looks inside an Any, so a root-only call misses
// everything in typed_config), negative durations, and deprecated or
// disallowed fields and enum values.
func (v *validator) walk(m protoreflect.Message, p Path) {
	if v.steps++; v.steps%256 == 0 && v.err == nil {
		v.err = v.ctx.Err()
	}
	if v.err != nil {
		return
	}
	md := m.Descriptor()
	switch md.FullName() {
	case "google.protobuf.Any":
		a, ok := m.Interface().(*anypb.Any)
		if !ok {
			return
		}
		inner, err := a.UnmarshalNew()
		if err != nil {
			v.add(Error, RuleSchema, p, "cannot unpack %s: %v", a.GetTypeUrl(), err)
			return
		}
		switch inner.ProtoReflect().Descriptor().FullName() {
		case "xds.type.v3.TypedStruct", "udpa.type.v1.TypedStruct":
			v.add(Info, RuleTypedStruct, p, "TypedStruct contents are converted by Envoy at load time and are not validated here")
		}
		v.walk(inner.ProtoReflect(), p)
		return
	case "google.protobuf.Duration":
		secs := m.Get(md.Fields().ByName("seconds")).Int()
		nanos := m.Get(md.Fields().ByName("nanos")).Int()
		if secs < 0 || nanos < 0 {
			v.add(Error, RuleDuration, p, "negative duration %v: Envoy rejects it (\"Expected positive duration\")",
				time.Duration(secs)*time.Second+time.Duration(nanos))
		}
		return
	case "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue":
		return // free-form (metadata, log formats)
	}
	v.constraints(m, p)
	m.Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
		fp := p.field(string(fd.Name()))
		v.deprecation(fd, fp)
		switch {
		case fd.IsList():
			l := val.List()
			for i := 0; i < l.Len(); i++ {
				v.item(fd, l.Get(i), fp.index(i))
			}
		case fd.IsMap():
			val.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				v.item(fd.MapValue(), mv, fp.key(k.String()))
				return true
			})
		default:
			v.item(fd, val, fp)
		}
		return true
	})
}

func (v *validator) item(fd protoreflect.FieldDescriptor, val protoreflect.Value, p Path) {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		v.walk(val.Message(), p)
	case protoreflect.EnumKind:
		ev := fd.Enum().Values().ByNumber(val.Enum())
		if ev == nil {
			return
		}
		opts, _ := ev.Options().(*descriptorpb.EnumValueOptions)
		switch {
		case opts == nil:
		case proto.GetExtension(opts, annotations.E_DisallowedByDefaultEnum).(bool):
			v.add(Error, RuleDeprecated, p, "enum value %s is deprecated and disallowed by default: Envoy rejects it unless a runtime override re-enables it", ev.Name())
		case opts.GetDeprecated():
			v.add(Warning, RuleDeprecated, p, "enum value %s is deprecated%s", ev.Name(), since(proto.GetExtension(opts, annotations.E_DeprecatedAtMinorVersionEnum).(string)))
		}
	}
}

func (v *validator) deprecation(fd protoreflect.FieldDescriptor, p Path) {
	opts, _ := fd.Options().(*descriptorpb.FieldOptions)
	switch {
	case opts == nil:
	case proto.GetExtension(opts, annotations.E_DisallowedByDefault).(bool):
		v.add(Error, RuleDeprecated, p, "field is deprecated and disallowed by default: Envoy rejects it unless a runtime override re-enables it")
	case opts.GetDeprecated():
		v.add(Warning, RuleDeprecated, p, "field is deprecated%s", since(proto.GetExtension(opts, annotations.E_DeprecatedAtMinorVersion).(string)))
	}
}

func since(minor string) string {
	if minor == "" {
		return ""
	}
	return " (since API " + minor + ")"
}

// pgvError is the interface of every protoc-gen-validate error type.
type pgvError interface {
	error
	Field() string
	Reason() string
	Cause() error
	Key() bool
}

// constraints runs m's protoc-gen-validate rules and reports the violations
// of m's own fields. Violations inside embedded messages are skipped here:
// walk visits those messages itself (and unlike PGV, also the ones in Any).
func (v *validator) constraints(m protoreflect.Message, p Path) {
	val, ok := m.Interface().(interface{ ValidateAll() error })
	if !ok {
		return
	}
	for _, err := range flatten(val.ValidateAll()) {
		var pe pgvError
		if !errors.As(err, &pe) {
			v.add(Error, RuleConstraint, p, "%v", err)
			continue
		}
		if pe.Cause() != nil && pe.Reason() == "embedded message failed validation" {
			continue
		}
		msg := pe.Reason()
		if c := pe.Cause(); c != nil {
			msg += ": " + c.Error()
		}
		v.add(Error, RuleConstraint, fieldPath(m.Descriptor(), p, pe.Field()), "%s", msg)
	}
}

func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if me, ok := err.(interface{ AllErrors() []error }); ok {
		return me.AllErrors()
	}
	return []error{err}
}

// fieldPath maps a PGV field name (Go names: "MaxRequestBytes",
// "Listeners[2]", `Headers["x"]`) to a proto path below p.
func fieldPath(md protoreflect.MessageDescriptor, p Path, goName string) Path {
	name, suffix, _ := strings.Cut(goName, "[")
	proto := name
	norm := normalize(name)
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		if normalize(string(fields.Get(i).Name())) == norm {
			proto = string(fields.Get(i).Name())
			break
		}
	}
	oneofs := md.Oneofs()
	for i := 0; i < oneofs.Len(); i++ {
		if normalize(string(oneofs.Get(i).Name())) == norm {
			proto = string(oneofs.Get(i).Name())
			break
		}
	}
	q := p.field(proto)
	if suffix != "" {
		idx := strings.TrimSuffix(suffix, "]")
		var i int
		if _, err := fmt.Sscanf(idx, "%d", &i); err == nil && !strings.HasPrefix(idx, `"`) {
			q = q.index(i)
		} else {
			q = q.key(strings.Trim(idx, `"`))
		}
	}
	return q
}

func normalize(s string) string {
	return strings.ToLower(strings.ReplaceAll(s, "_", ""))
}
