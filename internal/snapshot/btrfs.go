package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const btrfsMagic = 0x9123683E

// BtrfsSubvolume reports whether dir is the root of a btrfs subvolume (the
// only thing `btrfs subvolume snapshot` can snapshot): on btrfs, and its
// inode number is 256.
func BtrfsSubvolume(dir string) bool {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil || uint32(fs.Type) != btrfsMagic {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return false
	}
	return st.Ino == 256
}

// BtrfsSnapshot takes a read-only snapshot of the subvolume dir at
// dir/.btrfs-snapshots/<name> with btrfs-progs. The snapshot does not
// contain earlier snapshots: btrfs leaves nested subvolumes out.
func BtrfsSnapshot(ctx context.Context, dir, name string) (string, error) {
	bin, err := exec.LookPath("btrfs")
	if err != nil {
		return "", fmt.Errorf("state dir is on btrfs but the btrfs command is missing (install btrfs-progs)")
	}
	parent := filepath.Join(dir, ".btrfs-snapshots")
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return "", err
	}
	dst := filepath.Join(parent, name)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "subvolume", "snapshot", "-r", dir, dst).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("btrfs subvolume snapshot -r %s %s: %v: %s", dir, dst, err, out)
	}
	return dst, nil
}

// BtrfsPrune deletes the read-only btrfs snapshots under dir/.btrfs-snapshots
// whose snapshot ID (the name's part after the last "-", as BtrfsSnapshot's
// callers name them "<time>-<id>") keep rejects, so btrfs snapshots follow
// the same retention as the stored snapshots. It returns the paths it
// deleted, and stops at the first deletion that fails.
func BtrfsPrune(ctx context.Context, dir string, keep func(id string) bool) ([]string, error) {
	parent := filepath.Join(dir, ".btrfs-snapshots")
	entries, err := os.ReadDir(parent)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	bin, err := exec.LookPath("btrfs")
	if err != nil {
		return nil, fmt.Errorf("state dir is on btrfs but the btrfs command is missing (install btrfs-progs)")
	}
	var removed []string
	for _, e := range entries {
		i := strings.LastIndexByte(e.Name(), '-')
		if !e.IsDir() || i < 0 || keep(e.Name()[i+1:]) {
			continue
		}
		p := filepath.Join(parent, e.Name())
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		out, err := exec.CommandContext(cctx, bin, "subvolume", "delete", p).CombinedOutput()
		cancel()
		if err != nil {
			return removed, fmt.Errorf("btrfs subvolume delete %s: %v: %s", p, err, out)
		}
		removed = append(removed, p)
	}
	return removed, nil
}
