package ledger

import (
	"os"
	"os/user"
	"strconv"
)

// LocalActor is the calling process's user, with client naming who asked
// through it (an MCP client, an API token, "op-dbus serve"), if anyone.
func LocalActor(client string) Actor {
	a := Actor{UID: os.Getuid(), Client: client}
	if u, err := user.LookupId(strconv.Itoa(a.UID)); err == nil {
		a.User = u.Username
	}
	return a
}
