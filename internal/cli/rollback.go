package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newRollbackCmd(g *globals) *cobra.Command {
	var t txnFlags
	c := &cobra.Command{
		Use:   "rollback",
		Short: "Restore what the last apply changed to its state before that apply",
		Long: `Restore every item the last successful apply changed to its state just before
that apply, as a new transaction: plan, confirm, apply, verify, audit. Changes
made since to items that apply did not touch are left alone.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			svc, done := g.service()
			defer done()
			doc, last, err := svc.LastDocument()
			if err != nil {
				return &exitError{ExitError, err}
			}
			if g.output == "" || g.output == "text" {
				fmt.Fprintf(g.stdout, "Rolling back the apply of %s (document %s).\n\n", last.Time.Local().Format(time.RFC3339), short(last.Document))
			}
			return runTransaction(g, svc, doc, "rollback", t)
		},
	}
	t.register(c)
	return c
}

func short(h string) string {
	h = strings.TrimPrefix(h, "sha256:")
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
