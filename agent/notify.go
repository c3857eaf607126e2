package agent

import "sync"

// notifier tells waiters that something changed: each [notifier.wait]
// returns a channel closed at the next [notifier.signal]. Signals while
// nobody waits cost nothing and are not queued.
type notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *notifier) signal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}

// StatusChanged returns a channel that is closed when something the
// [Agent.Status] reports may have changed: a store commit, the broker
// connection going up or down, a sync starting, progressing or ending, a
// setting switched. Take the channel before reading the status, so a
// change in between is not missed. Time alone changes the status too (the
// age band of waiting updates, in hours): re-read it now and then.
func (a *Agent) StatusChanged() <-chan struct{} { return a.changed.wait() }

// statusChanged signals [Agent.StatusChanged].
func (a *Agent) statusChanged() { a.changed.signal() }

// kick sends a non-blocking wake-up on ch (capacity 1): wake-ups while one
// is pending merge into it.
func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// drain takes a pending kick off ch, if any: the work about to start
// answers it, so it must not start that work again.
func drain(ch chan struct{}) {
	select {
	case <-ch:
	default:
	}
}
