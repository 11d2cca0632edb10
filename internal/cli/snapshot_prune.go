package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/op-dbus/op-dbus/internal/snapshot"
	"github.com/op-dbus/op-dbus/internal/statedir"
)

// pruneCorrupt adds --corrupt (and --dry-run) to `snapshot prune`: remove
// the snapshot manifests that cannot be read, which every other snapshot
// command skips with a warning. Each removal is recorded in the audit log.
func pruneCorrupt(g *globals, prune *cobra.Command) *cobra.Command {
	var corrupt, dryRun bool
	prune.Use = "prune --keep N | --max-age D | --corrupt [--dry-run]"
	prune.Long = `Delete old snapshots and the data only they used (--keep, --max-age), or
the snapshot manifests that cannot be read (--corrupt): truncated by a crash,
edited, or hit by a disk error. Applies and retention skip a damaged manifest
and record it in the audit log as "snapshot-damage"; nothing removes it but
--corrupt, which records each removal as "snapshot-prune". --dry-run with
--corrupt only lists them.`
	prune.Flags().BoolVar(&corrupt, "corrupt", false, "remove the snapshot manifests that cannot be read, recording each removal in the audit log")
	prune.Flags().BoolVar(&dryRun, "dry-run", false, "with --corrupt: only list the damaged manifests")
	prune.MarkFlagsMutuallyExclusive("corrupt", "keep")
	prune.MarkFlagsMutuallyExclusive("corrupt", "max-age")
	retention := prune.RunE
	prune.RunE = func(c *cobra.Command, args []string) error {
		if !corrupt {
			if dryRun {
				return &exitError{ExitError, errors.New("--dry-run goes with --corrupt")}
			}
			keep, _ := c.Flags().GetInt("keep")
			maxAge, _ := c.Flags().GetDuration("max-age")
			if keep <= 0 && maxAge <= 0 {
				return &exitError{ExitError, errors.New("say what to remove: --keep N and/or --max-age D, or --corrupt for damaged manifests")}
			}
			return retention(c, args)
		}
		f, err := g.format("text")
		if err != nil {
			return err
		}
		svc, done := g.service()
		defer done()
		list, err := svc.PruneCorruptSnapshots(dryRun)
		if perr := printPruneCorrupt(g, f, dryRun, list); perr != nil && err == nil {
			err = perr
		}
		if err != nil {
			return &exitError{ExitError, err}
		}
		return nil
	}
	return prune
}

// pruneCorruptResult is `snapshot prune --corrupt -o json`.
type pruneCorruptResult struct {
	DryRun bool `json:"dry_run"`
	// Manifests were removed, or with dry_run would be.
	Manifests []snapshot.Damaged `json:"manifests"`
}

func printPruneCorrupt(g *globals, f string, dryRun bool, list []snapshot.Damaged) error {
	if f != "text" {
		if list == nil {
			list = []snapshot.Damaged{}
		}
		return writeData(g.stdout, f, pruneCorruptResult{DryRun: dryRun, Manifests: list})
	}
	n := len(list)
	switch {
	case n == 0:
		fmt.Fprintln(g.stdout, "No damaged snapshot manifests.")
		return nil
	case dryRun:
		fmt.Fprintf(g.stdout, "Would remove %d damaged snapshot %s:\n", n, plural(n, "manifest", "manifests"))
	default:
		fmt.Fprintf(g.stdout, "Removed %d damaged snapshot %s (recorded in the audit log):\n", n, plural(n, "manifest", "manifests"))
	}
	for _, d := range list {
		fmt.Fprintf(g.stdout, "  %s\n      %s (%d %s)\n", d.Path, d.Reason, d.Size, plural(int(d.Size), "byte", "bytes"))
	}
	return nil
}

// warnDamaged makes `snapshot list` name, on stderr, the manifests it
// could not read and left out.
func warnDamaged(g *globals, list *cobra.Command) *cobra.Command {
	run := list.RunE
	list.RunE = func(c *cobra.Command, args []string) error {
		if err := run(c, args); err != nil {
			return err
		}
		st, err := snapshot.Open(statedir.New(g.stateDir).Snapshots())
		if err != nil {
			return &exitError{ExitError, err}
		}
		dmg, err := st.Damaged()
		if err != nil {
			return &exitError{ExitError, err}
		}
		for _, d := range dmg {
			fmt.Fprintf(g.stderr, "op-dbus: warning: %v\n", d)
		}
		return nil
	}
	return list
}
