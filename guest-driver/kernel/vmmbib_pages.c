// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Page lists (docs/spec.md, section 2): how rings and memory regions are
 * described to the device, by the DMA addresses of their 4 KiB pages.
 *
 * A list of one page names the page itself (levels 0).  Longer lists put
 * the page addresses in directory pages of 512 entries (level 1), and the
 * addresses of those in further directories (levels 2 and 3).  The
 * directories are driver memory that the device reads only while the
 * command runs, so the caller frees them as soon as the command returns.
 *
 * Also the kernel-owned ring buffers, which are contiguous and zeroed.
 */

#include <linux/dma-mapping.h>
#include <linux/slab.h>
#include <rdma/ib_umem.h>
/* The block iterator's own header (6.12, and Debian's 6.1 from stable). */
#include <rdma/iter.h>

#include "vmmbib.h"

struct device *vmmbib_dma_dev(struct vmmbib_dev *dev)
{
	/* The PCI function: the one ib_core maps user memory through. */
	return dev->vdev->dev.parent;
}

static unsigned int vmmbib_div_fanout(u64 n)
{
	return DIV_ROUND_UP_ULL(n, VMMBIB_PAGE_LIST_FANOUT);
}

/**
 * vmmbib_pgdir_init - prepare the directories for a list of @npages pages
 * @dev: the device
 * @pd: the list to prepare
 * @npages: how many pages it will hold, at least 1
 *
 * Return: 0, -EINVAL for a count the ABI cannot describe or the device
 * would refuse, or -ENOMEM.
 */
int vmmbib_pgdir_init(struct vmmbib_dev *dev, struct vmmbib_pgdir *pd,
		      u64 npages)
{
	u64 level_pages;
	unsigned int i;
	u8 levels = 0;

	BUILD_BUG_ON(PAGE_SIZE != VMMBIB_PAGE_SIZE);

	memset(pd, 0, sizeof(*pd));
	pd->dma_dev = vmmbib_dma_dev(dev);
	if (!npages || npages > dev->attr.max_mr_pages)
		return -EINVAL;
	pd->npages = npages;

	/* One directory level per factor of 512; count their pages. */
	for (level_pages = npages; level_pages > 1;
	     level_pages = vmmbib_div_fanout(level_pages)) {
		levels++;
		pd->ndirs += vmmbib_div_fanout(level_pages);
	}
	if (levels > VMMBIB_PAGE_LIST_MAX_LEVELS)
		return -EINVAL;
	pd->list.levels = levels;
	pd->list.page_shift = VMMBIB_PAGE_SHIFT;
	pd->list.npages = cpu_to_le32(npages);
	if (!pd->ndirs)
		return 0;

	pd->dir_va = kcalloc(pd->ndirs, sizeof(*pd->dir_va), GFP_KERNEL);
	pd->dir_dma = kcalloc(pd->ndirs, sizeof(*pd->dir_dma), GFP_KERNEL);
	if (!pd->dir_va || !pd->dir_dma)
		goto err_free;
	for (i = 0; i < pd->ndirs; i++) {
		pd->dir_va[i] = dma_alloc_coherent(pd->dma_dev, PAGE_SIZE,
						   &pd->dir_dma[i], GFP_KERNEL);
		if (!pd->dir_va[i])
			goto err_free;
	}
	return 0;

err_free:
	vmmbib_pgdir_free(pd);
	return -ENOMEM;
}

/* Appends the next page; exactly npages calls before _finish. */
void vmmbib_pgdir_add(struct vmmbib_pgdir *pd, dma_addr_t page)
{
	__le64 *dir;

	if (WARN_ON_ONCE(pd->filled >= pd->npages ||
			 page & (VMMBIB_PAGE_SIZE - 1)))
		return;
	if (!pd->list.levels) {
		pd->list.addr = cpu_to_le64(page);
	} else {
		dir = pd->dir_va[pd->filled / VMMBIB_PAGE_LIST_FANOUT];
		dir[pd->filled % VMMBIB_PAGE_LIST_FANOUT] = cpu_to_le64(page);
	}
	pd->filled++;
}

