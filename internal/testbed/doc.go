// Package testbed starts real daemons in isolation for tests and the demo:
// a `systemd --user` manager with its session bus (UserManager),
// systemd-hostnamed, -timedated and -localed on a private system bus
// (Identity), plain private buses (Bus, StartSystemBus with the system
// bus's default policy), empty network namespaces (NetNS), ovsdb-server and
// userspace ovs-vswitchd in one (OVS), NetworkManager on a private bus in
// its own network, mount and UTS namespaces (NetworkManager: no PID
// namespace, because NetworkManager looks its callers' PIDs up in /proc),
// userspace WireGuard devices (wireguard-go as a library, by re-exec of
// the test binary, in a NetNS), and a whole Debian 12 booted with systemd
// as PID 1 in systemd-nspawn (BootedHost). Nothing is faked, and nothing touches the host's hostname,
// clock, network, /etc or services. It needs root and the Debian packages
// in Packages.
//
// # Isolation and cleanup
//
// Each bed runs under an sh that is PID 1 of new PID and mount namespaces
// (plus UTS; plus network for Identity). / is made private first, so every
// mount lives and dies with the namespace. Killing that init by PID (Close)
// makes the kernel kill every process in the namespace: daemons, activated
// services, units and their children. It is started with Pdeathsig=SIGKILL,
// as is every other child of the test process, from a goroutine locked to a
// thread that never exits, so a dying test binary takes the beds with it.
// Neither bed uses paths outside its Dir except its own cgroups (below), so
// any number can run at once, in one process or many. The daemons run
// without CAP_SYS_TIME: they cannot set the clock, the RTC or the kernel
// timezone.
//
// # UserManager
//
// systemd --user needs /run/systemd/system: the bed mounts a tmpfs on
// /run/systemd and creates it. The session bus is started by the manager's
// own dbus.socket/dbus.service (dbus-user-session), as in a login session:
// a user manager attaches to the bus only once its dbus.service runs, so a
// separately started dbus-daemon would never see org.freedesktop.systemd1.
// BusAddress is therefore RuntimeDir/bus. HOME, XDG_CONFIG_HOME,
// XDG_DATA_HOME, XDG_STATE_HOME and XDG_CACHE_HOME point into Dir.
//
// Root-run `systemd --user` works fine in the bed. Run bare as root on a
// host without systemd it is harmful: it moves every process it can see
// (PID 1 included) into /init.scope and creates slices in the name=systemd,
// unified, pids, memory and cpu cgroup hierarchies. So each bed gets its own
// cgroup op-testbed-<pid>-<n> at the root of the name=systemd and unified
// hierarchies (or of the single cgroup2 one); its init moves in before
// starting systemd; its mount namespace shows systemd only those two
// hierarchies; and the PID namespace hides other processes. Close removes
// the cgroups. Ones left by a killed test binary are removed when the next
// bed starts.
//
// The manager's private socket ($XDG_RUNTIME_DIR/systemd/private) checks
// the peer's PID, which is 0 for a client outside the PID namespace. So the
// bed hides it from the host (tmpfs on RuntimeDir/systemd inside the
// namespace). Systemctl runs systemctl inside the namespaces, where it uses
// the private socket and sees a booted system. `systemctl --user` run on the
// host with Env finds no socket and falls back to the session bus. All
// verbs work that way except is-system-running, which prints "offline"
// because the host has no /run/systemd/system. busctl --user and any D-Bus
// client work from the host through BusAddress, including calls that need
// privileges (StartUnit, EnableUnitFiles, MaskUnitFiles, Reload).
//
// A unit file written with WriteUnit that the manager has not loaded yet can
// be started without daemon-reload. After changing a loaded unit, run
// daemon-reload: until then the manager keeps the old definition and shows
// NeedDaemonReload=yes. systemd refuses to mask a unit whose file is in
// UnitDir, where the mask link goes; put units to mask in DataUnitDir
// ($XDG_DATA_HOME/systemd/user). Units' stdout and stderr, and systemd's own log, go
// to Dir/manager.log. Unit processes run as root, in the host's network
// namespace and file system. PIDs the manager reports (MainPID...) are PIDs
// in the bed's namespace, not host PIDs.
//
// # Identity
//
// dbus-daemon (<type>system</type>, permissive policy) runs inside the
// namespaces, after an overlay is mounted on /etc (upper Dir/etc.upper), an
// overlay on /usr/lib/locale (upper Dir/locale.upper, for locale-gen), and a
// tmpfs on /run. It bus-activates the three daemons itself, from service
// files in Dir/services with Exec= and no SystemdService=. A system bus
// without a <servicehelper> activates directly, no setuid helper needed.
// The daemons exit after about 30 s idle, as on a real system. The next call
// activates them again inside the namespaces, and they read back what they
// wrote. TestIdentityReactivation checks this: hostnamed exits after 31 s
// idle and comes back with its static hostname. Logs go to
// Dir/identity.log.
//
// timedated's list of NTP units is emptied (SYSTEMD_TIMEDATED_NTP_SERVICES=),
// as on a system with no NTP service. Otherwise it asks org.freedesktop.systemd1,
// which this bus does not have, for the state of systemd-timesyncd.service.
// Then Get of NTP and CanNTP, GetAll on timedate1, SetNTP and SetTime all
// fail with System.Error.EHOSTUNREACH "No route to host". WithNTPUnits
// starts the bed that way, for tests of a GetAll that fails.
//
// What works in this bed, checked on Debian 12 (systemd 252):
//
// At start the bed's state is the host's: same hostname, /etc files seen
// through the overlay. Here, for example, Locale is empty (as 0) because the
// host's /etc/default/locale has only a comment.
//
// hostname1:
//   - SetStaticHostname works. It writes /etc/hostname in the overlay and
//     sets the bed's UTS hostname. The host's /etc/hostname and hostname do
//     not change. "" deletes the file and Hostname becomes "localhost".
//   - SetHostname (transient) returns success but changes nothing while a
//     static hostname is set. Without one it sets Hostname.
//   - SetPrettyHostname, SetIconName, SetChassis, SetDeployment and
//     SetLocation work: they write /etc/machine-info. By default Chassis is
//     "container" and IconName is "computer-container", because hostnamed
//     detects the namespace.
//   - GetAll and Describe work.
//
// timedate1:
//   - SetTimezone works. It relinks /etc/localtime in the overlay to
//     ../usr/share/zoneinfo/ZONE. Debian's /etc/timezone is not updated. An
//     unknown zone fails with "Invalid or not installed time zone 'X'".
//   - SetLocalRTC works. It writes LOCAL or UTC to /etc/adjtime in the
//     overlay, and LocalRTC follows. There is no /dev/rtc and no
//     CAP_SYS_TIME, so the RTC, the kernel timezone and the clock stay as
//     they are (timedated logs this and ignores it), even with fix_system.
//   - SetNTP fails with org.freedesktop.timedate1.NoNTPSupport
//     "NTP not supported". CanNTP, NTP and NTPSynchronized are false and
//     RTCTimeUSec is 0.
//   - SetTime fails with org.freedesktop.DBus.Error.AccessDenied
//     "Failed to set local time: Operation not permitted" (busctl prints
//     "Access denied"). This is deliberate: there is no CAP_SYS_TIME.
//     SetTime with relative=true and 0 is a no-op that succeeds.
//
// locale1:
//   - SetLocale works. It writes /etc/default/locale in the overlay. For a
//     locale that is not generated yet (de_DE.UTF-8, en_US.UTF-8), localed
//     enables it in /etc/locale.gen and runs locale-gen into the
//     /usr/lib/locale overlay. That takes 2-4 s per call. An invalid locale
//     fails with "Can not enable locale generation for invalid locale: X".
//     localed logs "Failed to reload system manager" (no systemd1); this is
//     harmless.
//   - SetX11Keyboard works. It writes /etc/default/keyboard (XKBLAYOUT,
//     XKBMODEL, XKBVARIANT, XKBOPTIONS) in the overlay. Layouts are not
//     validated. With convert=true it also sets VConsoleKeymap and writes
//     /etc/vconsole.conf. It succeeds although localed logs "Failed to
//     convert keymap data: No route to host".
//   - SetVConsoleKeyboard fails for any non-empty keymap with
//     org.freedesktop.DBus.Error.Failed "Keymap de is not installed.".
//     localed looks for *.map[.gz] under /usr/share/keymaps,
//     /usr/share/kbd/keymaps and /usr/lib/kbd/keymaps. Neither kbd nor
//     console-data (which ships *.kmap.gz) provides them on Debian 12. An
//     empty keymap works.
//
// # BootedHost
//
// A real booted machine: systemd as PID 1, journald, the system bus,
// logind, and hostnamed, timedated and localed activated by the bus, all
// from Debian's own units. It needs the Debian packages mmdebstrap and
// systemd-container; the host needs no systemd.
//
// The root file system is built once, with
//
//	unshare --mount --propagation private --pid --fork --kill-child --mount-proc -- \
//	  mmdebstrap --mode=root \
//	  --variant=minbase --include=systemd,systemd-sysv,dbus,iproute2,iputils-ping,procps \
//	  bookworm TMP/root
//
// (no mirror argument: mmdebstrap picks one itself; about 216 MB; 52 s on an idle
// 2-core machine, 90-110 s with other tests running) and cached in BootedRootDir
// (/var/cache/op-dbus-testbed/debian-bookworm-v1; bump the version suffix
// when the package list changes). EnsureBootedRoot builds into a temp dir
// next to it (.debian-bookworm-v1.build-*) and renames it into place, under
// an exclusive flock on BootedRootDir.lock, so two test processes never
// build at once and a killed build leaves no half root: its leftovers are
// removed by the next build. mmdebstrap forks workers (dpkg, apt), which
// outlived a killed test binary when it ran bare; as PID 1 of its own PID
// namespace, killed by unshare's --kill-child when the test dies, it takes
// them all along. Its /dev, /proc and /sys mounts live in its own mount
// namespace and vanish with it.
//
// Each bed boots the cache without changing it:
//
//	systemd-nspawn --quiet --directory=ROOT --boot --volatile=overlay \
//	  --register=no --keep-unit --network-veth --console=read-only \
//	  --setenv=SYSTEMD_COLORS=0 --machine=booted
//
// --volatile=overlay puts a tmpfs overlay over the read-only root: what the
// container writes (/etc/hostname, units copied in) is gone after Close.
// Without host systemd, nspawn fails with "Failed to open system bus" unless
// it neither registers with machined (--register=no) nor asks systemd for a
// scope (--keep-unit). With --keep-unit it makes supervisor/ and payload/
// cgroups below its own cgroup, so it runs in a cgroup of its own per bed
// (as UserManager), under an sh that is PID 1 of new PID, mount and network
// namespaces, with fresh /proc and /sys and a tmpfs on /run (nspawn keeps
// /run/systemd/nspawn there). --network-veth creates host0 in the container
// and ve-booted in the bed's network namespace, not the host's (HostExec
// runs there; veth works on this kernel, dummy/vlan/bond do not).
// --ephemeral was not needed: on a non-btrfs file system it copies the
// whole root. The console (boot and shutdown messages) goes to
// Dir/nspawn.log.
//
// There is no machined on the host, so no machinectl shell or systemd-run
// -M. Instead the bed finds the container's PID 1 on the host (the child of
// systemd-nspawn, LeaderPID) and Exec runs `nsenter -t LEADER -a -- ARGV`
// with a plain PATH: all the container's namespaces and its root, so
// systemctl, busctl and hostnamectl talk to the container's systemd and
// system bus as on a real machine. Readiness is `systemctl
// is-system-running` printing running or degraded, polled that way (about
// 1.7-2.8 s from start with a cached root). Root is /proc/LEADER/root, the
// container's root as the host sees it; CopyIn writes into it (the overlay).
//
// Close sends SIGTERM to the bed's init, which passes it on to nspawn; nspawn
// sends SIGRTMIN+3 to the container's systemd, which halts cleanly
// (Dir/nspawn.log ends with "Halting system.", 0.3-0.7 s). If that takes
// longer than 30 s, Close kills the init by PID, which kills every process
// of the bed. Then it removes the bed's cgroups. All mounts (the overlay,
// /run, the container's) live in the bed's mount namespaces and go with
// them: nothing appears in the host's /proc/self/mountinfo at any time.
//
// Starting a bed takes about 0.3 s (UserManager), 0.15 s (Identity) or 2 s
// (BootedHost, cached root) on 2 cores, and Close takes under 20 ms (0.3-0.7
// s for BootedHost, which halts the container). Dir must be short: unix socket paths
// below it must fit in 108 bytes. Dir must not contain ',' or ':' (overlay
// options), and it must be on a file system that overlayfs accepts as
// upper (not overlayfs itself).
package testbed
