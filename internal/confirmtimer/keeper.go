package confirmtimer

import (
	"context"
	"fmt"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/op-dbus/op-dbus/internal/dbusx"
)

// Keeper keeps confirm deadlines with the manager on Bus for the
// transaction service (it implements control.Deadlines). Each call uses
// the process's shared connection to Bus (dbusx.Shared).
type Keeper struct {
	Bus dbusx.Bus
	// Argv is the command the timer runs (RecoverArgv); Env its
	// environment (Env()).
	Argv []string
	Env  []string
}

func (k *Keeper) with(ctx context.Context, fn func(*dbus.Conn) error) error {
	ctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	// The process's shared connection to that bus (never closed here).
	conn, err := dbusx.Shared(ctx, k.Bus)
	if err != nil {
		return &UnavailableError{Why: fmt.Sprintf("cannot reach the %s", k.Bus), Err: err}
	}
	return fn(conn)
}

// Ready returns nil when a systemd manager answers on the bus.
func (k *Keeper) Ready(ctx context.Context) error {
	return k.with(ctx, func(c *dbus.Conn) error {
		if err := Available(ctx, c); err != nil {
			return fmt.Errorf("no systemd manager on the %s can keep the confirm deadline should this process die (%w); pass --confirm-in-process to keep it in this process only", k.Bus, err)
		}
		return nil
	})
}

// Arm registers the timer of transaction id.
func (k *Keeper) Arm(ctx context.Context, id string, deadline time.Time) error {
	return k.with(ctx, func(c *dbus.Conn) error {
		_, err := Arm(ctx, c, Spec{ID: id, Deadline: deadline, Argv: k.Argv, Env: k.Env})
		return err
	})
}

// Disarm removes the timer of transaction id (fine if there is none).
func (k *Keeper) Disarm(ctx context.Context, id string) error {
	return k.with(ctx, func(c *dbus.Conn) error { return Disarm(ctx, c, id) })
}
