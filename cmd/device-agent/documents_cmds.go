package main

import (
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/localapi"
)

func newDocumentsCmd(g *globals) *cobra.Command {
	var search string
	cmd := &cobra.Command{
		Use:   "documents [--search TEXT]",
		Short: "List documents and whether their content is on the device",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			list, err := c.Documents(cmd.Context(), search)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), list)
			}
			printDocuments(cmd.OutOrStdout(), list)
			return nil
		},
	}
	cmd.Flags().StringVar(&search, "search", "", "only documents whose name or metadata contains TEXT")
	return cmd
}

func printDocuments(w io.Writer, list agent.DocumentList) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "UNIT\tID\tSTATE\tSIZE\tNAME")
	for _, d := range list.Documents {
		state := string(d.State)
		if d.State == agent.DocDownloading || d.State == agent.DocUpdatePending {
			state += fmt.Sprintf(" (%s of %s)", mb(d.BytesDone), mb(d.BytesTotal))
		}
		if d.Error != "" {
			state += ": " + d.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.OrgUnit, d.ID, state, mb(d.Size), d.Name)
	}
	tw.Flush()
	fmt.Fprintf(w, "%d documents; %s used on the device, %s free\n", len(list.Documents), mb(list.Space.UsedBytes), mb(list.Space.FreeBytes))
}

// mb formats a byte count for people: kB under a megabyte, else MB.
func mb(n int64) string {
	if n < 1e6 {
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%.1f MB", float64(n)/1e6)
}

func newDownloadCmd(g *globals) *cobra.Command {
	var all, noWait bool
	var org string
	cmd := &cobra.Command{
		Use:   "download ID [--org U] | download --all",
		Short: "Download a document's content (or every document not on the device) and wait for it",
		Args: func(cmd *cobra.Command, args []string) error {
			if all == (len(args) == 1) || len(args) > 1 {
				return fmt.Errorf("give one document ID, or --all")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if all {
				n, err := c.DownloadAllDocuments(cmd.Context())
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%d documents queued\n", n)
			} else if _, err := c.DownloadDocument(cmd.Context(), org, args[0]); err != nil {
				return err
			}
			if noWait {
				return nil
			}
			want := func(d agent.Document) bool { return all || (d.ID == args[0] && (org == "" || d.OrgUnit == org)) }
			return waitDownloads(cmd, c, want, newDocView(cmd.OutOrStdout(), g.json))
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "Download All: every document whose content is not on the device")
	cmd.Flags().StringVar(&org, "org", "", "the document's org unit (when its id is in several)")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "queue the download and return")
	return cmd
}

// waitDownloads shows the downloads of the documents want selects until
// none of them is downloading any more; it fails if one failed.
func waitDownloads(cmd *cobra.Command, c *localapi.Client, want func(agent.Document) bool, view docView) error {
	defer view.close()
	for {
		list, err := c.Documents(cmd.Context(), "")
		if err != nil {
			return err
		}
		var shown []agent.Document
		busy, failed := false, 0
		for _, d := range list.Documents {
			if !want(d) || d.State == agent.DocNoContent || d.State == agent.DocNotDownloaded {
				continue
			}
			shown = append(shown, d)
			busy = busy || d.State == agent.DocDownloading || d.State == agent.DocUpdatePending
			if d.State == agent.DocFailed {
				failed++
			}
		}
		view.update(shown)
		if !busy {
			view.close()
			fmt.Fprintf(cmd.OutOrStdout(), "%d downloaded, %d failed; %s used on the device\n", len(shown)-failed, failed, mb(list.Space.UsedBytes))
			if failed > 0 {
				return fmt.Errorf("%d downloads failed (device-agent documents says why)", failed)
			}
			return nil
		}
		select {
		case <-cmd.Context().Done():
			return cmd.Context().Err()
		case <-time.After(250 * time.Millisecond): // the local API, not the broker
		}
	}
}

// docView shows document downloads: bars on a terminal, else a line
// "download <unit>/<id> <done>/<total> <state>" per change.
type docView interface {
	update(docs []agent.Document)
	close()
}

func newDocView(w io.Writer, plain bool) docView {
	if f, ok := w.(*os.File); ok && !plain && showsBars(f) {
		return &docBars{p: mpb.New(mpb.WithOutput(f), mpb.WithAutoRefresh()), bars: map[string]*mpb.Bar{}}
	}
	return &docLines{w: w, printed: map[string]string{}}
}

type docLines struct {
	w       io.Writer
	printed map[string]string
}

func (v *docLines) update(docs []agent.Document) {
	for _, d := range docs {
		k, line := d.OrgUnit+"/"+d.ID, fmt.Sprintf("%d/%d %s", d.BytesDone, d.BytesTotal, d.State)
		if v.printed[k] != line {
			v.printed[k] = line
			fmt.Fprintf(v.w, "download %s %s\n", k, line)
		}
	}
}

func (v *docLines) close() {}

type docBars struct {
	p      *mpb.Progress
	bars   map[string]*mpb.Bar
	closed bool
}

func (v *docBars) update(docs []agent.Document) {
	if v.closed {
		return
	}
	for _, d := range docs {
		k := d.OrgUnit + "/" + d.ID
		b, ok := v.bars[k]
		if !ok {
			b = v.p.AddBar(d.BytesTotal, mpb.PrependDecorators(decor.Name(d.Name, decor.WCSyncSpaceR)),
				mpb.AppendDecorators(decor.CountersKiloByte("% .1f / % .1f", decor.WCSyncWidth), decor.OnComplete(decor.Name(""), " done")))
			v.bars[k] = b
		}
		switch d.State {
		case agent.DocDownloaded:
			b.SetCurrent(d.BytesTotal)
		case agent.DocFailed:
			b.Abort(false)
		default:
			b.SetCurrent(d.BytesDone)
		}
	}
}

func (v *docBars) close() {
	if v.closed {
		return
	}
	v.closed = true
	for _, b := range v.bars {
		if !b.Completed() {
			b.Abort(false)
		}
	}
	v.p.Wait()
}
