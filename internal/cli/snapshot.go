package cli

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/op-dbus/op-dbus/internal/snapshot"
	"github.com/op-dbus/op-dbus/internal/statedir"
	"github.com/op-dbus/op-dbus/internal/txn"
)

func newSnapshotCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "snapshot",
		Short: "Capture, list, compare and restore whole-host states",
		Long: `Snapshots are full queried states, stored content-addressed under
STATE-DIR/snapshots: an unchanged state adds only a small manifest. Every apply
takes one first. Where STATE-DIR is a btrfs subvolume, a read-only btrfs
snapshot of it is taken as well.

After each new snapshot, the global --snapshot-keep and --snapshot-max-age
prune old ones; "op-dbus snapshot prune" does it on demand, and
"op-dbus snapshot prune --corrupt" removes manifests that cannot be read.`,
	}
	var tag string
	var plugins []string
	var keep int
	var maxAge time.Duration
	create := &cobra.Command{
		Use:   "create [--tag T] [-p PLUGIN]...",
		Short: "Capture the live state of every available plugin",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			svc, done := g.service()
			defer done()
			ctx, cancel := g.context()
			defer cancel()
			sn, err := svc.Snapshot(ctx, plugins, tag, keep, maxAge)
			if err != nil {
				return &exitError{ExitError, err}
			}
			return printSnapshots(g, []snapshot.Snapshot{*sn})
		},
	}
	create.Flags().StringVar(&tag, "tag", "", "a name to find the snapshot by")
	create.Flags().StringSliceVarP(&plugins, "plugin", "p", nil, "only these plugins (default: every available one)")
	create.Flags().IntVar(&keep, "keep", 0, "then keep only the newest N snapshots")
	create.Flags().DurationVar(&maxAge, "max-age", 0, "then delete snapshots older than this (e.g. 720h)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List snapshots, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			st, err := snapshot.Open(statedir.New(g.stateDir).Snapshots())
			if err != nil {
				return &exitError{ExitError, err}
			}
			all, err := st.List()
			if err != nil {
				return &exitError{ExitError, err}
			}
			return printSnapshots(g, all)
		},
	}
	showCmd := &cobra.Command{
		Use:   "show ID",
		Short: "Print a snapshot as a state document",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			st, sn, err := openSnapshot(g, args[0])
			if err != nil {
				return err
			}
			states, err := st.Load(sn)
			if err != nil {
				return &exitError{ExitError, err}
			}
			f, err := g.format("json")
			if err != nil {
				return err
			}
			if f == "text" {
				f = "json"
			}
			return writeData(g.stdout, f, map[string]any{"version": 1, "plugins": states})
		},
	}
	diff := &cobra.Command{
		Use:   "diff ID1 ID2",
		Short: "Show what changed between two snapshots, as ops from the first to the second",
		Args:  cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			e, done := g.engine()
			defer done()
			var docs [2]map[string]any
			for i, ref := range args {
				st, sn, err := openSnapshot(g, ref)
				if err != nil {
					return err
				}
				raw, err := st.Load(sn)
				if err != nil {
					return &exitError{ExitError, err}
				}
				doc, err := txn.DocumentFrom(e, raw, e.Validate)
				if err != nil {
					return &exitError{ExitError, fmt.Errorf("snapshot %s: %w", ref, err)}
				}
				docs[i] = doc.Plugins
			}
			ops, err := e.PlanBetween(docs[0], docs[1])
			if err != nil {
				return &exitError{ExitError, err}
			}
			f, err := g.format("text")
			if err != nil {
				return err
			}
			if f != "text" {
				if err := writeData(g.stdout, f, ops); err != nil {
					return err
				}
			} else {
				if len(ops) == 0 {
					fmt.Fprintln(g.stdout, "No differences.")
				}
				for _, op := range ops {
					fmt.Fprintf(g.stdout, "%s: %s\n", op.Plugin, op.Description)
					for _, ch := range op.Changes {
						fmt.Fprintf(g.stdout, "    %s: %s → %s\n", ch.Path, show(ch.Current), show(ch.Desired))
					}
				}
			}
			if len(ops) > 0 {
				return exitCode(ExitChanges)
			}
			return nil
		},
	}
	var t txnFlags
	restore := &cobra.Command{
		Use:   "restore ID",
		Short: "Make the host match a snapshot: plan, confirm, apply, verify, audit",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			svc, done := g.service()
			defer done()
			st, sn, err := openSnapshot(g, args[0])
			if err != nil {
				return err
			}
			raw, err := st.Load(sn)
			if err != nil {
				return &exitError{ExitError, err}
			}
			e := svc.Engine()
			doc, err := txn.DocumentFrom(e, raw, e.Validate)
			if err != nil {
				return &exitError{ExitError, fmt.Errorf("snapshot %s: %w", sn.ID, err)}
			}
			return runTransaction(g, svc, doc, "restore", t)
		},
	}
	t.register(restore)
	prune := &cobra.Command{
		Use:   "prune --keep N | --max-age D",
		Short: "Delete old snapshots and the data only they used",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if keep <= 0 && maxAge <= 0 {
				return &exitError{ExitError, fmt.Errorf("say what to keep: --keep N and/or --max-age D")}
			}
			svc, done := g.service()
			defer done()
			n, err := svc.PruneSnapshots(keep, maxAge)
			if err != nil {
				return &exitError{ExitError, err}
			}
			fmt.Fprintf(g.stdout, "Removed %d %s (recorded in the audit log).\n", n, plural(n, "snapshot", "snapshots"))
			return nil
		},
	}
	prune.Flags().IntVar(&keep, "keep", 0, "keep only the newest N snapshots")
	prune.Flags().DurationVar(&maxAge, "max-age", 0, "delete snapshots older than this (e.g. 720h)")
	c.AddCommand(create, warnDamaged(g, list), showCmd, diff, restore, pruneCorrupt(g, prune))
	return c
}

func openSnapshot(g *globals, ref string) (*snapshot.Store, *snapshot.Snapshot, error) {
	st, err := snapshot.Open(statedir.New(g.stateDir).Snapshots())
	if err != nil {
		return nil, nil, &exitError{ExitError, err}
	}
	sn, err := st.Get(ref)
	if err != nil {
		return nil, nil, &exitError{ExitError, err}
	}
	return st, sn, nil
}

func printSnapshots(g *globals, sns []snapshot.Snapshot) error {
	f, err := g.format("text")
	if err != nil {
		return err
	}
	if f != "text" {
		return writeList(g, f, sns)
	}
	if len(sns) == 0 {
		fmt.Fprintln(g.stdout, "No snapshots.")
		return nil
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tREASON\tTAG\tPLUGINS")
	for _, s := range sns {
		ps := slices.Sorted(maps.Keys(s.Plugins))
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.ID, s.Time.Local().Format(time.RFC3339), s.Reason, s.Tag, strings.Join(ps, ","))
	}
	return tw.Flush()
}
