package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func newCommitCmd(g *globals) *cobra.Command {
	wait := 10 * time.Second
	c := &cobra.Command{
		Use:   "commit",
		Short: "Confirm an apply that waits for confirmation (apply --confirm-within)",
		Long: `Confirm the apply that is waiting in another shell (started with
--confirm-within), or one waiting in "op-dbus serve" or "op-dbus mcp".
Without a commit in time, that apply rolls every change back (the systemd
timer keeping its deadline runs "op-dbus recover --if-deadline-passed").`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			svc, done := g.service()
			defer done()
			if err := svc.Commit(wait); err != nil {
				return &exitError{ExitError, err}
			}
			fmt.Fprintln(g.stdout, g.colors().green("Committed: the changes stay."))
			return nil
		},
	}
	c.Flags().DurationVar(&wait, "wait", wait, "how long to wait for the apply to acknowledge")
	return c
}
