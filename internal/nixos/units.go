package nixos

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/godbus/dbus/v5"

	"github.com/op-dbus/op-dbus/internal/dbusx"
)

// AdminUnitDir is where units an administrator wrote live.
const AdminUnitDir = "/etc/systemd/system"

// ExecCommand is one ExecStart= line.
type ExecCommand struct {
	Path          string
	Argv          []string
	IgnoreFailure bool
}

// UnitDef is a service unit rebuilt from its D-Bus properties.
type UnitDef struct {
	Description string
	ExecStart   []ExecCommand
	User        string
	Restart     string
	Type        string
	WantedBy    []string
	Environment []string // KEY=VALUE
}

// nix is the systemd.services.<name> value for d.
func (d *UnitDef) nix() *Set {
	s := &Set{}
	if d.Description != "" {
		s.Add("description", noSpecifiers(d.Description))
	}
	if len(d.Environment) > 0 {
		env := map[string]any{}
		for _, kv := range d.Environment {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = noSpecifiers(v)
		}
		s.Add("environment", env)
	}
	sc := map[string]any{}
	switch len(d.ExecStart) {
	case 0:
	case 1:
		sc["ExecStart"] = d.ExecStart[0].line()
	default:
		l := make([]any, len(d.ExecStart))
		for i, c := range d.ExecStart {
			l[i] = c.line()
		}
		sc["ExecStart"] = l
	}
	if d.Restart != "" {
		sc["Restart"] = d.Restart
	}
	if d.Type != "" {
		sc["Type"] = d.Type
	}
	if d.User != "" {
		sc["User"] = noSpecifiers(d.User)
	}
	s.Add("serviceConfig", sc)
	if len(d.WantedBy) > 0 {
		w := append([]string(nil), d.WantedBy...)
		sort.Strings(w)
		s.Add("wantedBy", w)
	}
	return s
}

// noSpecifiers doubles %, so systemd reads back the value D-Bus reported
// (specifiers are already expanded there).
func noSpecifiers(s string) string { return strings.ReplaceAll(s, "%", "%%") }

// line writes c as an ExecStart= value systemd parses back to the same
// path and argv: arguments quoted where needed, % doubled.
func (c ExecCommand) line() string {
	var b strings.Builder
	if c.IgnoreFailure {
		b.WriteByte('-')
	}
	argv := c.Argv
	if len(argv) == 0 || argv[0] != c.Path {
		b.WriteByte('@')
		b.WriteString(execQuote(c.Path))
		if len(argv) == 0 {
			argv = []string{c.Path}
		}
		b.WriteByte(' ')
		b.WriteString(execQuote(argv[0]))
	} else {
		b.WriteString(execQuote(argv[0]))
	}
	for _, a := range argv[1:] {
		b.WriteByte(' ')
		b.WriteString(execQuote(a))
	}
	return b.String()
}

func execQuote(s string) string {
	s = strings.ReplaceAll(s, "%", "%%")
	if s != "" && !strings.ContainsAny(s, " \t\n\"'\\;") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\t", `\t`)
	return `"` + r.Replace(s) + `"`
}

// execStart is the D-Bus form of one ExecStart entry: a(sasbttttuii).
type execStart struct {
	Path           string
	Argv           []string
	IgnoreFailure  bool
	T1, T2, T3, T4 uint64
	PID            uint32
	Code, Status   int32
}

// ReadUnits rebuilds the enabled .service units whose FragmentPath lies
// under root (AdminUnitDir on a real host) from their D-Bus properties on
// the manager at bus. Units it looks at and does not rebuild are returned
// in skipped with the reason.
func ReadUnits(ctx context.Context, bus dbusx.Bus, root string, names []string) (defs map[string]*UnitDef, skipped map[string]string, err error) {
	conn, err := dbusx.Open(ctx, bus)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	mgr := conn.Object("org.freedesktop.systemd1", "/org/freedesktop/systemd1")
	defs, skipped = map[string]*UnitDef{}, map[string]string{}
	root = filepath.Clean(root)
	for _, name := range names {
		if _, mapped := Lookup(name); mapped {
			continue
		}
		var p dbus.ObjectPath
		if err := dbusx.Call(ctx, mgr, "org.freedesktop.systemd1.Manager.LoadUnit", []any{&p}, name); err != nil {
			skipped[name] = "could not read it: " + err.Error()
			continue
		}
		obj := conn.Object("org.freedesktop.systemd1", p)
		unit, err := dbusx.GetAll(ctx, obj, "org.freedesktop.systemd1.Unit")
		if err := dbusx.Needed(err, "FragmentPath", "Description", "WantedBy"); err != nil {
			skipped[name] = "could not read it: " + err.Error()
			continue
		}
		var frag string
		_ = unit["FragmentPath"].Store(&frag)
		if frag == "" || !strings.HasPrefix(filepath.Clean(frag), root+"/") {
			where := frag
			if where == "" {
				where = "no unit file"
			}
			skipped[name] = fmt.Sprintf("vendor unit (%s) with no NixOS option in the service map", where)
			continue
		}
		if !strings.HasSuffix(name, ".service") {
			skipped[name] = fmt.Sprintf("written by an administrator (%s), but only .service units are rebuilt", frag)
			continue
		}
		svc, err := dbusx.GetAll(ctx, obj, "org.freedesktop.systemd1.Service")
		if err := dbusx.Needed(err, "User", "Restart", "Type", "Environment", "ExecStart"); err != nil {
			skipped[name] = "could not read its service properties: " + err.Error()
			continue
		}
		d := &UnitDef{}
		_ = unit["Description"].Store(&d.Description)
		_ = unit["WantedBy"].Store(&d.WantedBy)
		_ = svc["User"].Store(&d.User)
		_ = svc["Restart"].Store(&d.Restart)
		_ = svc["Type"].Store(&d.Type)
		_ = svc["Environment"].Store(&d.Environment)
		var es []execStart
		if err := svc["ExecStart"].Store(&es); err != nil {
			skipped[name] = "could not read ExecStart: " + err.Error()
			continue
		}
		for _, e := range es {
			d.ExecStart = append(d.ExecStart, ExecCommand{Path: e.Path, Argv: e.Argv, IgnoreFailure: e.IgnoreFailure})
		}
		if len(d.ExecStart) == 0 {
			skipped[name] = fmt.Sprintf("written by an administrator (%s), but has no ExecStart to rebuild", frag)
			continue
		}
		defs[name] = d
	}
	return defs, skipped, nil
}
