# tests/guest/devinfo.sh — guest test (busybox sh, run by the guest's /init
# with tests/guest/tap.sh loaded): the vmmbypass-ib device is found, its driver
# is autoloaded, it registers vmmbib0, and user space sees the limits the host
# configured on the QEMU command line.
#
# Environment (from run-guest-test.py --env):
#   VMMBIB_EXPECT  space-separated ATTR=VALUE pairs that `ibv_devinfo -v`
#                  must show as "ATTR: VALUE", e.g. "max_qp=77 max_cq=33"
#                  (the host sets them with --device-args max-qp=77,max-cq=33)

IBDEV=vmmbib0
PCI_ID="1af4:106a" # virtio vendor, 0x1040 + virtio device ID 42

# The PCI function QEMU created for -device vmmbypass-ib.
pcidev=
for d in /sys/bus/pci/devices/*; do
    id="$(sed 's/^0x//' "$d/vendor"):$(sed 's/^0x//' "$d/device")"
    [ "$id" = "$PCI_ID" ] && pcidev=$d && break
done
if [ -n "$pcidev" ]; then
    tap_ok "PCI device $PCI_ID present at ${pcidev##*/}"
else
    tap_fail "PCI device $PCI_ID present" "$(lspci 2>&1)"
fi

if [ -d /sys/module/vmmbypass_ib ]; then
    tap_ok "vmmbypass_ib module autoloaded (by modalias)"
else
    tap_fail "vmmbypass_ib module autoloaded (by modalias)" \
        "modaliases: $(cat /sys/bus/virtio/devices/*/modalias 2>/dev/null | tr '\n' ' ')" \
        "matching: $(modprobe -R "$(cat /sys/bus/virtio/devices/*/modalias 2>/dev/null | grep 'd0000002A' | head -n1)" 2>&1)" \
        "$(dmesg | grep -i vmmb)"
fi

if [ -d /sys/class/infiniband/$IBDEV ]; then
    tap_ok "/sys/class/infiniband/$IBDEV exists"
else
    tap_fail "/sys/class/infiniband/$IBDEV exists" "$(ls /sys/class/infiniband 2>&1)" "$(dmesg | tail -n 30)"
fi

# rdma-core's provider matches by PCI ID, so the ib_device's parent must be the
# PCI function (not the virtio device under it), or there is no modalias.
parent=$(readlink -f /sys/class/infiniband/$IBDEV/device 2>/dev/null)
if [ -n "$pcidev" ] && [ "$parent" = "$(readlink -f "$pcidev")" ]; then
    tap_ok "$IBDEV's parent is the PCI device"
else
    tap_fail "$IBDEV's parent is the PCI device" "parent: ${parent:-none}"
fi

uverbs=
for u in /sys/class/infiniband_verbs/uverbs*; do
    [ "$(cat "$u/ibdev" 2>/dev/null)" = "$IBDEV" ] && uverbs=${u##*/}
done
if [ -n "$uverbs" ] && [ -c "/dev/infiniband/$uverbs" ]; then
    tap_ok "/dev/infiniband/$uverbs is $IBDEV's user verbs device"
else
    tap_fail "user verbs device for $IBDEV" "$(ls -l /dev/infiniband 2>&1)"
fi

devices=$(ibv_devices 2>&1)
case "$devices" in
*"$IBDEV"*) tap_ok "ibv_devices lists $IBDEV" ;;
*) tap_fail "ibv_devices lists $IBDEV" "$devices" ;;
esac

info=$(ibv_devinfo -v -d $IBDEV 2>&1)
rc=$?
if [ $rc -eq 0 ]; then
    tap_ok "ibv_devinfo -v -d $IBDEV"
else
    tap_fail "ibv_devinfo -v -d $IBDEV (exit status $rc)" "$info"
fi

for pair in ${VMMBIB_EXPECT:-}; do
    attr=${pair%%=*}
    want=${pair#*=}
    got=$(echo "$info" | sed -n "s/^[[:space:]]*$attr:[[:space:]]*//p" | head -n1)
    if [ "$got" = "$want" ]; then
        tap_ok "ibv_devinfo shows $attr: $want (set on the QEMU command line)"
    else
        tap_fail "ibv_devinfo shows $attr: $want (set on the QEMU command line)" "got: '${got}'"
    fi
done
