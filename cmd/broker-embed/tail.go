package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsauth"
	"github.com/fieldsync/fieldsync/natsjs"
)

func newTailCmd() *cobra.Command {
	var spec natsjs.TailSpec
	var channel, since, url string
	var asJSON bool
	var auth toolAuth
	cmd := &cobra.Command{
		Use:   "tail --org U [--channel C] [--kind K] [--since T] [--json]",
		Short: "Print an org unit's changes as they happen (one JSON object per line with --json)",
		Long: "Prints the changes of one org unit (--org \"\": the tenant-wide admin data) as they are appended, " +
			"from now or from --since (RFC 3339, or a duration back from now such as 2h), until interrupted.",
		RunE: func(cmd *cobra.Command, _ []string) error {
			spec.Channel = events.Channel(channel)
			from, err := parseSince(since, time.Now())
			if err != nil {
				return err
			}
			spec.Since = from
			if _, err := spec.Filter(); err != nil {
				return err
			}
			nc, err := auth.connectAs(url, "fieldsync-tail", natsauth.RoleTail)
			if err != nil {
				return err
			}
			defer nc.Close()
			c, err := natsjs.NewClient(nc)
			if err != nil {
				return err
			}
			return tail(cmd.Context(), c, spec, cmd.OutOrStdout(), asJSON)
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec.Unit, "org", "", "org unit (empty: the tenant-wide admin data)")
	f.StringVar(&channel, "channel", "", "only this channel: events, admin or documents")
	f.StringVar(&spec.Kind, "kind", "", "only this record kind (needs --channel)")
	f.StringVar(&since, "since", "", "start at this time (RFC 3339) or this long ago (e.g. 2h); default: from now")
	f.BoolVar(&asJSON, "json", false, "one JSON object per line")
	f.StringVar(&url, "url", "nats://127.0.0.1:4222", "broker NATS URL")
	auth.register(cmd)
	cmd.MarkFlagRequired("org")
	return cmd
}

// parseSince reads --since: empty (from now: the zero time), an RFC 3339
// time or a duration back from now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("--since %q: want an RFC 3339 time (2026-12-01T08:00:00Z) or a positive duration (2h)", s)
	}
	return now.Add(-d), nil
}

// tailLine is one change as `tail --json` prints it.
type tailLine struct {
	Subject  string         `json:"subject"`
	Version  uint64         `json:"version"`
	EventID  string         `json:"id"`
	OrgUnit  string         `json:"org,omitempty"`
	Channel  string         `json:"channel"`
	Kind     string         `json:"kind"`
	RecordID string         `json:"record"`
	Op       string         `json:"op"`
	Time     string         `json:"ts"`
	Body     map[string]any `json:"body,omitempty"`
	Device   string         `json:"device,omitempty"`
	Mutation string         `json:"mutation,omitempty"`
	Base     *uint64        `json:"base,omitempty"`
	Error    string         `json:"error,omitempty"`
}

// tail prints spec's changes to w until ctx ends.
func tail(ctx context.Context, c *natsjs.Client, spec natsjs.TailSpec, w io.Writer, asJSON bool) error {
	enc := json.NewEncoder(w)
	err := c.Tail(ctx, spec, func(ch natsjs.Change) error {
		l := line(ch)
		if asJSON {
			return enc.Encode(l)
		}
		if l.Error != "" {
			_, err := fmt.Fprintf(w, "%s v%d unreadable: %s\n", l.Subject, l.Version, l.Error)
			return err
		}
		body, _ := json.Marshal(l.Body)
		by := ""
		if l.Device != "" {
			by = " by " + l.Device
		}
		_, err := fmt.Fprintf(w, "%s %s/%s/%s v%d %s%s %s\n", l.Time, l.Channel, l.Kind, l.RecordID, l.Version, l.Op, by, body)
		return err
	})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func line(ch natsjs.Change) tailLine {
	l := tailLine{Subject: ch.Subject, Version: ch.Version}
	e := ch.Envelope
	if ch.Err != nil {
		l.Error = ch.Err.Error()
		return l
	}
	l.EventID, l.OrgUnit, l.Channel, l.Kind, l.RecordID, l.Op = e.EventID, e.OrgUnit, string(e.Channel), e.Kind, e.RecordID, string(e.Op)
	l.Time = e.Timestamp.UTC().Format(time.RFC3339Nano)
	if e.Origin.DeviceID != "" {
		base := e.Origin.BaseVersion
		l.Device, l.Mutation, l.Base = e.Origin.DeviceID, e.Origin.MutationID, &base
	}
	if len(e.Body) > 0 {
		if err := msgpack.Unmarshal(e.Body, &l.Body); err != nil {
			l.Error = "body: " + err.Error()
		}
	}
	return l
}
