// Command op-dbus-testbed starts the test bed of internal/testbed (a systemd
// user manager with its own session bus, and hostnamed, timedated and
// localed on a private system bus in their own namespaces) for the demo and
// for trying op-dbus by hand without touching the host. It writes the
// environment to use it to --env-file and runs until SIGINT or SIGTERM,
// then stops every process it started.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

func main() {
	dir := flag.String("dir", "", "directory for the bed (created; default a new temp dir)")
	envFile := flag.String("env-file", "", "write `export VAR=value` lines here once the bed is up")
	flag.Parse()
	if err := run(*dir, *envFile); err != nil {
		fmt.Fprintf(os.Stderr, "op-dbus-testbed: %v\n", err)
		os.Exit(1)
	}
}

func run(dir, envFile string) error {
	var err error
	if dir == "" {
		if dir, err = os.MkdirTemp("", "op-dbus-testbed-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	for _, d := range []string{"user", "identity", "ovs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	um, err := testbed.StartUserManager(ctx, filepath.Join(dir, "user"))
	if err != nil {
		return fmt.Errorf("start systemd --user: %w", err)
	}
	defer um.Close()
	id, err := testbed.StartIdentity(ctx, filepath.Join(dir, "identity"))
	if err != nil {
		return fmt.Errorf("start hostnamed/timedated/localed: %w", err)
	}
	defer id.Close()
	ovs, err := testbed.StartOVS(ctx, filepath.Join(dir, "ovs"))
	if err != nil {
		return fmt.Errorf("start ovsdb-server and ovs-vswitchd in a network namespace: %w", err)
	}
	defer ovs.Close()

	env := map[string]string{
		"DBUS_SESSION_BUS_ADDRESS": um.BusAddress,
		"XDG_RUNTIME_DIR":          um.RuntimeDir,
		"XDG_CONFIG_HOME":          um.ConfigHome,
		"HOME":                     envValue(um.Env, "HOME"),
		"DBUS_SYSTEM_BUS_ADDRESS":  id.BusAddress,
		"OPDBUS_UNIT_DIR":          um.UnitDir,
		// The network namespace (enter with nsenter -t PID -m -p -n) and
		// the OVSDB socket of its ovsdb-server.
		"OPDBUS_NET_PID": strconv.Itoa(ovs.NetNS.PID()),
		"OPDBUS_OVSDB":   ovs.DBAddress,
	}
	var b strings.Builder
	for _, k := range []string{"DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "HOME", "DBUS_SYSTEM_BUS_ADDRESS", "OPDBUS_UNIT_DIR", "OPDBUS_NET_PID", "OPDBUS_OVSDB"} {
		fmt.Fprintf(&b, "export %s='%s'\n", k, env[k])
	}
	if envFile != "" {
		if err := os.WriteFile(envFile+".tmp", []byte(b.String()), 0o600); err != nil {
			return err
		}
		if err := os.Rename(envFile+".tmp", envFile); err != nil {
			return err
		}
	} else {
		fmt.Print(b.String())
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	return nil
}

func envValue(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], key+"="); ok {
			return v
		}
	}
	return ""
}
