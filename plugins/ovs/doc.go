// Package ovs is the op-dbus plugin for Open vSwitch bridges, ports and
// interfaces, over OVSDB (RFC 7047).
package ovs
