package netcheck

import (
	"context"

	"github.com/op-dbus/op-dbus/internal/plugin"
)

// Observer is implemented by the network plugins that report per-interface
// facts (network, networkmanager, ovs).
type Observer interface {
	Observe(ctx context.Context) ([]Observation, error)
}

// pluginSources maps plugin names to the source they are in the check and
// whether they list every interface of the namespace.
var pluginSources = []struct {
	plugin, source string
	complete       bool
	hides          []string
}{
	{"network", "netlink", true, nil},
	// NetworkManager leaves Open vSwitch's datapath devices out of its
	// device list.
	{"networkmanager", "networkmanager", true, []string{"ovs-system", "ovs-netdev"}},
	{"ovs", "ovsdb", false, nil},
}

type pluginSource struct {
	name string
	obs  Observer
}

func (p pluginSource) Name() string { return p.name }
func (p pluginSource) Observe(ctx context.Context) ([]Observation, error) {
	return p.obs.Observe(ctx)
}

// Inputs is every source of a check of this host: /sys/class/net and each
// network plugin get finds, marked unavailable (with why) when the plugin
// is not (NetworkManager not running, no ovsdb-server).
func Inputs(ctx context.Context, get func(name string) (plugin.Plugin, bool)) []Input {
	inputs := []Input{{Source: Sysfs{}, Complete: true}}
	for _, s := range pluginSources {
		p, ok := get(s.plugin)
		if !ok {
			continue
		}
		o, ok := p.(Observer)
		if !ok {
			continue
		}
		in := Input{Source: pluginSource{s.source, o}, Complete: s.complete, Hides: s.hides}
		actx, cancel := context.WithTimeout(ctx, SourceTimeout)
		in.Unavailable = p.Available(actx)
		cancel()
		inputs = append(inputs, in)
	}
	return inputs
}
