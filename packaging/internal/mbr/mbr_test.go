package mbr

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// memDisk is an in-memory disk image.
type memDisk []byte

func (m memDisk) ReadAt(p []byte, off int64) (int, error) { return copy(p, m[off:]), nil }
func (m memDisk) WriteAt(p []byte, off int64) (int, error) {
	return copy(m[off:], p), nil
}

var linuxFS = []byte{0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4}

// newDisk makes a disk of n sectors with a protective MBR (partition table
// bytes set to a recognisable pattern) and a GPT holding the given
// partitions: {type, first, last}.
func newDisk(t *testing.T, n int, parts ...[3]any) memDisk {
	t.Helper()
	d := make(memDisk, n*SectorSize)
	for i := ntMagic; i < partitionEnd; i++ {
		d[i] = byte(i)
	}
	d[510], d[511] = 0x55, 0xaa
	h := d[SectorSize : 2*SectorSize]
	copy(h, "EFI PART")
	binary.LittleEndian.PutUint64(h[72:], 2)
	binary.LittleEndian.PutUint32(h[80:], 128)
	binary.LittleEndian.PutUint32(h[84:], 128)
	for i, p := range parts {
		e := d[2*SectorSize+i*128:]
		copy(e[:16], p[0].([]byte))
		binary.LittleEndian.PutUint64(e[32:], uint64(p[1].(int)))
		binary.LittleEndian.PutUint64(e[40:], uint64(p[2].(int)))
		name := []rune("part")
		for j, r := range name {
			binary.LittleEndian.PutUint16(e[56+2*j:], uint16(r))
		}
	}
	return d
}

func fakeBoot() []byte {
	b := make([]byte, SectorSize)
	for i := range b {
		b[i] = 0xcc
	}
	return b
}

func fakeCore(sectors int) []byte {
	c := make([]byte, sectors*SectorSize-100) // not sector aligned on purpose
	for i := range c {
		c[i] = byte(i % 251)
	}
	// grub-mkimage's default first blocklist: start 2, len = sectors-1
	binary.LittleEndian.PutUint64(c[SectorSize-12:], 2)
	binary.LittleEndian.PutUint16(c[SectorSize-4:], uint16(sectors-1))
	return c
}

func TestInstall(t *testing.T) {
	d := newDisk(t, 8192, [3]any{linuxFS, 4096, 8000}, [3]any{BIOSBootGUID, 2048, 4095})
	mbr0 := bytes.Clone(d[:SectorSize])
	core := fakeCore(300)
	start, err := Install(d, fakeBoot(), core)
	if err != nil {
		t.Fatalf("Install: %v", err)
	}
	if start != 2048 {
		t.Errorf("Install start = %d, want 2048", start)
	}
	t.Run("boot.img", func(t *testing.T) {
		got := []byte(d[:SectorSize])
		if diff := cmp.Diff(mbr0[ntMagic:partitionEnd], got[ntMagic:partitionEnd]); diff != "" {
			t.Errorf("partition table changed (-want +got):\n%s", diff)
		}
		if v := binary.LittleEndian.Uint64(got[kernelSector:]); v != 2048 {
			t.Errorf("kernel sector = %d, want 2048", v)
		}
		if got[bootDrive] != 0xff || got[driveCheck] != 0x90 || got[driveCheck+1] != 0x90 {
			t.Errorf("boot drive/check = %#x %#x %#x, want 0xff 0x90 0x90", got[bootDrive], got[driveCheck], got[driveCheck+1])
		}
		if got[0] != 0xcc || got[0x100] != 0xcc || got[510] != 0x55 || got[511] != 0xaa {
			t.Errorf("boot code or signature not written")
		}
	})
	t.Run("core.img", func(t *testing.T) {
		off := 2048 * SectorSize
		first := off + SectorSize - 12
		got := []uint64{
			binary.LittleEndian.Uint64(d[first:]),
			uint64(binary.LittleEndian.Uint16(d[first+8:])),
			uint64(binary.LittleEndian.Uint16(d[first+10:])),
			binary.LittleEndian.Uint64(d[first-12:]),
			uint64(binary.LittleEndian.Uint16(d[first-4:])),
		}
		if diff := cmp.Diff([]uint64{2049, 299, 0x820, 0, 0}, got); diff != "" {
			t.Errorf("blocklist {start len segment, terminator} (-want +got):\n%s", diff)
		}
		if !bytes.Equal(d[off+SectorSize:off+len(core)], core[SectorSize:]) {
			t.Errorf("core.img body not copied to sector 2049 on")
		}
		if !bytes.Equal(d[off:off+SectorSize-24], core[:SectorSize-24]) {
			t.Errorf("diskboot sector changed outside the blocklists")
		}
	})
	t.Run("other partitions untouched", func(t *testing.T) {
		if !bytes.Equal(d[4096*SectorSize:], make([]byte, len(d)-4096*SectorSize)) {
			t.Errorf("data written outside sector 0 and the BIOS boot partition")
		}
	})
}

func TestInstallErrors(t *testing.T) {
	tests := []struct {
		name string
		disk memDisk
		core []byte
		want error
	}{
		{"no gpt", make(memDisk, 64*SectorSize), fakeCore(4), ErrNoGPT},
		{"no bios boot partition", newDisk(t, 8192, [3]any{linuxFS, 2048, 8000}), fakeCore(4), ErrNoBIOSBoot},
		{"core too large", newDisk(t, 8192, [3]any{BIOSBootGUID, 2048, 2050}), fakeCore(10), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := bytes.Clone(tc.disk)
			_, err := Install(tc.disk, fakeBoot(), tc.core)
			if err == nil {
				t.Fatalf("Install: no error")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Install error = %v, want %v", err, tc.want)
			}
			if !bytes.Equal(before, tc.disk) {
				t.Errorf("Install changed the disk although it failed")
			}
		})
	}
}

func TestReadGPT(t *testing.T) {
	d := newDisk(t, 8192, [3]any{BIOSBootGUID, 2048, 4095}, [3]any{linuxFS, 4096, 8000})
	got, err := ReadGPT(d)
	if err != nil {
		t.Fatalf("ReadGPT: %v", err)
	}
	var bios, root [16]byte
	copy(bios[:], BIOSBootGUID)
	copy(root[:], linuxFS)
	want := []Partition{{Type: bios, FirstLBA: 2048, LastLBA: 4095, EntryName: "part"}, {Type: root, FirstLBA: 4096, LastLBA: 8000, EntryName: "part"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ReadGPT (-want +got):\n%s", diff)
	}
}

func TestPatchBootRejectsBadSizes(t *testing.T) {
	if _, err := PatchBoot(make([]byte, 446), make([]byte, SectorSize), 1); err == nil {
		t.Errorf("PatchBoot(446-byte boot.img): no error")
	}
	if _, err := PatchCore(make([]byte, 100), 1); err == nil {
		t.Errorf("PatchCore(100 bytes): no error")
	}
}
