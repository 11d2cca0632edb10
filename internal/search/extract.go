package search

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/op-dbus/op-dbus/internal/introspect"
	"github.com/op-dbus/op-dbus/internal/ledger"
)

// MaxValueText bounds the part of a property value or state field that is
// indexed.
const MaxValueText = 300

// standard interfaces are the same on every object: their members are
// indexed once per service, on the first object that has them.
var standard = map[string]bool{
	"org.freedesktop.DBus.Introspectable": true,
	"org.freedesktop.DBus.Peer":           true,
	"org.freedesktop.DBus.Properties":     true,
	"org.freedesktop.DBus.ObjectManager":  true,
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:@,+", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// DBusSource is the Source of a service's documents.
func DBusSource(bus, service string) string { return "dbus/" + bus + "/" + service }

// FromIntrospection makes the documents of a walk: one per service,
// object, interface, method, signal and property. globalFlags (such as
// "--state-dir=/x") are not needed to open these; the bus label is
// res.Bus, as given to introspect's --bus.
func FromIntrospection(res *introspect.Result) []Document {
	var out []Document
	for _, s := range res.Services {
		out = append(out, ServiceDocuments(res.Bus, &s)...)
	}
	return out
}

// ServiceDocuments makes the documents of one walked service.
func ServiceDocuments(bus string, s *introspect.Service) []Document {
	if s.NotWalked || s.Error != "" {
		return nil
	}
	src := DBusSource(bus, s.Name)
	open := "op-dbus introspect --bus " + shellQuote(bus) + " --service " + shellQuote(s.Name)
	var out []Document
	var ifaceNames []string
	seenStd := map[string]bool{}
	for _, o := range s.Objects {
		var names []string
		for _, i := range o.Interfaces {
			names = append(names, i.Name)
		}
		objID := src + o.Path
		out = append(out, Document{ID: objID, Kind: KindObject, Name: o.Path, Context: s.Name,
			Text: "object " + o.Path + " of " + s.Name + " interfaces " + strings.Join(names, " ") + objectHints(&o),
			Open: open, Source: src})
		for _, i := range o.Interfaces {
			std := standard[i.Name]
			if std && seenStd[i.Name] {
				continue
			}
			seenStd[i.Name] = true
			if !std {
				ifaceNames = append(ifaceNames, i.Name)
			}
			ctx := i.Name + " " + o.Path + " " + s.Name
			ifID := objID + "#" + i.Name
			// Members are documents of their own; listing their names here
			// would make the interface match every question about them.
			out = append(out, Document{ID: ifID, Kind: KindInterface, Name: i.Name, Context: o.Path + " " + s.Name,
				Text: fmt.Sprintf("interface %s with %d methods, %d signals, %d properties", i.Name, len(i.Methods), len(i.Signals), len(i.Properties)),
				Open: open, Source: src})
			for _, m := range i.Methods {
				out = append(out, Document{ID: ifID + "/method/" + m.Name, Kind: KindMethod, Name: m.Name, Context: ctx,
					Text: "method " + m.Name + "(" + args(m.Args) + ")" + annotations(m.Annotations), Open: open, Source: src})
			}
			for _, sg := range i.Signals {
				out = append(out, Document{ID: ifID + "/signal/" + sg.Name, Kind: KindSignal, Name: sg.Name, Context: ctx,
					Text: "signal " + sg.Name + "(" + args(sg.Args) + ")" + annotations(sg.Annotations), Open: open, Source: src})
			}
			for _, p := range i.Properties {
				out = append(out, Document{ID: ifID + "/property/" + p.Name, Kind: KindProperty, Name: p.Name, Context: ctx,
					Text: "property " + p.Name + " " + p.Type + " " + p.Access + " " + propValue(p) + annotations(p.Annotations),
					Open: open, Source: src})
			}
		}
	}
	out = append(out, Document{ID: src, Kind: KindService, Name: s.Name, Context: "bus " + bus,
		Text: fmt.Sprintf("service %s on the %s bus, %d objects, interfaces %s", s.Name, bus, len(s.Objects), strings.Join(dedup(ifaceNames), " ")),
		Open: open, Source: src})
	return out
}

// objectHints adds the values that name an object (systemd's Id and
// Description, a Name property) to its document.
func objectHints(o *introspect.Object) string {
	var b strings.Builder
	for _, i := range o.Interfaces {
		for _, p := range i.Properties {
			switch p.Name {
			case "Id", "Description", "Name", "Names":
				if v := valueText(p.Value); v != "" && !ledger.IsSecretKey(p.Name) {
					b.WriteString(" ")
					b.WriteString(v)
				}
			}
		}
	}
	return b.String()
}

func dedup(xs []string) []string {
	sort.Strings(xs)
	out := xs[:0]
	for i, x := range xs {
		if i == 0 || x != xs[i-1] {
			out = append(out, x)
		}
	}
	return out
}

func args(as []introspect.Arg) string {
	var parts []string
	for _, a := range as {
		s := a.Type
		if a.Name != "" {
			s += " " + a.Name
		}
		if a.Direction == "out" {
			s = "out " + s
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

func annotations(as []introspect.Annotation) string {
	var b strings.Builder
	for _, a := range as {
		switch a.Name {
		case "org.freedesktop.DBus.Deprecated":
			if a.Value == "true" {
				b.WriteString(" deprecated")
			}
		case "org.freedesktop.DBus.Method.NoReply":
			b.WriteString(" noreply")
		}
	}
	return b.String()
}

// propValue renders a property's value for the index. Values of
// properties whose names look secret are never indexed; everything else
// goes through the audit log's redaction (secret-looking keys at any depth
// and secret-looking strings).
func propValue(p introspect.PropValue) string {
	if ledger.IsSecretKey(p.Name) {
		return "value not indexed (secret)"
	}
	if p.Error != "" {
		return "unreadable"
	}
	return "value " + valueText(p.Value)
}

// valueText renders a value compactly, redacted, cut to MaxValueText.
func valueText(v any) string {
	if v == nil {
		return ""
	}
	if s, ok := v.(string); ok {
		return cut(ledger.RedactText(s))
	}
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return cut(string(ledger.Redact(b)))
}

func cut(s string) string {
	if len(s) <= MaxValueText {
		return s
	}
	s = s[:MaxValueText]
	for len(s) > 0 && (s[len(s)-1]&0xc0) == 0x80 {
		s = s[:len(s)-1]
	}
	if len(s) > 0 && s[len(s)-1] >= 0xc0 {
		s = s[:len(s)-1]
	}
	return s + "…"
}

// StateSource is the Source of a plugin's documents.
func StateSource(plugin string) string { return "state/" + plugin }

// FromPluginState makes the documents of one plugin's live state (the
// value Query returned). Each item of a collection (a unit, a peer, a
// bridge) is a document; each scalar field is a "setting". The state is
// redacted as the audit log redacts (secret-looking keys at any depth)
// before anything is read from it. globalFlags are put into the open
// command (e.g. "--user").
func FromPluginState(plugin string, st any, globalFlags string) ([]Document, error) {
	raw, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("%s state: %w", plugin, err)
	}
	raw = ledger.Redact(raw)
	var top map[string]any
	if err := json.Unmarshal(raw, &top); err != nil {
		// a state that is not an object is one setting
		top = map[string]any{"state": json.RawMessage(raw)}
	}
	src := StateSource(plugin)
	open := "op-dbus " + globalFlags
	if globalFlags != "" {
		open += " "
	}
	open += "query -p " + plugin
	var out []Document
	for _, k := range slices.Sorted(maps.Keys(top)) {
		v := top[k]
		base := src + "/" + k
		switch x := v.(type) {
		case map[string]any:
			if allObjects(x) && len(x) > 0 {
				kind := itemKind(plugin, k)
				for _, n := range slices.Sorted(maps.Keys(x)) {
					out = append(out, Document{ID: base + "/" + n, Kind: kind, Name: n, Context: plugin + " " + k,
						Text: plugin + " " + kind + " " + n + " " + flatten(x[n]), Open: open, Source: src})
				}
				continue
			}
		case []any:
			if len(x) > 0 && allObjects(sliceMap(x)) {
				kind := itemKind(plugin, k)
				for i, it := range x {
					n := itemName(it, i)
					out = append(out, Document{ID: base + "/" + n, Kind: kind, Name: n, Context: plugin + " " + k,
						Text: plugin + " " + kind + " " + flatten(it), Open: open, Source: src})
				}
				continue
			}
		}
		out = append(out, Document{ID: base, Kind: KindSetting, Name: k, Context: plugin,
			Text: plugin + " setting " + k + " = " + cut(flatten(v)), Open: open, Source: src})
	}
	return out, nil
}

func sliceMap(xs []any) map[string]any {
	m := make(map[string]any, len(xs))
	for i, x := range xs {
		m[strconv.Itoa(i)] = x
	}
	return m
}

func allObjects(m map[string]any) bool {
	for _, v := range m {
		if _, ok := v.(map[string]any); !ok {
			return false
		}
	}
	return true
}

// itemName names an item of a list: its name, id, or service+path, else
// its position.
func itemName(it any, i int) string {
	m, _ := it.(map[string]any)
	for _, k := range []string{"name", "id", "interface", "public_key"} {
		if s, ok := m[k].(string); ok && s != "" {
			return s
		}
	}
	if s, ok := m["service"].(string); ok {
		if p, ok := m["path"].(string); ok {
			return s + p
		}
	}
	return strconv.Itoa(i)
}

func itemKind(plugin, field string) string {
	switch {
	case plugin == "systemd" && field == "units":
		return KindUnit
	case field == "interfaces":
		return "netif"
	}
	k := strings.TrimSuffix(field, "s")
	if strings.HasSuffix(field, "ies") {
		k = strings.TrimSuffix(field, "ies") + "y"
	}
	return k
}

// flatten renders a JSON value as "key value key value ..." text.
func flatten(v any) string {
	var b strings.Builder
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		if b.Len() > 4*MaxValueText {
			return
		}
		switch x := v.(type) {
		case map[string]any:
			for _, k := range slices.Sorted(maps.Keys(x)) {
				walk(k, x[k])
			}
		case []any:
			for _, e := range x {
				walk(prefix, e)
			}
		case json.RawMessage:
			b.WriteString(prefix + " " + cut(string(x)) + " ")
		default:
			if prefix != "" {
				b.WriteString(prefix)
				b.WriteByte(' ')
			}
			b.WriteString(cut(fmt.Sprint(x)))
			b.WriteByte(' ')
		}
	}
	walk("", v)
	return strings.TrimSpace(b.String())
}

// AuditSource is the Source of audit log documents.
const AuditSource = "audit"

// FromAudit makes one document per audit log entry (as the ledger returns
// them, already redacted). globalFlags (e.g. "--state-dir=/x") go into
// the open command.
func FromAudit(es []ledger.Entry, globalFlags string) []Document {
	open := "op-dbus "
	if globalFlags != "" {
		open += globalFlags + " "
	}
	out := make([]Document, 0, len(es))
	for _, e := range es {
		out = append(out, AuditDocument(e, open))
	}
	return out
}

// AuditDocument makes the document of one entry; open is "op-dbus [flags] ".
func AuditDocument(e ledger.Entry, open string) Document {
	var b strings.Builder
	fmt.Fprintf(&b, "audit entry %d %s %s at %s %s by %s from %s plugins %s. ", e.Seq, e.Kind, e.Result,
		e.Time.UTC().Format(time.RFC3339), e.Time.UTC().Format("Monday January 2 2006"), actor(e.Actor), e.Source, strings.Join(e.Plugins, " "))
	for _, op := range e.Ops {
		fmt.Fprintf(&b, "%s %s: %s", op.Status, op.Plugin, op.Description)
		if op.Error != "" {
			b.WriteString(" error " + cut(ledger.RedactText(op.Error)))
		}
		b.WriteString(". ")
	}
	if e.Verified != nil {
		if *e.Verified {
			b.WriteString("verified. ")
		} else {
			b.WriteString("verification failed. ")
		}
	}
	if e.Message != "" {
		b.WriteString(cut(ledger.RedactText(e.Message)))
	}
	return Document{ID: "audit/" + strconv.FormatUint(e.Seq, 10), Kind: KindAudit,
		Name:    fmt.Sprintf("#%d %s %s", e.Seq, e.Kind, e.Result),
		Context: "audit log " + strings.Join(e.Plugins, " "),
		Text:    b.String(), Open: open + "audit show " + strconv.FormatUint(e.Seq, 10), Source: AuditSource}
}

func actor(a ledger.Actor) string {
	s := a.User
	if s == "" {
		s = "uid " + strconv.Itoa(a.UID)
	}
	if a.Client != "" {
		s += " client " + a.Client
	}
	return s
}
