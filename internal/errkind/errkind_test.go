package errkind

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
)

func TestEveryKindIsMapped(t *testing.T) {
	for k := Internal; k <= Failed; k++ {
		if _, ok := table[k]; !ok {
			t.Errorf("kind %d (%s) has no mapping", k, k)
		}
		if names[k] == "" {
			t.Errorf("kind %d has no name", k)
		}
	}
}

func TestOfFindsTheKindThroughWrapping(t *testing.T) {
	base := Errorf(Locked, "another op-dbus transaction holds /x/lock (pid 7)")
	wrapped := fmt.Errorf("apply: %w", base)
	if Of(wrapped) != Locked || !Is(wrapped, Locked) {
		t.Fatalf("Of(%v) = %v, want locked", wrapped, Of(wrapped))
	}
	if HTTPStatus(wrapped) != http.StatusConflict || Code(wrapped) != "locked" || DBusName(wrapped) != "org.opdbus1.Error.Locked" {
		t.Fatalf("mapping of locked: %d %s %s", HTTPStatus(wrapped), Code(wrapped), DBusName(wrapped))
	}
	if Of(errors.New("plain")) != Internal || ExitCode(nil) != 0 || ExitCode(wrapped) != 1 {
		t.Fatal("plain errors are internal; nil exits 0")
	}
	if New(Invalid, nil) != nil {
		t.Fatal("New(k, nil) must stay nil")
	}
}
