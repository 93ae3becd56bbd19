#!/bin/bash
# Builds the Shoal appliance disk image from Debian 12 packages only, without
# loop devices or mounts:
#   base     mmdebstrap the root filesystem into a cached tarball (skipped when
#            its inputs are unchanged)
#   image    unpack it, install the .deb and the appliance overlay, make the
#            ext4 root, the FAT ESP with a unified kernel image (UEFI), GRUB
#            for BIOS, assemble one GPT raw disk and convert it to qcow2, vmdk
#            (streamOptimized) and .ova, with SHA256SUMS beside them.
# Usage: packaging/image/build.sh base|image|all   (run from the repository root, as root)
# Environment: VERSION, DEB (the .deb to install), OUT (default out/image),
#              SOURCE_DATE_EPOCH (default: last commit time).
set -euo pipefail

stage=${1:-all}
ROOT_DIR=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT_DIR"
HERE=packaging/image
OUT=${OUT:-out/image}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
DEB=${DEB:-out/shoal_${VERSION#v}_amd64.deb}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 1700000000)}
IMAGETOOL=${IMAGETOOL:-out/tools/imagetool}
NAME=shoal
mkdir -p "$OUT"

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
t0=$(date +%s)

# Fixed identifiers make the disk reproducible; they are derived from the
# name so two builds of the same inputs give the same bytes.
uuid_of() { local h; h=$(printf '%s' "$1" | sha256sum | cut -c1-32); echo "${h:0:8}-${h:8:4}-4${h:13:3}-a${h:17:3}-${h:20:12}"; }
ROOT_UUID=$(uuid_of shoal-root-fs)
DISK_GUID=$(uuid_of shoal-disk)
P1_GUID=$(uuid_of shoal-part-bios)
P2_GUID=$(uuid_of shoal-part-esp)
P3_GUID=$(uuid_of shoal-part-root)
ESP_ID=5e0a1c01

build_imagetool() {
	mkdir -p "$(dirname "$IMAGETOOL")"
	CGO_ENABLED=0 go build -trimpath -o "$IMAGETOOL" ./packaging/cmd/imagetool
}

# ---- base: the cached root filesystem tarball ------------------------------
base() {
	build_imagetool
	"$IMAGETOOL" mirrors > "$OUT/sources.list"
	local pkgs key
	pkgs=$(grep -v '^#' "$HERE/packages.txt" | xargs | tr ' ' ',')
	key=$(cat "$OUT/sources.list" "$HERE/packages.txt" "$HERE/base-hooks.sh" | sha256sum | cut -c1-16)
	BASE_TAR="$OUT/base-$key.tar"
	if [ -s "$BASE_TAR" ]; then
		log "base: cached $BASE_TAR (inputs unchanged)"
		return
	fi
	log "base: mmdebstrap from $(awk '{print $3}' "$OUT/sources.list" | sort -u | xargs)"
	rm -f "$OUT"/base-*.tar
	local srcargs=()
	while IFS= read -r l; do srcargs+=("$l"); done < "$OUT/sources.list"
	mmdebstrap --variant=minbase --mode=root --format=tar \
		--include="$pkgs" \
		--dpkgopt='path-exclude=/usr/share/man/*' \
		--dpkgopt='path-exclude=/usr/share/locale/*' \
		--dpkgopt='path-include=/usr/share/locale/locale.alias' \
		--dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-include=/usr/share/doc/*/copyright' \
		--dpkgopt='path-exclude=/usr/share/info/*' \
		--dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/gpu/*' \
		--dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/media/*' \
		--dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/net/wireless/*' \
		--dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/infiniband/*' \
		--dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/staging/*' \
		--dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/bluetooth/*' \
		--dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/iio/*' \
		--dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/isdn/*' \
		--dpkgopt='path-exclude=/lib/modules/*/kernel/sound/*' \
		--dpkgopt='path-exclude=/lib/modules/*/kernel/net/wireless/*' \
		--dpkgopt='path-exclude=/lib/modules/*/kernel/net/mac80211/*' \
		--dpkgopt='path-exclude=/lib/modules/*/kernel/net/bluetooth/*' \
		--essential-hook="bash $HERE/base-hooks.sh essential \"\$1\"" \
		--customize-hook="bash $HERE/base-hooks.sh customize \"\$1\"" \
		bookworm "$BASE_TAR.tmp" "${srcargs[@]}"
	mv "$BASE_TAR.tmp" "$BASE_TAR"
	log "base: wrote $BASE_TAR ($(du -h "$BASE_TAR" | cut -f1)) in $(( $(date +%s) - t0 )) s"
}

# ---- image: assemble the disk -----------------------------------------------
image() {
	[ -s "$DEB" ] || { echo "build.sh: $DEB missing (run make deb)" >&2; exit 1; }
	local rootfs="$OUT/rootfs" work="$OUT/work"
	rm -rf "$rootfs" "$work"
	mkdir -p "$rootfs" "$work"
	log "image: unpack $BASE_TAR"
	tar -C "$rootfs" --numeric-owner --xattrs --xattrs-include='*' -xpf "$BASE_TAR"

	log "image: install $DEB and the overlay"
	cp "$DEB" "$rootfs/tmp/shoal.deb"
	chroot "$rootfs" dpkg -i /tmp/shoal.deb >/dev/null
	rm -f "$rootfs/tmp/shoal.deb"
	# the installed package works on this Debian 12 tree
	log "image: $(chroot "$rootfs" shoal version)"
	cp -a "$HERE/overlay/." "$rootfs/"
	sed -i "s/@ROOT_UUID@/$ROOT_UUID/g" "$rootfs/etc/fstab" "$rootfs/boot/grub/grub.cfg"
	chroot "$rootfs" systemctl enable shoal.service shoal-firstboot.service shoal-ready.service systemd-networkd.service systemd-resolved.service >/dev/null 2>&1
	chroot "$rootfs" systemctl disable ssh.service ssh.socket >/dev/null 2>&1 || true
	# First boot makes these per machine: never ship them in the image.
	rm -f "$rootfs"/etc/ssh/ssh_host_*
	printf 'uninitialized\n' > "$rootfs/etc/machine-id"
	rm -f "$rootfs/var/lib/dbus/machine-id"
	: > "$rootfs/etc/hostname"; printf 'shoal\n' > "$rootfs/etc/hostname"
	rm -rf "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log "$rootfs"/tmp/* "$rootfs"/var/cache/debconf/*-old
	chroot "$rootfs" dpkg-query -W -f='${Package}\t${Version}\n' > "$OUT/packages.txt"
	{ echo "# host tools"; dpkg-query -W -f='${Package}\t${Version}\n' grub-pc-bin systemd-boot-efi e2fsprogs dosfstools mtools gdisk qemu-utils mmdebstrap; } >> "$OUT/packages.txt"

	local kver
	kver=$(ls "$rootfs/boot" | sed -n 's/^vmlinuz-//p' | sort -V | tail -1)
	[ -n "$kver" ] || { echo "build.sh: no kernel in rootfs/boot" >&2; exit 1; }
	local cmdline="root=UUID=$ROOT_UUID ro quiet console=tty0 console=ttyS0,115200"

	# UEFI: a unified kernel image (systemd-boot's stub + os-release, command
	# line, kernel and initrd) as the removable-media boot path.
	log "image: unified kernel image for $kver"
	printf '%s' "$cmdline" > "$work/cmdline"
	local stub=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
	local align=$((0x1000)) end
	end=0
	while read -r idx _ size vma _; do
		[[ $idx =~ ^[0-9]+$ ]] || continue
		(( 0x$vma + 0x$size > end )) && end=$(( 0x$vma + 0x$size ))
	done < <(objdump -h "$stub")
	local osrel_vma=$(( (end + align - 1) / align * align ))
	local cmd_vma=$(( osrel_vma + (($(stat -c%s "$rootfs/usr/lib/os-release") + align - 1) / align * align) ))
	local linux_vma=$(( cmd_vma + ((${#cmdline} + align) / align * align) ))
	local initrd_vma=$(( linux_vma + (($(stat -c%s "$rootfs/boot/vmlinuz-$kver") + align - 1) / align * align) ))
	objcopy \
		--add-section .osrel="$rootfs/usr/lib/os-release" --change-section-vma .osrel=$osrel_vma \
		--add-section .cmdline="$work/cmdline" --change-section-vma .cmdline=$cmd_vma \
		--add-section .linux="$rootfs/boot/vmlinuz-$kver" --change-section-vma .linux=$linux_vma \
		--add-section .initrd="$rootfs/boot/initrd.img-$kver" --change-section-vma .initrd=$initrd_vma \
		"$stub" "$work/BOOTX64.EFI"
	# objcopy stamps the PE header with the current time: use SOURCE_DATE_EPOCH.
	local pe_off
	pe_off=$(od -An -tu4 -j60 -N4 "$work/BOOTX64.EFI" | tr -d ' ')
	printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $((SOURCE_DATE_EPOCH & 255)) $((SOURCE_DATE_EPOCH >> 8 & 255)) $((SOURCE_DATE_EPOCH >> 16 & 255)) $((SOURCE_DATE_EPOCH >> 24 & 255)))" |
		dd of="$work/BOOTX64.EFI" bs=1 seek=$((pe_off + 8)) conv=notrunc status=none
	touch -d "@$SOURCE_DATE_EPOCH" "$work/BOOTX64.EFI"
	local esp_mib=96
	rm -f "$work/esp.img"
	mkfs.fat -C -F 32 -n SHOAL-ESP -i "$ESP_ID" --invariant "$work/esp.img" $((esp_mib * 1024)) >/dev/null
	MTOOLS_SKIP_CHECK=1 mmd -i "$work/esp.img" ::/EFI ::/EFI/BOOT
	MTOOLS_SKIP_CHECK=1 mcopy -m -i "$work/esp.img" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI

	# BIOS: GRUB's core.img finds the root file system by UUID and reads
	# /boot/grub/grub.cfg from it (which boots /vmlinuz and /initrd.img).
	log "image: GRUB core.img for BIOS"
	cat > "$work/early.cfg" <<CFG
search --no-floppy --fs-uuid --set=root $ROOT_UUID
set prefix=(\$root)/boot/grub
CFG
	grub-mkimage -O i386-pc -o "$work/core.img" -c "$work/early.cfg" -p /boot/grub \
		biosdisk part_gpt ext2 search search_fs_uuid normal linux echo test serial terminal terminfo
	# the kernel and initrd links GRUB follows (as /boot/ links, relative)
	ln -sfn "boot/vmlinuz-$kver" "$rootfs/vmlinuz"
	ln -sfn "boot/initrd.img-$kver" "$rootfs/initrd.img"

	# Root file system: sized to its content plus room for logs and state.
	local used_mib root_mib
	used_mib=$(du -sm --apparent-size "$rootfs" | cut -f1)
	root_mib=$(( (used_mib * 13 / 10 + 512 + 63) / 64 * 64 ))
	log "image: ext4 root ${root_mib} MiB (content ${used_mib} MiB)"
	find "$rootfs" -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0r touch --no-dereference -d "@$SOURCE_DATE_EPOCH"
	rm -f "$work/root.img"
	E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -F -L shoal-root -U "$ROOT_UUID" \
		-E "hash_seed=$ROOT_UUID,lazy_itable_init=1,root_owner=0:0" -d "$rootfs" "$work/root.img" "${root_mib}M"
	# mkfs.ext4 -d copies each file's atime and ctime (which touch cannot
	# set): pin both to SOURCE_DATE_EPOCH so the bytes do not depend on when
	# the build ran.
	(cd "$rootfs" && find . -mindepth 1 -printf '%P\n') | grep -v '"' |
		awk -v t="@$SOURCE_DATE_EPOCH" '{printf "sif \"/%s\" atime %s\nsif \"/%s\" ctime %s\n", $0, t, $0, t} END {printf "sif / atime %s\nsif / ctime %s\n", t, t}' > "$work/times.debugfs"
	E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH debugfs -w -f "$work/times.debugfs" "$work/root.img" >/dev/null 2>"$work/debugfs.err" ||
		{ cat "$work/debugfs.err" >&2; exit 1; }

	# The GPT disk: 1 MiB BIOS boot, ESP, root; 1 MiB spare at the end for
	# the backup GPT.
	local disk="$OUT/$NAME.raw" esp_start=4096 root_start
	root_start=$(( esp_start + esp_mib * 2048 ))
	local total_sectors=$(( root_start + root_mib * 2048 + 2048 ))
	rm -f "$disk"
	truncate -s $(( total_sectors * 512 )) "$disk"
	sgdisk -U "$DISK_GUID" \
		-n 1:2048:4095 -t 1:EF02 -c 1:bios -u "1:$P1_GUID" \
		-n "2:$esp_start:+${esp_mib}M" -t 2:EF00 -c 2:esp -u "2:$P2_GUID" \
		-n "3:$root_start:+${root_mib}M" -t 3:8304 -c 3:root -u "3:$P3_GUID" \
		"$disk" >/dev/null
	sgdisk -v "$disk" | grep -q 'No problems found' || { sgdisk -v "$disk"; exit 1; }
	dd if="$work/esp.img" of="$disk" bs=1M seek=$((esp_start / 2048)) conv=notrunc,sparse status=none
	dd if="$work/root.img" of="$disk" bs=1M seek=$((root_start / 2048)) conv=notrunc,sparse status=none
	"$IMAGETOOL" mbr --disk "$disk" --boot-img /usr/lib/grub/i386-pc/boot.img --core-img "$work/core.img" >&2

	log "image: qcow2, vmdk, ova"
	rm -f "$OUT/$NAME.qcow2" "$OUT/$NAME.vmdk" "$OUT/$NAME.ova"
	qemu-img convert -c -O qcow2 "$disk" "$OUT/$NAME.qcow2"
	qemu-img convert -O vmdk -o subformat=streamOptimized,adapter_type=lsilogic "$disk" "$OUT/$NAME.vmdk"
	"$IMAGETOOL" ova --vmdk "$OUT/$NAME.vmdk" --out "$OUT/$NAME.ova" --name "$NAME" --version "$VERSION" --capacity $(( total_sectors * 512 )) --epoch "$SOURCE_DATE_EPOCH"
	( cd "$OUT" && sha256sum "$NAME.raw" "$NAME.qcow2" "$NAME.vmdk" "$NAME.ova" packages.txt > SHA256SUMS )
	printf '%s\n' "$VERSION" > "$OUT/VERSION"
	rm -rf "$rootfs" "$work"
	log "image: done in $(( $(date +%s) - t0 )) s"
	ls -l "$OUT/$NAME".{raw,qcow2,vmdk,ova} >&2
	du -h --apparent-size "$OUT/$NAME".{qcow2,ova} >&2
}

case "$stage" in
base) base ;;
image) base; image ;;
all) base; image ;;
*) echo "usage: $0 base|image|all" >&2; exit 2 ;;
esac
