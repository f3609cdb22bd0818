/*
 * Memory regions.  An MR keeps the host address of each of its guest
 * pages; its key is (table index << 8) | the index's generation, so a key
 * of a deregistered MR names nothing once the index is reused.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <stdlib.h>

#include "internal.h"
#include "verbs/verbs.h"

/* Remote write and atomic need local write, as IBA 10.6.3.1 requires. */
static int check_access(uint32_t access)
{
    if (access & ~VMMBIB_ACCESS_ALL) {
        return VMMBIB_STATUS_INVALID;
    }
    if ((access & (VMMBIB_ACCESS_REMOTE_WRITE | VMMBIB_ACCESS_REMOTE_ATOMIC)) &&
        !(access & VMMBIB_ACCESS_LOCAL_WRITE)) {
        return VMMBIB_STATUS_INVALID;
    }
    return VMMBIB_STATUS_OK;
}

static int mr_insert(struct vmmbib_cmd_ctx *c, struct vmmbib_mr *mr)
{
    struct vmmbib_resp_mr *r = c->resp;
    uint32_t index;

    mr->uctx = c->uctx;
    mr->handle = vmmbib_table_insert(&c->dev->mrs, mr);
    if (mr->handle == VMMBIB_HANDLE_NONE) {
        return VMMBIB_STATUS_NO_RESOURCES;
    }
    index = VMMBIB_HANDLE_INDEX(mr->handle);
    mr->key = (index << 8) | vmmbib_table_gen(&c->dev->mrs, index);
    mr->pd->users++;
    r->mr_handle = htole32(mr->handle);
    r->lkey = htole32(mr->key);
    r->rkey = htole32(mr->key);
    return VMMBIB_STATUS_OK;
}

int vmmbib_cmd_create_dma_mr(struct vmmbib_cmd_ctx *c)
{
    const struct vmmbib_cmd_create_dma_mr *q = c->req;
    struct vmmbib_mr *mr;
    struct vmmbib_pd *pd;
    uint32_t access = vmmbib_le32(q->access);
    int status;

    pd = vmmbib_lookup(c, &c->dev->pds, vmmbib_le32(q->pd_handle), &status);
    if (!pd) {
        return status;
    }
    status = check_access(access);
    if (status != VMMBIB_STATUS_OK) {
        return status;
    }
    mr = calloc(1, sizeof(*mr));
    if (!mr) {
        return VMMBIB_STATUS_NO_RESOURCES;
    }
    mr->pd = pd;
    mr->access = access;
    mr->dma = true;
    mr->length = UINT64_MAX;
    status = mr_insert(c, mr);
    if (status != VMMBIB_STATUS_OK) {
        free(mr);
        return status;
    }
    if (c->dev->verbs) {
        /* Guest RAM registered on the host (docs/design-verbs.md). */
        status = vmmbib_verbs_mr_reg(c, mr);
        if (status != VMMBIB_STATUS_OK) {
            vmmbib_mr_free(c->dev, mr);
        }
    }
    return status;
}

int vmmbib_cmd_reg_mr(struct vmmbib_cmd_ctx *c)
{
    const struct vmmbib_cmd_reg_mr *q = c->req;
    uint64_t iova = vmmbib_le64(q->iova);
    uint64_t length = vmmbib_le64(q->length);
    uint32_t access = vmmbib_le32(q->access);
    uint32_t offset = vmmbib_le32(q->first_page_offset);
    uint32_t npages = vmmbib_le32(q->pages.npages);
    struct vmmbib_mr *mr;
    struct vmmbib_pd *pd;
    int status;

    pd = vmmbib_lookup(c, &c->dev->pds, vmmbib_le32(q->pd_handle), &status);
    if (!pd) {
        return status;
    }
    status = check_access(access);
    if (status != VMMBIB_STATUS_OK) {
        return status;
    }
    /*
     * The pages must cover exactly [iova, iova + length); all sums in 64
     * bits with length bounded first, so nothing wraps.
     */
    if (q->reserved || offset >= VMMBIB_PAGE_SIZE || length == 0 ||
        length > ((uint64_t)c->dev->cfg.limits.max_mr_pages <<
                  VMMBIB_PAGE_SHIFT) ||
        iova > UINT64_MAX - length ||
        (iova & (VMMBIB_PAGE_SIZE - 1)) != offset ||
        (offset + length + VMMBIB_PAGE_SIZE - 1) >> VMMBIB_PAGE_SHIFT !=
        npages) {
        return VMMBIB_STATUS_INVALID;
    }
    mr = calloc(1, sizeof(*mr));
    if (!mr) {
        return VMMBIB_STATUS_NO_RESOURCES;
    }
    status = vmmbib_pages_load(c->dev, &q->pages,
                               c->dev->cfg.limits.max_mr_pages, &mr->pages);
    if (status != VMMBIB_STATUS_OK) {
        free(mr);
        return status;
    }
    mr->pd = pd;
    mr->access = access;
    mr->iova = iova;
    mr->length = length;
    mr->first_page_offset = offset;
    status = mr_insert(c, mr);
    if (status != VMMBIB_STATUS_OK) {
        vmmbib_pages_release(c->dev, &mr->pages);
        free(mr);
        return status;
    }
    if (c->dev->verbs) {
        status = vmmbib_verbs_mr_reg(c, mr);
        if (status != VMMBIB_STATUS_OK) {
            vmmbib_mr_free(c->dev, mr);
        }
    }
    return status;
}

void vmmbib_mr_free(struct vmmbib_dev *dev, struct vmmbib_mr *mr)
{
    if (dev->verbs) {
        vmmbib_verbs_mr_dereg(dev, mr);
    }
    mr->pd->users--;
    vmmbib_pages_release(dev, &mr->pages);
    vmmbib_table_remove(&dev->mrs, mr->handle);
    free(mr);
}

int vmmbib_cmd_dereg_mr(struct vmmbib_cmd_ctx *c)
{
    const struct vmmbib_cmd_destroy *q = c->req;
    struct vmmbib_mr *mr;
    int status;

    if (q->reserved) {
        return VMMBIB_STATUS_INVALID;
    }
    mr = vmmbib_lookup(c, &c->dev->mrs, vmmbib_le32(q->handle), &status);
    if (!mr) {
        return status;
    }
    vmmbib_mr_free(c->dev, mr);
    return VMMBIB_STATUS_OK;
}

struct vmmbib_mr *vmmbib_mr_from_key(struct vmmbib_dev *dev, uint32_t key)
{
    struct vmmbib_mr *mr = vmmbib_table_at(&dev->mrs, key >> 8);

    return mr && mr->key == key ? mr : NULL;
}
