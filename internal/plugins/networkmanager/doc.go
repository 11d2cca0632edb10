// Package networkmanager is the op-dbus plugin for NetworkManager's
// connections and devices, over org.freedesktop.NetworkManager on D-Bus.
// Every change of one document runs inside one NetworkManager checkpoint.
// See README.md.
package networkmanager
