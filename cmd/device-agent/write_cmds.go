package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/publish"
	"github.com/fieldsync/fieldsync/store"
)

func newWriteCmd(g *globals) *cobra.Command {
	var r agent.WriteRequest
	var body string
	var del bool
	cmd := &cobra.Command{
		Use:   "write --org U --kind K --id ID (--body JSON | --delete) [--channel events]",
		Short: "Make a local change: shown at once, queued, sent when online",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if del == (body != "") {
				return fmt.Errorf("give exactly one of --body and --delete")
			}
			if del {
				r.Op = "delete"
			} else {
				b, err := publish.DecodeBody([]byte(body))
				if err != nil {
					return fmt.Errorf("--body: %w", err)
				}
				r.Body = b
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			resp, err := c.Write(cmd.Context(), r)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), resp)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "queued %s (based on version %d)\n", resp.MutationID, resp.BaseVersion)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&r.OrgUnit, "org", "", "org unit (required)")
	f.StringVar(&r.Channel, "channel", "events", "channel")
	f.StringVar(&r.Kind, "kind", "", "record kind (required)")
	f.StringVar(&r.RecordID, "id", "", "record id (required)")
	f.StringVar(&body, "body", "", "the record as a JSON object")
	f.BoolVar(&del, "delete", false, "delete the record")
	for _, req := range []string{"org", "kind", "id"} {
		cmd.MarkFlagRequired(req)
	}
	return cmd
}

func newConflictsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "conflicts",
		Short: "List sync errors of local writes (conflicts and rejections)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			cs, err := c.Conflicts(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), cs)
			}
			printConflicts(cmd, cs)
			return nil
		},
	}
}

func printConflicts(cmd *cobra.Command, cs []store.Conflict) {
	if len(cs) == 0 {
		fmt.Fprintln(cmd.OutOrStdout(), "no sync errors")
		return
	}
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tRECORD\tLOCAL\tSERVER\tWHY")
	for _, c := range cs {
		server := fmt.Sprintf("version %d", c.ServerVersion)
		if c.ServerDeleted {
			server += " (deleted)"
		}
		why := c.Reason
		if why == "" {
			why = c.Message
		}
		fmt.Fprintf(tw, "%s\t%s\t%s/%s/%s\t%s\t%s\t%s\n", c.MutationID, c.State, c.OrgUnit, c.Kind, c.RecordID, c.LocalOp, server, why)
	}
	tw.Flush()
	fmt.Fprintln(cmd.OutOrStdout(), "resolve with: device-agent resolve ID undo|undelete|retry")
}

func newResolveCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "resolve ID undo|undelete|retry",
		Short: "Resolve a sync error: undo the local change, undelete the record, or retry on the server's version",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := c.Resolve(cmd.Context(), args[0], args[1]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s done\n", args[0], args[1])
			return nil
		},
	}
}

func newApplyCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "apply",
		Short: "Apply Update: make the downloaded updates live in one step",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			rep, err := c.Apply(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), rep)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "applied %d changes in %s\n", rep.Changes, rep.Took)
			return nil
		},
	}
}
