package introspect

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// busctl runs busctl (an independent D-Bus client, systemd's) with args.
type busctl struct {
	args []string // how to reach the bus: --address=... etc.
	env  []string
}

func (b busctl) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "busctl", append(append([]string{}, b.args...), args...)...)
	cmd.Env = b.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("busctl %v: %v: %s", args, err, errb.String())
	}
	return out.String(), nil
}

// member is one row of `busctl introspect`.
type member struct {
	kind, sig, result string
	writable          bool
}

// parseBusctlIntrospect reads busctl's table: NAME TYPE SIGNATURE
// RESULT/VALUE FLAGS. Interface rows start a block; member rows start
// with '.'. Property values are not taken from here (they are compared
// through busctl's JSON), only names, kinds and signatures.
func parseBusctlIntrospect(out string) map[string]map[string]member {
	res := map[string]map[string]member{}
	var cur string
	for i, line := range strings.Split(out, "\n") {
		if i == 0 || strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		if f[1] == "interface" {
			cur = f[0]
			res[cur] = map[string]member{}
			continue
		}
		m := member{kind: f[1], sig: f[2], result: f[3]}
		if m.kind == "property" {
			m.writable = strings.HasSuffix(strings.TrimSpace(line), "writable") || strings.Contains(line, " writable")
			m.result = ""
		}
		res[cur][strings.TrimPrefix(f[0], ".")] = m
	}
	return res
}

func sigOf(args []Arg, dir string) string {
	var s strings.Builder
	for _, a := range args {
		d := a.Direction
		if d == "" {
			d = "in"
		}
		if dir == "" || d == dir {
			s.WriteString(a.Type)
		}
	}
	if s.Len() == 0 {
		return "-"
	}
	return s.String()
}

// assertMatchesBusctl checks every walked object of every service against
// busctl: the object paths (busctl tree), each object's interfaces and
// members with their signatures (busctl introspect), and every readable
// property value (busctl call ... GetAll --json=short). A property whose
// value busctl itself sees change between two reads is volatile (a clock)
// and only its type is compared.
func assertMatchesBusctl(t *testing.T, bc busctl, res *Result) {
	t.Helper()
	checkedValues := 0
	for _, s := range res.Services {
		if s.NotWalked || s.Error != "" {
			continue
		}
		out, err := bc.run(t, "tree", "--list", s.Name)
		if err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		want := strings.Fields(out)
		var got []string
		for _, o := range s.Objects {
			got = append(got, o.Path)
		}
		sort.Strings(want)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: objects differ from busctl tree:\n ours   %v\n busctl %v", s.Name, got, want)
			continue
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, 4)
		for _, o := range s.Objects {
			wg.Add(1)
			sem <- struct{}{}
			go func(o Object) {
				defer wg.Done()
				defer func() { <-sem }()
				n := compareObjectWithBusctl(t, bc, s.Name, o)
				mu.Lock()
				checkedValues += n
				mu.Unlock()
			}(o)
		}
		wg.Wait()
	}
	if checkedValues == 0 {
		t.Fatalf("no property value was compared: the oracle checked nothing")
	}
	t.Logf("compared %d property values with busctl", checkedValues)
}

