package transport

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/raft-elector/raft-elector/pkg/raft"
)

// Network is an in-memory network for the tests of other packages. Members join it with
// Join and get a Transport that behaves like the HTTP one: a bounded queue and a goroutine per
// peer, the same checks on what is sent, every message and response encoded and decoded by the
// same strict codec as on the wire, the recipient's Step called with the request and the
// response stepped into the sender. Links can be cut one direction at a time, members
// isolated, and messages lost at random.
//
// A request crosses the link from sender to recipient and its response the link back, so
// Cut(a, b) loses a's requests to b and the responses to b's requests to a, as a one-way
// partition of a real network would.
//
// Random loss draws from one source seeded by WithSeed. The sequence of draws is fixed by the
// seed, but which message gets which draw depends on goroutine scheduling: for schedules that
// replay exactly, drive the cores in pkg/raft directly.
type Network struct {
	queueSize  int
	rpcTimeout time.Duration
	log        hclog.Logger
	stats      counters

	mu              sync.Mutex
	members         map[string]*memEndpoint
	cut             map[[2]string]bool
	isolated        map[string]bool
	dropRate        map[[2]string]float64
	defaultDropRate float64
	rand            *rand.Rand
}

// NetworkOption configures a Network.
type NetworkOption func(*Network)

// WithSeed seeds the random loss (default seed 1).
func WithSeed(seed uint64) NetworkOption {
	return func(n *Network) { n.rand = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) }
}

// WithQueueSize sets each member's per-peer queue size (default DefaultQueueSize).
func WithQueueSize(size int) NetworkOption {
	return func(n *Network) { n.queueSize = size }
}

// WithRPCTimeout bounds each call of a recipient's Step, as the HTTP RPC timeout does. By
// default there is none: a recipient's Step is only cancelled when either member closes.
func WithRPCTimeout(d time.Duration) NetworkOption {
	return func(n *Network) { n.rpcTimeout = d }
}

// WithLogger logs refused and invalid messages at debug level.
func WithLogger(l hclog.Logger) NetworkOption {
	return func(n *Network) { n.log = l }
}

// NewNetwork returns an empty network with every link up and no loss.
func NewNetwork(opts ...NetworkOption) *Network {
	n := &Network{
		queueSize: DefaultQueueSize,
		log:       hclog.NewNullLogger(),
		members:   map[string]*memEndpoint{},
		cut:       map[[2]string]bool{},
		isolated:  map[string]bool{},
		dropRate:  map[[2]string]float64{},
	}
	WithSeed(1)(n)
	for _, o := range opts {
		o(n)
	}
	if n.queueSize <= 0 {
		panic(fmt.Sprintf("transport: queue size %d must be positive", n.queueSize))
	}
	return n
}

// Join adds member id, whose received messages go to h, and returns its transport. SetPeers
// on it is accepted and ignored: in memory, members are reached by id. An id may join again
// after its transport was closed (a restart); joining an id that is still open panics.
func (n *Network) Join(id string, h Handler) Transport {
	if id == "" || h == nil {
		panic("transport: Join needs a member id and a handler")
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &memEndpoint{net: n, id: id, handler: h, ctx: ctx, cancel: cancel, outboxes: map[string]*outbox{}}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.members[id]; ok {
		cancel()
		panic(fmt.Sprintf("transport: member %q joined twice", id))
	}
	n.members[id] = e
	return e
}

// Cut loses every message crossing the link from -> to (requests from `from`, and responses
// to requests from `to`) until Heal(from, to) or HealAll.
func (n *Network) Cut(from, to string) {
	n.mu.Lock()
	n.cut[[2]string{from, to}] = true
	n.mu.Unlock()
}

// Heal undoes Cut(from, to). An isolation of either member still applies.
func (n *Network) Heal(from, to string) {
	n.mu.Lock()
	delete(n.cut, [2]string{from, to})
	n.mu.Unlock()
}

// Isolate cuts every link to and from id, including those to members that join later, until
// Reconnect(id) or HealAll.
func (n *Network) Isolate(id string) {
	n.mu.Lock()
	n.isolated[id] = true
	n.mu.Unlock()
}

// Reconnect undoes Isolate(id). Links cut one by one stay cut.
func (n *Network) Reconnect(id string) {
	n.mu.Lock()
	delete(n.isolated, id)
	n.mu.Unlock()
}

// HealAll undoes every Cut and Isolate. Loss rates stay.
func (n *Network) HealAll() {
	n.mu.Lock()
	clear(n.cut)
	clear(n.isolated)
	n.mu.Unlock()
}

// SetDropRate makes the link from -> to lose each message crossing it with probability p.
func (n *Network) SetDropRate(from, to string, p float64) {
	checkRate(p)
	n.mu.Lock()
	n.dropRate[[2]string{from, to}] = p
	n.mu.Unlock()
}

// SetDefaultDropRate sets the loss probability of every link without its own SetDropRate.
func (n *Network) SetDefaultDropRate(p float64) {
	checkRate(p)
	n.mu.Lock()
	n.defaultDropRate = p
	n.mu.Unlock()
}

func checkRate(p float64) {
	if !(p >= 0 && p <= 1) {
		panic(fmt.Sprintf("transport: drop rate %v is not a probability", p))
	}
}

// Stats returns the counters of every member of the network together.
func (n *Network) Stats() Stats { return n.stats.snapshot() }

// Close closes every member's transport.
func (n *Network) Close() error {
	n.mu.Lock()
	members := make([]*memEndpoint, 0, len(n.members))
	for _, e := range n.members {
		members = append(members, e)
	}
	n.mu.Unlock()
	for _, e := range members {
		e.Close()
	}
	return nil
}

// route decides whether a message from -> to crosses the network now, and returns the
// recipient if it does. Random loss applies only if lossy is set.
func (n *Network) route(from, to string, lossy bool) (*memEndpoint, DropReason) {
	n.mu.Lock()
	defer n.mu.Unlock()
	e := n.members[to]
	if e == nil {
		return nil, DropNoAddress
	}
	if n.cut[[2]string{from, to}] || n.isolated[from] || n.isolated[to] {
		return nil, DropPartitioned
	}
	p, ok := n.dropRate[[2]string{from, to}]
	if !ok {
		p = n.defaultDropRate
	}
	// Draw only on lossy links, so that the draws one link takes do not depend on how much
	// traffic the lossless ones carry.
	if lossy && p > 0 && n.rand.Float64() < p {
		return nil, DropLost
	}
	return e, ""
}

// memEndpoint is one member's transport on a Network.
type memEndpoint struct {
	net     *Network
	id      string
	handler Handler

	ctx    context.Context // cancelled by Close: ends its workers and calls into its handler
	cancel context.CancelFunc

	workers sync.WaitGroup
	inbound gate // calls into handler in flight, from any member's worker

	mu       sync.Mutex
	closed   bool
	outboxes map[string]*outbox
}

var _ Transport = (*memEndpoint)(nil)

func (e *memEndpoint) Send(msgs ...raft.Message) {
	n := e.net
	for _, m := range msgs {
		if reason, err := checkOutbound(e.id, m); err != nil {
			n.log.Debug("dropping a message the transport must not send", "member", e.id, "reason", reason, "error", err)
			n.stats.drop(reason)
			continue
		}
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			n.stats.drop(DropClosed)
			continue
		}
		// Checked again on delivery; checking now keeps a partitioned link's queue empty.
		if _, reason := n.route(e.id, m.To, false); reason != "" {
			e.mu.Unlock()
			n.stats.drop(reason)
			continue
		}
		o := e.outboxes[m.To]
		if o == nil {
			o = newOutbox(e.ctx, m.To, n.queueSize)
			e.outboxes[m.To] = o
			e.workers.Add(1)
			go func() {
				defer e.workers.Done()
				o.run(e.deliver)
			}()
		}
		e.mu.Unlock()
		if o.push(m) {
			n.stats.drop(DropQueueFull)
		}
	}
}

