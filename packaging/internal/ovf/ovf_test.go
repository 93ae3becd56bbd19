package ovf

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// envelope is the part of the OVF schema the test checks.
type envelope struct {
	XMLName xml.Name `xml:"http://schemas.dmtf.org/ovf/envelope/1 Envelope"`
	Files   []struct {
		Href string `xml:"href,attr"`
		ID   string `xml:"id,attr"`
		Size int64  `xml:"size,attr"`
	} `xml:"References>File"`
	Disks []struct {
		Capacity int64  `xml:"capacity,attr"`
		FileRef  string `xml:"fileRef,attr"`
		DiskID   string `xml:"diskId,attr"`
		Format   string `xml:"format,attr"`
	} `xml:"DiskSection>Disk"`
	System struct {
		ID    string `xml:"id,attr"`
		Items []struct {
			ResourceType    int    `xml:"ResourceType"`
			ResourceSubType string `xml:"ResourceSubType"`
			HostResource    string `xml:"HostResource"`
			VirtualQuantity int    `xml:"VirtualQuantity"`
			InstanceID      int    `xml:"InstanceID"`
			Parent          int    `xml:"Parent"`
		} `xml:"VirtualHardwareSection>Item"`
		Config []struct {
			Key   string `xml:"key,attr"`
			Value string `xml:"value,attr"`
		} `xml:"VirtualHardwareSection>Config"`
		Version string `xml:"ProductSection>Version"`
	} `xml:"VirtualSystem"`
}

func TestDescriptor(t *testing.T) {
	a := Appliance{Name: "shoal", Version: "1.0<&>", DiskSize: 1234, Capacity: 2 << 30, CPUs: 2, MemoryMB: 2048}
	desc, err := Descriptor(a)
	if err != nil {
		t.Fatalf("Descriptor: %v", err)
	}
	var e envelope
	if err := xml.Unmarshal(desc, &e); err != nil {
		t.Fatalf("descriptor is not valid XML: %v\n%s", err, desc)
	}
	type hw struct {
		Type   int
		Sub    string
		Qty    int
		Host   string
		Parent int
	}
	var got []hw
	for _, it := range e.System.Items {
		got = append(got, hw{it.ResourceType, it.ResourceSubType, it.VirtualQuantity, it.HostResource, it.Parent})
	}
	want := []hw{
		{Type: 3, Qty: 2},                                // CPUs
		{Type: 4, Qty: 2048},                             // memory
		{Type: 6, Sub: "VirtualSCSI"},                    // pvscsi
		{Type: 17, Host: "ovf:/disk/vmdisk1", Parent: 3}, // disk on the controller (InstanceID 3)
		{Type: 10, Sub: "VmxNet3"},                       // NIC
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("virtual hardware (-want +got):\n%s", diff)
	}
	if len(e.Files) != 1 || e.Files[0].Href != "shoal-disk1.vmdk" || e.Files[0].Size != 1234 {
		t.Errorf("References = %+v, want shoal-disk1.vmdk of 1234 bytes", e.Files)
	}
	if len(e.Disks) != 1 || e.Disks[0].FileRef != e.Files[0].ID || e.Disks[0].Capacity != 2<<30 || !strings.HasSuffix(e.Disks[0].Format, "#streamOptimized") {
		t.Errorf("DiskSection = %+v, want one streamOptimized disk referencing %s", e.Disks, e.Files[0].ID)
	}
	fw := ""
	for _, c := range e.System.Config {
		if c.Key == "firmware" {
			fw = c.Value
		}
	}
	if fw != "bios" {
		t.Errorf("firmware = %q, want bios (OVMF cannot boot from pvscsi)", fw)
	}
	if e.System.Version != "1.0<&>" {
		t.Errorf("version = %q, want the escaped value back", e.System.Version)
	}
}

func TestDescriptorRejects(t *testing.T) {
	for _, a := range []Appliance{
		{Name: "", Capacity: 1, CPUs: 1, MemoryMB: 1},
		{Name: "a/b", Capacity: 1, CPUs: 1, MemoryMB: 1},
		{Name: "x", Capacity: 0, CPUs: 1, MemoryMB: 1},
	} {
		if _, err := Descriptor(a); err == nil {
			t.Errorf("Descriptor(%+v): no error", a)
		}
	}
}

func TestWriteOVA(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "d.vmdk")
	content := strings.Repeat("vmdk", 1000)
	if err := os.WriteFile(disk, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "shoal.ova")
	a := Appliance{Name: "shoal", Version: "v1", DiskPath: disk, Capacity: 1 << 30, CPUs: 2, MemoryMB: 1024}
	if err := WriteOVA(out, a, 1700000000); err != nil {
		t.Fatalf("WriteOVA: %v", err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	tr := tar.NewReader(f)
	var names []string
	sums := map[string]string{}
	var mf string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read ova: %v", err)
		}
		if !h.ModTime.Equal(time.Unix(1700000000, 0)) || h.Uid != 0 || h.Mode != 0o644 {
			t.Errorf("%s: mtime %v uid %d mode %o, want fixed values", h.Name, h.ModTime, h.Uid, h.Mode)
		}
		names = append(names, h.Name)
		b, _ := io.ReadAll(tr)
		s := sha256.Sum256(b)
		sums[h.Name] = hex.EncodeToString(s[:])
		if strings.HasSuffix(h.Name, ".mf") {
			mf = string(b)
		}
		if h.Name == "shoal-disk1.vmdk" && string(b) != content {
			t.Errorf("disk content differs")
		}
	}
	if diff := cmp.Diff([]string{"shoal.ovf", "shoal.mf", "shoal-disk1.vmdk"}, names); diff != "" {
		t.Errorf("OVA members (-want +got):\n%s", diff)
	}
	wantMF := fmt.Sprintf("SHA256(shoal.ovf)= %s\nSHA256(shoal-disk1.vmdk)= %s\n", sums["shoal.ovf"], sums["shoal-disk1.vmdk"])
	if diff := cmp.Diff(wantMF, mf); diff != "" {
		t.Errorf("manifest (-want +got):\n%s", diff)
	}
}
