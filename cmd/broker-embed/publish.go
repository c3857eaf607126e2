package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fieldsync/fieldsync/publish"
)

func newPublishCmd() *cobra.Command {
	var r publish.Request
	var body, url string
	var expected int64
	var auth toolAuth
	cmd := &cobra.Command{
		Use:   "publish --org U --channel C --kind K --id ID [--op upsert|delete] [--body JSON]",
		Short: "Append one server-side change through the publish API",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if body != "" {
				b, err := publish.DecodeBody([]byte(body))
				if err != nil {
					return fmt.Errorf("--body: %w", err)
				}
				r.Body = b
			}
			if expected >= 0 {
				v := uint64(expected)
				r.ExpectedVersion = &v
			}
			nc, err := auth.connect(url, "fieldsync-publish-cli")
			if err != nil {
				return err
			}
			defer nc.Close()
			resp, err := publish.NewClient(nc).Publish(cmd.Context(), r)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "published %s to %s: version %d%s\n", resp.EventID, resp.Stream, resp.Version,
				map[bool]string{true: " (duplicate)"}[resp.Duplicate])
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&r.OrgUnit, "org", "", "org unit (empty: tenant-wide admin data)")
	f.StringVar(&r.Channel, "channel", "", "events, admin or documents")
	f.StringVar(&r.Kind, "kind", "", "record kind, e.g. event, setting, document")
	f.StringVar(&r.RecordID, "id", "", "record id")
	f.StringVar(&r.Op, "op", "upsert", "upsert or delete")
	f.StringVar(&r.EventID, "event-id", "", "event id (dedupe key; generated if empty)")
	f.StringVar(&body, "body", "", "record body as a JSON object")
	f.Int64Var(&expected, "expected-version", -1, "fail unless the record is at this version (0: must not exist)")
	f.StringVar(&url, "url", "nats://127.0.0.1:4222", "broker NATS URL")
	auth.register(cmd)
	for _, req := range []string{"channel", "kind", "id"} {
		cmd.MarkFlagRequired(req)
	}
	return cmd
}
