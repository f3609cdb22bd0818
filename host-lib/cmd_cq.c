/*
 * Completion queues: a ring in guest memory, a 64-byte header holding the
 * guest's consumer index, then 64-byte CQEs with an owner bit per lap.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "verbs/verbs.h"

#define CQE_SIZE sizeof(struct vmmbib_cqe)
#define CQ_HEADER_SIZE sizeof(struct vmmbib_cq_header)

/* Load the ring of a CQ of @cqe entries; checks the pages hold it. */
static int load_ring(struct vmmbib_cmd_ctx *c, uint32_t cqe,
                     const struct vmmbib_page_list *list,
                     struct vmmbib_pages *ring)
{
    uint64_t bytes;
    int status;

    if (!vmmbib_is_pow2(cqe) || cqe > c->dev->cfg.limits.max_cqe) {
        return VMMBIB_STATUS_INVALID;
    }
    bytes = CQ_HEADER_SIZE + (uint64_t)cqe * CQE_SIZE;
    if (((uint64_t)vmmbib_le32(list->npages) << VMMBIB_PAGE_SHIFT) < bytes) {
        return VMMBIB_STATUS_INVALID;
    }
    status = vmmbib_pages_load(c->dev, list, c->dev->cfg.limits.max_mr_pages,
                               ring);
    return status;
}

int vmmbib_cmd_create_cq(struct vmmbib_cmd_ctx *c)
{
    const struct vmmbib_cmd_create_cq *q = c->req;
    struct vmmbib_resp_create_cq *r = c->resp;
    uint32_t cqe = vmmbib_le32(q->cqe);
    struct vmmbib_cq *cq;
    int status;

    if (vmmbib_le32(q->comp_vector) != 0) {
        return VMMBIB_STATUS_INVALID;
    }
    cq = calloc(1, sizeof(*cq));
    if (!cq) {
        return VMMBIB_STATUS_NO_RESOURCES;
    }
    status = load_ring(c, cqe, &q->pages, &cq->ring);
    if (status != VMMBIB_STATUS_OK) {
        free(cq);
        return status;
    }
    cq->uctx = c->uctx;
    cq->cqe = cqe;
    cq->handle = vmmbib_table_insert(&c->dev->cqs, cq);
    if (cq->handle == VMMBIB_HANDLE_NONE) {
        vmmbib_pages_release(c->dev, &cq->ring);
        free(cq);
        return VMMBIB_STATUS_NO_RESOURCES;
    }
    if (c->dev->verbs) {
        status = vmmbib_verbs_cq_create(c->dev, cq);
        if (status != VMMBIB_STATUS_OK) {
            vmmbib_cq_free(c->dev, cq);
            return status;
        }
    }
    r->cq_handle = htole32(cq->handle);
    r->cqe = htole32(cqe);
    return VMMBIB_STATUS_OK;
}

static struct vmmbib_cqe *cqe_at(const struct vmmbib_pages *ring,
                                 uint32_t cqe, uint32_t index)
{
    /* 64-byte entries never straddle a 4 KiB page. */
    return (struct vmmbib_cqe *)vmmbib_pages_at(ring, CQ_HEADER_SIZE +
                                                (uint64_t)(index & (cqe - 1)) *
                                                CQE_SIZE);
}

static uint32_t guest_consumer(const struct vmmbib_cq *cq)
{
    const struct vmmbib_cq_header *h = (const void *)cq->ring.hva[0];

    return vmmbib_le32(__atomic_load_n(&h->consumer_index,
                                       __ATOMIC_ACQUIRE));
}

static uint8_t owner_bit(uint32_t cqe, uint32_t index)
{
    /* Lap = index / cqe; the owner bit is set on even laps. */
    return (index / cqe) & 1 ? 0 : VMMBIB_CQE_OWNER;
}

