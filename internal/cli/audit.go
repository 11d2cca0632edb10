package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/ledger"
	"github.com/op-dbus/op-dbus/internal/statedir"
)

func (g *globals) auditDir() string { return statedir.New(g.stateDir).Audit() }

// openAuditRead opens an existing log for reading; it never creates one.
func (g *globals) openAuditRead() (*ledger.Log, error) {
	if !ledger.Exists(g.auditDir()) {
		return nil, &exitError{ExitError, fmt.Errorf("no audit log in %s yet (it is written by the first apply)", g.auditDir())}
	}
	l, err := ledger.Open(g.auditDir())
	if err != nil {
		return nil, &exitError{ExitError, err}
	}
	for _, r := range l.Repairs() {
		fmt.Fprintf(g.stderr, "op-dbus: audit log %s repaired after an interrupted append: %s\n", g.auditDir(), r)
	}
	if err := l.Corrupt(); err != nil {
		fmt.Fprintf(g.stderr, "op-dbus: %v\n", err)
	}
	return l, nil
}

// withAudit runs fn with the existing audit log open for reading.
func (g *globals) withAudit(fn func(l *ledger.Log) error) error {
	l, err := g.openAuditRead()
	if err != nil {
		return err
	}
	defer l.Close()
	return fn(l)
}

// parseSeq reads an entry number or size argument.
func parseSeq(arg, what string) (uint64, error) {
	n, err := strconv.ParseUint(arg, 10, 64)
	if err != nil {
		return 0, &exitError{ExitError, fmt.Errorf("%s %q: want a non-negative integer", what, arg)}
	}
	return n, nil
}

func newAuditCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "audit",
		Short: "The tamper-evident audit log: list, show, verify, prove",
		Long: `Every apply, rollback, snapshot restore, crash recovery and refused request
is an entry of an append-only Merkle log (RFC 6962 hashing) under
STATE-DIR/audit, with a checkpoint signed by the host's ed25519 key after
every append. See docs/audit.md.`,
	}
	var since string
	var plugin string
	logCmd := &cobra.Command{
		Use:   "log [--since T] [--plugin P]",
		Short: "List entries",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			var from time.Time
			if since != "" {
				t, err := parseSince(since)
				if err != nil {
					return &exitError{ExitError, err}
				}
				from = t
			}
			return g.withAudit(func(l *ledger.Log) error {
				es, err := l.Entries(0, func(e ledger.Entry) bool {
					return !e.Time.Before(from) && (plugin == "" || slices.Contains(e.Plugins, plugin))
				})
				if err != nil {
					return &exitError{ExitError, err}
				}
				f, err := g.format("text")
				if err != nil {
					return err
				}
				if f != "text" {
					return writeList(g, f, es)
				}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SEQ\tTIME\tKIND\tRESULT\tSOURCE\tUSER\tPLUGINS\tOPS\tMESSAGE")
				for _, e := range es {
					who := e.Actor.User
					if who == "" {
						who = strconv.Itoa(e.Actor.UID)
					}
					msg := e.Message
					if len(msg) > 70 {
						msg = msg[:67] + "..."
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", e.Seq, e.Time.Local().Format(time.RFC3339), e.Kind, e.Result, e.Source, who, strings.Join(e.Plugins, ","), len(e.Ops), msg)
				}
				return tw.Flush()
			})
		},
	}
	logCmd.Flags().StringVar(&since, "since", "", "only entries at or after this time (RFC 3339, a date, or a duration such as 24h)")
	logCmd.Flags().StringVar(&plugin, "plugin", "", "only entries touching this plugin")

	show := &cobra.Command{
		Use:   "show N",
		Short: "Print entry N in full",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			n, err := parseSeq(args[0], "entry number")
			if err != nil {
				return err
			}
			return g.withAudit(func(l *ledger.Log) error {
				e, err := l.Get(n)
				if err != nil {
					return &exitError{ExitError, fmt.Errorf("audit show %d: %w (entries are numbered from 0)", n, err)}
				}
				f, _ := g.format("json")
				if f == "text" {
					f = "json"
				}
				return writeData(g.stdout, f, e)
			})
		},
	}
	var fast bool
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Recompute every leaf and root and check every signed checkpoint",
		Long: `Recompute every leaf and root and check every signed checkpoint.

Exit status 0 only for a clean log. It is 1 when the log is damaged (each
problem is printed with its file and offset; nothing is changed) and also
when opening it had to repair it: cutting the tail of an append that was
interrupted before it was acknowledged (the cut bytes are kept under
STATE-DIR/audit/repairs/). A repaired log verifies afterwards, so the next
run exits 0.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return g.withAudit(func(l *ledger.Log) error {
				rep, verr := l.VerifyWith(ledger.VerifyOptions{LatestSignatureOnly: fast})
				if verr != nil && !errors.Is(verr, ledger.ErrVerify) {
					return &exitError{ExitError, fmt.Errorf("audit verify %s: %w", g.auditDir(), verr)}
				}
				f, _ := g.format("text")
				clean := verr == nil && len(rep.Repaired) == 0 && l.Corrupt() == nil
				if f != "text" {
					if err := writeData(g.stdout, f, rep); err != nil {
						return err
					}
				} else {
					for _, r := range rep.Repaired {
						fmt.Fprintf(g.stdout, "repaired: %s\n", r)
					}
					for _, p := range rep.Problems {
						fmt.Fprintln(g.stdout, p.String())
					}
					if clean {
						fmt.Fprintln(g.stdout, g.colors().green(fmt.Sprintf("OK: %d entries, every leaf, root and checkpoint signature checks out.", l.Size())))
					}
				}
				switch {
				case verr != nil:
					return &exitError{ExitError, fmt.Errorf("audit log %s damaged: %w (nothing was changed; compare with a checkpoint or receipt kept elsewhere, see docs/audit.md)", g.auditDir(), verr)}
				case l.Corrupt() != nil:
					return &exitError{ExitError, l.Corrupt()}
				case len(rep.Repaired) > 0:
					return &exitError{ExitError, fmt.Errorf("audit log %s was repaired before it verified: %d cut(s), first: %s; only the tail of an append that was never acknowledged was cut (the bytes are kept in %s); the log now verifies, run `op-dbus audit verify` again to confirm",
						g.auditDir(), len(rep.Repaired), rep.Repaired[0], filepath.Join(g.auditDir(), "repairs"))}
				}
				return nil
			})
		},
	}
	verify.Flags().BoolVar(&fast, "fast", false, "check only the latest checkpoint's signature (every root is still checked)")

	proof := &cobra.Command{
		Use:   "proof N",
		Short: "Print a receipt for entry N: the entry, its inclusion proof and the latest signed checkpoint",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			n, err := parseSeq(args[0], "entry number")
			if err != nil {
				return err
			}
			return g.withAudit(func(l *ledger.Log) error {
				r, err := l.InclusionProof(n)
				if err != nil {
					return &exitError{ExitError, err}
				}
				return writeData(g.stdout, "json", r)
			})
		},
	}
	var key string
	verifyReceipt := &cobra.Command{
		Use:   "verify-receipt RECEIPT.json --key KEY",
		Short: "Check a receipt offline with only the receipt and the log's public key",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if key == "" {
				return &exitError{ExitError, errors.New("--key is required: the log's public key (from `op-dbus audit key`), or a file holding it")}
			}
			k := readKeyArg(key)
			b, err := os.ReadFile(args[0])
			if err != nil {
				return &exitError{ExitError, err}
			}
			var r ledger.Receipt
			if err := json.Unmarshal(b, &r); err != nil {
				return &exitError{ExitError, fmt.Errorf("%s: not a receipt: %v", args[0], err)}
			}
			if err := ledger.VerifyReceipt(r, k); err != nil {
				return &exitError{ExitError, fmt.Errorf("receipt does not verify: %w", err)}
			}
			e, _ := r.DecodeEntry()
			fmt.Fprintln(g.stdout, g.colors().green(fmt.Sprintf("OK: entry %d (%s, %s, %s) is in the log, whose signed checkpoint covers %d entries.", e.Seq, e.Kind, e.Result, e.Time.Format(time.RFC3339), receiptSize(r))))
			return nil
		},
	}
	verifyReceipt.Flags().StringVar(&key, "key", "", "the log's public key, or a file holding it")

	var from string
	consistency := &cobra.Command{
		Use:   "consistency OLD_SIZE | --from CHECKPOINT_FILE",
		Short: "Prove that the log only grew since a checkpoint",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return g.withAudit(func(l *ledger.Log) error {
				var c ledger.Consistency
				switch {
				case from != "":
					b, err := os.ReadFile(from)
					if err != nil {
						return &exitError{ExitError, err}
					}
					c, err = l.ConsistencyFrom(string(b))
					if err != nil {
						return &exitError{ExitError, err}
					}
				case len(args) == 1:
					n, err := parseSeq(args[0], "old size")
					if err != nil {
						return err
					}
					c, err = l.ConsistencyProof(n)
					if err != nil {
						return &exitError{ExitError, err}
					}
				default:
					return &exitError{ExitError, errors.New("give OLD_SIZE or --from a saved checkpoint")}
				}
				if err := ledger.VerifyConsistency(c, l.PublicKey()); err != nil {
					return &exitError{ExitError, fmt.Errorf("consistency proof does not verify: %w", err)}
				}
				return writeData(g.stdout, "json", c)
			})
		},
	}
	consistency.Flags().StringVar(&from, "from", "", "a `FILE` holding a signed checkpoint saved earlier (from op-dbus audit checkpoint, or a receipt's checkpoint)")

	keyCmd := &cobra.Command{
		Use:   "key",
		Short: "Print the log's public key (give it to whoever checks receipts)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return g.withAudit(func(l *ledger.Log) error {
				fmt.Fprintln(g.stdout, l.PublicKey())
				return nil
			})
		},
	}
	ckCmd := &cobra.Command{
		Use:   "checkpoint",
		Short: "Print the latest signed checkpoint (keep it off the host)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return g.withAudit(func(l *ledger.Log) error {
				ck, err := l.Checkpoint()
				if err != nil {
					return &exitError{ExitError, err}
				}
				fmt.Fprint(g.stdout, ck.Note)
				return nil
			})
		},
	}
	c.AddCommand(logCmd, show, verify, proof, verifyReceipt, consistency, keyCmd, ckCmd)
	return c
}

func receiptSize(r ledger.Receipt) uint64 { return r.TreeSize }

func readKeyArg(k string) string {
	if b, err := os.ReadFile(k); err == nil {
		return strings.TrimSpace(string(b))
	}
	return strings.TrimSpace(k)
}

func parseSince(s string) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("--since %q: give RFC 3339 (2026-01-02T15:04:05Z), a date (2026-01-02) or a duration (24h)", s)
}

func newHistoryCmd(g *globals) *cobra.Command {
	var plugin string
	c := &cobra.Command{
		Use:   "history [--plugin P]",
		Short: "How the host's state changed over time, from the audit log",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return g.withAudit(func(l *ledger.Log) error {
				es, err := l.Entries(0, func(e ledger.Entry) bool {
					return e.Result != "refused" && (plugin == "" || slices.Contains(e.Plugins, plugin))
				})
				if err != nil {
					return &exitError{ExitError, err}
				}
				f, err := g.format("text")
				if err != nil {
					return err
				}
				if f != "text" {
					return writeList(g, f, es)
				}
				pal := g.colors()
				for _, e := range es {
					res := e.Result
					if res == "success" || res == "recovered" {
						res = pal.green(res)
					} else {
						res = pal.red(res)
					}
					fmt.Fprintf(g.stdout, "%s  #%d %s %s  %s\n", e.Time.Local().Format("2006-01-02 15:04:05"), e.Seq, e.Kind, res, pal.dim(short(e.Before)+" → "+short(e.After)))
					for _, op := range e.Ops {
						if plugin != "" && op.Plugin != plugin {
							continue
						}
						mark := pal.green("✓")
						if op.Status != string(engine.Applied) {
							mark = pal.red("✗")
							if op.Status == string(engine.Skipped) {
								mark = pal.dim("-")
							}
						}
						fmt.Fprintf(g.stdout, "    %s %s\n", mark, op.Description)
					}
					if e.Message != "" && e.Result != "success" {
						fmt.Fprintf(g.stdout, "    %s\n", pal.dim(e.Message))
					}
				}
				return nil
			})
		},
	}
	c.Flags().StringVar(&plugin, "plugin", "", "only changes of this plugin")
	return c
}
