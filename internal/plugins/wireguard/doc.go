// Package wireguard is the op-dbus plugin for WireGuard interfaces and
// peers, through wgctrl (kernel or userspace implementation).
package wireguard
