package testbed

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

// Packages lists the Debian packages the beds need to start. SetTimezone
// also needs tzdata, SetLocale of a locale not generated yet needs locales.
const Packages = "dbus dbus-user-session systemd util-linux mount procps busybox iproute2 openvswitch-switch network-manager"

// NewUserManager starts a UserManager in a new temp dir for t and registers
// its Close (then the dir's removal) with t.Cleanup. If the bed cannot be
// started, the test fails when CI=true and is skipped otherwise, naming the
// Debian package to install.
func NewUserManager(t testing.TB) *UserManager {
	t.Helper()
	dir := bedTempDir(t, "tb-user-")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := StartUserManager(ctx, dir)
	if err != nil {
		unavailable(t, "systemd --user", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("close user manager bed: %v", err)
		}
	})
	return m
}

// NewIdentity starts an Identity bed in a new temp dir for t, like
// NewUserManager.
func NewIdentity(t testing.TB, opts ...IdentityOption) *Identity {
	t.Helper()
	dir := bedTempDir(t, "tb-id-")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	i, err := StartIdentity(ctx, dir, opts...)
	if err != nil {
		unavailable(t, "hostnamed/timedated/localed", err)
	}
	t.Cleanup(func() {
		if err := i.Close(); err != nil {
			t.Errorf("close identity bed: %v", err)
		}
	})
	return i
}

// bedTempDir makes a short temp dir (unix socket paths below it must fit in
// 108 bytes, which t.TempDir's long names can exceed) and removes it in a
// cleanup registered before the bed's Close, so it runs after it: processes
// are dead before their files go.
func bedTempDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("testbed: remove %s: %v", dir, err)
		}
	})
	return dir
}

func unavailable(t testing.TB, what string, err error) {
	t.Helper()
	var me *MissingError
	if os.Getenv("CI") == "true" {
		t.Fatalf("testbed: cannot start %s: %v", what, err)
	}
	if errors.As(err, &me) {
		t.Skipf("testbed: cannot start %s: %v", what, err)
	}
	t.Skipf("testbed: cannot start %s (needs root and Debian packages %s): %v", what, Packages, err)
}

// Program returns the path of the program name, which a test needs as a
// tool or an oracle. Without it the test fails when CI=true and is skipped
// otherwise, naming the Debian package that provides it.
func Program(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := needProgram(name, pkg)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("testbed: %v", err)
		}
		t.Skipf("testbed: %v", err)
	}
	return p
}
