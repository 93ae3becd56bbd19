// Package mbr installs GRUB's BIOS boot code into a GPT disk image file,
// doing what grub-bios-setup does for a real disk: boot.img goes into the
// protective MBR (keeping its partition table) and core.img into the BIOS
// boot partition, with the sector addresses patched in. It works on any
// io.ReaderAt + io.WriterAt (a plain file), so no loop device is needed.
//
// The layout follows GRUB 2.06 (include/grub/i386/pc/boot.h and
// util/setup.c). core.img is written without Reed-Solomon codes
// (as grub-install --no-rs-codes does), so its redundancy field stays 0.
package mbr

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// SectorSize is the logical sector size of the image.
const SectorSize = 512

// Offsets inside boot.img (GRUB_BOOT_MACHINE_*).
const (
	bpbStart      = 0x03  // start of a possible BIOS parameter block, kept from the disk
	bpbEnd        = 0x5a  // end of the BPB
	kernelSector  = 0x5c  // 64-bit LBA of core.img's first sector
	bootDrive     = 0x64  // drive number; 0xff means "the one the BIOS booted from"
	driveCheck    = 0x66  // 2-byte jmp skipped (nop nop) on hard disks
	ntMagic       = 0x1b8 // disk signature + partition table start
	partitionEnd  = 0x1fe // end of the partition table
	blocklistSize = 12    // struct grub_boot_blocklist {u64 start; u16 len; u16 segment}
	// core.img's remaining sectors load at segment 0x820 (0x8000 + one sector).
	firstSegment = 0x820
)

// BIOSBootGUID is the GPT partition type of a BIOS boot partition
// (21686148-6449-6E6F-744E-656564454649), as stored on disk.
var BIOSBootGUID = []byte("Hah!IdontNeedEFI")

// Partition is one GPT partition entry's type and extent (inclusive LBAs).
type Partition struct {
	Type      [16]byte
	FirstLBA  uint64
	LastLBA   uint64
	EntryName string
}

var (
	// ErrNoGPT means LBA 1 holds no GPT header.
	ErrNoGPT = errors.New("no GPT header at LBA 1")
	// ErrNoBIOSBoot means the GPT has no BIOS boot partition.
	ErrNoBIOSBoot = errors.New("no BIOS boot partition (type EF02)")
)

// ReadGPT reads the primary GPT's partition entries (non-empty ones).
func ReadGPT(r io.ReaderAt) ([]Partition, error) {
	hdr := make([]byte, SectorSize)
	if _, err := r.ReadAt(hdr, SectorSize); err != nil {
		return nil, fmt.Errorf("read gpt header: %w", err)
	}
	if !bytes.Equal(hdr[:8], []byte("EFI PART")) {
		return nil, ErrNoGPT
	}
	entriesLBA := binary.LittleEndian.Uint64(hdr[72:])
	count := binary.LittleEndian.Uint32(hdr[80:])
	size := binary.LittleEndian.Uint32(hdr[84:])
	if size < 128 || count > 1024 {
		return nil, fmt.Errorf("read gpt header: implausible entries (%d of %d bytes)", count, size)
	}
	buf := make([]byte, int(count)*int(size))
	if _, err := r.ReadAt(buf, int64(entriesLBA)*SectorSize); err != nil {
		return nil, fmt.Errorf("read gpt entries: %w", err)
	}
	var out []Partition
	for i := 0; i < int(count); i++ {
		e := buf[i*int(size):]
		var p Partition
		copy(p.Type[:], e[:16])
		if p.Type == ([16]byte{}) {
			continue
		}
		p.FirstLBA = binary.LittleEndian.Uint64(e[32:])
		p.LastLBA = binary.LittleEndian.Uint64(e[40:])
		name := make([]rune, 0, 36)
		for j := 56; j+1 < 128; j += 2 {
			c := binary.LittleEndian.Uint16(e[j:])
			if c == 0 {
				break
			}
			name = append(name, rune(c))
		}
		p.EntryName = string(name)
		out = append(out, p)
	}
	return out, nil
}

