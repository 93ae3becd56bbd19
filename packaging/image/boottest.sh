#!/bin/bash
# Boots the appliance images under qemu (TCG, no KVM needed) and waits until
# the running shoal service has reported ready: the image's shoal-ready unit
# prints "shoal ready <version>" on the serial console only after
# shoal.service (Type=notify) became active, i.e. after the agent's READY=1.
# Also checks that first-boot setup ran. Each boot is bounded by a timeout.
#   bios    raw disk, SeaBIOS, GRUB from the MBR/BIOS boot partition, virtio
#   uefi    qcow2, OVMF, the unified kernel image on the ESP, virtio
#   vmware  streamOptimized vmdk on pvscsi, vmxnet3 NIC, SeaBIOS (as the OVA declares)
# Usage: packaging/image/boottest.sh all|bios|uefi|vmware
# Environment: OUT (out/image), BOOT_TIMEOUT (seconds per boot, 420),
#              BOOT_PARALLEL=1 to boot all at once.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out/image}
TIMEOUT=${BOOT_TIMEOUT:-420}
VERSION=$(cat "$OUT/VERSION")
MARK="shoal ready $VERSION"
FIRSTBOOT_MARK="shoal setup: first boot done"
LOGDIR="$OUT/boottest"
mkdir -p "$LOGDIR"

boot() {
	local kind=$1 log="$LOGDIR/$1.log" args=()
	case "$kind" in
	bios)
		args=(-machine pc,accel=tcg -drive "file=$OUT/shoal.raw,format=raw,if=virtio,snapshot=on"
			-nic user,model=virtio-net-pci) ;;
	uefi)
		cp /usr/share/OVMF/OVMF_VARS_4M.fd "$LOGDIR/uefi-vars.fd"
		args=(-machine q35,accel=tcg
			-drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd
			-drive "if=pflash,format=raw,file=$LOGDIR/uefi-vars.fd"
			-drive "file=$OUT/shoal.qcow2,format=qcow2,if=virtio,snapshot=on"
			-nic user,model=virtio-net-pci) ;;
	vmware)
		args=(-machine pc,accel=tcg -device pvscsi,id=scsi0
			-drive "file=$OUT/shoal.vmdk,format=vmdk,if=none,id=d0,snapshot=on"
			-device scsi-hd,drive=d0,bus=scsi0.0
			-nic user,model=vmxnet3) ;;
	*) echo "boottest: unknown kind $kind" >&2; return 2 ;;
	esac
	: > "$log"
	local start; start=$(date +%s%N)
	qemu-system-x86_64 -m 1024 -smp 1 -display none -monitor none -no-reboot \
		-serial "file:$log" "${args[@]}" 2>"$log.qemu" &
	local pid=$! ok=0 firstboot=0
	local deadline=$(( $(date +%s) + TIMEOUT ))
	while [ "$(date +%s)" -lt "$deadline" ]; do
		grep -qa "$FIRSTBOOT_MARK" "$log" && firstboot=1
		if grep -qa "$MARK" "$log"; then ok=1; break; fi
		kill -0 "$pid" 2>/dev/null || break
		sleep 1
	done
	local secs=$(( ($(date +%s%N) - start) / 1000000000 ))
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	if [ "$ok" = 1 ] && [ "$firstboot" = 1 ]; then
		printf 'boottest %-6s ok: "%s" after %d s\n' "$kind" "$MARK" "$secs"
		return 0
	fi
	printf 'boottest %-6s FAILED after %d s (ready=%s firstboot=%s); last console lines:\n' "$kind" "$secs" "$ok" "$firstboot"
	tail -n 25 "$log" | sed 's/^/    /'
	return 1
}

kinds=("$@")
[ "${kinds[0]:-all}" = all ] && kinds=(bios uefi vmware)
rc=0
if [ "${BOOT_PARALLEL:-0}" = 1 ]; then
	pids=()
	for k in "${kinds[@]}"; do boot "$k" & pids+=($!); done
	for p in "${pids[@]}"; do wait "$p" || rc=1; done
else
	for k in "${kinds[@]}"; do boot "$k" || rc=1; done
fi
exit $rc
