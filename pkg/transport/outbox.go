package transport

import (
	"context"
	"sync"

	"github.com/raft-elector/raft-elector/pkg/raft"
)

// outbox is one sender's queue to one peer, drained in order by one goroutine (run). Giving
// every peer its own goroutine is what keeps a dead peer from delaying the others; bounding
// its queue is what keeps a dead peer from costing memory.
type outbox struct {
	peer  string
	limit int

	mu    sync.Mutex
	queue []raft.Message

	// wake holds a token when messages may be waiting; its capacity of one lets push signal
	// without blocking and without losing a wake-up.
	wake chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
}

func newOutbox(parent context.Context, peer string, limit int) *outbox {
	ctx, cancel := context.WithCancel(parent)
	return &outbox{
		peer:   peer,
		limit:  limit,
		queue:  make([]raft.Message, 0, limit),
		wake:   make(chan struct{}, 1),
		ctx:    ctx,
		cancel: cancel,
	}
}

// push queues m and reports whether the oldest queued message was dropped to make room.
func (o *outbox) push(m raft.Message) (dropped bool) {
	o.mu.Lock()
	if len(o.queue) >= o.limit {
		copy(o.queue, o.queue[1:])
		o.queue = o.queue[:len(o.queue)-1]
		dropped = true
	}
	o.queue = append(o.queue, m)
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
	return dropped
}

func (o *outbox) pop() (raft.Message, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.queue) == 0 {
		return raft.Message{}, false
	}
	m := o.queue[0]
	copy(o.queue, o.queue[1:])
	o.queue = o.queue[:len(o.queue)-1]
	return m, true
}

// run delivers queued messages one at a time, in order, until stop. deliver gets a context
// that is cancelled by stop, so a hung delivery ends with it.
func (o *outbox) run(deliver func(ctx context.Context, m raft.Message)) {
	for {
		m, ok := o.pop()
		if !ok {
			select {
			case <-o.wake:
				continue
			case <-o.ctx.Done():
				return
			}
		}
		if o.ctx.Err() != nil {
			return
		}
		deliver(o.ctx, m)
	}
}

// stop ends run (without waiting for it) and discards whatever is still queued.
func (o *outbox) stop() { o.cancel() }
