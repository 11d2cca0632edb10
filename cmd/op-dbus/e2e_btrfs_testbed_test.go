package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

// With the state directory on a btrfs subvolume, every snapshot (and so
// every apply) also takes a read-only btrfs snapshot of it. The loop mount
// lives in a private mount namespace and dies with it.
func TestTestbedBtrfsSnapshotOfStateDir(t *testing.T) {
	testbed.Program(t, "mkfs.btrfs", "btrfs-progs")
	testbed.Program(t, "btrfs", "btrfs-progs")
	testbed.Program(t, "unshare", "util-linux")
	_, env := identityBed(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 256<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.btrfs", "-q", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.btrfs: %v %s", err, out)
	}
	doc := writeFile(t, dir, "d.json", `{"version":1,"plugins":{"hostname":{"location":"on btrfs"}}}`)
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	script := `set -e
mount -o loop "$IMG" "$MNT"
trap 'umount "$MNT"' EXIT
btrfs subvolume create "$MNT/state" >/dev/null
"$BIN" --state-dir="$MNT/state" apply --yes "$DOC" >/dev/null
for s in "$MNT"/state/.btrfs-snapshots/*; do
  echo "snapshot $(basename "$s") $(btrfs property get -ts "$s" ro)"
done
test -d "$MNT"/state/.btrfs-snapshots/*/audit || true
ls "$MNT"/state/.btrfs-snapshots/*/
`
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "-m", "--propagation", "private", "sh", "-c", script)
	cmd.Env = append(append(os.Environ(), env...), "IMG="+img, "MNT="+mnt, "BIN="+binary, "DOC="+doc)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(string(out), "ro=true") {
		t.Fatalf("no read-only btrfs snapshot of the state dir:\n%s", out)
	}
	if !strings.Contains(string(out), "snapshots") {
		t.Errorf("the btrfs snapshot does not hold the state dir's content:\n%s", out)
	}
}
