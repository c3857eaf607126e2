package main

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nuid"
	"github.com/spf13/cobra"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/publish"
)

// publishFlags are the flags of `broker-embed publish`.
type publishFlags struct {
	r                       publish.Request
	body, url               string
	file, name, contentType string
	expected                int64
	timeout                 time.Duration
	auth                    toolAuth
}

func newPublishCmd() *cobra.Command {
	var p publishFlags
	cmd := &cobra.Command{
		Use: "publish --org U --channel C --kind K --id ID [--op upsert|delete] [--body JSON]\n" +
			"  publish --org U --channel documents --kind document --id ID --file PATH [--name N] [--content-type T] [--body JSON]",
		Short: "Append one server-side change through the publish API (a document's content with --file)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if p.body != "" {
				b, err := publish.DecodeBody([]byte(p.body))
				if err != nil {
					return fmt.Errorf("--body: %w", err)
				}
				p.r.Body = b
			}
			if p.expected >= 0 {
				v := uint64(p.expected)
				p.r.ExpectedVersion = &v
			}
			if p.file != "" {
				return p.document(cmd)
			}
			nc, err := p.auth.connect(p.url, "fieldsync-publish-cli")
			if err != nil {
				return err
			}
			defer nc.Close()
			if p.r.EventID == "" { // known here, so that a timed-out publish can be retried without a double
				p.r.EventID = nuid.Next()
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), p.timeout)
			defer cancel()
			resp, err := publish.NewClient(nc).Publish(ctx, p.r)
			if errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("no answer from the publish API within %s (in a cluster, is a majority of the nodes reachable?); "+
					"it may still be applied: retry with --event-id %s, deduplicated within the duplicates window (streams.duplicates, 2m): %w", p.timeout, p.r.EventID, err)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "published %s to %s: version %d%s\n", resp.EventID, resp.Stream, resp.Version,
				map[bool]string{true: " (duplicate)"}[resp.Duplicate])
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&p.r.OrgUnit, "org", "", "org unit (empty: tenant-wide admin data)")
	f.StringVar(&p.r.Channel, "channel", "", "events, admin or documents")
	f.StringVar(&p.r.Kind, "kind", "", "record kind, e.g. event, setting, document")
	f.StringVar(&p.r.RecordID, "id", "", "record id")
	f.StringVar(&p.r.Op, "op", "upsert", "upsert or delete")
	f.StringVar(&p.r.EventID, "event-id", "", "event id (dedupe key; generated if empty)")
	f.StringVar(&p.body, "body", "", "record body as a JSON object (with --file: extra metadata)")
	f.Int64Var(&p.expected, "expected-version", -1, "fail unless the record is at this version (0: must not exist)")
	f.StringVar(&p.url, "url", "nats://127.0.0.1:4222", "broker NATS URL")
	f.DurationVar(&p.timeout, "timeout", 30*time.Second, "give up on a record's publish after this long (not on --file)")
	f.StringVar(&p.file, "file", "", "a document's content (channel documents, kind document only)")
	f.StringVar(&p.name, "name", "", "with --file: the document's display name (default: the file's name)")
	f.StringVar(&p.contentType, "content-type", "", "with --file: media type (default: from the file's extension)")
	p.auth.register(cmd)
	for _, req := range []string{"channel", "kind", "id"} {
		cmd.MarkFlagRequired(req)
	}
	return cmd
}

// errFileNotDocument: --file given for a record that is not a document.
var errFileNotDocument = errors.New("--file is for --channel documents --kind document only")

// document publishes p.file as a version of the document p.r names
// ([publish.Client.PublishDocument]) and prints its version, size and
// digest.
func (p *publishFlags) document(cmd *cobra.Command) error {
	if p.r.Channel != string(events.ChannelDocuments) || p.r.Kind != events.DocumentKind || p.r.Op != string(events.OpUpsert) {
		return errFileNotDocument
	}
	f, err := os.Open(p.file)
	if err != nil {
		return err
	}
	defer f.Close()
	name, ctype := p.name, p.contentType
	if name == "" {
		name = filepath.Base(p.file)
	}
	if ctype == "" {
		ctype = mime.TypeByExtension(filepath.Ext(p.file))
	}
	nc, err := p.auth.connect(p.url, "fieldsync-publish-cli")
	if err != nil {
		return err
	}
	defer nc.Close()
	resp, err := publish.NewClient(nc).PublishDocument(cmd.Context(), publish.DocumentRequest{EventID: p.r.EventID, OrgUnit: p.r.OrgUnit,
		RecordID: p.r.RecordID, Name: name, ContentType: ctype, Body: p.r.Body, ExpectedVersion: p.r.ExpectedVersion}, f)
	if err != nil {
		return err
	}
	if resp.Content == nil {
		return fmt.Errorf("publish: the answer names no content")
	}
	fmt.Fprintf(cmd.OutOrStdout(), "published %s to %s: version %d%s, size %d, digest %s\n", resp.EventID, resp.Stream, resp.Version,
		map[bool]string{true: " (duplicate)"}[resp.Duplicate], resp.Content.Size, resp.Content.Digest)
	return nil
}
