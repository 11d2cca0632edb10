package netcheck

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Input is one source to consult. Complete sources (netlink, sysfs,
// NetworkManager) list every interface of the namespace, so an interface
// they lack is missing for them; a partial source (OVSDB knows only its own
// ports) has an opinion only on the interfaces it lists.
type Input struct {
	Source   Source
	Complete bool
	// Unavailable, when set, says why the source cannot be consulted here
	// (NetworkManager not running); it is reported, not compared.
	Unavailable error
	// Hides lists interfaces a complete source leaves out on purpose
	// (NetworkManager does not show Open vSwitch's datapath devices): it
	// has no opinion on them rather than calling them missing.
	Hides []string
}

// SourceStatus says whether a source was consulted and what it saw.
type SourceStatus struct {
	Name       string `json:"name"`
	Available  bool   `json:"available"`
	Error      string `json:"error,omitempty"`
	Interfaces int    `json:"interfaces"`
}

// Disagreement is one field of one interface on which sources differ.
// Values maps each source that has an opinion to what it says.
type Disagreement struct {
	Interface string            `json:"interface"`
	Field     string            `json:"field"`
	Values    map[string]string `json:"values"`
}

// Report is the reconciled picture.
type Report struct {
	Sources       []SourceStatus `json:"sources"`
	Interfaces    []string       `json:"interfaces"`
	Disagreements []Disagreement `json:"disagreements"`
	Observations  []Observation  `json:"observations"`
}

// SourceTimeout bounds each source's Observe.
var SourceTimeout = 15 * time.Second

// Check consults every available source concurrently and compares what they
// say. A source that fails is reported in Sources and left out of the
// comparison; Check itself fails only if no source could be consulted.
func Check(ctx context.Context, inputs []Input) (*Report, error) {
	type result struct {
		obs []Observation
		err error
	}
	results := make([]result, len(inputs))
	var wg sync.WaitGroup
	for i, in := range inputs {
		if in.Unavailable != nil {
			results[i].err = in.Unavailable
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, SourceTimeout)
			defer cancel()
			results[i].obs, results[i].err = in.Source.Observe(cctx)
		}()
	}
	wg.Wait()
	rep := &Report{Disagreements: []Disagreement{}, Observations: []Observation{}}
	var cons []consulted
	for i, in := range inputs {
		st := SourceStatus{Name: in.Source.Name()}
		if r := results[i]; r.err != nil {
			st.Error = r.err.Error()
		} else {
			st.Available = true
			st.Interfaces = len(r.obs)
			cons = append(cons, consulted{name: st.Name, complete: in.Complete, hides: in.Hides, obs: r.obs})
			rep.Observations = append(rep.Observations, r.obs...)
		}
		rep.Sources = append(rep.Sources, st)
	}
	if len(cons) == 0 {
		return rep, fmt.Errorf("no network source could be consulted: %s", sourceErrors(rep.Sources))
	}
	rep.Interfaces, rep.Disagreements = compare(cons)
	return rep, nil
}

func sourceErrors(ss []SourceStatus) string {
	var parts []string
	for _, s := range ss {
		parts = append(parts, s.Name+": "+s.Error)
	}
	return strings.Join(parts, "; ")
}

type consulted struct {
	name     string
	complete bool
	hides    []string
	obs      []Observation
}

// Fields are the compared fields, in the order they are reported.
var Fields = []string{"exists", "state", "mtu", "addresses", "master"}

const ovsdbSource = "ovsdb"

// compare returns every interface any source names and the disagreements.
func compare(cons []consulted) ([]string, []Disagreement) {
	by := map[string]map[string]Observation{} // interface → source → observation
	for _, c := range cons {
		for _, o := range c.obs {
			if by[o.Interface] == nil {
				by[o.Interface] = map[string]Observation{}
			}
			by[o.Interface][c.name] = o
		}
	}
	names := slices.Sorted(maps.Keys(by))
	var out []Disagreement
	for _, ifname := range names {
		seen := by[ifname]
		for _, f := range Fields {
			vals := map[string]string{}
			for _, c := range cons {
				o, ok := seen[c.name]
				if f == "exists" {
					switch {
					case ok && o.Exists:
						vals[c.name] = "present"
					case ok || (c.complete && !slices.Contains(c.hides, ifname)):
						vals[c.name] = "missing"
					}
					continue
				}
				if !ok || !o.Exists {
					continue
				}
				if v, ok := value(f, o); ok {
					vals[c.name] = v
				}
			}
			if f == "master" {
				ovsMaster(vals)
			}
			if distinct(vals) > 1 {
				out = append(out, Disagreement{Interface: ifname, Field: f, Values: vals})
			}
		}
	}
	if out == nil {
		out = []Disagreement{}
	}
	return names, out
}

// value renders field f of o, or false when o's source does not know it.
func value(f string, o Observation) (string, bool) {
	switch f {
	case "state":
		return o.State, o.State != ""
	case "mtu":
		return strconv.Itoa(o.MTU), o.MTU != 0
	case "addresses":
		if !o.KnownAddresses {
			return "", false
		}
		if len(o.Addresses) == 0 {
			return "(none)", true
		}
		a := append([]string(nil), o.Addresses...)
		sort.Strings(a)
		return strings.Join(a, ","), true
	case "master":
		if !o.KnownMaster {
			return "", false
		}
		if o.Master == "" {
			return "(none)", true
		}
		return o.Master, true
	}
	return "", false
}

// ovsMaster: a port of an OVS bridge has no kernel master with the
// userspace datapath and "ovs-system" with the kernel one, so when OVSDB
// names a bridge, those kernel answers agree with it. A Linux bridge as
// the kernel master is a real disagreement and stays.
func ovsMaster(vals map[string]string) {
	m, ok := vals[ovsdbSource]
	if !ok || m == "(none)" {
		return
	}
	for src, v := range vals {
		if src != ovsdbSource && (v == "(none)" || v == "ovs-system") {
			delete(vals, src)
		}
	}
}

func distinct(vals map[string]string) int {
	set := map[string]bool{}
	for _, v := range vals {
		set[v] = true
	}
	return len(set)
}

// Field renders one field of an observation for display, "" when the
// source does not know it.
func Field(f string, o Observation) string {
	if f == "exists" {
		if o.Exists {
			return "present"
		}
		return "missing"
	}
	if !o.Exists {
		return ""
	}
	v, _ := value(f, o)
	return v
}
