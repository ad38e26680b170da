// Package guest builds a tiny Linux guest (a Debian kernel and a busybox
// initramfs) and boots it under QEMU for the project's tests and demo.
//
// The guest's /init brings up every virtio-net NIC it sees, also NICs
// hot-plugged later over QMP, runs busybox udhcpc on each, and offers a
// command channel on its serial console (see init.sh for the protocol).
package guest

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/cavaliergopher/cpio"
)

//go:embed init.sh
var initScript []byte

//go:embed udhcpc.script
var udhcpcScript []byte

// imageFormat changes whenever the layout of the initramfs changes in a way
// its inputs' hash would not notice.
const imageFormat = "xs-guest-initramfs-1"

// Image is a bootable guest: a kernel and an initramfs (gzip'd newc cpio).
type Image struct {
	Kernel, Initrd string
}

// Build provides the guest image under cacheDir: the kernel and the
// virtio-net modules from Debian's kernel package (scripts/guest-kernel.sh,
// run only when cacheDir/kernel is incomplete) and an initramfs with the
// host's static busybox, those modules and the guest's /init. The initramfs
// is named after a hash of everything in it and rebuilt only when that
// changes.
func Build(cacheDir string) (Image, error) {
	if cacheDir == "" {
		return Image{}, errors.New("guest: no cache directory")
	}
	cacheDir, err := filepath.Abs(cacheDir)
	if err != nil {
		return Image{}, err
	}
	kdir := filepath.Join(cacheDir, "kernel")
	if err := ensureKernel(kdir); err != nil {
		return Image{}, err
	}
	busybox, err := findBusybox()
	if err != nil {
		return Image{}, err
	}
	files, err := initramfsFiles(kdir, busybox)
	if err != nil {
		return Image{}, err
	}
	h := sha256.New()
	io.WriteString(h, imageFormat)
	for _, f := range files {
		fmt.Fprintf(h, "\x00%s\x00%o\x00%s\x00%d\x00", f.name, f.mode, f.link, len(f.data))
		h.Write(f.data)
	}
	sum := hex.EncodeToString(h.Sum(nil))[:16]
	img := Image{
		Kernel: filepath.Join(kdir, "vmlinuz"),
		Initrd: filepath.Join(cacheDir, "initrd-"+sum+".cpio.gz"),
	}
	if _, err := os.Stat(img.Initrd); err == nil {
		return img, nil
	}
	if err := writeInitramfs(img.Initrd, files); err != nil {
		return Image{}, err
	}
	// Older initramfs files are stale now.
	if old, err := filepath.Glob(filepath.Join(cacheDir, "initrd-*.cpio.gz")); err == nil {
		for _, o := range old {
			if o != img.Initrd {
				os.Remove(o)
			}
		}
	}
	return img, nil
}

func ensureKernel(kdir string) error {
	if fileExists(filepath.Join(kdir, "vmlinuz")) && fileExists(filepath.Join(kdir, "modules", "load-order")) {
		return nil
	}
	script, err := kernelScript()
	if err != nil {
		return err
	}
	cmd := exec.Command("bash", script, kdir)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("guest: %s: %w", script, err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(10 * time.Minute):
		cmd.Process.Kill()
		<-done
		err = errors.New("timed out")
	}
	if err != nil {
		return fmt.Errorf("guest: %s %s: %v\n%s", script, kdir, err, out.Bytes())
	}
	return nil
}

// kernelScript finds scripts/guest-kernel.sh: $XS_GUEST_KERNEL_SCRIPT, next
// to this source file's module root, or above the working directory.
func kernelScript() (string, error) {
	if s := os.Getenv("XS_GUEST_KERNEL_SCRIPT"); s != "" {
		return s, nil
	}
	var dirs []string
	if _, file, _, ok := runtime.Caller(0); ok {
		dirs = append(dirs, filepath.Dir(file))
	}
	if wd, err := os.Getwd(); err == nil {
		dirs = append(dirs, wd)
	}
	for _, d := range dirs {
		for {
			s := filepath.Join(d, "scripts", "guest-kernel.sh")
			if fileExists(s) {
				return s, nil
			}
			up := filepath.Dir(d)
			if up == d {
				break
			}
			d = up
		}
	}
	return "", errors.New("guest: scripts/guest-kernel.sh not found (set XS_GUEST_KERNEL_SCRIPT)")
}

