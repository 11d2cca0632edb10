#!/usr/bin/env bash
# The op-dbus demo: start the test bed (real systemd --user, hostnamed,
# timedated, localed, all isolated from this host), then query, plan, apply
# with progress and verification, and a deliberate failure rolled back.
set -uo pipefail
BIN=${1:-bin/op-dbus}
BIN=$(readlink -f "$BIN")
cd "$(dirname "$0")/.."
WORK=$(mktemp -d /tmp/op-dbus-demo.XXXXXX)
go build -o "$WORK/op-dbus-testbed" ./cmd/op-dbus-testbed || exit 1

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; echo "(exit $?)"; }

"$WORK/op-dbus-testbed" -dir "$WORK/bed" -env-file "$WORK/env" &
BED=$!
cleanup() {
	kill -TERM "$BED" 2>/dev/null
	wait "$BED" 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
for _ in $(seq 1 300); do
	[ -f "$WORK/env" ] && break
	kill -0 "$BED" 2>/dev/null || { echo "the test bed failed to start" >&2; exit 1; }
	sleep 0.1
done
[ -f "$WORK/env" ] || { echo "the test bed did not come up in 30 s" >&2; exit 1; }
# shellcheck disable=SC1091
. "$WORK/env"
export NO_COLOR=${NO_COLOR:-}
OP="$BIN --state-dir=$WORK/state"

bold "The test bed is up: systemd --user and hostname1/timedate1/locale1 on private buses, ovsdb-server and ovs-vswitchd in a network namespace"
for u in web api worker; do
	printf '[Unit]\nDescription=demo %s\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=default.target\n' $u >"$OPDBUS_UNIT_DIR/demo-$u.service"
done
printf '[Unit]\nDescription=demo broken\n[Service]\nType=exec\nExecStart=/nonexistent/demo-broken\n' >"$OPDBUS_UNIT_DIR/demo-broken.service"
systemctl --user daemon-reload
show $OP --user plugins

bold "query: the live state, as a state document (first lines)"
$OP --user query -p systemd -p hostname | head -n 24
echo "..."

cat >"$WORK/host.yaml" <<'YAML'
version: 1
plugins:
  systemd:
    units:
      demo-web.service: {active_state: active, enabled: true}
      demo-api.service: {active_state: active}
      demo-worker.service: {active_state: active}
  hostname:
    static_hostname: demo-host
    pretty_hostname: op-dbus demo host
    location: the test bed
  timedate:
    timezone: Europe/Berlin
YAML
bold "The desired state"
cat "$WORK/host.yaml"

bold "diff: what apply would change (exit 2 = changes)"
show $OP --user diff "$WORK/host.yaml"

bold "apply: progress per op, then verification"
show $OP --user apply --yes "$WORK/host.yaml"

bold "The oracle (systemctl --user, busctl) agrees"
show systemctl --user is-active demo-web.service demo-api.service demo-worker.service
show busctl --system get-property org.freedesktop.hostname1 /org/freedesktop/hostname1 org.freedesktop.hostname1 StaticHostname

bold "A second apply plans nothing"
show $OP --user apply --yes "$WORK/host.yaml"

bold "Drift: something stops demo-api behind our back; verify names it (exit 2)"
systemctl --user stop demo-api.service
show $OP --user verify "$WORK/host.yaml"

cat >"$WORK/broken.yaml" <<'YAML'
version: 1
plugins:
  systemd:
    units:
      demo-api.service: {active_state: active}
      demo-web.service: {active_state: inactive, enabled: false}
      demo-broken.service: {active_state: active}
  hostname:
    location: somewhere new
YAML
bold "A deliberate failure: demo-broken.service cannot start; everything this apply touched is rolled back"
cat "$WORK/broken.yaml"
show $OP --user apply --yes "$WORK/broken.yaml"

bold "After the rollback: demo-web runs and is enabled again, demo-api is back to stopped as before this apply, the location is unchanged"
show systemctl --user is-active demo-web.service demo-api.service
show systemctl --user is-enabled demo-web.service
show busctl --system get-property org.freedesktop.hostname1 /org/freedesktop/hostname1 org.freedesktop.hostname1 Location

bold "Every change is in the tamper-evident audit log (a Merkle tree with signed checkpoints)"
show $OP history
show $OP audit verify
$OP audit proof 0 >"$WORK/receipt.json"
$OP audit key >"$WORK/host.pub"
show $OP audit verify-receipt "$WORK/receipt.json" --key "$WORK/host.pub"

bold "Whole-bus introspection of the private system bus (every service, object, member and value; last lines)"
echo "..."
$OP introspect --activatable | tail -n 22

bold "Network: one document for Open vSwitch and netlink, inside the bed's own network namespace"
# Everything here runs in the bed's network namespace (nsenter), never on
# this host's interfaces: ovs creates a bridge (ovs-vswitchd makes its
# device), network addresses it, and a probe checks the address answers.
NET="nsenter -t $OPDBUS_NET_PID -m -p -n -- $BIN --state-dir=$WORK/netstate --ovsdb $OPDBUS_OVSDB"
cat >"$WORK/net.yaml" <<'YAML'
version: 1
plugins:
  ovs:
    bridges:
      demo-br:
        datapath_type: netdev
        ports:
          demo-p1: {tag: 10, interfaces: {demo-p1: {type: internal}}}
  network:
    interfaces:
      - {name: demo-br, state: up, ipv4: {address: [{ip: 10.77.0.1, prefix_length: 24}]}}
    probes:
      - {ping: 10.77.0.1, timeout: 2s}
YAML
cat "$WORK/net.yaml"
show $NET diff "$WORK/net.yaml"
show $NET apply --yes "$WORK/net.yaml"
show nsenter -t "$OPDBUS_NET_PID" -m -p -n -- ip -br addr show dev demo-br
show nsenter -t "$OPDBUS_NET_PID" -m -p -n -- ovs-vsctl --db="$OPDBUS_OVSDB" list-ports demo-br

bold "check network: netlink, /sys/class/net and OVSDB agree (NetworkManager is not running here)"
show $NET check network

bold "A re-address whose probe fails (nobody answers 10.78.0.9): verification fails and the old address comes back"
sed -e 's/10.77.0.1, prefix/10.78.0.1, prefix/' -e 's/ping: 10.77.0.1/ping: 10.78.0.9/' "$WORK/net.yaml" >"$WORK/net-bad.yaml"
show $NET apply --yes "$WORK/net-bad.yaml"
show nsenter -t "$OPDBUS_NET_PID" -m -p -n -- ip -br addr show dev demo-br

bold "Done; tearing the test bed down"
