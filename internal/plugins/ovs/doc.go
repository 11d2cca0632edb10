// Package ovs is the op-dbus plugin for Open vSwitch bridges, ports and
// interfaces, over OVSDB (RFC 7047) with libovsdb: one persistent
// connection, every change of an apply in one atomic transaction. See
// README.md.
package ovs
