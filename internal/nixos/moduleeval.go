package nixos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// EvalModule evaluates op-dbus's NixOS module (nix/module.nix under
// repoRoot) offline, through nix/eval-module.nix: nixpkgs' lib/ at
// nixpkgsLib, stub NixOS options and a stub pkgs. config is a Nix
// expression for a module, such as
// `{ services.op-dbus = { enable = true; state.version = 1; }; }`; attr
// picks what to print (service, oneshot, timer, etc, tmpfiles,
// failedAssertions; see that file). The result is its JSON. nixInstantiate
// is the nix-instantiate program; stateDir, when not empty, is used as
// NIX_STATE_DIR and HOME so nothing is written elsewhere.
func EvalModule(ctx context.Context, nixInstantiate, repoRoot, nixpkgsLib, config, attr, stateDir string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, nixInstantiate, "--eval", "--strict", "--json",
		filepath.Join(repoRoot, "nix", "eval-module.nix"),
		"--argstr", "nixpkgsLib", nixpkgsLib,
		"--arg", "config", config,
		"-A", attr)
	cmd.Env = os.Environ()
	if stateDir != "" {
		cmd.Env = append(cmd.Env, "NIX_STATE_DIR="+stateDir, "HOME="+stateDir)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("evaluate nix/module.nix (-A %s) with %s: %w\n%s", attr, config, err, stderr.String())
	}
	return out, nil
}

// ModuleUnitFile evaluates the module with config (as EvalModule does) and
// renders the unit it makes, attr "service" (op-dbus.service), "oneshot"
// (op-dbus-oneshot.service) or "timer" (op-dbus-oneshot.timer), into unit
// file text with RenderUnitFile. The Exec lines name the stub store paths
// /nix/store/00000000000000000000000000000000-op-dbus (and -coreutils):
// replace them with a real binary's directory to start the unit on a
// systemd host.
func ModuleUnitFile(ctx context.Context, nixInstantiate, repoRoot, nixpkgsLib, config, attr, stateDir string) (string, SystemdService, error) {
	out, err := EvalModule(ctx, nixInstantiate, repoRoot, nixpkgsLib, config, attr, stateDir)
	if err != nil {
		return "", SystemdService{}, err
	}
	var svc SystemdService
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(&svc); err != nil {
		return "", SystemdService{}, fmt.Errorf("decode the module's %s: %w", attr, err)
	}
	text, err := RenderUnitFile(svc)
	return text, svc, err
}
