// Command imagetool does the parts of the appliance image build that need
// more than shell: reading the machine's APT mirror, writing GRUB's BIOS boot
// code into a disk image file, and packing the OVA. It is a build tool, not
// part of the shipped product.
//
//	imagetool mirrors [--root /] [--release bookworm]
//	imagetool mbr --disk disk.raw --boot-img boot.img --core-img core.img
//	imagetool ova --vmdk disk.vmdk --out shoal.ova --name shoal --version V [--epoch N]
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/shoal-project/shoal/packaging/internal/aptsrc"
	"github.com/shoal-project/shoal/packaging/internal/mbr"
	"github.com/shoal-project/shoal/packaging/internal/ovf"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "imagetool: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: imagetool mirrors|mbr|ova [options]")
	}
	fs := flag.NewFlagSet("imagetool "+args[0], flag.ContinueOnError)
	switch args[0] {
	case "mirrors":
		root := fs.String("root", "/", "root directory whose etc/apt is read")
		release := fs.String("release", "bookworm", "release family to keep")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		all, err := aptsrc.ReadSystem(*root)
		if err != nil {
			return err
		}
		src := aptsrc.ForRelease(all, *release, "main")
		if len(src) == 0 {
			return fmt.Errorf("mirrors: no %q source with component main in %s/etc/apt", *release, *root)
		}
		for _, s := range src {
			fmt.Fprintln(stdout, s.Line())
		}
		return nil
	case "mbr":
		disk := fs.String("disk", "", "raw GPT disk image to write into")
		bootImg := fs.String("boot-img", "/usr/lib/grub/i386-pc/boot.img", "GRUB boot.img (512 bytes)")
		coreImg := fs.String("core-img", "", "GRUB core.img built with grub-mkimage -O i386-pc")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *disk == "" || *coreImg == "" {
			return errors.New("mbr: --disk and --core-img are required")
		}
		boot, err := os.ReadFile(*bootImg)
		if err != nil {
			return fmt.Errorf("mbr: %w", err)
		}
		core, err := os.ReadFile(*coreImg)
		if err != nil {
			return fmt.Errorf("mbr: %w", err)
		}
		f, err := os.OpenFile(*disk, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("mbr: %w", err)
		}
		defer func() { _ = f.Close() }()
		start, err := mbr.Install(f, boot, core)
		if err != nil {
			return fmt.Errorf("mbr: %w", err)
		}
		fmt.Fprintf(stdout, "mbr: boot.img in sector 0, core.img (%d bytes) at sector %d\n", len(core), start)
		return f.Close()
	case "ova":
		vmdk := fs.String("vmdk", "", "streamOptimized VMDK")
		out := fs.String("out", "", "OVA file to write")
		name := fs.String("name", "shoal", "virtual machine name")
		version := fs.String("version", "dev", "product version")
		capacity := fs.Int64("capacity", 0, "virtual disk capacity in bytes")
		epoch := fs.String("epoch", os.Getenv("SOURCE_DATE_EPOCH"), "modification time of the archive members (Unix seconds)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *vmdk == "" || *out == "" || *capacity <= 0 {
			return errors.New("ova: --vmdk, --out and --capacity are required")
		}
		var mtime int64
		if *epoch != "" {
			v, err := strconv.ParseInt(*epoch, 10, 64)
			if err != nil {
				return fmt.Errorf("ova: epoch: %w", err)
			}
			mtime = v
		}
		return ovf.WriteOVA(*out, ovf.Appliance{Name: *name, Version: *version, DiskPath: *vmdk, Capacity: *capacity, CPUs: 2, MemoryMB: 2048}, mtime)
	default:
		return fmt.Errorf("unknown subcommand %q", args[0])
	}
}
