package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Identity is a private system bus with systemd-hostnamed, -timedated and
// -localed, all in their own PID, mount, UTS and network namespaces.
//
// dbus-daemon runs inside the namespaces and bus-activates the three daemons
// itself from service files in Dir/services (Exec= the daemon, no
// SystemdService=, no setuid helper: a <type>system</type> bus activates
// directly when it has no <servicehelper>). They exit after ~30s idle, as
// on a real system, and the next call activates them again, inside the
// namespaces, with the state they left in the overlay.
//
// In the mount namespace an overlay over /etc (upper Dir/etc.upper) takes
// what the daemons write (hostname, machine-info, localtime, adjtime,
// default/locale, default/keyboard, vconsole.conf...), another over
// /usr/lib/locale takes what locale-gen writes when SetLocale asks for a
// locale that is not generated, and /run is an empty tmpfs. The daemons run
// without CAP_SYS_TIME, so nothing they do can set the host's clock, RTC or
// kernel timezone (SetTime fails; SetLocalRTC only writes /etc/adjtime).
type Identity struct {
	Dir        string
	BusAddress string   // value for DBUS_SYSTEM_BUS_ADDRESS: "unix:path=Dir/system_bus_socket"
	Env        []string // os.Environ() with DBUS_SYSTEM_BUS_ADDRESS set

	proc    *nsProc
	nsenter string
}

var identityDaemons = []struct{ name, bin, path, prop string }{
	{"org.freedesktop.hostname1", "systemd-hostnamed", "/org/freedesktop/hostname1", "Hostname"},
	{"org.freedesktop.timedate1", "systemd-timedated", "/org/freedesktop/timedate1", "Timezone"},
	{"org.freedesktop.locale1", "systemd-localed", "/org/freedesktop/locale1", "Locale"},
}

// IdentityOption changes how StartIdentity sets up the bed.
type IdentityOption func(*identityConfig)

type identityConfig struct {
	ntpUnits []string
}

// WithNTPUnits gives timedated these NTP units
// (SYSTEMD_TIMEDATED_NTP_SERVICES) instead of none. The bed's bus has no
// org.freedesktop.systemd1 to ask about them, so Get of NTP and CanNTP,
// and GetAll on timedate1, fail with "No route to host" while Timezone,
// LocalRTC and the other properties still answer Get: a real daemon whose
// GetAll fails, as on a host whose NTP unit timedated cannot query.
func WithNTPUnits(units ...string) IdentityOption {
	return func(c *identityConfig) { c.ntpUnits = units }
}

