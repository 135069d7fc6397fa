package main

import (
	"context"
	"fmt"

	"github.com/hashicorp/go-hclog"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/raft-elector/raft-elector/pkg/discovery"
	"github.com/raft-elector/raft-elector/pkg/node"
	"github.com/raft-elector/raft-elector/pkg/podlabel"
)

// kubeParts are the Kubernetes pieces of a member: discovery and the pod labeler.
type kubeParts struct {
	disc    *discovery.Kubernetes
	labeler *podlabel.Labeler
}

// restConfig loads --kubeconfig, or the in-cluster service account.
func restConfig(c *config) (*rest.Config, error) {
	var (
		rc  *rest.Config
		err error
	)
	if c.Kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("load --kubeconfig %s: %w", c.Kubeconfig, err)
		}
	} else {
		rc, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster config: %w (outside a cluster, pass --kubeconfig)", err)
		}
	}
	rc.UserAgent = "raft-elector/" + version
	// Client-side rate limits: discovery is one watch and labels change only with the leader.
	rc.QPS, rc.Burst = 5, 10
	// No rc.Timeout: client-go would put it on the pod watch too, ending it (and opening a
	// new one) every few seconds. The labeler bounds each of its calls itself.
	return rc, nil
}

func newKubeParts(c *config, log hclog.Logger) (*kubeParts, error) {
	// client-go logs through klog; send it to our logger so every line has one format.
	klog.LogToStderr(false)
	klog.SetOutput(log.Named("client-go").StandardWriter(&hclog.StandardLoggerOptions{InferLevels: true}))
	rc, err := restConfig(c)
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	disc, err := discovery.NewKubernetes(discovery.KubernetesConfig{
		Client:    client,
		Namespace: c.Namespace,
		Selector:  c.Selector,
		PeerPort:  c.PeerPort,
		Logger:    log.Named("discovery"),
	})
	if err != nil {
		return nil, err
	}
	lab, err := podlabel.New(podlabel.Config{
		Client:        client,
		Namespace:     c.Namespace,
		PodName:       c.PodName,
		Key:           c.LabelKey,
		LeaderValue:   c.LeaderValue,
		FollowerValue: c.FollowerValue,
		Pods:          disc.Pods,
		Logger:        log.Named("labels"),
	})
	if err != nil {
		return nil, err
	}
	return &kubeParts{disc: disc, labeler: lab}, nil
}

// run runs discovery and the labeler, and feeds every change of the pods into the member's
// configuration and the transport's address book. It returns when ctx ends.
func (k *kubeParts) run(ctx context.Context, m *member) {
	go func() {
		if err := k.disc.Run(ctx); err != nil && ctx.Err() == nil {
			m.log.Error("kubernetes discovery stopped", "error", err)
		}
	}()
	go func() {
		if err := k.labeler.Run(ctx); err != nil && ctx.Err() == nil {
			m.log.Error("pod labeler stopped", "error", err)
		}
	}()
	if err := k.disc.WaitForSync(ctx); err != nil {
		return
	}
	for {
		changed := k.disc.Changed()
		members := k.disc.Members()
		k.labeler.PodsChanged()
		m.tr.SetPeers(discovery.AddrBook(members, m.cfg.ID))
		ids := discovery.IDs(members)
		if err := m.node.SetMembers(ctx, ids, nil); err != nil && ctx.Err() == nil {
			m.log.Error("cannot apply the members discovery reports", "error", err, "members", len(ids))
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

var _ node.Observer = (*podlabel.Labeler)(nil)
