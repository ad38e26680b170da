// Package inns runs code inside a named network namespace.
package inns

import (
	"runtime"

	"github.com/vishvananda/netns"
)

// Do runs fn on an OS thread switched into the named namespace, for code
// that must create sockets or devices there (a socket stays in the
// namespace it was made in). The thread is left locked when fn returns,
// so the runtime discards it: no other goroutine ever runs in the wrong
// namespace.
func Do(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		target, err := netns.GetFromName(name)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}
