package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"

	"github.com/spf13/cobra"

	"github.com/op-dbus/op-dbus/internal/dbusx"
	"github.com/op-dbus/op-dbus/internal/nixos"
	"github.com/op-dbus/op-dbus/internal/plugins/systemd"
	"github.com/op-dbus/op-dbus/internal/snapshot"
	"github.com/op-dbus/op-dbus/internal/state"
	"github.com/op-dbus/op-dbus/internal/statedir"
)

func newNixosCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "nixos",
		Short: "Write a NixOS configuration from the host's state",
	}
	c.AddCommand(newNixosGenerateCmd(g))
	return c
}

func newNixosGenerateCmd(g *globals) *cobra.Command {
	var out, from, unitRoot string
	var force bool
	c := &cobra.Command{
		Use:   "generate [--out DIR] [--from STATE.json|SNAPSHOT]",
		Short: "Write flake.nix, host.nix, network.nix, services.nix and op-dbus-state.nix",
		Long: `Query the live host (or read a saved state document or snapshot with --from)
and write a NixOS configuration into DIR:

  flake.nix          one nixosConfigurations entry for this host
  host.nix           hostname, time zone, locale, console and X11 keymap
  network.nix        interfaces, bridges, routes, Open vSwitch, NetworkManager
                     profiles and WireGuard (private keys only as file paths)
  services.nix       enabled units as NixOS options, or rebuilt definitions
                     of units under /etc/systemd/system, or listed with why not
  op-dbus-state.nix  the whole state as a Nix attribute set
  REPORT.md          what was captured, mapped and left out

The same state gives the same bytes. A DIR holding other files is refused
unless --force; files op-dbus does not write are never touched.`,
		Example: `  op-dbus nixos generate --out ./nixos
  op-dbus nixos generate --from host.json --out ./nixos
  op-dbus nixos generate --from before-upgrade --out ./nixos   # a snapshot ID or tag`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			f, err := g.format("text")
			if err != nil {
				return err
			}
			svc, done := g.service()
			defer done()
			e := svc.Engine()
			ctx, cancel := g.context()
			defer cancel()
			in := nixos.Input{System: nixSystem()}
			var doc *state.Document
			// The whole-host query rule: an unavailable plugin is noted in
			// REPORT.md; one that failed although available fails the
			// command (after the files are written, so nothing is lost).
			var queryErr error
			switch {
			case from == "":
				res, err := svc.Query(ctx, nil)
				if err != nil {
					return &exitError{ExitError, err}
				}
				queryErr = res.Err()
				in.Errors = map[string]string{}
				for n, msg := range res.Unavailable {
					in.Errors[n] = msg
				}
				for n, msg := range res.Errors {
					in.Errors[n] = msg
					fmt.Fprintf(g.stderr, "op-dbus: query: %s: %s\n", n, msg)
				}
				b, err := json.Marshal(map[string]any{"version": state.Version, "plugins": res.Plugins})
				if err != nil {
					return &exitError{ExitError, err}
				}
				if doc, err = state.Decode(b, state.FormatJSON, e.Types(), e.Validate); err != nil {
					return &exitError{ExitError, fmt.Errorf("the live state does not validate: %w", err)}
				}
				in.Source = "the live host"
				if g.user {
					in.Source += " (user service manager)"
				}
				if err := readUnitDefs(ctx, g, doc, unitRoot, &in); err != nil {
					fmt.Fprintf(g.stderr, "op-dbus: nixos: unit definitions not rebuilt: %v\n", err)
					in.DefaultSkip = "unit definitions could not be read: " + err.Error()
				}
			default:
				doc, in.Source, err = loadFrom(g, e.Types(), e.Validate, from)
				if err != nil {
					return &exitError{ExitError, err}
				}
				in.DefaultSkip = "no NixOS option in the service map (unit definitions are rebuilt only from the live host, not from --from)"
			}
			in.Doc, err = doc.CanonicalJSON()
			if err != nil {
				return &exitError{ExitError, err}
			}
			files, err := nixos.Generate(in)
			if err != nil {
				return &exitError{ExitError, fmt.Errorf("nixos generate: %w", err)}
			}
			if err := nixos.WriteDir(out, files, force); err != nil {
				return &exitError{ExitError, err}
			}
			names := append(files.Names(), []string{}...)
			if f != "text" {
				if err := writeData(g.stdout, f, map[string]any{"out": out, "files": names, "source": in.Source}); err != nil {
					return err
				}
				if queryErr != nil {
					return &exitError{ExitError, fmt.Errorf("nixos generate: the configuration lacks a plugin that failed: %w", queryErr)}
				}
				return nil
			}
			fmt.Fprintf(g.stdout, "Wrote %d files to %s from %s (see %s).\n", len(names), out, in.Source, filepath.Join(out, "REPORT.md"))
			if queryErr != nil {
				return &exitError{ExitError, fmt.Errorf("nixos generate: the configuration lacks a plugin that failed: %w", queryErr)}
			}
			return nil
		},
	}
	fl := c.Flags()
	fl.StringVar(&out, "out", "nixos", "directory to write the configuration into")
	fl.StringVar(&from, "from", "", "read this state document (JSON or YAML), or this snapshot ID or tag, instead of the live host")
	fl.BoolVar(&force, "force", false, "write into a directory that holds other files (they are left alone)")
	fl.StringVar(&unitRoot, "unit-root", "", "directory of administrator-written units (default /etc/systemd/system; with --user $XDG_CONFIG_HOME/systemd/user)")
	_ = fl.MarkHidden("unit-root")
	return c
}

