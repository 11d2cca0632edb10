package netcheck

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Sysfs reads /sys/class/net: existence, administrative state (IFF_UP in
// flags), MTU and master. It knows no addresses. Root is the sysfs mount
// ("/sys" when empty); it must belong to the network namespace being
// checked, which is true for /sys in the namespace op-dbus runs in.
type Sysfs struct{ Root string }

// Name implements Source.
func (Sysfs) Name() string { return "sysfs" }

const iffUp = 0x1

// Observe implements Source.
func (s Sysfs) Observe(ctx context.Context) ([]Observation, error) {
	root := s.Root
	if root == "" {
		root = "/sys"
	}
	dir := filepath.Join(root, "class", "net")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	var out []Observation
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		name := e.Name()
		if name == "bonding_masters" {
			continue // a control file, not an interface
		}
		o := Observation{Source: "sysfs", Interface: name, Exists: true, KnownMaster: true}
		base := filepath.Join(dir, name)
		flags, err := readTrim(filepath.Join(base, "flags"))
		if errors.Is(err, os.ErrNotExist) {
			continue // vanished while we read
		}
		if err != nil {
			return nil, err
		}
		f, err := strconv.ParseUint(strings.TrimPrefix(flags, "0x"), 16, 32)
		if err != nil {
			return nil, fmt.Errorf("%s/flags: %q is not a hex number", base, flags)
		}
		o.State = "down"
		if f&iffUp != 0 {
			o.State = "up"
		}
		if mtu, err := readTrim(filepath.Join(base, "mtu")); err == nil {
			o.MTU, _ = strconv.Atoi(mtu)
		}
		if link, err := os.Readlink(filepath.Join(base, "master")); err == nil {
			o.Master = filepath.Base(link)
		}
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Interface < out[j].Interface })
	return out, nil
}

func readTrim(path string) (string, error) {
	b, err := os.ReadFile(path)
	return strings.TrimSpace(string(b)), err
}