// PatchBoot returns boot.img prepared for a hard disk whose core.img starts
// at coreLBA, carrying over the BPB and partition table of the disk's
// current sector 0 (mbr0).
func PatchBoot(bootImg, mbr0 []byte, coreLBA uint64) ([]byte, error) {
	if len(bootImg) != SectorSize {
		return nil, fmt.Errorf("patch boot.img: %d bytes, want %d", len(bootImg), SectorSize)
	}
	if len(mbr0) != SectorSize {
		return nil, fmt.Errorf("patch boot.img: sector 0 is %d bytes, want %d", len(mbr0), SectorSize)
	}
	out := bytes.Clone(bootImg)
	copy(out[bpbStart:bpbEnd], mbr0[bpbStart:bpbEnd])
	binary.LittleEndian.PutUint64(out[kernelSector:], coreLBA)
	out[bootDrive] = 0xff
	out[driveCheck], out[driveCheck+1] = 0x90, 0x90
	copy(out[ntMagic:partitionEnd], mbr0[ntMagic:partitionEnd])
	out[510], out[511] = 0x55, 0xaa
	return out, nil
}

// PatchCore returns core.img padded to whole sectors, with the blocklist
// at the end of its first sector (diskboot.img) pointing at the rest of the
// image, stored contiguously from coreLBA+1.
func PatchCore(coreImg []byte, coreLBA uint64) ([]byte, error) {
	if len(coreImg) < 2*SectorSize {
		return nil, fmt.Errorf("patch core.img: %d bytes is too small", len(coreImg))
	}
	nsec := (len(coreImg) + SectorSize - 1) / SectorSize
	if nsec-1 > 0xffff {
		return nil, fmt.Errorf("patch core.img: %d sectors do not fit one blocklist", nsec)
	}
	out := make([]byte, nsec*SectorSize)
	copy(out, coreImg)
	first := SectorSize - blocklistSize
	term := first - blocklistSize
	binary.LittleEndian.PutUint64(out[first:], coreLBA+1)
	binary.LittleEndian.PutUint16(out[first+8:], uint16(nsec-1))
	binary.LittleEndian.PutUint16(out[first+10:], firstSegment)
	clear(out[term : term+blocklistSize])
	return out, nil
}

// Disk is a disk image file.
type Disk interface {
	io.ReaderAt
	io.WriterAt
}

// Install writes core.img at the start of the BIOS boot partition and
// boot.img into sector 0, returning core.img's first LBA. The partition
// must be large enough for core.img.
func Install(d Disk, bootImg, coreImg []byte) (uint64, error) {
	parts, err := ReadGPT(d)
	if err != nil {
		return 0, err
	}
	var bios *Partition
	for i := range parts {
		if bytes.Equal(parts[i].Type[:], BIOSBootGUID) {
			bios = &parts[i]
			break
		}
	}
	if bios == nil {
		return 0, ErrNoBIOSBoot
	}
	core, err := PatchCore(coreImg, bios.FirstLBA)
	if err != nil {
		return 0, err
	}
	avail := (bios.LastLBA - bios.FirstLBA + 1) * SectorSize
	if uint64(len(core)) > avail {
		return 0, fmt.Errorf("install core.img: %d bytes do not fit the %d-byte BIOS boot partition", len(core), avail)
	}
	mbr0 := make([]byte, SectorSize)
	if _, err := d.ReadAt(mbr0, 0); err != nil {
		return 0, fmt.Errorf("read sector 0: %w", err)
	}
	boot, err := PatchBoot(bootImg, mbr0, bios.FirstLBA)
	if err != nil {
		return 0, err
	}
	if _, err := d.WriteAt(core, int64(bios.FirstLBA)*SectorSize); err != nil {
		return 0, fmt.Errorf("write core.img: %w", err)
	}
	if _, err := d.WriteAt(boot, 0); err != nil {
		return 0, fmt.Errorf("write boot.img: %w", err)
	}
	return bios.FirstLBA, nil
}
