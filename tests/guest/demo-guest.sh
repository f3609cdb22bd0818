# tests/guest/demo-guest.sh — what `make demo` runs inside the guest (busybox
# sh, started by the guest's /init): shows the vmmbypass-ib device as a guest
# user sees it.

section() { printf '\n===== %s =====\n' "$*"; }

section "guest: $(uname -sr), $(grep -c ^processor /proc/cpuinfo) vCPU, $(sed -n 's/MemTotal: *//p' /proc/meminfo) RAM"
section "PCI device 1af4:106a (virtio device 42) and its driver"
for d in /sys/bus/pci/devices/*; do
    [ "$(cat "$d/vendor"):$(cat "$d/device")" = "0x1af4:0x106a" ] || continue
    echo "${d##*/}: driver $(basename "$(readlink "$d/driver" 2>/dev/null)" 2>/dev/null)"
    for v in "$d"/virtio*; do
        [ -e "$v/driver" ] && echo "  ${v##*/}: driver $(basename "$(readlink "$v/driver")")"
    done
done
lsmod | grep -E '^(Module|vmmbypass_ib|ib_uverbs|ib_core)'
section "kernel messages of the driver"
dmesg | grep -i vmmb
section "ibv_devices"
ibv_devices
section "ibv_devinfo -v"
ibv_devinfo -v