func compareObjectWithBusctl(t *testing.T, bc busctl, service string, o Object) int {
	where := service + " " + o.Path
	if o.Error != "" {
		t.Errorf("%s: walk error %s", where, o.Error)
		return 0
	}
	out, err := bc.run(t, "introspect", "--no-pager", service, o.Path)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return 0
	}
	theirs := parseBusctlIntrospect(out)
	var ours []string
	for _, i := range o.Interfaces {
		ours = append(ours, i.Name)
	}
	var names []string
	for n := range theirs {
		names = append(names, n)
	}
	sort.Strings(names)
	if !reflect.DeepEqual(ours, names) {
		t.Errorf("%s: interfaces differ:\n ours   %v\n busctl %v", where, ours, names)
		return 0
	}
	values := 0
	for _, i := range o.Interfaces {
		bm := theirs[i.Name]
		count := 0
		for _, m := range i.Methods {
			count++
			b, ok := bm[m.Name]
			if !ok || b.kind != "method" || b.sig != sigOf(m.Args, "in") || b.result != sigOf(m.Args, "out") {
				t.Errorf("%s %s.%s: ours method(%s)→%s, busctl %+v", where, i.Name, m.Name, sigOf(m.Args, "in"), sigOf(m.Args, "out"), b)
			}
		}
		for _, s := range i.Signals {
			count++
			b, ok := bm[s.Name]
			if !ok || b.kind != "signal" || b.sig != sigOf(s.Args, "") {
				t.Errorf("%s %s.%s: ours signal(%s), busctl %+v", where, i.Name, s.Name, sigOf(s.Args, ""), b)
			}
		}
		for _, p := range i.Properties {
			count++
			b, ok := bm[p.Name]
			if !ok || b.kind != "property" || b.sig != p.Type || b.writable != (p.Access != "read") {
				t.Errorf("%s %s.%s: ours property %s %s, busctl %+v", where, i.Name, p.Name, p.Type, p.Access, b)
			}
		}
		if count != len(bm) {
			t.Errorf("%s %s: %d members, busctl lists %d", where, i.Name, count, len(bm))
		}
		if len(i.Properties) == 0 || i.Error != "" {
			continue
		}
		values += compareValues(t, bc, where, service, o.Path, i)
	}
	return values
}

func busctlGetAll(t *testing.T, bc busctl, service, path, iface string) (map[string]any, error) {
	out, err := bc.run(t, "call", "--json=short", service, path, "org.freedesktop.DBus.Properties", "GetAll", "s", iface)
	if err != nil {
		return nil, err
	}
	var r struct {
		Data []map[string]any `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || len(r.Data) != 1 {
		return nil, fmt.Errorf("busctl GetAll output %q: %v", out, err)
	}
	return r.Data[0], nil
}

func compareValues(t *testing.T, bc busctl, where, service, path string, i ObjIface) int {
	first, err := busctlGetAll(t, bc, service, path, i.Name)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return 0
	}
	var second map[string]any
	n := 0
	for _, p := range i.Properties {
		if p.Access == "write" {
			continue
		}
		theirs, ok := first[p.Name].(map[string]any)
		if !ok {
			t.Errorf("%s %s.%s: busctl GetAll lacks it", where, i.Name, p.Name)
			continue
		}
		if theirs["type"] != p.Type {
			t.Errorf("%s %s.%s: busctl type %v, declared %s", where, i.Name, p.Name, theirs["type"], p.Type)
		}
		ours := normalize(p.Value)
		if reflect.DeepEqual(ours, normalize(theirs["data"])) {
			n++
			continue
		}
		if second == nil {
			if second, err = busctlGetAll(t, bc, service, path, i.Name); err != nil {
				t.Errorf("%s: %v", where, err)
				return n
			}
		}
		again, _ := second[p.Name].(map[string]any)
		if again != nil && !reflect.DeepEqual(normalize(again["data"]), normalize(theirs["data"])) {
			continue // volatile: busctl sees it change by itself
		}
		t.Errorf("%s %s.%s: ours %s, busctl %s", where, i.Name, p.Name, jsonText(p.Value), jsonText(theirs["data"]))
	}
	return n
}

// normalize round-trips through JSON into float64 numbers: busctl's JSON
// prints 64-bit integers through a double (UINT64_MAX comes out as
// 18446744073709552000), so exactness beyond 2^53 cannot be checked
// against it. Our own output keeps them exact (TestValueFollowsBusctlJSON).
func normalize(v any) any {
	b, _ := json.Marshal(v)
	var out any
	_ = json.Unmarshal(b, &out)
	return out
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func walk(t *testing.T, addr string, services ...string) *Result {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatalf("connect %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	w := &Walker{Conn: conn, Bus: addr, Services: services, Activatable: true}
	res, err := w.Walk(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return res
}
