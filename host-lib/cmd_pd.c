/*
 * Protection domains and address handles.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "verbs/verbs.h"

int vmmbib_cmd_create_pd(struct vmmbib_cmd_ctx *c)
{
    struct vmmbib_resp_create_pd *r = c->resp;
    struct vmmbib_pd *pd = calloc(1, sizeof(*pd));

    if (!pd) {
        return VMMBIB_STATUS_NO_RESOURCES;
    }
    pd->uctx = c->uctx;
    pd->handle = vmmbib_table_insert(&c->dev->pds, pd);
    if (pd->handle == VMMBIB_HANDLE_NONE) {
        free(pd);
        return VMMBIB_STATUS_NO_RESOURCES;
    }
    if (c->dev->verbs) {
        int status = vmmbib_verbs_pd_create(c->dev, pd);

        if (status != VMMBIB_STATUS_OK) {
            vmmbib_pd_free(c->dev, pd);
            return status;
        }
    }
    r->pd_handle = htole32(pd->handle);
    return VMMBIB_STATUS_OK;
}

void vmmbib_pd_free(struct vmmbib_dev *dev, struct vmmbib_pd *pd)
{
    if (dev->verbs) {
        vmmbib_verbs_pd_destroy(dev, pd);
    }
    vmmbib_table_remove(&dev->pds, pd->handle);
    free(pd);
}

int vmmbib_cmd_destroy_pd(struct vmmbib_cmd_ctx *c)
{
    const struct vmmbib_cmd_destroy *q = c->req;
    struct vmmbib_pd *pd;
    int status;

    if (q->reserved) {
        return VMMBIB_STATUS_INVALID;
    }
    pd = vmmbib_lookup(c, &c->dev->pds, vmmbib_le32(q->handle), &status);
    if (!pd) {
        return status;
    }
    if (pd->users) {
        return VMMBIB_STATUS_BUSY;
    }
    vmmbib_pd_free(c->dev, pd);
    return VMMBIB_STATUS_OK;
}

/*
 * An address vector the subnet can route: port 1, known flags, and a
 * unicast LID, which a global address (routed by its dgid) may leave 0.
 * Also checks a QP's primary path (cmd_qp.c).
 */
int vmmbib_check_ah_attr(const struct vmmbib_ah_attr *a)
{
    uint16_t dlid = vmmbib_le16(a->dlid);
    bool global = a->ah_flags & VMMBIB_AH_GRH;
    static const uint8_t zero[sizeof(a->reserved)];

    if (memcmp(a->reserved, zero, sizeof(zero)) ||
        (a->ah_flags & ~VMMBIB_AH_GRH) || a->port_num != 1 ||
        (dlid == 0 && !global) || dlid >= 0xc000 || a->sl > 15 ||
        vmmbib_le32(a->flow_label) > 0xfffff) {
        return VMMBIB_STATUS_INVALID;
    }
    if ((a->ah_flags & VMMBIB_AH_GRH) && a->sgid_index != 0) {
        return VMMBIB_STATUS_INVALID;
    }
    return VMMBIB_STATUS_OK;
}

int vmmbib_cmd_create_ah(struct vmmbib_cmd_ctx *c)
{
    const struct vmmbib_cmd_create_ah *q = c->req;
    struct vmmbib_resp_create_ah *r = c->resp;
    struct vmmbib_pd *pd;
    struct vmmbib_ah *ah;
    int status;

    if (q->reserved) {
        return VMMBIB_STATUS_INVALID;
    }
    pd = vmmbib_lookup(c, &c->dev->pds, vmmbib_le32(q->pd_handle), &status);
    if (!pd) {
        return status;
    }
    status = vmmbib_check_ah_attr(&q->attr);
    if (status != VMMBIB_STATUS_OK) {
        return status;
    }
    ah = calloc(1, sizeof(*ah));
    if (!ah) {
        return VMMBIB_STATUS_NO_RESOURCES;
    }
    ah->uctx = c->uctx;
    ah->pd = pd;
    ah->attr = q->attr;
    ah->handle = vmmbib_table_insert(&c->dev->ahs, ah);
    if (ah->handle == VMMBIB_HANDLE_NONE) {
        free(ah);
        return VMMBIB_STATUS_NO_RESOURCES;
    }
    pd->users++;
    if (c->dev->verbs) {
        status = vmmbib_verbs_ah_create(c->dev, ah);
        if (status != VMMBIB_STATUS_OK) {
            vmmbib_ah_free(c->dev, ah);
            return status;
        }
    }
    r->ah_handle = htole32(ah->handle);
    return VMMBIB_STATUS_OK;
}

void vmmbib_ah_free(struct vmmbib_dev *dev, struct vmmbib_ah *ah)
{
    if (dev->verbs) {
        vmmbib_verbs_ah_destroy(dev, ah);
    }
    ah->pd->users--;
    vmmbib_table_remove(&dev->ahs, ah->handle);
    free(ah);
}

int vmmbib_cmd_destroy_ah(struct vmmbib_cmd_ctx *c)
{
    const struct vmmbib_cmd_destroy *q = c->req;
    struct vmmbib_ah *ah;
    int status;

    if (q->reserved) {
        return VMMBIB_STATUS_INVALID;
    }
    ah = vmmbib_lookup(c, &c->dev->ahs, vmmbib_le32(q->handle), &status);
    if (!ah) {
        return status;
    }
    vmmbib_ah_free(c->dev, ah);
    return VMMBIB_STATUS_OK;
}
