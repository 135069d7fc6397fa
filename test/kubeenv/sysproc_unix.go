//go:build unix && !linux

package kubeenv

import (
	"errors"
	"syscall"
)

// childSysProcAttr puts a child in its own process group, so killGroup reaches everything it
// spawned. There is no Pdeathsig outside Linux: a test binary killed with SIGKILL can leave
// children behind there, while Stop and the cleanup of StartT still kill them.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

func killGroup(pid int) {
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}
