// Package transport carries peer messages between the members of a raft-elector cluster: an
// HTTP/JSON transport for real deployments (POST /raft/v1/<rpc>) and an in-memory network with
// partitions for the tests of other packages. Both deliver to a Handler, the local member.
//
// # Shape
//
// Every request (request-vote, append-entries, timeout-now) is one RPC. Its response, if the
// request type has one, travels back in the reply to that RPC, and the transport steps it into
// the sending member's Handler itself. Responses are therefore never passed to Send; doing so
// is a programming error that is logged and counted. Both transports share this shape, the
// message encoding and every check listed below, so a test over the in-memory network exercises
// the same semantics as production.
//
// # Guarantees
//
//   - Nothing malformed reaches Handler.Step. A message is decoded strictly (exact field names,
//     no unknown or duplicate fields, one JSON value and nothing after it, at most
//     MaxMessageBytes) and must pass raft.Message.Validate, in both directions.
//   - A response is stepped only if it answers the request it came back for: the response type
//     of that request, sent by the peer the request went to, addressed to this member, of the
//     same cluster, echoing the request's heartbeat round or pre-vote flag.
//   - Send never blocks on the network. Each peer has its own bounded queue drained in order by
//     its own goroutine, so a dead, slow or hung peer delays only the messages addressed to it.
//     When a queue is full the oldest message is dropped: heartbeats and votes are resent by the
//     protocol, and a fresh one is worth more than a stale one.
//   - Every message Send refuses or a full queue drops is counted by reason (Stats,
//     Observer). Messages still queued for a peer when it leaves the address book or the
//     transport closes are discarded without being counted.
//   - After Close returns, no goroutine of the transport is left and the transport never calls
//     Handler.Step again: in-flight calls have been cancelled through their context and waited
//     for. Handler.Step must therefore return once its context is cancelled.
//
// # What it does not guarantee
//
// Delivery: messages are dropped on overflow, timeouts and partitions, and the protocol is
// built to tolerate that. Exactly-once: a request whose reply timed out may still have been
// processed by the peer. Order across peers. Authentication: requests are not yet signed, so
// the peer port must only be reachable by the cluster's own pods (a NetworkPolicy) until
// request signing lands. Requests are built in one function and bodies read in one place, so
// that signing and verifying the body slot in without touching the rest.
package transport
