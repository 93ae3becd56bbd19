#!/bin/bash
# mmdebstrap hooks for the cached base root filesystem (packaging/image/build.sh).
# $1 is the stage, $2 the root directory being built. Changing this file
# rebuilds the base.
set -euo pipefail
stage=$1 root=$2
case "$stage" in
essential)
	# Before the kernel is installed, so its initramfs is built this way:
	# only the storage drivers of the virtual and server hardware the image
	# boots on (virtio, SATA/IDE, NVMe, VMware pvscsi/LSI, Hyper-V, Xen,
	# common RAID HBAs) and ext4, zstd-compressed. MODULES=most would add
	# every network driver and file system (a 29 MB initrd instead of ~9).
	mkdir -p "$root/etc/initramfs-tools/conf.d"
	printf 'MODULES=list\nCOMPRESS=zstd\nRESUME=none\n' > "$root/etc/initramfs-tools/conf.d/shoal.conf"
	cat > "$root/etc/initramfs-tools/modules" <<'MODS'
# Storage drivers and the root file system for the Shoal appliance initramfs.
virtio_pci
virtio_blk
virtio_scsi
sd_mod
sr_mod
ahci
ata_piix
ata_generic
nvme
vmw_pvscsi
mptspi
mptsas
megaraid_sas
mpt3sas
hv_storvsc
hv_vmbus
xen_blkfront
ext4
crc32c_generic
MODS
	# Keep documentation out of the image, also on later upgrades.
	mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
	cat > "$root/etc/dpkg/dpkg.cfg.d/shoal-minimal" <<'CFG'
path-exclude=/usr/share/man/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/info/*
CFG
	;;
customize)
	# The image ships no root password: the shadow entry stays locked.
	chroot "$root" passwd --lock root >/dev/null
	# usrmerge (and with it perl) comes in with the essential set; the tree
	# is already merged and usr-is-merged satisfies its dependants.
	if chroot "$root" dpkg-query -W usrmerge >/dev/null 2>&1; then
		chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get -y -qq purge usrmerge >/dev/null
		chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get -y -qq autoremove --purge >/dev/null
	fi
	chroot "$root" apt-get clean
	;;
*)
	echo "base-hooks.sh: unknown stage $stage" >&2
	exit 2
	;;
esac
