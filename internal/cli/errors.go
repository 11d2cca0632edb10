package cli

import (
	"errors"

	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/state"
)

type opT = plugin.Op

func asProblems(err error, ps *state.Problems) bool { return errors.As(err, ps) }
