// Package discovery tells a member who the other members are and where to reach them.
// Addresses always come from discovery; the Raft state holds member identities only.
//
// Kubernetes discovery (type Kubernetes) takes the members from the pods of one namespace
// matching a label selector, through one shared informer; its doc comment and
// docs/discovery.md state exactly which pod states count.
//
// Static discovery takes the list from the command line (--peers id=host:port,...). Each
// member reaches a peer at the address its own list gives, so lists may differ between
// members (a proxy per link, for instance) as long as the ids agree.
package discovery

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/raft-elector/raft-elector/pkg/raft"
)

// Member is one member as discovery sees it.
type Member struct {
	// ID is the member's identity in the cluster. In Kubernetes it is PodID(name, uid).
	ID string
	// Addr is host:port of the member's peer endpoint.
	Addr string
	// Name is the name to show for the member (the pod name; the id in static mode).
	Name string
	// Node and Zone say where the member runs, when known (Kubernetes), for voter placement.
	Node, Zone string
}

// PodIDSeparator joins a pod's name and UID into a member id. Pod names are DNS subdomains
// ([a-z0-9.-]), so the separator is never part of a name and the name can be recovered.
const PodIDSeparator = "_"

// PodID is the member id of a pod: its name and UID, so that a pod re-created under the same
// name is a new member.
func PodID(name, uid string) string { return name + PodIDSeparator + uid }

// NameOf returns the name to show for member id: the pod name of a PodID, else the id.
func NameOf(id string) string {
	if name, uid, ok := strings.Cut(id, PodIDSeparator); ok && name != "" && uid != "" && !strings.Contains(uid, PodIDSeparator) {
		return name
	}
	return id
}

// ParseStatic parses a static member list "id=host:port,id=host:port". Ids must be unique,
// non-empty and at most raft.MaxIDLength bytes; addresses must be host:port with a port in
// 1..65535. The result is sorted by id.
func ParseStatic(spec string) ([]Member, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, fmt.Errorf("empty member list; want id=host:port,id=host:port")
	}
	var out []Member
	seen := map[string]bool{}
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		id, addr, ok := strings.Cut(item, "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("entry %q is not id=host:port", item)
		}
		if len(id) > raft.MaxIDLength {
			return nil, fmt.Errorf("id %.20q... is longer than %d bytes", id, raft.MaxIDLength)
		}
		if strings.ContainsAny(id, " \t=,/") {
			return nil, fmt.Errorf("id %q contains a space, '=', ',' or '/'", id)
		}
		if seen[id] {
			return nil, fmt.Errorf("id %q listed twice", id)
		}
		if err := CheckAddr(addr); err != nil {
			return nil, fmt.Errorf("address of %q: %w", id, err)
		}
		seen[id] = true
		out = append(out, Member{ID: id, Addr: addr, Name: id})
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// CheckAddr checks that addr is host:port with a host and a port in 1..65535.
func CheckAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		// The reason only: a *net.AddrError repeats the address unquoted, and a control
		// character in it would break the one-line error.
		reason := err.Error()
		if ae, ok := err.(*net.AddrError); ok {
			reason = ae.Err
		}
		return fmt.Errorf("%q is not host:port: %s", addr, reason)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", addr)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return fmt.Errorf("%q has no valid port", addr)
	}
	return nil
}

// IDs returns the ids of members in order.
func IDs(members []Member) []string {
	out := make([]string, len(members))
	for i, m := range members {
		out[i] = m.ID
	}
	return out
}

// AddrBook maps ids to addresses, leaving out self.
func AddrBook(members []Member, self string) map[string]string {
	out := make(map[string]string, len(members))
	for _, m := range members {
		if m.ID != self {
			out[m.ID] = m.Addr
		}
	}
	return out
}