int vmmbib_cmd_resize_cq(struct vmmbib_cmd_ctx *c)
{
    const struct vmmbib_cmd_resize_cq *q = c->req;
    struct vmmbib_resp_resize_cq *r = c->resp;
    uint32_t cqe = vmmbib_le32(q->cqe);
    struct vmmbib_pages ring;
    struct vmmbib_cq *cq;
    uint32_t consumer, pending, i;
    int status;

    cq = vmmbib_lookup(c, &c->dev->cqs, vmmbib_le32(q->cq_handle), &status);
    if (!cq) {
        return status;
    }
    if (cq->error) {
        return VMMBIB_STATUS_BAD_STATE;
    }
    consumer = guest_consumer(cq);
    pending = cq->producer - consumer;
    if (pending > cq->cqe) {
        return VMMBIB_STATUS_INVALID;   /* the guest's index is garbage */
    }
    if (pending > cqe) {
        return VMMBIB_STATUS_BUSY;      /* the new ring cannot hold them */
    }
    status = load_ring(c, cqe, &q->pages, &ring);
    if (status == VMMBIB_STATUS_OK && c->dev->verbs) {
        status = vmmbib_verbs_cq_resize(c->dev, cq, cqe);
        if (status != VMMBIB_STATUS_OK) {
            vmmbib_pages_release(c->dev, &ring);
        }
    }
    if (status != VMMBIB_STATUS_OK) {
        return status;
    }
    /* Move what the guest has not consumed to lap 0 of the new ring. */
    for (i = 0; i < pending; i++) {
        struct vmmbib_cqe e = *cqe_at(&cq->ring, cq->cqe, consumer + i);

        e.owner = owner_bit(cqe, i);
        *cqe_at(&ring, cqe, i) = e;
    }
    memset(ring.hva[0], 0, CQ_HEADER_SIZE);
    vmmbib_pages_release(c->dev, &cq->ring);
    cq->ring = ring;
    cq->cqe = cqe;
    cq->producer = pending;
    r->cqe = htole32(cqe);
    r->moved = htole32(pending);
    return VMMBIB_STATUS_OK;
}

void vmmbib_cq_free(struct vmmbib_dev *dev, struct vmmbib_cq *cq)
{
    if (dev->verbs) {
        vmmbib_verbs_cq_destroy(dev, cq);
    }
    vmmbib_pages_release(dev, &cq->ring);
    vmmbib_table_remove(&dev->cqs, cq->handle);
    free(cq);
}

int vmmbib_cmd_destroy_cq(struct vmmbib_cmd_ctx *c)
{
    const struct vmmbib_cmd_destroy *q = c->req;
    struct vmmbib_cq *cq;
    int status;

    if (q->reserved) {
        return VMMBIB_STATUS_INVALID;
    }
    cq = vmmbib_lookup(c, &c->dev->cqs, vmmbib_le32(q->handle), &status);
    if (!cq) {
        return status;
    }
    if (cq->users) {
        return VMMBIB_STATUS_BUSY;
    }
    vmmbib_cq_free(c->dev, cq);
    return VMMBIB_STATUS_OK;
}

bool vmmbib_cq_post(struct vmmbib_dev *dev, struct vmmbib_cq *cq,
                    struct vmmbib_cqe *cqe, bool solicited)
{
    struct vmmbib_cqe *slot;

    if (cq->error) {
        return false;
    }
    if (cq->producer - guest_consumer(cq) >= cq->cqe) {
        /* Overflow: IBA 11.4.2.1, the CQ is in error; tell the guest. */
        cq->error = true;
        vmmbib_dev_event(dev, VMMBIB_EVENT_CQ_ERR, cq->handle, cq->uctx);
        return false;
    }
    slot = cqe_at(&cq->ring, cq->cqe, cq->producer);
    cqe->owner = 0;
    memcpy(slot, cqe, offsetof(struct vmmbib_cqe, owner));
    /* The body before the owner byte: the guest polls on the owner. */
    __atomic_store_n(&slot->owner, owner_bit(cq->cqe, cq->producer),
                     __ATOMIC_RELEASE);
    cq->producer++;
    dev->stats.cqes++;
    if (cqe->status != VMMBIB_WC_SUCCESS) {
        dev->stats.error_completions++;
    }
    if (cq->armed == 1 + VMMBIB_DB_ARM_NEXT ||
        (cq->armed == 1 + VMMBIB_DB_ARM_SOLICITED &&
         (solicited || cqe->status != VMMBIB_WC_SUCCESS))) {
        cq->armed = 0;
        vmmbib_dev_event(dev, VMMBIB_EVENT_COMP, cq->handle, cq->uctx);
    }
    return true;
}
