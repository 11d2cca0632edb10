// Command op-dbus declares what a Linux host should be and makes it so.
package main

import (
	"os"

	"github.com/op-dbus/op-dbus/internal/cli"

	// Plugins register themselves.
	_ "github.com/op-dbus/op-dbus/plugins/dbus"
	_ "github.com/op-dbus/op-dbus/plugins/hostname"
	_ "github.com/op-dbus/op-dbus/plugins/locale"
	_ "github.com/op-dbus/op-dbus/plugins/network"
	_ "github.com/op-dbus/op-dbus/plugins/networkmanager"
	_ "github.com/op-dbus/op-dbus/plugins/ovs"
	_ "github.com/op-dbus/op-dbus/plugins/systemd"
	_ "github.com/op-dbus/op-dbus/plugins/timedate"
	_ "github.com/op-dbus/op-dbus/plugins/wireguard"
)

func main() {
	os.Exit(cli.Run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
