package dbusservice

import (
	"context"
	"fmt"
	"os"
	"os/exec"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

func run(ctx context.Context, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%v: %w: %s", argv, err, out)
	}
	return string(out), nil
}

// chmodBusDir lets uid 65534 reach a session-type bus's socket.
func chmodBusDir(b *testbed.Bus) error { return os.Chmod(b.Dir, 0o755) }
