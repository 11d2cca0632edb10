package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

// With the state directory on a btrfs subvolume, every snapshot (and so
// every apply) also takes a read-only btrfs snapshot of it. The loop mount
// lives in a private mount namespace and dies with it.
func TestTestbedBtrfsSnapshotOfStateDir(t *testing.T) {
	_, env := identityBed(t)
	dir := t.TempDir()
	img := btrfsImage(t, dir)
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

// btrfs snapshots of the state directory follow the same retention as the
// stored snapshots: after three applies with --snapshot-keep 2, two btrfs
// snapshots are left, named after the two snapshots `snapshot list` keeps,
// and the deletion is in the audit log.
func TestTestbedBtrfsSnapshotsPruned(t *testing.T) {
	_, env := identityBed(t)
	dir := t.TempDir()
	img := btrfsImage(t, dir)
	for i := 1; i <= 3; i++ {
		writeFile(t, dir, fmt.Sprintf("d%d.json", i), fmt.Sprintf(`{"version":1,"plugins":{"hostname":{"location":"btrfs %d"}}}`, i))
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	script := `set -e
mount -o loop "$IMG" "$MNT"
trap 'umount "$MNT"' EXIT
btrfs subvolume create "$MNT/state" >/dev/null
for i in 1 2 3; do "$BIN" --state-dir="$MNT/state" --snapshot-keep=2 apply --yes "$DIR/d$i.json" >/dev/null 2>&1; done
echo "btrfs:"; ls "$MNT/state/.btrfs-snapshots"
echo "list:"; "$BIN" --state-dir="$MNT/state" snapshot list -o json
echo "audit:"; "$BIN" --state-dir="$MNT/state" audit log -o json
`
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "-m", "--propagation", "private", "sh", "-c", script)
	cmd.Env = append(append(os.Environ(), env...), "IMG="+img, "MNT="+mnt, "BIN="+binary, "DIR="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	btrfsPart, rest, _ := strings.Cut(strings.TrimPrefix(string(out), "btrfs:\n"), "list:\n")
	listPart, auditPart, _ := strings.Cut(rest, "audit:\n")
	var snaps []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(listPart), &snaps); err != nil || len(snaps) != 2 {
		t.Fatalf("snapshot list: %v\n%s", err, out)
	}
	names := strings.Fields(btrfsPart)
	if len(names) != 2 {
		t.Fatalf("%d btrfs snapshots after 3 applies with --snapshot-keep 2, want 2: %v", len(names), names)
	}
	for _, sn := range snaps {
		if !slices.ContainsFunc(names, func(n string) bool { return strings.HasSuffix(n, "-"+sn.ID) }) {
			t.Errorf("kept snapshot %s has no btrfs snapshot: %v", sn.ID, names)
		}
	}
	if !strings.Contains(auditPart, "pruned btrfs snapshots") {
		t.Errorf("the btrfs pruning is not in the audit log:\n%s", auditPart)
	}
}

// btrfsImage makes a 256 MiB btrfs image file in dir (mounted by the tests
// inside a private mount namespace), failing in CI without btrfs-progs.
func btrfsImage(t *testing.T, dir string) string {
	t.Helper()
	testbed.Program(t, "mkfs.btrfs", "btrfs-progs")
	testbed.Program(t, "btrfs", "btrfs-progs")
	testbed.Program(t, "unshare", "util-linux")
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
	return img
}
