package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsjs"
)

// autosync moves local writes and their results while the device is
// connected, without polling: queued writes go up when one is written and
// after every (re)connect; results arrive on the device's results
// subscription the moment ingest publishes them, and are caught up through
// the results cursor after every (re)connect (what was published while
// the device was offline). A connected device with nothing to send makes
// no request at all. A failed upload or catch-up is retried with jittered
// exponential backoff from AutosyncInterval up to a minute. Retained events
// are purged on their own timer (see [Agent.purgeRetained]).
func (a *Agent) autosync(ctx context.Context, s *Syncer) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		a.receiveResults(ctx, s)
	}()
	go func() {
		defer wg.Done()
		a.purgeRetained(ctx)
	}()
	a.sendWrites(ctx, s)
	wg.Wait()
}

// sendWrites uploads queued writes on a wake-up and, on a catch-up
// request (connect, reconnect, missed results), uploads and reads the
// results cursor.
func (a *Agent) sendWrites(ctx context.Context, s *Syncer) {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval = a.cfg.AutosyncInterval, time.Minute
	bo.Reset()
	upload, catchUp := true, true
	var retry <-chan time.Time
	for {
		if (upload || catchUp) && retry == nil && s.client.Connected() && !a.incompatible() {
			// Kicks sent before this pass starts (the connect's catch-up
			// when the loop starts connected) are answered by it: one
			// catch-up per connect, not two.
			drain(a.wake)
			if catchUp {
				drain(a.catchUp)
			}
			if err := a.autosyncOnce(ctx, s, catchUp); err != nil {
				if ctx.Err() != nil {
					return
				}
				wait := bo.NextBackOff()
				a.log.Warn("autosync failed, retrying", "err", err, "retry_in", wait.Round(time.Millisecond))
				retry = time.After(wait)
			} else {
				if catchUp {
					a.catchUps.Add(1)
				}
				upload, catchUp = false, false
				bo.Reset()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-a.wake:
			upload = true
		case <-a.catchUp:
			catchUp = true
		case <-retry:
			retry = nil
		}
	}
}

// autosyncOnce uploads every queued write and, with catchUp, applies the
// results the device missed.
func (a *Agent) autosyncOnce(ctx context.Context, s *Syncer, catchUp bool) error {
	started := time.Now()
	up, err := s.Upload(ctx)
	if up > 0 || err != nil {
		a.logActivity(ctx, "upload", "", started, err, map[string]any{"uploaded": up})
	}
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	res := 0
	if catchUp {
		if res, err = s.Results(ctx); err != nil {
			return fmt.Errorf("results: %w", err)
		}
	}
	if up > 0 || res > 0 {
		a.log.Info("autosync", "uploaded", up, "results", res, "catch_up", catchUp)
	}
	return nil
}

// receiveResults applies the results ingest publishes for this device as
// they arrive. Results it could not apply, or that the client dropped,
// are left to a catch-up.
func (a *Agent) receiveResults(ctx context.Context, s *Syncer) {
	sub, err := s.client.SubscribeResults(a.cfg.DeviceID, 2*a.cfg.BatchBytes)
	if err != nil {
		a.log.Error("results subscription: results arrive with each sync only", "err", err)
		return
	}
	defer sub.Close()
	for {
		ds, err := sub.Next(ctx, a.cfg.BatchBytes)
		if ctx.Err() != nil {
			return
		}
		if len(ds) > 0 {
			if n, aerr := s.applyResults(ctx, ds, 0); aerr != nil {
				a.log.Warn("results not applied; catching up", "err", aerr)
				kick(a.catchUp)
			} else if n > 0 {
				a.log.Debug("results applied", "results", n)
			}
		}
		switch {
		case errors.Is(err, natsjs.ErrResultsDropped):
			a.log.Warn("results missed; catching up", "err", err)
			kick(a.catchUp)
		case err != nil:
			a.log.Error("results subscription ended: results arrive with each sync only", "err", err)
			return
		}
	}
}

// incompatible reports whether the last sync found the server's protocol
// incompatible: then nothing is uploaded either.
func (a *Agent) incompatible() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return errors.Is(a.lastErr, events.ErrIncompatible)
}
