/*
 * libqos driver of the vmmbypass-ib device: a "vmmbypass-ib" node on the
 * PCI bus that produces the "vmmbypass-ib-dev" interface, started with its
 * controlq and eventq set up.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "../libqtest.h"
#include "qemu/module.h"
#include "standard-headers/linux/virtio_config.h"
#include "standard-headers/linux/virtio_ring.h"
#include "vmmbypass-ib.h"

static QGuestAllocator *alloc;

static void *vmmbib_pci_get_driver(void *object, const char *interface)
{
    QVmmbibPCI *dev = object;

    if (!g_strcmp0(interface, "pci-device")) {
        return dev->pci_vdev.pdev;
    }
    if (!g_strcmp0(interface, "virtio")) {
        return &dev->pci_vdev.vdev;
    }
    if (!g_strcmp0(interface, "vmmbypass-ib-dev")) {
        return &dev->vib;
    }
    fprintf(stderr, "%s not present in vmmbypass-ib\n", interface);
    g_assert_not_reached();
}

static void vmmbib_pci_start_hw(QOSGraphObject *obj)
{
    QVmmbibPCI *dev = (QVmmbibPCI *)obj;
    QVmmbib *vib = &dev->vib;
    uint64_t features;

    qvirtio_pci_start_hw(&dev->pci_vdev.obj);
    features = qvirtio_get_features(vib->vdev);
    g_assert(features & (1ull << VIRTIO_F_VERSION_1));
    features &= ~(QVIRTIO_F_BAD_FEATURE |
                  (1ull << VIRTIO_RING_F_INDIRECT_DESC) |
                  (1ull << VIRTIO_RING_F_EVENT_IDX));
    qvirtio_set_features(vib->vdev, features);
    vib->ctrl_vq = qvirtqueue_setup(vib->vdev, alloc, 0);
    vib->event_vq = qvirtqueue_setup(vib->vdev, alloc, 1);
    qvirtio_set_driver_ok(vib->vdev);
}

static void vmmbib_pci_destructor(QOSGraphObject *obj)
{
    QVmmbibPCI *dev = (QVmmbibPCI *)obj;
    QVmmbib *vib = &dev->vib;

    qvirtqueue_cleanup(vib->vdev->bus, vib->event_vq, alloc);
    qvirtqueue_cleanup(vib->vdev->bus, vib->ctrl_vq, alloc);
    qvirtio_pci_destructor(&dev->pci_vdev.obj);
}

static void *vmmbib_pci_create(void *pci_bus, QGuestAllocator *t_alloc,
                               void *addr)
{
    QVmmbibPCI *dev = g_new0(QVmmbibPCI, 1);
    QOSGraphObject *obj = &dev->pci_vdev.obj;

    virtio_pci_init(&dev->pci_vdev, pci_bus, addr);
    dev->vib.vdev = &dev->pci_vdev.vdev;
    alloc = t_alloc;
    obj->get_driver = vmmbib_pci_get_driver;
    obj->start_hw = vmmbib_pci_start_hw;
    obj->destructor = vmmbib_pci_destructor;
    return obj;
}

static void vmmbib_register_nodes(void)
{
    QPCIAddress addr = { .devfn = QPCI_DEVFN(4, 0) };
    QOSGraphEdgeOptions opts = { .extra_device_opts = "addr=04.0,id=vib0" };

    add_qpci_address(&opts, &addr);
    qos_node_create_driver("vmmbypass-ib", vmmbib_pci_create);
    qos_node_consumes("vmmbypass-ib", "pci-bus", &opts);
    qos_node_produces("vmmbypass-ib", "pci-device");
    qos_node_produces("vmmbypass-ib", "virtio");
    qos_node_produces("vmmbypass-ib", "vmmbypass-ib-dev");
}

libqos_init(vmmbib_register_nodes);
