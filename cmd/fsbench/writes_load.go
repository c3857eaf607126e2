package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fieldsync/fieldsync/events"
	"github.com/fieldsync/fieldsync/natsjs"
)

// sustainedLatency runs o.devices devices, each writing at its share of
// o.rate over its own connection, and returns every write's latency from
// the start of its upload to its result arriving on the device.
func sustainedLatency(ctx context.Context, url string, o writesOpts) ([]time.Duration, error) {
	var mu sync.Mutex
	var all []time.Duration
	var wg sync.WaitGroup
	errs := make(chan error, o.devices)
	for d := 0; d < o.devices; d++ {
		wg.Add(1)
		go func(dev string) {
			defer wg.Done()
			lat, err := deviceLoad(ctx, url, dev, o.rate/o.devices, o.duration)
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}(fmt.Sprintf("dev%02d", d))
	}
	wg.Wait()
	close(errs)
	return all, <-errs
}

func deviceLoad(ctx context.Context, url, dev string, rate int, dur time.Duration) ([]time.Duration, error) {
	c, err := natsjs.Connect(url, natsjs.ConnectOptions{Name: dev})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var mu sync.Mutex
	sent := map[string]time.Time{}
	var lat []time.Duration
	results, err := events.DeviceResultSubjects(dev)
	if err != nil {
		return nil, err
	}
	sub, err := c.Conn().Subscribe(results, func(m *nats.Msg) {
		now := time.Now()
		mut := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
		mu.Lock()
		defer mu.Unlock()
		if t0, ok := sent[mut]; ok {
			lat = append(lat, now.Sub(t0))
			delete(sent, mut)
		}
	})
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	end := time.Now().Add(dur)
	for i := 0; time.Now().Before(end); i++ {
		<-tick.C
		e := mutation(dev, i)
		mu.Lock()
		sent[e.Origin.MutationID] = time.Now()
		mu.Unlock()
		if _, err := c.PublishUpload(ctx, e); err != nil {
			return nil, err
		}
	}
	time.Sleep(500 * time.Millisecond) // let the last results arrive
	mu.Lock()
	defer mu.Unlock()
	if len(sent) > 0 {
		return nil, fmt.Errorf("%s: %d writes got no result", dev, len(sent))
	}
	return lat, nil
}

// ingestThroughput queues n uploads with ingest stopped, then starts it and
// times until every result exists.
func ingestThroughput(ctx context.Context, url string, broker *natsjs.Client, n int) (float64, error) {
	c, err := natsjs.Connect(url, natsjs.ConnectOptions{Name: "burst"})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	before, err := resultCount(ctx, broker)
	if err != nil {
		return 0, err
	}
	if err := queueUploads(ctx, c, n); err != nil {
		return 0, err
	}
	stop := startBenchIngest(broker)
	defer stop()
	start := time.Now()
	for {
		got, err := resultCount(ctx, broker)
		if err != nil {
			return 0, err
		}
		if got-before >= uint64(n) {
			return float64(n) / time.Since(start).Seconds(), nil
		}
		if time.Since(start) > 5*time.Minute {
			return 0, fmt.Errorf("only %d of %d results after 5 minutes", got-before, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func queueUploads(ctx context.Context, c *natsjs.Client, n int) error {
	i := 0
	_, err := c.Publisher().PublishAllRaw(ctx, func() (string, []byte, string, bool) {
		if i >= n {
			return "", nil, "", false
		}
		e := mutation(fmt.Sprintf("burst%02d", i%10), 10_000_000+i)
		i++
		subj, _ := events.UploadSubject(e.Origin.DeviceID, e.Address())
		data, _ := events.Encode(e)
		return subj, data, e.Origin.DeviceID + "." + e.Origin.MutationID, true
	}, 4000)
	return err
}

func resultCount(ctx context.Context, c *natsjs.Client) (uint64, error) {
	st, err := c.StreamState(ctx, events.ResultStream)
	return st.Msgs, err
}
