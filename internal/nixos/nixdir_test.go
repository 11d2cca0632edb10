package nixos

import (
	"path/filepath"
	"testing"
)

// The module, package and flake of op-dbus itself parse.
func TestRepositoryNixFilesParse(t *testing.T) {
	needNix(t)
	files, _ := filepath.Glob("../../nix/*.nix")
	files = append(files, "../../flake.nix")
	if len(files) < 4 {
		t.Fatalf("found only %v", files)
	}
	for _, f := range files {
		nixParse(t, f)
	}
}
