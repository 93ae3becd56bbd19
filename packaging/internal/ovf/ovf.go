// Package ovf writes the OVF descriptor and the OVA archive (ustar: the
// descriptor, a SHA-256 manifest, then the streamOptimized VMDK) that VMware
// products import. The virtual machine it describes boots by BIOS with a
// paravirtual SCSI controller and a vmxnet3 NIC. It only writes files.
package ovf

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"
)

// Appliance describes the virtual machine.
type Appliance struct {
	Name     string // VM name and file stem, e.g. "shoal"
	Version  string // product version shown in the ProductSection
	DiskPath string // streamOptimized VMDK to reference and pack
	DiskSize int64  // size of the VMDK file in bytes (set by WriteOVA)
	Capacity int64  // virtual disk capacity in bytes
	CPUs     int
	MemoryMB int
}

// DiskFile is the VMDK's name inside the OVA.
func (a Appliance) DiskFile() string { return a.Name + "-disk1.vmdk" }

var descriptor = template.Must(template.New("ovf").Funcs(template.FuncMap{"xml": xmlEscape}).Parse(`<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="{{xml .DiskFile}}" ovf:id="file1" ovf:size="{{.DiskSize}}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="{{.Capacity}}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="VM Network">
      <Description>The network the cluster heartbeat and traffic IPs use</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="{{xml .Name}}">
    <Info>A Shoal traffic-IP cluster node</Info>
    <Name>{{xml .Name}}</Name>
    <OperatingSystemSection ovf:id="96" vmw:osType="debian12_64Guest">
      <Info>The kind of installed guest operating system</Info>
      <Description>Debian GNU/Linux 12 (64-bit)</Description>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{{xml .Name}}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-14</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of Virtual CPUs</rasd:Description>
        <rasd:ElementName>{{.CPUs}} virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>{{.CPUs}}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>{{.MemoryMB}}MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{{.MemoryMB}}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SCSI Controller</rasd:Description>
        <rasd:ElementName>SCSI Controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard Disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>VM Network</rasd:Connection>
        <rasd:Description>VmxNet3 ethernet adapter on "VM Network"</rasd:Description>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="bios"/>
      <vmw:Config ovf:required="false" vmw:key="tools.syncTimeWithHost" vmw:value="false"/>
    </VirtualHardwareSection>
    <ProductSection>
      <Info>Information about the installed software</Info>
      <Product>Shoal</Product>
      <Vendor>Shoal project</Vendor>
      <Version>{{xml .Version}}</Version>
      <FullVersion>{{xml .Version}}</FullVersion>
    </ProductSection>
  </VirtualSystem>
</Envelope>
`))

func xmlEscape(s string) string {
	var b bytes.Buffer
	// EscapeText never fails on a bytes.Buffer.
	_ = xmlEscapeText(&b, s)
	return b.String()
}

// Descriptor renders the OVF descriptor for a.
func Descriptor(a Appliance) ([]byte, error) {
	if a.Name == "" || strings.ContainsAny(a.Name, "/\\") {
		return nil, fmt.Errorf("render ovf: invalid name %q", a.Name)
	}
	if a.Capacity <= 0 || a.CPUs <= 0 || a.MemoryMB <= 0 {
		return nil, fmt.Errorf("render ovf: capacity, cpus and memory must be positive")
	}
	var b bytes.Buffer
	if err := descriptor.Execute(&b, a); err != nil {
		return nil, fmt.Errorf("render ovf: %w", err)
	}
	return b.Bytes(), nil
}

// WriteOVA writes the OVA archive to path: NAME.ovf, NAME.mf (SHA256 of
// the other two) and the VMDK, each with modification time mtime (Unix
// seconds), owner root, mode 0644, in ustar format.
func WriteOVA(path string, a Appliance, mtime int64) error {
	disk, err := os.Open(a.DiskPath)
	if err != nil {
		return fmt.Errorf("write ova: %w", err)
	}
	defer func() { _ = disk.Close() }()
	st, err := disk.Stat()
	if err != nil {
		return fmt.Errorf("write ova: %w", err)
	}
	a.DiskSize = st.Size()
	desc, err := Descriptor(a)
	if err != nil {
		return err
	}
	h := sha256.New()
	if _, err := io.Copy(h, disk); err != nil {
		return fmt.Errorf("write ova: hash disk: %w", err)
	}
	if _, err := disk.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("write ova: %w", err)
	}
	descSum := sha256.Sum256(desc)
	mf := fmt.Sprintf("SHA256(%s.ovf)= %s\nSHA256(%s)= %s\n", a.Name, hex.EncodeToString(descSum[:]), a.DiskFile(), hex.EncodeToString(h.Sum(nil)))

	tmp, err := os.CreateTemp(filepath.Dir(path), ".ova-*")
	if err != nil {
		return fmt.Errorf("write ova: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	defer func() { _ = tmp.Close() }()
	tw := tar.NewWriter(tmp)
	mt := time.Unix(mtime, 0).UTC()
	add := func(name string, size int64, r io.Reader) error {
		hdr := &tar.Header{Name: name, Size: size, Mode: 0o644, ModTime: mt, Typeflag: tar.TypeReg, Format: tar.FormatUSTAR, Uname: "root", Gname: "root"}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("write ova: %s: %w", name, err)
		}
		if _, err := io.Copy(tw, r); err != nil {
			return fmt.Errorf("write ova: %s: %w", name, err)
		}
		return nil
	}
	if err := add(a.Name+".ovf", int64(len(desc)), bytes.NewReader(desc)); err != nil {
		return err
	}
	if err := add(a.Name+".mf", int64(len(mf)), strings.NewReader(mf)); err != nil {
		return err
	}
	if err := add(a.DiskFile(), a.DiskSize, disk); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("write ova: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("write ova: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write ova: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write ova: %w", err)
	}
	return nil
}
