package transport

import (
	"context"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raft-elector/raft-elector/pkg/raft"
)

func newTestNetwork(t *testing.T, opts ...NetworkOption) *Network {
	t.Helper()
	n := NewNetwork(opts...)
	t.Cleanup(func() {
		n.Close()
		checkNoLeaks(t)
	})
	return n
}

func TestNetworkRoundTrip(t *testing.T) {
	n := newTestNetwork(t)
	ha, hb, hc := &fakeHandler{}, &fakeHandler{step: answer}, &fakeHandler{step: answer}
	a := n.Join("a", ha)
	n.Join("b", hb)
	n.Join("c", hc)

	a.Send(vote("a", "b"), vote("a", "c"), heartbeat("a", "b", 1), timeoutNow("a", "c"))
	waitFor(t, "four requests and three responses", func() bool {
		return hb.count() == 2 && hc.count() == 2 && ha.count() == 3
	})
	if got, want := hb.messages(), []raft.Message{vote("a", "b"), heartbeat("a", "b", 1)}; !reflect.DeepEqual(got, want) {
		t.Errorf("b received %+v, want %+v in order", got, want)
	}
	got := ha.messages()
	for _, want := range []raft.Message{*respond(vote("a", "b")), *respond(vote("a", "c")), *respond(heartbeat("a", "b", 1))} {
		if !slices.ContainsFunc(got, func(m raft.Message) bool { return reflect.DeepEqual(m, want) }) {
			t.Errorf("a was not stepped with %+v; got %+v", want, got)
		}
	}
	if s := n.Stats(); s.Delivered != 4 || s.Failed != 0 || s.InvalidResponses != 0 || len(s.Dropped) != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestNetworkCutIsOneDirection(t *testing.T) {
	n := newTestNetwork(t)
	ha, hb := &fakeHandler{step: answer}, &fakeHandler{step: answer}
	a, b := n.Join("a", ha), n.Join("b", hb)

	n.Cut("a", "b")
	a.Send(heartbeat("a", "b", 1))
	if got := n.Stats().Dropped[DropPartitioned]; got != 1 {
		t.Fatalf("request over a cut link: dropped %d, want 1", got)
	}

	// b's request crosses b->a, which is up; its response would cross a->b, which is cut.
	b.Send(heartbeat("b", "a", 1))
	waitFor(t, "b's request delivered and its response lost", func() bool {
		s := n.Stats()
		return s.Delivered == 1 && s.Dropped[DropPartitioned] == 2
	})
	if ha.count() != 1 || hb.count() != 0 {
		t.Fatalf("a stepped %d, b stepped %d; want 1 request at a and no response at b", ha.count(), hb.count())
	}

	n.Heal("a", "b")
	a.Send(heartbeat("a", "b", 2))
	waitFor(t, "the healed link to carry request and response", func() bool { return hb.count() == 1 && ha.count() == 2 })
}

func TestNetworkIsolate(t *testing.T) {
	n := newTestNetwork(t)
	ha, hb := &fakeHandler{step: answer}, &fakeHandler{step: answer}
	a, b := n.Join("a", ha), n.Join("b", hb)

	n.Isolate("a")
	hc := &fakeHandler{step: answer}
	c := n.Join("c", hc) // joins after the isolation, and is cut off from a too
	a.Send(heartbeat("a", "b", 1), heartbeat("a", "c", 1))
	b.Send(heartbeat("b", "a", 1))
	c.Send(heartbeat("c", "a", 1), heartbeat("c", "b", 1))
	waitFor(t, "c and b to talk", func() bool { return hb.count() == 1 && hc.count() == 1 })
	if got := n.Stats().Dropped[DropPartitioned]; got != 4 {
		t.Errorf("dropped %d, want the 4 messages to or from a", got)
	}
	if ha.count() != 0 {
		t.Errorf("isolated a was stepped with %+v", ha.messages())
	}

	n.Cut("b", "a")
	n.Reconnect("a")
	a.Send(heartbeat("a", "c", 2))
	waitFor(t, "a and c to talk again", func() bool { return hc.count() == 2 && ha.count() == 1 })
	b.Send(heartbeat("b", "a", 2)) // still cut one by one
	if got := n.Stats().Dropped[DropPartitioned]; got != 5 {
		t.Errorf("dropped %d, want 5: Reconnect must not heal explicit cuts", got)
	}

	n.Isolate("c")
	n.HealAll()
	b.Send(heartbeat("b", "a", 3), heartbeat("b", "c", 3))
	waitFor(t, "everything to flow after HealAll", func() bool { return ha.count() == 2 && hc.count() == 3 })
}

func TestNetworkPartitionAppliesOnDelivery(t *testing.T) {
	// A message queued before the cut must not cross after it.
	n := newTestNetwork(t)
	release, first := make(chan struct{}), make(chan struct{})
	hb := &fakeHandler{step: func(ctx context.Context, m raft.Message) (*raft.Message, error) {
		if m.Round == 1 {
			close(first)
			<-release
		}
		return nil, nil
	}}
	a := n.Join("a", &fakeHandler{})
	n.Join("b", hb)
	a.Send(heartbeat("a", "b", 1))
	<-first
	a.Send(heartbeat("a", "b", 2))
	n.Cut("a", "b")
	close(release)
	waitFor(t, "round 2 to be dropped on delivery", func() bool { return n.Stats().Dropped[DropPartitioned] == 1 })
	if hb.count() != 1 {
		t.Errorf("b received %+v after the cut", hb.messages())
	}
}

// lossCount sends count timeout-now messages over a link losing them with probability p and
// returns how many were lost. Timeout-now has no response, so the only draws are the requests'.
func lossCount(t *testing.T, seed uint64, p float64, count int) uint64 {
	n := NewNetwork(WithSeed(seed))
	defer n.Close()
	a := n.Join("a", &fakeHandler{})
	n.Join("b", &fakeHandler{})
	n.SetDefaultDropRate(0.5) // overridden for a->b below
	n.SetDropRate("a", "b", p)
	for i := 1; i <= count; i++ {
		a.Send(timeoutNow("a", "b"))
		waitFor(t, "the message to be delivered or lost", func() bool {
			s := n.Stats()
			return s.Delivered+s.Dropped[DropLost] == uint64(i)
		})
	}
	return n.Stats().Dropped[DropLost]
}

func TestNetworkDropRate(t *testing.T) {
	const count = 200
	if got := lossCount(t, 1, 0, count); got != 0 {
		t.Errorf("rate 0 lost %d", got)
	}
	if got := lossCount(t, 1, 1, count); got != count {
		t.Errorf("rate 1 lost %d of %d", got, count)
	}
	first := lossCount(t, 42, 0.3, count)
	if first == 0 || first == count {
		t.Errorf("rate 0.3 lost %d of %d", first, count)
	}
	if again := lossCount(t, 42, 0.3, count); again != first {
		t.Errorf("the same seed lost %d, then %d", first, again)
	}
	checkNoLeaks(t)
}

func TestNetworkQueueOverflow(t *testing.T) {
	const size = 3
	n := newTestNetwork(t, WithQueueSize(size))
	release, first := make(chan struct{}), make(chan struct{})
	hb := &fakeHandler{step: func(ctx context.Context, m raft.Message) (*raft.Message, error) {
		if m.Round == 1 {
			close(first)
			<-release
		}
		return nil, nil
	}}
	a := n.Join("a", &fakeHandler{})
	n.Join("b", hb)
	a.Send(heartbeat("a", "b", 1))
	<-first
	for r := uint64(2); r <= 1+size+2; r++ {
		a.Send(heartbeat("a", "b", r))
	}
	if got := n.Stats().Dropped[DropQueueFull]; got != 2 {
		t.Errorf("dropped %d, want 2", got)
	}
	close(release)
	waitFor(t, "the queue to drain", func() bool { return hb.count() == 1+size })
	var rounds []uint64
	for _, m := range hb.messages() {
		rounds = append(rounds, m.Round)
	}
	if want := []uint64{1, 4, 5, 6}; !slices.Equal(rounds, want) {
		t.Errorf("b received rounds %v, want %v", rounds, want)
	}
}

func TestNetworkInvalidResponsesAreNotStepped(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mutate func(*raft.Message)
	}{
		{"from someone else", func(m *raft.Message) { m.From = "c" }},
		{"other round", func(m *raft.Message) { m.Round++ }},
		{"term zero", func(m *raft.Message) { m.Term = 0 }},
		{"wrong type", func(m *raft.Message) { m.Type = raft.MsgVoteResp }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := newTestNetwork(t)
			ha := &fakeHandler{}
			a := n.Join("a", ha)
			n.Join("b", &fakeHandler{step: func(_ context.Context, m raft.Message) (*raft.Message, error) {
				r := respond(m)
				tt.mutate(r)
				return r, nil
			}})
			a.Send(heartbeat("a", "b", 1))
			waitFor(t, "the invalid response", func() bool { return n.Stats().InvalidResponses == 1 })
			n.Close()
			if ha.count() != 0 {
				t.Errorf("a was stepped with %+v", ha.messages())
			}
		})
	}
}

