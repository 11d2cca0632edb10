package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/op-dbus/op-dbus/internal/control"
	"github.com/op-dbus/op-dbus/internal/mcpserver"
)

func newMcpCmd(g *globals) *cobra.Command {
	var allowApply bool
	confirmWithin := mcpserver.DefaultConfirmWithin
	c := &cobra.Command{
		Use:   "mcp [--allow-apply [--confirm-within 120s]]",
		Short: "Serve the Model Context Protocol over stdio, for AI agents",
		Long: `Serve MCP (JSON-RPC over stdin/stdout) for clients such as Claude Desktop
or Cursor. Tools: query_state, introspect_bus, plan, verify, audit_log,
audit_verify, snapshot_list, history, check_network, search (and apply with
--allow-apply); resources opdbus://state and opdbus://state/{plugin}. See
docs/mcp.md for a client configuration. "op-dbus serve --mcp" serves the
same over HTTP.

Read-only by default. With --allow-apply the apply tool exists: it accepts
only a plan_hash that plan returned in this server, refuses when the host
changed since, and always runs under the confirm timer: unless someone runs
` + "`op-dbus commit`" + ` within --confirm-within, everything is rolled back. The
deadline is kept by a systemd timer, so it holds even if this server dies;
where no systemd answers, apply is refused unless the global
--confirm-in-process keeps the deadline in this process only. Every apply
and refusal is in the audit log with the client's name.

Diagnostics go to stderr; stdout carries only the protocol.`,
		Example: `  op-dbus mcp
  op-dbus mcp --allow-apply --confirm-within 5m`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if confirmWithin <= 0 {
				return &exitError{ExitError, fmt.Errorf("--confirm-within must be positive (an MCP apply always waits for op-dbus commit)")}
			}
			if !allowApply && confirmWithin != mcpserver.DefaultConfirmWithin {
				fmt.Fprintln(g.stderr, "op-dbus: mcp: --confirm-within has no effect without --allow-apply")
			}
			e, done := g.engine()
			defer done()
			svc := control.New(g.serviceOptions(e, "mcp"))
			srv := mcpserver.New(svc, mcpserver.Options{AllowApply: allowApply, ConfirmWithin: confirmWithin, Version: Version})
			// No --timeout here: the server lives as long as its client.
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			t := &mcpserver.StdioTransport{Reader: readCloser{g.stdin}, Writer: writeCloser{g.stdout}}
			if err := srv.Run(ctx, t); err != nil && ctx.Err() == nil {
				return &exitError{ExitError, fmt.Errorf("mcp: %w", err)}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&allowApply, "allow-apply", false, "offer the apply tool (plans from this server only, always under the confirm timer)")
	c.Flags().DurationVar(&confirmWithin, "confirm-within", confirmWithin, "with --allow-apply: roll an apply back unless op-dbus commit runs within this long")
	return c
}

// readCloser and writeCloser give the transport the command's stdin and
// stdout without letting it close them.
type readCloser struct{ io.Reader }

func (readCloser) Close() error { return nil }

type writeCloser struct{ io.Writer }

func (writeCloser) Close() error { return nil }
