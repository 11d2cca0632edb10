// Package netcheck reconciles what several sources (netlink, NetworkManager,
// OVSDB, /sys/class/net) each say about the host's interfaces and reports
// where they disagree: `op-dbus check network`.
package netcheck

import "context"

// Observation is what one source says about one interface. A field a source
// cannot know is left at its "unknown" value (nil pointer, nil slice with
// Known* false) and is never compared.
type Observation struct {
	// Source names where the facts come from: "netlink", "networkmanager",
	// "ovsdb", "sysfs".
	Source string `json:"source"`
	// Interface is the kernel name ("br0", "eth0").
	Interface string `json:"interface"`
	// Exists: the source has the interface (false: it names it, e.g. an
	// NM profile or OVS Interface row, but says it is not there).
	Exists bool `json:"exists"`
	// State is "up" or "down" (administrative state), "" when unknown.
	State string `json:"state,omitempty"`
	// MTU, 0 when unknown.
	MTU int `json:"mtu,omitempty"`
	// Addresses in CIDR form, sorted; compared only when KnownAddresses.
	Addresses      []string `json:"addresses,omitempty"`
	KnownAddresses bool     `json:"-"`
	// Master is the bridge (Linux or OVS) the interface is a port of, ""
	// for none; compared only when KnownMaster.
	Master      string `json:"master,omitempty"`
	KnownMaster bool   `json:"-"`
}

// Source observes every interface it knows about.
type Source interface {
	// Name is the Observation.Source value.
	Name() string
	// Observe returns one observation per interface the source knows.
	Observe(ctx context.Context) ([]Observation, error)
}
