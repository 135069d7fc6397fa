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
//   - What a client of the peer port can make a member hold is bounded (NewServer, Serve): at
//     most HTTPConfig.MaxConns connections (a newcomer evicts one that has sent no complete
//     request yet, so silent or trickling clients cannot lock the port; one that is serving a
//     request or served one in the last 5 s is never evicted), 2 s to send the headers
//     (16 KiB at most) and 5 s for the whole request, 16 KiB of body per request and only
//     a few larger bodies at once. Every refusal ends its connection.
//   - Every message Send refuses or a full queue drops is counted by reason (Stats,
//     Observer). Messages still queued for a peer when it leaves the address book or the
//     transport closes are discarded without being counted.
//   - After Close returns, no goroutine of the transport is left and the transport never calls
//     Handler.Step again: in-flight calls have been cancelled through their context and waited
//     for. Handler.Step must therefore return once its context is cancelled.
//   - With keys (HTTPConfig.Keys, a KeyFile), peer messages are authenticated (auth.go has the
//     exact format; docs/security.md the operations): every request is signed with HMAC-SHA256
//     over its method, path, a timestamp, a random nonce and its body, and a request that is
//     not validly signed by a key the member holds, whose timestamp lies outside the clock-skew
//     window, or that was seen before is refused with 401 before its body is decoded, so it
//     reaches neither Handler.Step nor any state. Replies are signed and bound to the
//     request's nonce; the client uses a reply only if its signature is valid. The replay cache
//     is bounded and fails closed. The first key signs and every key verifies, so keys rotate
//     without downtime, and a KeyFile is re-read while the member runs. The transition mode
//     (HTTPConfig.AcceptUnsigned), for turning authentication on or off in a running cluster,
//     also accepts messages that carry no signature at all, and so protects nothing while set.
//
// # What it does not guarantee
//
// Delivery: messages are dropped on overflow, timeouts and partitions, and the protocol is
// built to tolerate that. Exactly-once: a request whose reply timed out may still have been
// processed by the peer. Order across peers. Confidentiality: messages are signed, not
// encrypted (they hold ids and terms, no secrets). Authorization among key holders: anyone with
// a key can speak for any member id of the cluster. Without keys, nothing is authenticated and
// the peer port must only be reachable by the cluster's own pods (a NetworkPolicy).
package transport