// findBusybox returns the host's busybox, which must be statically linked
// (Debian: busybox-static).
func findBusybox() (string, error) {
	var path string
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if fileExists(p) {
			path = p
			break
		}
	}
	if path == "" {
		p, err := exec.LookPath("busybox")
		if err != nil {
			return "", errors.New("guest: busybox not found (apt-get install busybox-static)")
		}
		path = p
	}
	f, err := elf.Open(path)
	if err != nil {
		return "", fmt.Errorf("guest: %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "", fmt.Errorf("guest: %s is dynamically linked; the guest needs a static busybox (apt-get install busybox-static)", path)
		}
	}
	return path, nil
}

type file struct {
	name string // without leading slash
	mode cpio.FileMode
	link string // symlink target
	data []byte
}

// initramfsFiles lists the initramfs's contents in the order they are
// written (directories before what they hold).
func initramfsFiles(kdir, busybox string) ([]file, error) {
	var files []file
	dir := func(name string) { files = append(files, file{name: name, mode: cpio.TypeDir | 0o755}) }
	for _, d := range []string{"bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "proc", "sys",
		"dev", "tmp", "run", "var", "root", "lib", "lib/modules", "lib/modules/xs"} {
		dir(d)
	}
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return nil, err
	}
	files = append(files,
		file{name: "init", mode: cpio.TypeReg | 0o755, data: initScript},
		file{name: "etc/udhcpc.script", mode: cpio.TypeReg | 0o755, data: udhcpcScript},
		file{name: "etc/passwd", mode: cpio.TypeReg | 0o644, data: []byte("root:x:0:0:root:/root:/bin/sh\n")},
		file{name: "etc/group", mode: cpio.TypeReg | 0o644, data: []byte("root:x:0:\n")},
		file{name: "bin/busybox", mode: cpio.TypeReg | 0o755, data: bb},
	)
	// One symlink per applet, where busybox itself would install it.
	list, err := exec.Command(busybox, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("guest: %s --list-full: %w", busybox, err)
	}
	for _, a := range strings.Fields(string(list)) {
		a = strings.TrimPrefix(a, "/")
		if a == "bin/busybox" || strings.Contains(a, "..") {
			continue
		}
		d := filepath.Dir(a)
		switch d {
		case "bin", "sbin", "usr/bin", "usr/sbin":
		default:
			continue
		}
		target := "/bin/busybox"
		files = append(files, file{name: a, mode: cpio.TypeSymlink | 0o777, link: target})
	}
	order, err := os.ReadFile(filepath.Join(kdir, "modules", "load-order"))
	if err != nil {
		return nil, err
	}
	files = append(files, file{name: "lib/modules/xs/load-order", mode: cpio.TypeReg | 0o644, data: order})
	for _, m := range strings.Fields(string(order)) {
		data, err := os.ReadFile(filepath.Join(kdir, "modules", m+".ko"))
		if err != nil {
			return nil, err
		}
		files = append(files, file{name: "lib/modules/xs/" + m + ".ko", mode: cpio.TypeReg | 0o644, data: data})
	}
	return files, nil
}

// writeInitramfs writes files as a gzip'd newc cpio archive to path,
// atomically.
func writeInitramfs(path string, files []file) (err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".initrd-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	zw, err := gzip.NewWriterLevel(tmp, gzip.BestSpeed)
	if err != nil {
		return err
	}
	cw := cpio.NewWriter(zw)
	for _, f := range files {
		hdr := &cpio.Header{Name: f.name, Mode: f.mode, Links: 1}
		body := f.data
		if f.mode&cpio.ModeType == cpio.TypeSymlink {
			body = []byte(f.link)
		}
		if f.mode&cpio.ModeType == cpio.TypeDir {
			hdr.Links = 2
		}
		hdr.Size = int64(len(body))
		if err := cw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("guest: initramfs %s: %w", f.name, err)
		}
		if _, err := cw.Write(body); err != nil {
			return fmt.Errorf("guest: initramfs %s: %w", f.name, err)
		}
	}
	if err := cw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Size() > 0
}
