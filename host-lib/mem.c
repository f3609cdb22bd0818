/*
 * Memory keys and data movement: checks an (lkey or rkey, address, length)
 * against its MR, and copies between scatter/gather lists of such ranges,
 * page by page, through the host addresses translated at registration.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <string.h>

#include "internal.h"
#include "data.h"

int vmmbib_mr_check(struct vmmbib_dev *dev, struct vmmbib_pd *pd,
                    uint32_t key, uint64_t addr, uint64_t len,
                    uint32_t access, struct vmmbib_mr **out)
{
    struct vmmbib_mr *mr = vmmbib_mr_from_key(dev, key);

    /* IBA 10.6.3: the key, the PD, the access rights, then the bounds. */
    if (!mr || mr->pd != pd || (mr->access & access) != access) {
        return -1;
    }
    if (mr->dma) {
        if (len && (!dev->ops.guest_ptr ||
                    !dev->ops.guest_ptr(dev->opaque, addr, len))) {
            return -1;
        }
    } else if (addr < mr->iova || len > mr->length ||
               addr - mr->iova > mr->length - len) {
        return -1;
    }
    *out = mr;
    return 0;
}

/* Host address of @addr in @seg and how many bytes follow in its page. */
static uint8_t *seg_ptr(const struct vmmbib_seg *seg, uint64_t done,
                        uint64_t *avail)
{
    const struct vmmbib_mr *mr = seg->mr;
    uint64_t left = seg->len - done;
    uint64_t off, in_page;

    if (seg->inline_data) {
        *avail = left;
        return (uint8_t *)seg->inline_data + done;
    }
    if (mr->dma) {
        uint64_t gpa = seg->addr + done;

        in_page = VMMBIB_PAGE_SIZE - (gpa & (VMMBIB_PAGE_SIZE - 1));
        *avail = left < in_page ? left : in_page;
        return seg->dev->ops.guest_ptr(seg->dev->opaque, gpa, *avail);
    }
    off = seg->addr - mr->iova + mr->first_page_offset + done;
    in_page = VMMBIB_PAGE_SIZE - (off & (VMMBIB_PAGE_SIZE - 1));
    *avail = left < in_page ? left : in_page;
    return vmmbib_pages_at(&mr->pages, off);
}

uint64_t vmmbib_sg_len(const struct vmmbib_seg *segs, unsigned int n)
{
    uint64_t total = 0;
    unsigned int i;

    for (i = 0; i < n; i++) {
        total += segs[i].len;
    }
    return total;
}

int vmmbib_sg_copy(const struct vmmbib_seg *dst, unsigned int ndst,
                   uint64_t dst_skip, const struct vmmbib_seg *src,
                   unsigned int nsrc, uint64_t len)
{
    unsigned int di = 0, si = 0;
    uint64_t doff = dst_skip, soff = 0;

    /* Skip whole destination segments the offset passes. */
    while (di < ndst && doff >= dst[di].len) {
        doff -= dst[di].len;
        di++;
    }
    while (len) {
        uint64_t davail, savail, n;
        uint8_t *d, *s;

        while (si < nsrc && soff == src[si].len) {
            si++;
            soff = 0;
        }
        while (di < ndst && doff == dst[di].len) {
            di++;
            doff = 0;
        }
        if (si == nsrc || di == ndst) {
            return -1;
        }
        d = seg_ptr(&dst[di], doff, &davail);
        s = seg_ptr(&src[si], soff, &savail);
        if (!d || !s) {
            return -1;
        }
        n = davail < savail ? davail : savail;
        n = n < len ? n : len;
        memcpy(d, s, n);
        doff += n;
        soff += n;
        len -= n;
    }
    return 0;
}

uint8_t *vmmbib_seg_ptr8(const struct vmmbib_seg *seg)
{
    uint64_t avail;
    uint8_t *p = seg_ptr(seg, 0, &avail);

    return p && avail >= 8 ? p : NULL;
}
