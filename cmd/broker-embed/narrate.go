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
			e := seed.DemoChange(units, i)
			ack, err := c.Publisher().Publish(ctx, e, natsjs.PublishOptions{})
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "server     new %s %s/%s (version %d); the device picks it up at its next delta sync\n", e.Kind, e.OrgUnit, e.RecordID, ack.Version)
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
		}
	}
}