// loadFrom reads a state document, or, when no such file exists, a
// snapshot by ID or tag.
func loadFrom(g *globals, types state.Types, validate state.Validator, from string) (*state.Document, string, error) {
	if _, err := os.Stat(from); err == nil || from == "-" {
		doc, err := state.Load(from, types, validate)
		return doc, "the state document " + from, err
	}
	st, err := snapshot.Open(statedir.New(g.stateDir).Snapshots())
	if err != nil {
		return nil, "", fmt.Errorf("--from %s: no such file, and no snapshot store: %w", from, err)
	}
	sn, err := st.Get(from)
	if err != nil {
		return nil, "", fmt.Errorf("--from %s: no such file; as a snapshot: %w", from, err)
	}
	raw, err := st.Load(sn)
	if err != nil {
		return nil, "", err
	}
	b, err := json.Marshal(map[string]any{"version": state.Version, "plugins": raw})
	if err != nil {
		return nil, "", err
	}
	doc, err := state.Decode(b, state.FormatJSON, types, validate)
	return doc, "snapshot " + sn.ID, err
}

// readUnitDefs rebuilds the enabled units an administrator wrote.
func readUnitDefs(ctx context.Context, g *globals, doc *state.Document, root string, in *nixos.Input) error {
	ss, ok := doc.Plugins["systemd"].(*systemd.State)
	if !ok || ss == nil {
		return nil
	}
	var names []string
	for n, u := range ss.Units {
		if u != nil && (u.Enabled != nil && *u.Enabled || u.UnitFileState == "enabled") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	bus := dbusx.System
	if root == "" {
		root = nixos.AdminUnitDir
	}
	if g.user {
		bus = dbusx.Session
		if root == nixos.AdminUnitDir {
			root = userUnitDir()
		}
	}
	defs, skipped, err := nixos.ReadUnits(ctx, bus, root, names)
	if err != nil {
		return err
	}
	in.Units, in.Skipped = defs, skipped
	return nil
}

func userUnitDir() string {
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "systemd", "user")
	}
	h, _ := os.UserHomeDir()
	return filepath.Join(h, ".config", "systemd", "user")
}

func nixSystem() string {
	arch := map[string]string{"amd64": "x86_64", "arm64": "aarch64", "386": "i686", "riscv64": "riscv64", "ppc64le": "powerpc64le"}[runtime.GOARCH]
	if arch == "" {
		arch = runtime.GOARCH
	}
	return arch + "-linux"
}
