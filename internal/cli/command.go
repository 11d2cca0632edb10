package cli

import (
	"io"
	"os"

	"github.com/spf13/cobra"
)

// Command returns the op-dbus command tree, not executed, for tools that
// document it (man pages, shell completions) without running it. Its
// commands write to os.Stdout and os.Stderr if run.
func Command() *cobra.Command {
	var in io.Reader = os.Stdin
	return newRoot(&globals{stdin: in, stdout: os.Stdout, stderr: os.Stderr})
}
