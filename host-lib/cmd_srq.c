/*
 * Shared receive queues.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "verbs/verbs.h"

int vmmbib_cmd_create_srq(struct vmmbib_cmd_ctx *c)
{
    const struct vmmbib_cmd_create_srq *q = c->req;
    struct vmmbib_resp_create_srq *r = c->resp;
    const struct vmmbib_limits *l = &c->dev->cfg.limits;
    uint32_t max_wr = vmmbib_le32(q->max_wr);
    uint32_t max_sge = vmmbib_le32(q->max_sge);
    uint32_t limit = vmmbib_le32(q->srq_limit);
    static const uint8_t zero[sizeof(q->reserved)];
    struct vmmbib_srq *srq;
    struct vmmbib_pd *pd;
    int status;

    pd = vmmbib_lookup(c, &c->dev->pds, vmmbib_le32(q->pd_handle), &status);
    if (!pd) {
        return status;
    }
    if (memcmp(q->reserved, zero, sizeof(zero)) || max_sge == 0 ||
        max_sge > l->max_srq_sge || limit >= max_wr) {
        return VMMBIB_STATUS_INVALID;
    }
    srq = calloc(1, sizeof(*srq));
    if (!srq) {
        return VMMBIB_STATUS_NO_RESOURCES;
    }
    status = vmmbib_ring_load(c->dev, &srq->rq, max_wr, l->max_srq_wr,
                              q->wqe_shift,
                              sizeof(struct vmmbib_recv_wqe) +
                              max_sge * sizeof(struct vmmbib_sge), &q->pages);
    if (status != VMMBIB_STATUS_OK) {
        free(srq);
        return status;
    }
    srq->uctx = c->uctx;
    srq->pd = pd;
    srq->max_sge = max_sge;
    srq->limit = limit;
    srq->handle = vmmbib_table_insert(&c->dev->srqs, srq);
    if (srq->handle == VMMBIB_HANDLE_NONE) {
        vmmbib_pages_release(c->dev, &srq->rq.pages);
        free(srq);
        return VMMBIB_STATUS_NO_RESOURCES;
    }
    pd->users++;
    if (c->dev->verbs) {
        status = vmmbib_verbs_srq_create(c->dev, srq);
        if (status != VMMBIB_STATUS_OK) {
            vmmbib_srq_free(c->dev, srq);
            return status;
        }
    }
    r->srq_handle = htole32(srq->handle);
    r->srqn = htole32(VMMBIB_HANDLE_INDEX(srq->handle));
    r->max_wr = htole32(max_wr);
    r->max_sge = htole32(max_sge);
    return VMMBIB_STATUS_OK;
}

int vmmbib_cmd_modify_srq(struct vmmbib_cmd_ctx *c)
{
    const struct vmmbib_cmd_modify_srq *q = c->req;
    uint32_t mask = vmmbib_le32(q->attr_mask);
    uint32_t limit = vmmbib_le32(q->srq_limit);
    struct vmmbib_srq *srq;
    int status;

    srq = vmmbib_lookup(c, &c->dev->srqs, vmmbib_le32(q->srq_handle),
                        &status);
    if (!srq) {
        return status;
    }
    if (mask & ~(VMMBIB_SRQ_MAX_WR | VMMBIB_SRQ_LIMIT)) {
        return VMMBIB_STATUS_INVALID;
    }
    if (mask & VMMBIB_SRQ_MAX_WR) {
        return VMMBIB_STATUS_NOT_SUPPORTED;
    }
    if ((mask & VMMBIB_SRQ_LIMIT) && limit >= srq->rq.entries) {
        return VMMBIB_STATUS_INVALID;
    }
    if (mask & VMMBIB_SRQ_LIMIT) {
        if (c->dev->verbs) {
            status = vmmbib_verbs_srq_modify(c->dev, srq, limit);
            if (status != VMMBIB_STATUS_OK) {
                return status;
            }
        }
        srq->limit = limit;
    }
    return VMMBIB_STATUS_OK;
}

int vmmbib_cmd_query_srq(struct vmmbib_cmd_ctx *c)
{
    const struct vmmbib_cmd_query_srq *q = c->req;
    struct vmmbib_resp_query_srq *r = c->resp;
    struct vmmbib_srq *srq;
    int status;

    if (q->reserved) {
        return VMMBIB_STATUS_INVALID;
    }
    srq = vmmbib_lookup(c, &c->dev->srqs, vmmbib_le32(q->srq_handle),
                        &status);
    if (!srq) {
        return status;
    }
    r->max_wr = htole32(srq->rq.entries);
    r->max_sge = htole32(srq->max_sge);
    r->srq_limit = htole32(srq->limit);
    return VMMBIB_STATUS_OK;
}

void vmmbib_srq_free(struct vmmbib_dev *dev, struct vmmbib_srq *srq)
{
    if (dev->verbs) {
        vmmbib_verbs_srq_destroy(dev, srq);
    }
    srq->pd->users--;
    vmmbib_pages_release(dev, &srq->rq.pages);
    vmmbib_table_remove(&dev->srqs, srq->handle);
    free(srq);
}

int vmmbib_cmd_destroy_srq(struct vmmbib_cmd_ctx *c)
{
    const struct vmmbib_cmd_destroy *q = c->req;
    struct vmmbib_srq *srq;
    int status;

    if (q->reserved) {
        return VMMBIB_STATUS_INVALID;
    }
    srq = vmmbib_lookup(c, &c->dev->srqs, vmmbib_le32(q->handle), &status);
    if (!srq) {
        return status;
    }
    if (srq->users) {
        return VMMBIB_STATUS_BUSY;
    }
    vmmbib_srq_free(c->dev, srq);
    return VMMBIB_STATUS_OK;
}
