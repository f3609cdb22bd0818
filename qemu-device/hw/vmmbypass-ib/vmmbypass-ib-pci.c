/*
 * vmmbypass-ib PCI binding: modern virtio-pci only (1af4:106a), with the
 * UAR window as a 64-bit memory BAR described by a shared memory capability.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "hw/virtio/virtio-pci.h"
#include "hw/vmmbypass-ib/vmmbypass-ib.h"
#include "qapi/error.h"
#include "qemu/module.h"

#include "vmmbypass_ib_abi.h"

#define TYPE_VMMBYPASS_IB_PCI "vmmbypass-ib-pci-base"
OBJECT_DECLARE_SIMPLE_TYPE(VMMBypassIBPCI, VMMBYPASS_IB_PCI)

/* BAR 1 is MSI-X and BAR 4 the virtio structures; BAR 2 is free. */
#define VMMBYPASS_IB_UAR_BAR 2

struct VMMBypassIBPCI {
    VirtIOPCIProxy parent_obj;
    VMMBypassIB vdev;
};

static void vmmbib_pci_realize(VirtIOPCIProxy *vpci_dev, Error **errp)
{
    VMMBypassIBPCI *dev = VMMBYPASS_IB_PCI(vpci_dev);
    VMMBypassIB *vib = &dev->vdev;

    if (vpci_dev->nvectors == DEV_NVECTORS_UNSPECIFIED) {
        /* One for config changes, one per virtqueue. */
        vpci_dev->nvectors = 3;
    }
    virtio_pci_force_virtio_1(vpci_dev);
    if (!qdev_realize(DEVICE(vib), BUS(&vpci_dev->bus), errp)) {
        return;
    }

    pci_register_bar(&vpci_dev->pci_dev, VMMBYPASS_IB_UAR_BAR,
                     PCI_BASE_ADDRESS_SPACE_MEMORY |
                     PCI_BASE_ADDRESS_MEM_TYPE_64,
                     &vib->uar_window);
    virtio_pci_add_shm_cap(vpci_dev, VMMBYPASS_IB_UAR_BAR, 0,
                           vmmbypass_ib_uar_window_size(vib),
                           VMMBIB_SHM_ID_UAR);
}

static const Property vmmbib_pci_properties[] = {
    DEFINE_PROP_UINT32("vectors", VirtIOPCIProxy, nvectors,
                       DEV_NVECTORS_UNSPECIFIED),
};

static void vmmbib_pci_class_init(ObjectClass *klass, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);
    VirtioPCIClass *k = VIRTIO_PCI_CLASS(klass);
    PCIDeviceClass *pcidev_k = PCI_DEVICE_CLASS(klass);

    k->realize = vmmbib_pci_realize;
    set_bit(DEVICE_CATEGORY_NETWORK, dc->categories);
    dc->desc = "RDMA (InfiniBand verbs) device with a guest-direct data path";
    device_class_set_props(dc, vmmbib_pci_properties);
    pcidev_k->class_id = PCI_CLASS_SERIAL_IB;
}

static void vmmbib_pci_instance_init(Object *obj)
{
    VMMBypassIBPCI *dev = VMMBYPASS_IB_PCI(obj);

    virtio_instance_init_common(obj, &dev->vdev, sizeof(dev->vdev),
                                TYPE_VMMBYPASS_IB);
    vmmbypass_ib_alias_stats(&dev->vdev, obj);
}

static const VirtioPCIDeviceTypeInfo vmmbib_pci_info = {
    .base_name = TYPE_VMMBYPASS_IB_PCI,
    .generic_name = "vmmbypass-ib",
    .instance_size = sizeof(VMMBypassIBPCI),
    .instance_init = vmmbib_pci_instance_init,
    .class_init = vmmbib_pci_class_init,
};

static void vmmbib_pci_register_types(void)
{
    virtio_pci_types_register(&vmmbib_pci_info);
}

type_init(vmmbib_pci_register_types)
