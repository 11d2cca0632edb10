// Command op-dbus declares what a Linux host should be and makes it so.
package main

import (
	"os"

	"github.com/op-dbus/op-dbus/internal/cli"

	// Plugins register themselves.
	_ "github.com/op-dbus/op-dbus/internal/plugins/dbus"
	_ "github.com/op-dbus/op-dbus/internal/plugins/hostname"
	_ "github.com/op-dbus/op-dbus/internal/plugins/locale"
	_ "github.com/op-dbus/op-dbus/internal/plugins/network"
	_ "github.com/op-dbus/op-dbus/internal/plugins/networkmanager"
	_ "github.com/op-dbus/op-dbus/internal/plugins/ovs"
	_ "github.com/op-dbus/op-dbus/internal/plugins/systemd"
	_ "github.com/op-dbus/op-dbus/internal/plugins/timedate"
	_ "github.com/op-dbus/op-dbus/internal/plugins/wireguard"
)

func main() {
	os.Exit(cli.Run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
