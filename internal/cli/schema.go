package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/op-dbus/op-dbus/internal/state"
)

func newSchemaCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of the state document",
		Long:  "Print the JSON Schema (draft 2020-12) of the state document, generated from the plugins' Go types.",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			e, done := g.engine()
			defer done()
			b, err := state.Schema(e.Types())
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(g.stdout, "%s\n", b)
			return err
		},
	}
}

func newPluginsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "plugins",
		Short: "List plugins and whether each can work on this host",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			f, err := g.format("text")
			if err != nil {
				return err
			}
			e, done := g.engine()
			defer done()
			ctx, cancel := g.context()
			defer cancel()
			type row struct {
				Name      string `json:"name"`
				Available bool   `json:"available"`
				Reason    string `json:"reason,omitempty"`
			}
			rows := make([]row, len(e.Names()))
			errs := make(chan struct{}, len(rows))
			for i, n := range e.Names() {
				go func() {
					p, _ := e.Plugin(n)
					r := row{Name: n, Available: true}
					if err := p.Available(ctx); err != nil {
						r.Available, r.Reason = false, err.Error()
					}
					rows[i] = r
					errs <- struct{}{}
				}()
			}
			for range rows {
				<-errs
			}
			if f != "text" {
				return writeData(g.stdout, f, rows)
			}
			pal := g.colors()
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PLUGIN\tAVAILABLE\tREASON")
			for _, r := range rows {
				a := pal.green("yes")
				if !r.Available {
					a = pal.red("no ")
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Name, a, r.Reason)
			}
			return tw.Flush()
		},
	}
}
