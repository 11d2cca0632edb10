package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/op-dbus/op-dbus/internal/netcheck"
)

func newCheckCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "check",
		Short: "Compare what several sources say about the host",
		Long: `Compare what several sources say about the host.

  op-dbus check network    netlink, NetworkManager, OVSDB and /sys/class/net
                           on every interface (exit 2 when they disagree)`,
	}
	c.AddCommand(newCheckNetworkCmd(g))
	return c
}

func newCheckNetworkCmd(g *globals) *cobra.Command {
	var showAll bool
	c := &cobra.Command{
		Use:   "network",
		Short: "Compare netlink, NetworkManager, OVSDB and /sys/class/net on every interface",
		Long: `Ask every network source what it knows about each interface (existence,
administrative state, MTU, addresses, bridge membership) and print a table of
the fields on which they disagree, with the value each source gives.

Sources: netlink (the kernel, through rtnetlink), sysfs (/sys/class/net),
networkmanager (org.freedesktop.NetworkManager, when running) and ovsdb
(ovsdb-server at --ovsdb, when running). A source that is not running is
listed as unavailable and left out. netlink, sysfs and NetworkManager list
every interface, so an interface they lack is "missing" to them; OVSDB knows
only its own ports and has no opinion on the rest. A field a source cannot
know (sysfs has no addresses, OVSDB no kernel state) is never compared.

Exit codes: 0 all sources agree, 2 some disagree, 1 error (no source usable).`,
		Example: `  op-dbus check network
  op-dbus check network --all       # every interface, not only disagreements
  op-dbus check network -o json     # sources, observations and disagreements`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			format, err := g.format("text")
			if err != nil {
				return err
			}
			ctx, cancel := g.context()
			defer cancel()
			e, done := g.engine()
			defer done()
			inputs := netcheck.Inputs(ctx, e.Plugin)
			rep, err := netcheck.Check(ctx, inputs)
			if err != nil {
				return &exitError{ExitError, fmt.Errorf("check network: %w", err)}
			}
			if format == "text" {
				printCheck(g, rep, showAll)
			} else if err := writeData(g.stdout, format, rep); err != nil {
				return err
			}
			if len(rep.Disagreements) > 0 {
				return &exitError{code: ExitChanges}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&showAll, "all", false, "print every interface with every source's values, not only disagreements")
	return c
}

func printCheck(g *globals, rep *netcheck.Report, all bool) {
	col := g.colors()
	var avail []string
	for _, s := range rep.Sources {
		if s.Available {
			fmt.Fprintf(g.stdout, "%s %s: %d interfaces\n", col.green("✓"), s.Name, s.Interfaces)
			avail = append(avail, s.Name)
		} else {
			fmt.Fprintf(g.stdout, "%s %s: not consulted: %s\n", col.yellow("-"), s.Name, s.Error)
		}
	}
	fmt.Fprintln(g.stdout)
	rows := rep.Disagreements
	if all {
		rows = allRows(rep)
	}
	if len(rows) > 0 {
		tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
		head := []string{"INTERFACE", "FIELD"}
		for _, s := range avail {
			head = append(head, strings.ToUpper(s))
		}
		fmt.Fprintln(tw, strings.Join(head, "\t"))
		for _, d := range rows {
			cells := []string{d.Interface, d.Field}
			for _, s := range avail {
				v, ok := d.Values[s]
				if !ok {
					v = "-"
				}
				cells = append(cells, v)
			}
			fmt.Fprintln(tw, strings.Join(cells, "\t"))
		}
		tw.Flush()
		fmt.Fprintln(g.stdout)
	}
	if n := len(rep.Disagreements); n > 0 {
		ifs := map[string]bool{}
		for _, d := range rep.Disagreements {
			ifs[d.Interface] = true
		}
		fmt.Fprintln(g.stdout, col.red(fmt.Sprintf("%d disagreement(s) on %d of %d interfaces.", n, len(ifs), len(rep.Interfaces))))
		return
	}
	if len(avail) < 2 {
		fmt.Fprintf(g.stdout, "Only %d source could be consulted: nothing to compare (%d interfaces).\n", len(avail), len(rep.Interfaces))
		return
	}
	fmt.Fprintln(g.stdout, col.green(fmt.Sprintf("All %d sources agree on %d interfaces.", len(avail), len(rep.Interfaces))))
}

// allRows is every field of every interface, for --all.
func allRows(rep *netcheck.Report) []netcheck.Disagreement {
	vals := map[[2]string]map[string]string{}
	for _, o := range rep.Observations {
		for _, f := range netcheck.Fields {
			k := [2]string{o.Interface, f}
			if vals[k] == nil {
				vals[k] = map[string]string{}
			}
			if v := netcheck.Field(f, o); v != "" {
				vals[k][o.Source] = v
			}
		}
	}
	var out []netcheck.Disagreement
	for _, ifname := range rep.Interfaces {
		for _, f := range netcheck.Fields {
			if v := vals[[2]string{ifname, f}]; len(v) > 0 {
				out = append(out, netcheck.Disagreement{Interface: ifname, Field: f, Values: v})
			}
		}
	}

	return out
}