// deliver is one RPC over the in-memory network, run by the sender's worker for m.To.
func (e *memEndpoint) deliver(ctx context.Context, m raft.Message) {
	n := e.net
	target, reason := n.route(m.From, m.To, true)
	if target == nil {
		n.stats.drop(reason)
		return
	}
	req, err := wireCopy(m)
	if err != nil { // cannot happen: m passed the same checks in Send
		n.stats.drop(DropInvalid)
		return
	}
	resp, err := target.step(ctx, n.rpcTimeout, req)
	if err != nil {
		n.stats.failed.Add(1)
		if ctx.Err() == nil {
			n.log.Debug("recipient refused a message", "from", m.From, "to", m.To, "type", m.Type, "error", err)
		}
		return
	}
	n.stats.delivered.Add(1)
	if resp == nil {
		return
	}
	if ctx.Err() != nil {
		return // the sender is closing
	}
	// The reply crosses the reverse link. The sender is known to be alive (ctx), so "no
	// address" only means it is leaving; its closed gate refuses the step below.
	if _, reason := n.route(m.To, m.From, true); reason != "" && reason != DropNoAddress {
		n.stats.drop(reason)
		return
	}
	r, err := wireCopy(*resp)
	if err == nil {
		err = checkResponse(m, r)
	}
	if err != nil {
		n.stats.invalid.Add(1)
		n.log.Debug("invalid response", "from", m.To, "to", m.From, "error", err)
		return
	}
	if _, err := e.step(ctx, 0, r); err != nil && ctx.Err() == nil {
		n.log.Debug("member refused a response", "member", e.id, "from", r.From, "error", err)
	}
}

// step calls the member's handler, unless it has closed. The call's context ends when the
// caller's does (the sender closed), when this member closes, or after timeout if nonzero.
func (e *memEndpoint) step(ctx context.Context, timeout time.Duration, m raft.Message) (*raft.Message, error) {
	if !e.inbound.enter() {
		return nil, fmt.Errorf("member %s is closed", e.id)
	}
	defer e.inbound.exit()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(e.ctx, cancel)()
	if timeout > 0 {
		var cancelTimeout context.CancelFunc
		ctx, cancelTimeout = context.WithTimeout(ctx, timeout)
		defer cancelTimeout()
	}
	return e.handler.Step(ctx, m)
}

// wireCopy sends m through the wire encoding, so that the in-memory network accepts exactly
// what the HTTP transport would.
func wireCopy(m raft.Message) (raft.Message, error) {
	b, err := encodeMessage(m)
	if err != nil {
		return raft.Message{}, err
	}
	return decodeMessage(b)
}

// SetPeers is ignored: members of a Network are reached by id.
func (e *memEndpoint) SetPeers(map[string]string) {}

// Close leaves the network: messages to this member are dropped from now on, its workers stop,
// and calls into its handler, its own or other members', are cancelled and waited for.
func (e *memEndpoint) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.mu.Unlock()

	n := e.net
	n.mu.Lock()
	if n.members[e.id] == e {
		delete(n.members, e.id)
	}
	n.mu.Unlock()

	e.cancel()
	e.workers.Wait()
	e.inbound.close()
	return nil
}
