// pause is the sandbox image's only program: it holds a pod's namespaces open, reaps the
// orphans that end up as its children (it is PID 1 of the pod's PID namespace when the pod
// shares one) and exits cleanly when the runtime stops the sandbox. Built statically from this
// file because nothing can be pulled in the test environment (no registry.k8s.io/pause).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
