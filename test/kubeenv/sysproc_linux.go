package kubeenv

import (
	"errors"
	"syscall"
)

// childSysProcAttr puts a child in its own process group, so killGroup reaches everything it
// spawned, and asks the kernel to SIGKILL it when the test binary dies, so a test killed by
// `go test -timeout`, Ctrl-C or SIGKILL leaves no etcd or kube-apiserver behind.
//
// Pdeathsig fires when the OS thread that started the child exits, not the process. The Go
// runtime only ends a thread when a goroutine exits while locked to it (runtime.LockOSThread),
// which nothing in these tests does; Stop and the cleanup of StartT kill the children anyway.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

func killGroup(pid int) {
	// Negative pid: the process group the child leads (Setpgid).
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}
