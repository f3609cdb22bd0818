/*
 * libqos driver of the vmmbypass-ib device
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef TESTS_LIBQOS_VMMBYPASS_IB_H
#define TESTS_LIBQOS_VMMBYPASS_IB_H

#include "qgraph.h"
#include "virtio.h"
#include "virtio-pci.h"

typedef struct QVmmbib {
    QVirtioDevice *vdev;
    QVirtQueue *ctrl_vq;
    QVirtQueue *event_vq;
} QVmmbib;

typedef struct QVmmbibPCI {
    QVirtioPCIDevice pci_vdev;
    QVmmbib vib;
} QVmmbibPCI;

/* qom path of the device the graph creates (it is given this id). */
#define QVMMBIB_QOM_PATH "/machine/peripheral/vib0"

#endif
