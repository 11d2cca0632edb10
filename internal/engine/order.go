package engine

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/op-dbus/op-dbus/internal/plugin"
)

// order adds cross-plugin dependencies (every op of a plugin waits for all
// ops of the plugins it names in After) and sorts ops topologically, stable
// in plan order, so the displayed plan is the order of application.
func (e *Engine) order(ops []plugin.Op) ([]plugin.Op, error) {
	byPlugin := map[string][]string{}
	ids := map[string]bool{}
	for _, op := range ops {
		if ids[op.ID] {
			return nil, fmt.Errorf("plan: two ops share the id %q (plugin bug)", op.ID)
		}
		ids[op.ID] = true
		byPlugin[op.Plugin] = append(byPlugin[op.Plugin], op.ID)
	}
	if err := e.checkAfterCycles(); err != nil {
		return nil, err
	}
	for i := range ops {
		p := e.plugins[ops[i].Plugin]
		if p == nil {
			continue
		}
		deps := slices.Clone(ops[i].DependsOn)
		for _, a := range p.After() {
			deps = append(deps, byPlugin[a]...)
		}
		var kept []string
		for _, d := range deps {
			if ids[d] && !slices.Contains(kept, d) {
				kept = append(kept, d)
			}
		}
		ops[i].DependsOn = kept
	}
	// Kahn's algorithm, always taking the earliest ready op.
	indeg := map[string]int{}
	dependents := map[string][]string{}
	for _, op := range ops {
		indeg[op.ID] += 0
		for _, d := range op.DependsOn {
			indeg[op.ID]++
			dependents[d] = append(dependents[d], op.ID)
		}
	}
	pos := map[string]int{}
	for i, op := range ops {
		pos[op.ID] = i
	}
	var ready []int
	for i, op := range ops {
		if indeg[op.ID] == 0 {
			ready = append(ready, i)
		}
	}
	out := make([]plugin.Op, 0, len(ops))
	for len(ready) > 0 {
		sort.Ints(ready)
		i := ready[0]
		ready = ready[1:]
		out = append(out, ops[i])
		for _, d := range dependents[ops[i].ID] {
			indeg[d]--
			if indeg[d] == 0 {
				ready = append(ready, pos[d])
			}
		}
	}
	if len(out) != len(ops) {
		var stuck []string
		for _, op := range ops {
			if indeg[op.ID] > 0 {
				stuck = append(stuck, op.ID)
			}
		}
		return nil, fmt.Errorf("plan: dependency cycle among ops %s (plugin bug)", strings.Join(stuck, ", "))
	}
	return out, nil
}

func (e *Engine) checkAfterCycles() error {
	state := map[string]int{} // 0 new, 1 visiting, 2 done
	var visit func(n string, path []string) error
	visit = func(n string, path []string) error {
		switch state[n] {
		case 1:
			return fmt.Errorf("plugins depend on each other in a cycle: %s", strings.Join(append(path, n), " → "))
		case 2:
			return nil
		}
		state[n] = 1
		if p := e.plugins[n]; p != nil {
			for _, a := range p.After() {
				if err := visit(a, append(path, n)); err != nil {
					return err
				}
			}
		}
		state[n] = 2
		return nil
	}
	for _, n := range e.Names() {
		if err := visit(n, nil); err != nil {
			return err
		}
	}
	return nil
}
