package cli

import (
	"fmt"
	"maps"
	"slices"

	"github.com/spf13/cobra"
)

func newQueryCmd(g *globals) *cobra.Command {
	var only []string
	c := &cobra.Command{
		Use:   "query [-p PLUGIN]...",
		Short: "Print the live state of the host as a state document",
		Long: `Print the live state of every available plugin (or those named with -p) as a
state document. The output is itself a valid desired state: applying it to an
unchanged host plans nothing, and after an out-of-band change it plans exactly
the ops that restore what was captured.

Plugins whose service is absent on this host (no NetworkManager, no Open
vSwitch) are listed under "unavailable"; plugins that failed although their
service is there are listed under "errors". Both keys are ignored on input and
both are also said on stderr. The exit code is 1 when a plugin failed, or when
a plugin named with -p is unavailable; an unavailable plugin of a whole-host
query is only reported (exit 0).`,
		Example: `  op-dbus query > now.json
  op-dbus query -p systemd -o yaml
  op-dbus --user query -p systemd`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			f, err := g.format("json")
			if err != nil {
				return err
			}
			if f == "text" {
				f = "json"
			}
			svc, done := g.service()
			defer done()
			ctx, cancel := g.context()
			defer cancel()
			res, err := svc.Query(ctx, only)
			if err != nil {
				return &exitError{ExitError, err}
			}
			for _, n := range slices.Sorted(maps.Keys(res.Unavailable)) {
				fmt.Fprintf(g.stderr, "op-dbus: query: %s: %v\n", n, res.Failure(n))
			}
			for _, n := range slices.Sorted(maps.Keys(res.Errors)) {
				fmt.Fprintf(g.stderr, "op-dbus: query: %s: %v\n", n, res.Failure(n))
			}
			if err := writeData(g.stdout, f, res); err != nil {
				return err
			}
			if res.Err() != nil {
				return exitCode(ExitError)
			}
			return nil
		},
	}
	c.Flags().StringSliceVarP(&only, "plugin", "p", nil, "query only this plugin (repeatable)")
	return c
}
