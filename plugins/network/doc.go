// Package network is the op-dbus plugin for links, addresses and routes,
// read and changed over rtnetlink.
package network