func TestNetworkSendChecks(t *testing.T) {
	n := newTestNetwork(t)
	a := n.Join("a", &fakeHandler{})
	n.Join("b", &fakeHandler{})
	notFromA := vote("x", "b")
	a.Send(*respond(vote("b", "a")), notFromA, vote("a", "nobody"))
	a.Close()
	a.Send(vote("a", "b"))
	want := map[DropReason]uint64{DropNotRequest: 1, DropInvalid: 1, DropNoAddress: 1, DropClosed: 1}
	if got := n.Stats().Dropped; !mapsEqual(got, want) {
		t.Errorf("dropped %v, want %v", got, want)
	}
}

func TestNetworkJoinTwicePanics(t *testing.T) {
	n := newTestNetwork(t)
	n.Join("a", &fakeHandler{})
	defer func() {
		if recover() == nil {
			t.Error("joining an open id twice did not panic")
		}
	}()
	n.Join("a", &fakeHandler{})
}

func TestNetworkCloseCancelsAndWaits(t *testing.T) {
	n := newTestNetwork(t)
	var returned atomic.Bool
	started := make(chan struct{})
	hb := &fakeHandler{step: func(ctx context.Context, m raft.Message) (*raft.Message, error) {
		close(started)
		<-ctx.Done()
		returned.Store(true)
		return nil, ctx.Err()
	}}
	a := n.Join("a", &fakeHandler{})
	b := n.Join("b", hb)
	a.Send(heartbeat("a", "b", 1))
	<-started

	// b closes while a's worker is inside b's Step: Close cancels it and waits for it.
	b.Close()
	if !returned.Load() {
		t.Fatal("Close returned while a call into the member's handler was still running")
	}
	a.Send(heartbeat("a", "b", 2))
	if got := n.Stats().Dropped[DropNoAddress]; got != 1 {
		t.Errorf("message to a closed member: dropped %d, want 1", got)
	}
	if hb.count() != 1 {
		t.Errorf("closed member stepped %d times, want 1", hb.count())
	}

	// b restarts under the same id.
	hb2 := &fakeHandler{step: answer}
	n.Join("b", hb2)
	a.Send(heartbeat("a", "b", 3))
	waitFor(t, "the restarted member to receive", func() bool { return hb2.count() == 1 })
}

