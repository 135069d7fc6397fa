package kubeenv

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// NodeName is the spec.nodeName CreateRunningPod gives pods that have none. No Node object
// exists; the API server does not check. Being bound to a node matters: the API server deletes
// an unscheduled pod at once, while a scheduled one is only marked terminating (deletionTimestamp)
// until a kubelet, or a test, deletes it with a zero grace period.
const NodeName = "kubeenv-node"

// CreateRunningPod creates pod and then, through the status subresource, gives it the status a
// kubelet would report for a running, ready pod at podIP: phase Running, status.podIP and
// status.podIPs, conditions PodScheduled, Initialized, ContainersReady and Ready all True, and
// a running, ready status for each container. It returns the pod as stored after the status
// update.
//
// Missing pieces are filled in on a copy: a container "app" (image "kubeenv.invalid/app", never
// pulled), spec.nodeName NodeName, and the namespace argument when pod.Namespace is empty.
func CreateRunningPod(ctx context.Context, client kubernetes.Interface, namespace string, pod *corev1.Pod, podIP string) (*corev1.Pod, error) {
	pod = pod.DeepCopy()
	if pod.Namespace == "" {
		pod.Namespace = namespace
	}
	if len(pod.Spec.Containers) == 0 {
		pod.Spec.Containers = []corev1.Container{{Name: "app", Image: "kubeenv.invalid/app"}}
	}
	if pod.Spec.NodeName == "" {
		pod.Spec.NodeName = NodeName
	}
	created, err := client.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	SetRunning(created, podIP, true)
	updated, err := client.CoreV1().Pods(created.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("set status of pod %s/%s: %w", created.Namespace, created.Name, err)
	}
	return updated, nil
}

// SetRunning rewrites pod.Status in place to what a kubelet reports for a running pod at
// podIP whose containers are ready (or not). It only changes the object; send it with
// UpdateStatus, or use UpdatePodStatus.
func SetRunning(pod *corev1.Pod, podIP string, ready bool) {
	now := metav1.NewTime(time.Now())
	readyStatus := corev1.ConditionFalse
	if ready {
		readyStatus = corev1.ConditionTrue
	}
	pod.Status.Phase = corev1.PodRunning
	// The "node" is this machine.
	pod.Status.HostIP = "127.0.0.1"
	pod.Status.HostIPs = []corev1.HostIP{{IP: "127.0.0.1"}}
	pod.Status.PodIP = podIP
	pod.Status.PodIPs = []corev1.PodIP{{IP: podIP}}
	if pod.Status.StartTime == nil {
		pod.Status.StartTime = &now
	}
	pod.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: readyStatus, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: readyStatus, LastTransitionTime: now},
	}
	pod.Status.ContainerStatuses = pod.Status.ContainerStatuses[:0]
	for _, c := range pod.Spec.Containers {
		pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, corev1.ContainerStatus{
			Name:    c.Name,
			Image:   c.Image,
			ImageID: c.Image,
			Ready:   ready,
			Started: &ready,
			State:   corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: *pod.Status.StartTime}},
		})
	}
}

// UpdatePodStatus reads the pod, lets mutate change it (only its status is stored) and writes
// it through the status subresource, retrying on a resourceVersion conflict, for tests that
// move a pod between states: SetRunning with ready=false, phase Failed, or an empty podIP.
func UpdatePodStatus(ctx context.Context, client kubernetes.Interface, namespace, name string, mutate func(*corev1.Pod)) (*corev1.Pod, error) {
	var updated *corev1.Pod
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		mutate(pod)
		updated, err = client.CoreV1().Pods(namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("update status of pod %s/%s: %w", namespace, name, err)
	}
	return updated, nil
}

// ForceDeletePod deletes a pod with a zero grace period, as a kubelet does once the containers
// of a terminating pod have stopped. A pod that is already gone is not an error.
func ForceDeletePod(ctx context.Context, client kubernetes.Interface, namespace, name string) error {
	zero := int64(0)
	err := client.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("force delete pod %s/%s: %w", namespace, name, err)
	}
	return nil
}
