package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fieldsync/fieldsync/agent"
	"github.com/fieldsync/fieldsync/broker"
	"github.com/fieldsync/fieldsync/natsauth"
)

// docWaitLimit bounds each wait for the agent (sync, downloads).
const docWaitLimit = 10 * time.Minute

// agentDownloads issues device its credentials and starts an agent
// process for it on a fresh data dir (write-agent: the full agent with its
// defaults and its local HTTP API), waits until it lists every document,
// none downloaded, then times through its API: the download of the large
// document alone, from POST /v1/documents/{id}/download until GET
// /v1/status counts it downloaded, then POST /v1/documents/download-all
// until it counts every document. It checks GET /v1/documents shows them
// all downloaded, and removes the data dir.
func agentDownloads(ctx context.Context, b *broker.Broker, dir string, set *docSet, device string, poll time.Duration) (large, small time.Duration, err error) {
	c, _, err := b.Authority().AddDevice(device, []string{benchUnit})
	if err != nil {
		return 0, 0, err
	}
	creds := filepath.Join(dir, device+".creds")
	if err := natsauth.WriteCreds(creds, c); err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(filepath.Join(dir, device))
	p, err := startAgentProc(ctx, b.ClientURL(), creds, dir, device)
	if err != nil {
		return 0, 0, err
	}
	defer p.stop()
	if err := p.waitSynced(ctx); err != nil {
		return 0, 0, err
	}
	total := len(set.large) + len(set.small)
	if err := waitListed(ctx, p, total); err != nil {
		return 0, 0, err
	}
	start := time.Now()
	if _, err := p.api.DownloadDocument(ctx, benchUnit, set.large[0].id); err != nil {
		return 0, 0, err
	}
	if err := waitDownloaded(ctx, p, len(set.large), poll); err != nil {
		return 0, 0, err
	}
	large = time.Since(start)
	start = time.Now()
	n, err := p.api.DownloadAllDocuments(ctx)
	if err != nil {
		return 0, 0, err
	}
	if n != len(set.small) {
		return 0, 0, fmt.Errorf("%s: download-all queued %d documents, want %d", device, n, len(set.small))
	}
	if err := waitDownloaded(ctx, p, total, poll); err != nil {
		return 0, 0, err
	}
	small = time.Since(start)
	return large, small, checkDownloaded(ctx, p, set)
}

// waitListed waits until the agent lists n documents, none of them on the
// device (a fresh device: every download is real).
func waitListed(ctx context.Context, p *agentProc, n int) error {
	deadline := time.Now().Add(docWaitLimit)
	for {
		list, err := p.api.Documents(ctx, "")
		if err != nil {
			return err
		}
		notDownloaded := 0
		for _, d := range list.Documents {
			if d.State == agent.DocNotDownloaded {
				notDownloaded++
			}
		}
		if notDownloaded == n && len(list.Documents) == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s lists %d documents, %d not downloaded; want %d", p.device, len(list.Documents), notDownloaded, n)
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// waitDownloaded reads GET /v1/status until its documents summary counts
// want downloaded; a failed download ends it. It reads every poll, or
// every 1/200 of the time waited so far when that is longer: a status
// read costs the agent a scan of every document row it holds, which read
// every few ms would slow the downloads it times, and the wait overshoots
// by at most 0.5%.
func waitDownloaded(ctx context.Context, p *agentProc, want int, poll time.Duration) error {
	start := time.Now()
	deadline := start.Add(docWaitLimit)
	for {
		st, err := p.api.Status(ctx)
		if err != nil {
			return err
		}
		if s := st.Documents; s != nil {
			if s.Failed > 0 {
				return fmt.Errorf("%s: %d downloads failed (GET /v1/documents says why)", p.device, s.Failed)
			}
			if s.Downloaded >= want {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d documents not downloaded after %s: %+v", p.device, want, docWaitLimit, st.Documents)
		}
		if err := sleepCtx(ctx, max(poll, time.Since(start)/200)); err != nil {
			return err
		}
	}
}

// checkDownloaded fails unless GET /v1/documents shows every document of
// set downloaded, openable, at its size.
func checkDownloaded(ctx context.Context, p *agentProc, set *docSet) error {
	list, err := p.api.Documents(ctx, "")
	if err != nil {
		return err
	}
	byID := make(map[string]agent.Document, len(list.Documents))
	for _, d := range list.Documents {
		byID[d.ID] = d
	}
	for _, docs := range [][]benchDoc{set.large, set.small} {
		for _, want := range docs {
			d, ok := byID[want.id]
			if !ok || d.State != agent.DocDownloaded || !d.Openable || d.Size != want.size {
				return fmt.Errorf("%s: document %s is %+v, want downloaded with %d bytes", p.device, want.id, d, want.size)
			}
		}
	}
	return nil
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