// StartIdentity starts the bed in dir, an existing empty directory, and
// returns once hostname1, timedate1 and locale1 all answer a property Get,
// or fails after 20s. It needs root.
func StartIdentity(ctx context.Context, dir string, opts ...IdentityOption) (*Identity, error) {
	var cfg identityConfig
	for _, o := range opts {
		o(&cfg)
	}
	if err := needRoot(); err != nil {
		return nil, err
	}
	bins := map[string]string{}
	for _, d := range identityDaemons {
		p, err := needFile("systemd", "/lib/systemd/"+d.bin, "/usr/lib/systemd/"+d.bin)
		if err != nil {
			return nil, err
		}
		bins[d.name] = p
	}
	var dbusDaemon, nsenter, setpriv string
	for _, p := range []struct {
		name, pkg string
		path      *string
	}{
		{"dbus-daemon", "dbus", &dbusDaemon},
		{"busctl", "systemd", nil},
		{"mount", "mount", nil},
		{"nsenter", "util-linux", &nsenter},
		{"setpriv", "util-linux", &setpriv},
	} {
		path, err := needProgram(p.name, p.pkg)
		if err != nil {
			return nil, err
		}
		if p.path != nil {
			*p.path = path
		}
	}
	dir, err := checkDir(dir, len("/system_bus_socket"))
	if err != nil {
		return nil, err
	}
	i := &Identity{Dir: dir, nsenter: nsenter}
	sock := filepath.Join(dir, "system_bus_socket")
	i.BusAddress = "unix:path=" + sock
	i.Env = bedEnv("DBUS_SYSTEM_BUS_ADDRESS=" + i.BusAddress)

	services := filepath.Join(dir, "services")
	for _, d := range []string{services, filepath.Join(dir, "etc.upper"), filepath.Join(dir, "etc.work"),
		filepath.Join(dir, "locale.upper"), filepath.Join(dir, "locale.work")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	for _, d := range identityDaemons {
		svc := fmt.Sprintf("[D-BUS Service]\nName=%s\nExec=%s\n", d.name, bins[d.name])
		if err := os.WriteFile(filepath.Join(services, d.name+".service"), []byte(svc), 0o644); err != nil {
			return nil, err
		}
	}
	conf := filepath.Join(dir, "bus.conf")
	if err := os.WriteFile(conf, []byte(systemBusConf(sock, services)), 0o644); err != nil {
		return nil, err
	}

	var s strings.Builder
	line := func(l string) { s.WriteString(l + "\n") }
	line("set -e")
	line("export LIBMOUNT_UTAB=" + shq(filepath.Join(dir, "utab"))) // not the host's /run/mount
	line("mount --make-rprivate /")
	line("mount -t proc proc /proc")
	line("mount -t overlay overlay -o " + shq("lowerdir=/etc,upperdir="+filepath.Join(dir, "etc.upper")+",workdir="+filepath.Join(dir, "etc.work")) + " /etc")
	line("if [ -d /usr/lib/locale ]; then mount -t overlay overlay -o " +
		shq("lowerdir=/usr/lib/locale,upperdir="+filepath.Join(dir, "locale.upper")+",workdir="+filepath.Join(dir, "locale.work")) +
		" /usr/lib/locale; fi")
	line("mount -t tmpfs -o mode=0755 tmpfs /run")
	line("mkdir -p /run/systemd") // hostnamed keeps default-hostname there
	line("unset LIBMOUNT_UTAB")
	line("set +e")
	// The bus is restarted whenever it exits, so RestartBus can kill it
	// as a system bus restart would; the 0.2s pause keeps a bus that dies
	// at once from spinning.
	line("while :; do " + shq(setpriv) + " --inh-caps=-sys_time --bounding-set=-sys_time -- " + shq(dbusDaemon) +
		" --config-file=" + shq(conf) + " --nofork --nopidfile --nosyslog; sleep 0.2; done &")
	line("wait")

	// The daemons inherit dbus-daemon's environment: they must find this
	// bus, and log to stderr (Dir/identity.log), never a host journal.
	// SYSTEMD_TIMEDATED_NTP_SERVICES empty unless WithNTPUnits: see the
	// package doc (NTP).
	env := bedEnv("DBUS_SYSTEM_BUS_ADDRESS="+i.BusAddress, "SYSTEMD_LOG_TARGET=console", "SYSTEMD_TIMEDATED_NTP_SERVICES="+strings.Join(cfg.ntpUnits, ":"))
	proc, err := startNS(s.String(), env, syscall.CLONE_NEWUTS|syscall.CLONE_NEWNET, filepath.Join(dir, "identity.log"))
	if err != nil {
		return nil, err
	}
	i.proc = proc
	err = proc.waitReady(ctx, 20*time.Second, "hostnamed/timedated/localed", func(ctx context.Context) error {
		for _, d := range identityDaemons {
			if _, err := i.Busctl(ctx, "--timeout=5", "get-property", d.name, d.path, d.name, d.prop); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		if cerr := i.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, err
	}
	return i, nil
}

func systemBusConf(sock, services string) string {
	return `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=` + xmlEscape(sock) + `</listen>
  <auth>EXTERNAL</auth>
  <servicedir>` + xmlEscape(services) + `</servicedir>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
`
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// Close kills the bed's namespace init by PID, which kills dbus-daemon and
// the three daemons, and waits for them. The overlay and namespaces vanish
// with them; files in Dir are left to the caller.
func (i *Identity) Close() error {
	return i.proc.close()
}

// RestartBus kills the bed's dbus-daemon, as a restart of the system bus
// would, and returns once a new one answers. Every client loses its
// connection; hostnamed, timedated and localed exit with it and are
// activated again by the next call.
func (i *Identity) RestartBus(ctx context.Context) error {
	if out, err := i.Exec(ctx, "pkill", "-KILL", "-x", "dbus-daemon"); err != nil {
		return fmt.Errorf("kill the bed's dbus-daemon: %w (%s)", err, out)
	}
	return i.proc.waitReady(ctx, 20*time.Second, "restarted bus", func(ctx context.Context) error {
		_, err := i.Busctl(ctx, "--timeout=5", "get-property", identityDaemons[0].name, identityDaemons[0].path, identityDaemons[0].name, identityDaemons[0].prop)
		return err
	})
}

// Exec runs argv inside the bed's namespaces (PID, mount, UTS, network):
// `cat /etc/hostname` there reads the overlay, `hostname` the bed's UTS
// name. It returns the combined output; the error includes it.
func (i *Identity) Exec(ctx context.Context, argv ...string) (string, error) {
	return runOutput(ctx, i.Env, i.nsenter, i.proc.nsenter([]string{"-m", "-p", "-u", "-n"}, argv)...)
}

// Busctl runs `busctl --system ARGS` on the host with i.Env, i.e. over the
// bed's private system bus. It returns the combined output; the error
// includes it.
func (i *Identity) Busctl(ctx context.Context, args ...string) (string, error) {
	return runOutput(ctx, i.Env, "busctl", append([]string{"--system"}, args...)...)
}
