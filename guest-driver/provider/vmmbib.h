/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * vmmbypass-ib rdma-core provider: objects and their to_vmmbib_*() helpers.
 *
 * Each object embeds the libibverbs object it extends, so the pointer the
 * library hands back converts to ours with container_of().
 */
#ifndef VMMBIB_H
#define VMMBIB_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include <infiniband/driver.h>
#include <infiniband/kern-abi.h>

#include <vmmbypass_ib_abi.h>

struct vmmbib_device {
	struct verbs_device ibv_dev;
	size_t page_size;		/* of this host, for later mmaps */
};

struct vmmbib_context {
	struct verbs_context ibv_ctx;
	/* From the kernel's vmmbib_ualloc_ucontext_resp. */
	uint32_t comp_mask;		/* optional parts the kernel offers */
	uint32_t uar_slot;
	uint64_t uar_mmap_key;		/* mmap offset of the UAR slot */
	uint32_t uar_size;
	uint32_t db_ring_entries;
};

/*
 * GET_CONTEXT reply: the core uverbs reply, then our driver data.  The
 * private struct is the one in the ABI header; only the wrapper is ours.
 */
struct vmmbib_get_context_resp {
	struct ib_uverbs_get_context_resp ibv_resp;
	struct vmmbib_ualloc_ucontext_resp drv;
};

/* ibv_cmd_get_context() sends whatever follows the core reply as udata. */
static_assert(offsetof(struct vmmbib_get_context_resp, drv) ==
		      sizeof(struct ib_uverbs_get_context_resp),
	      "padding between the core and the driver reply");

static inline struct vmmbib_device *to_vmmbib_dev(struct ibv_device *ibdev)
{
	return container_of(ibdev, struct vmmbib_device, ibv_dev.device);
}

static inline struct vmmbib_context *to_vmmbib_ctx(struct ibv_context *ibctx)
{
	return container_of(ibctx, struct vmmbib_context, ibv_ctx.context);
}

#endif /* VMMBIB_H */