func TestNetworkSenderCloseCancelsItsCalls(t *testing.T) {
	n := newTestNetwork(t)
	started := make(chan struct{})
	var once sync.Once
	hb := &fakeHandler{step: func(ctx context.Context, m raft.Message) (*raft.Message, error) {
		once.Do(func() { close(started) })
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	a := n.Join("a", &fakeHandler{})
	n.Join("b", hb)
	a.Send(heartbeat("a", "b", 1))
	<-started
	a.Close() // must not hang on b's handler, which waits for its context
	if s := n.Stats(); s.Failed != 1 {
		t.Errorf("the cancelled call: stats %+v, want one failure", s)
	}
}

func TestNetworkConcurrentChaos(t *testing.T) {
	// Members talk to each other while links are cut, healed, made lossy and members
	// restart, all at once: the race detector checks the locking, the cleanup checks leaks.
	n := newTestNetwork(t, WithSeed(7))
	ids := []string{"a", "b", "c", "d", "e"}
	var (
		mu  sync.Mutex
		trs = map[string]Transport{}
	)
	for _, id := range ids {
		trs[id] = n.Join(id, &fakeHandler{step: answer})
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for _, id := range ids {
		wg.Go(func() {
			for r := uint64(1); ; r++ {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				tr := trs[id]
				mu.Unlock()
				for _, to := range ids {
					if to != id {
						tr.Send(heartbeat(id, to, r), vote(id, to))
					}
				}
			}
		})
	}
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			from, to := ids[i%5], ids[(i+2)%5]
			switch i % 6 {
			case 0:
				n.Cut(from, to)
			case 1:
				n.Isolate(from)
			case 2:
				n.SetDropRate(from, to, 0.2)
			case 3:
				n.Heal(from, to)
				n.Reconnect(to)
			case 4:
				n.HealAll()
			case 5:
				// Restart a member: close it, then join it again.
				mu.Lock()
				trs[from].Close()
				trs[from] = n.Join(from, &fakeHandler{step: answer})
				mu.Unlock()
			}
		}
	})
	waitFor(t, "traffic", func() bool { return n.Stats().Delivered > 2000 })
	close(stop)
	wg.Wait()
	s := n.Stats()
	if s.InvalidResponses != 0 {
		t.Errorf("invalid responses between correct members: %+v", s)
	}
	t.Logf("stats: %+v", s)
}

func TestNetworkRPCTimeout(t *testing.T) {
	n := newTestNetwork(t, WithRPCTimeout(time.Millisecond))
	ha := &fakeHandler{}
	a := n.Join("a", ha)
	n.Join("b", &fakeHandler{step: func(ctx context.Context, m raft.Message) (*raft.Message, error) {
		<-ctx.Done() // a hung member: only the timeout ends the call
		return nil, ctx.Err()
	}})
	a.Send(vote("a", "b"), vote("a", "b"))
	waitFor(t, "both calls to time out", func() bool { return n.Stats().Failed == 2 })
	if ha.count() != 0 {
		t.Errorf("a was stepped with %+v", ha.messages())
	}
}