/*
 * Links the directory levels: the first directories hold pages, each
 * following level the addresses of the one below; the last is the root.
 */
void vmmbib_pgdir_finish(struct vmmbib_pgdir *pd)
{
	unsigned int below = 0, n = vmmbib_div_fanout(pd->npages), next, i;
	__le64 *dir;

	WARN_ON_ONCE(pd->filled != pd->npages);
	if (!pd->list.levels)
		return;
	while (n > 1) {
		next = below + n;
		for (i = 0; i < n; i++) {
			dir = pd->dir_va[next + i / VMMBIB_PAGE_LIST_FANOUT];
			dir[i % VMMBIB_PAGE_LIST_FANOUT] =
				cpu_to_le64(pd->dir_dma[below + i]);
		}
		below = next;
		n = vmmbib_div_fanout(n);
	}
	pd->list.addr = cpu_to_le64(pd->dir_dma[pd->ndirs - 1]);
}

void vmmbib_pgdir_free(struct vmmbib_pgdir *pd)
{
	unsigned int i;

	for (i = 0; pd->dir_va && i < pd->ndirs; i++)
		if (pd->dir_va[i])
			dma_free_coherent(pd->dma_dev, PAGE_SIZE, pd->dir_va[i],
					  pd->dir_dma[i]);
	kfree(pd->dir_va);
	kfree(pd->dir_dma);
	pd->dir_va = NULL;
	pd->dir_dma = NULL;
	pd->ndirs = 0;
}

/* The page list of pinned user memory, page by page. */
int vmmbib_pgdir_umem(struct vmmbib_dev *dev, struct vmmbib_pgdir *pd,
		      struct ib_umem *umem)
{
	struct ib_block_iter biter;
	int err;

	err = vmmbib_pgdir_init(dev, pd, ib_umem_num_dma_blocks(umem,
								PAGE_SIZE));
	if (err)
		return err;
	rdma_umem_for_each_dma_block(umem, &biter, PAGE_SIZE)
		vmmbib_pgdir_add(pd, rdma_block_iter_dma_address(&biter));
	if (pd->filled != pd->npages) {
		vmmbib_pgdir_free(pd);
		return -EINVAL;
	}
	vmmbib_pgdir_finish(pd);
	return 0;
}

/* The page list of a kernel ring: contiguous pages. */
int vmmbib_pgdir_kbuf(struct vmmbib_dev *dev, struct vmmbib_pgdir *pd,
		      const struct vmmbib_kbuf *kbuf)
{
	size_t off;
	int err;

	err = vmmbib_pgdir_init(dev, pd, kbuf->size >> PAGE_SHIFT);
	if (err)
		return err;
	for (off = 0; off < kbuf->size; off += PAGE_SIZE)
		vmmbib_pgdir_add(pd, kbuf->dma + off);
	vmmbib_pgdir_finish(pd);
	return 0;
}

int vmmbib_kbuf_alloc(struct vmmbib_dev *dev, struct vmmbib_kbuf *kbuf,
		      size_t size)
{
	kbuf->size = PAGE_ALIGN(size);
	/* dma_alloc_coherent() memory comes zeroed. */
	kbuf->va = dma_alloc_coherent(vmmbib_dma_dev(dev), kbuf->size,
				      &kbuf->dma, GFP_KERNEL);
	return kbuf->va ? 0 : -ENOMEM;
}

void vmmbib_kbuf_free(struct vmmbib_dev *dev, struct vmmbib_kbuf *kbuf)
{
	if (kbuf->va)
		dma_free_coherent(vmmbib_dma_dev(dev), kbuf->size, kbuf->va,
				  kbuf->dma);
	kbuf->va = NULL;
}
