// Package networkmanager is the op-dbus plugin for NetworkManager's
// connections and devices, over org.freedesktop.NetworkManager on D-Bus.
package networkmanager
