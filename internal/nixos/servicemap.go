package nixos

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"path"
)

//go:embed servicemap.json
var serviceMapJSON []byte

// Mapping is what the service map says about one unit: the NixOS option
// (an attribute path set to true) that provides it, or why it has none.
type Mapping struct {
	Option string `json:"option,omitempty"`
	Reason string `json:"reason,omitempty"`
	Note   string `json:"note,omitempty"`
}

type serviceMap struct {
	Units    map[string]Mapping `json:"units"`
	Patterns []struct {
		Glob string `json:"glob"`
		Mapping
	} `json:"patterns"`
}

var services = mustServiceMap(serviceMapJSON)

func mustServiceMap(b []byte) *serviceMap {
	var m serviceMap
	if err := json.Unmarshal(b, &m); err != nil {
		panic(fmt.Sprintf("nixos: servicemap.json: %v", err))
	}
	return &m
}

// Lookup finds unit in the service map: an exact entry first, then the
// first glob pattern that matches.
func Lookup(unit string) (Mapping, bool) {
	if m, ok := services.Units[unit]; ok {
		return m, true
	}
	for _, p := range services.Patterns {
		if ok, _ := path.Match(p.Glob, unit); ok {
			return p.Mapping, true
		}
	}
	return Mapping{}, false
}
