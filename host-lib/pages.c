/*
 * Guest page lists (docs/spec.md, "Page lists"): read the directory from
 * guest memory once, check every address, and keep the host address of
 * each page so the data path costs an array index, not a lookup.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Pages a directory of @levels levels can describe. */
static uint64_t level_capacity(unsigned int levels)
{
    uint64_t cap = 1;

    while (levels--) {
        cap *= VMMBIB_PAGE_LIST_FANOUT;
    }
    return cap;
}

/*
 * Collect @count page addresses from the directory page at @gpa of
 * @levels levels into @out.  Each entry is read exactly once.
 */
static int walk(struct vmmbib_dev *dev, uint64_t gpa, unsigned int levels,
                uint64_t count, uint8_t **out)
{
    const uint64_t *dir;
    uint64_t per_entry, i;

    if (gpa & (VMMBIB_PAGE_SIZE - 1)) {
        return VMMBIB_STATUS_INVALID;
    }
    if (levels == 0) {
        out[0] = dev->ops.guest_ptr ?
                 dev->ops.guest_ptr(dev->opaque, gpa, VMMBIB_PAGE_SIZE) :
                 NULL;
        return out[0] ? VMMBIB_STATUS_OK : VMMBIB_STATUS_BAD_ADDRESS;
    }
    dir = dev->ops.guest_ptr ?
          dev->ops.guest_ptr(dev->opaque, gpa, VMMBIB_PAGE_SIZE) : NULL;
    if (!dir) {
        return VMMBIB_STATUS_BAD_ADDRESS;
    }
    per_entry = level_capacity(levels - 1);
    for (i = 0; i * per_entry < count; i++) {
        /* One read of the guest's entry, then only our copy is used. */
        uint64_t entry = vmmbib_le64(__atomic_load_n(&dir[i],
                                                     __ATOMIC_RELAXED));
        uint64_t n = count - i * per_entry;
        int status;

        status = walk(dev, entry, levels - 1, n < per_entry ? n : per_entry,
                      out + i * per_entry);
        if (status != VMMBIB_STATUS_OK) {
            return status;
        }
    }
    return VMMBIB_STATUS_OK;
}

int vmmbib_pages_load(struct vmmbib_dev *dev,
                      const struct vmmbib_page_list *list, uint32_t max_pages,
                      struct vmmbib_pages *pages)
{
    uint32_t npages = vmmbib_le32(list->npages);
    uint64_t max_pinned = dev->cfg.limits.max_pinned_pages;
    int status;

    memset(pages, 0, sizeof(*pages));
    if (list->page_shift != VMMBIB_PAGE_SHIFT || list->reserved ||
        list->levels > VMMBIB_PAGE_LIST_MAX_LEVELS || npages == 0 ||
        npages > max_pages || npages > level_capacity(list->levels)) {
        return VMMBIB_STATUS_INVALID;
    }
    if (dev->pinned_pages + npages > max_pinned) {
        return VMMBIB_STATUS_NO_RESOURCES;
    }
    pages->hva = calloc(npages, sizeof(*pages->hva));
    if (!pages->hva) {
        return VMMBIB_STATUS_NO_RESOURCES;
    }
    status = walk(dev, vmmbib_le64(list->addr), list->levels, npages,
                  pages->hva);
    if (status != VMMBIB_STATUS_OK) {
        free(pages->hva);
        pages->hva = NULL;
        return status;
    }
    pages->npages = npages;
    dev->pinned_pages += npages;
    return VMMBIB_STATUS_OK;
}

void vmmbib_pages_release(struct vmmbib_dev *dev, struct vmmbib_pages *pages)
{
    dev->pinned_pages -= pages->npages;
    free(pages->hva);
    pages->hva = NULL;
    pages->npages = 0;
}
