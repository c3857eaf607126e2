package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/natsjs"
	"github.com/fieldsync/fieldsync/seed"
)

// narrate prints what the device does (each completed sync with its record
// counts) and, every `every`, publishes a new server-side change.
func narrate(ctx context.Context, out io.Writer, a *agent.Agent, c *natsjs.Client, units []string, every time.Duration) error {
	poll := time.NewTicker(500 * time.Millisecond)
	defer poll.Stop()
	var feed <-chan time.Time
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		feed = t.C
	}
	var last time.Time
	for i := 1; ; {
		select {
		case <-ctx.Done():
			return nil
		case <-feed:
			if err := demoStep(ctx, out, a, c, units, i); err != nil {
				return err
			}
			i++
		case <-poll.C:
			st, err := a.Status(ctx)
			if err != nil || st.LastSyncCompleted == nil || !st.LastSyncCompleted.After(last) {
				continue
			}
			last = *st.LastSyncCompleted
			fmt.Fprintf(out, "device     sync completed %s:", last.Format("15:04:05"))
			for _, ch := range st.Channels {
				fmt.Fprintf(out, " %s %d records,", ch.Channel, ch.Records)
			}
			fmt.Fprintf(out, " %d sync errors\n", st.SyncErrors)
			if st.UpdatesAvailableSince != nil {
				fmt.Fprintf(out, "device     %d updates downloaded in the background: press Apply Update on the status page, or run device-agent apply\n", st.StagedChanges)
			}
		}
	}
}

// demoStep alternates a server-side change with a change made on the
// device (which autosync sends up at once).
func demoStep(ctx context.Context, out io.Writer, a *agent.Agent, c *natsjs.Client, units []string, i int) error {
	e := seed.DemoChange(units, i)
	if i%2 == 0 {
		m, err := a.Write(ctx, agent.WriteRequest{OrgUnit: e.OrgUnit, Channel: string(e.Channel), Kind: "action",
			RecordID: fmt.Sprintf("tablet-%04d", i), Body: map[string]any{"title": fmt.Sprintf("Action noted on the tablet (%d)", i), "status": "open"}})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "device     local write %s/action/tablet-%04d queued as %s; autosync sends it, ingest applies it\n", e.OrgUnit, i, m.MutationID)
		return nil
	}
	ack, err := c.Publisher().Publish(ctx, e, natsjs.PublishOptions{})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "server     new %s %s/%s (version %d); the device picks it up at its next delta sync\n", e.Kind, e.OrgUnit, e.RecordID, ack.Version)
	return nil
}
