// Package bpf holds the switch's XDP programs and the Go bindings that bpf2go
// generates from them. The generated objects are committed so that building
// the daemon needs no clang; `make generate` rebuilds them.
package bpf

// Every go:generate line here is also run by TestGeneratedObjectsMatchSource,
// which reads them from this file: keep one bpf2go invocation per line.

//go:generate go tool bpf2go -tags linux -target bpfel -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" port src/port.c
//go:generate go tool bpf2go -tags linux -target bpfel -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" uplink src/uplink.c
