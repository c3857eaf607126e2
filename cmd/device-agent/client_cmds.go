package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/localapi"
	"github.com/fieldsync/fieldsync/store"
)

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the agent's sync status",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			st, err := c.Status(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), st)
			}
			printStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
}

func printStatus(w io.Writer, st agent.Status) {
	fmt.Fprintf(w, "device      %s (org units %s)\n", st.DeviceID, strings.Join(st.OrgUnits, ", "))
	state := st.State
	if st.OnlineOnly {
		state += " — online only (no full sync completed yet)"
	}
	fmt.Fprintf(w, "state       %s\n", state)
	fmt.Fprintf(w, "broker      %s\n", map[bool]string{true: "connected", false: "not connected"}[st.Connected])
	fmt.Fprintf(w, "last sync   %s\n", fmtTime(st.LastSyncCompleted))
	fmt.Fprintf(w, "next sync   %s\n", fmtTime(st.NextSync))
	if st.UpdatesAvailableSince != nil {
		fmt.Fprintf(w, "updates     %d changes available since %s (%s) — run: device-agent apply\n", st.StagedChanges, fmtTime(st.UpdatesAvailableSince), st.AgeBand)
	}
	fmt.Fprintf(w, "last apply  %s\n", fmtTime(st.LastApplied))
	fmt.Fprintf(w, "sync errors %d\n", st.SyncErrors)
	if st.LastError != "" {
		fmt.Fprintf(w, "last error  %s\n", st.LastError)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nCHANNEL\tRECORDS\tCHECKPOINTS")
	for _, c := range st.Channels {
		var cps []string
		for _, cp := range c.Units {
			cps = append(cps, fmt.Sprintf("%s:%d", unitLabel(cp.Unit), cp.LastSeq))
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\n", c.Channel, c.Records, strings.Join(cps, " "))
	}
	tw.Flush()
}

func unitLabel(u string) string {
	if u == "" {
		return "tenant"
	}
	return u
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func newSyncCmd(g *globals) *cobra.Command {
	var scope string
	var wait, reset bool
	cmd := &cobra.Command{
		Use:   "sync [--scope full|events|admin|documents] [--wait] [--reset]",
		Short: "Start a sync (upload then download) of a scope",
		RunE: func(cmd *cobra.Command, _ []string) error {
			sc, err := agent.ParseScope(scope)
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			if reset {
				rep, err := c.SyncNow(cmd.Context())
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "sync now: local data cleared and reloaded (%d changes, %d writes uploaded first)\n", rep.Applied, rep.Uploaded)
				return nil
			}
			before, err := c.Status(cmd.Context())
			if err != nil {
				return err
			}
			if err := c.Sync(cmd.Context(), sc); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "sync %s queued\n", sc)
			if !wait {
				return nil
			}
			return waitSync(cmd, c, before, newProgressView(cmd.OutOrStdout(), g.json))
		},
	}
	cmd.Flags().StringVar(&scope, "scope", "full", "full, events, admin or documents")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for the sync to finish, printing progress")
	cmd.Flags().BoolVar(&reset, "reset", false, "Sync Now: upload pending writes, clear local data and reload it (refuses if writes cannot be uploaded)")
	return cmd
}

// waitSync polls the status until a sync newer than before has completed
// or failed, showing its per-(unit, channel) progress in view.
func waitSync(cmd *cobra.Command, c *localapi.Client, before agent.Status, view progressView) error {
	defer view.close()
	started := false
	for {
		select {
		case <-cmd.Context().Done():
			return cmd.Context().Err()
		case <-time.After(250 * time.Millisecond):
		}
		st, err := c.Status(cmd.Context())
		if err != nil {
			return err
		}
		started = started || st.State == agent.StateInProgress || newer(st.LastSyncStarted, before.LastSyncStarted)
		if started {
			view.update(st.Progress)
		}
		if !started || st.State == agent.StateInProgress {
			continue
		}
		view.close()
		if st.State == agent.StateFailed {
			return fmt.Errorf("sync failed: %s", st.LastError)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "sync completed at %s, %d sync errors\n", fmtTime(st.LastSyncCompleted), st.SyncErrors)
		return nil
	}
}

func newer(a, b *time.Time) bool { return a != nil && (b == nil || a.After(*b)) }

func newRecordsCmd(g *globals) *cobra.Command {
	var channel, kind, unit string
	var limit int
	var all bool
	cmd := &cobra.Command{
		Use:   "records --channel events|admin|documents [--kind K] [--org U] [--limit N | --all]",
		Short: "List local records of a channel",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ch, err := events.ParseChannel(channel)
			if err != nil {
				return err
			}
			q := store.Query{Channel: ch, Kind: kind, Unit: store.AnyUnit, Limit: limit}
			if cmd.Flags().Changed("org") {
				q.Unit = unit
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			var recs []store.Record
			if all {
				recs, err = allRecords(cmd.Context(), c, q)
			} else {
				recs, err = c.Records(cmd.Context(), q)
			}
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), recs)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ORG UNIT\tKIND\tID\tVERSION\tUPDATED\tTITLE")
			for _, r := range recs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%v\n", unitLabel(r.OrgUnit), r.Kind, r.RecordID, r.Version, r.UpdatedAt.Local().Format("2006-01-02 15:04"), r.Body["title"])
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&channel, "channel", "", "events, admin or documents (required)")
	cmd.Flags().StringVar(&kind, "kind", "", "record kind")
	cmd.Flags().StringVar(&unit, "org", "", "org unit (empty string: tenant-wide data)")
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many records")
	cmd.Flags().BoolVar(&all, "all", false, "every matching record (read page after page; --limit is the page size)")
	cmd.MarkFlagRequired("channel")
	return cmd
}

// allRecords reads every record matching q, page after page of q.Limit,
// each continuing after the last key of the one before.
func allRecords(ctx context.Context, c *localapi.Client, q store.Query) ([]store.Record, error) {
	var out []store.Record
	for {
		page, err := c.RecordsPage(ctx, q)
		if err != nil {
			return out, err
		}
		out = append(out, page.Records...)
		if page.Next == "" {
			return out, nil
		}
		after, err := localapi.ParseCursor(page.Next)
		if err != nil {
			return out, err
		}
		q.After = after
	}
}

func newOpenCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "open",
		Short: "Print the status page address with this user's local API token (open it in a browser)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			u := c.BaseURL + "/#token=" + url.QueryEscape(c.Token)
			if g.json {
				return printJSON(cmd.OutOrStdout(), map[string]string{"url": u})
			}
			fmt.Fprintln(cmd.OutOrStdout(), u)
			return nil
		},
	}
}
