/*
 * CREATE_UCONTEXT and DESTROY_UCONTEXT.  A context owns a UAR slot and,
 * through it, every object created with its handle.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <endian.h>

#include "internal.h"

/*
 * The device has no link to train: its port is up as soon as a driver
 * uses it.  The first context after creation or a reset is that moment
 * (the kernel driver creates one at probe), so PORT_ACTIVE comes then,
 * once, after the reset that would have dropped an earlier one.
 */
void vmmbib_port_activate(struct vmmbib_dev *dev)
{
    if (!dev->port_active_raised) {
        dev->port_active_raised = true;
        vmmbib_dev_event(dev, VMMBIB_EVENT_PORT_ACTIVE, 1, NULL);
    }
}

int vmmbib_cmd_create_ucontext(struct vmmbib_cmd_ctx *c)
{
    struct vmmbib_resp_create_ucontext *r = c->resp;
    struct vmmbib_ucontext *uctx;
    int status;

    uctx = vmmbib_ucontext_create(c->dev, &status);
    if (!uctx) {
        return status;
    }
    r->ctx_handle = htole32(uctx->handle);
    r->uar_slot = htole32(uctx->uar_slot);
    vmmbib_port_activate(c->dev);
    return VMMBIB_STATUS_OK;
}

int vmmbib_cmd_destroy_ucontext(struct vmmbib_cmd_ctx *c)
{
    vmmbib_ucontext_destroy(c->dev, c->uctx);
    return VMMBIB_STATUS_OK;
}
