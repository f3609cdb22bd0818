// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * vmmbypass-ib rdma-core provider.
 *
 * libibverbs loads this module for the ib_devices of the vmmbypass_ib
 * kernel driver.  Control verbs go through the kernel (ibv_cmd_*, verbs.c);
 * the data path (posting WQEs, ringing doorbells in the context's UAR slot,
 * polling CQs in guest memory: qp.c, cq.c) never enters the kernel.  Verbs
 * absent from the ops table are answered by libibverbs with EOPNOTSUPP.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vmmbib.h"

/*
 * The kernel driver is out of tree and registers with RDMA_DRIVER_UNKNOWN,
 * so libibverbs cannot match on a driver id: we match the PCI function that
 * is the ib_device's parent.
 */
static const struct verbs_match_ent vmmbib_match_table[] = {
	VERBS_PCI_MATCH(VMMBIB_PCI_VENDOR_ID, VMMBIB_PCI_DEVICE_ID, NULL),
	{}
};

static int vmmbib_query_device_ex(struct ibv_context *ibctx,
				  const struct ibv_query_device_ex_input *input,
				  struct ibv_device_attr_ex *attr,
				  size_t attr_size)
{
	struct ib_uverbs_ex_query_device_resp resp;
	size_t resp_size = sizeof(resp);
	uint64_t fw_ver;
	int ret;

	ret = ibv_cmd_query_device_any(ibctx, input, attr, attr_size, &resp,
				       &resp_size);
	if (ret)
		return ret;

	/* The kernel passes a number; show it as major.minor.sub_minor. */
	fw_ver = resp.base.fw_ver;
	snprintf(attr->orig_attr.fw_ver, sizeof(attr->orig_attr.fw_ver),
		 "%u.%u.%u", (unsigned int)(fw_ver >> 32) & 0xffff,
		 (unsigned int)(fw_ver >> 16) & 0xffff,
		 (unsigned int)fw_ver & 0xffff);
	return 0;
}

static int vmmbib_query_port(struct ibv_context *ibctx, uint8_t port,
			     struct ibv_port_attr *attr)
{
	struct ibv_query_port cmd;

	return ibv_cmd_query_port(ibctx, port, attr, &cmd, sizeof(cmd));
}

static unsigned int vmmbib_qp_bucket(uint32_t qpn)
{
	return qpn % VMMBIB_QP_TABLE_SIZE;
}

void vmmbib_qp_table_add(struct vmmbib_context *ctx, struct vmmbib_qp *qp)
{
	unsigned int b = vmmbib_qp_bucket(qp->vqp.qp.qp_num);

	pthread_mutex_lock(&ctx->qp_table_lock);
	qp->next = ctx->qp_table[b];
	ctx->qp_table[b] = qp;
	pthread_mutex_unlock(&ctx->qp_table_lock);
}

void vmmbib_qp_table_del(struct vmmbib_context *ctx, struct vmmbib_qp *qp)
{
	struct vmmbib_qp **p;

	pthread_mutex_lock(&ctx->qp_table_lock);
	for (p = &ctx->qp_table[vmmbib_qp_bucket(qp->vqp.qp.qp_num)]; *p;
	     p = &(*p)->next) {
		if (*p == qp) {
			*p = qp->next;
			break;
		}
	}
	pthread_mutex_unlock(&ctx->qp_table_lock);
}

struct vmmbib_qp *vmmbib_qp_table_find(struct vmmbib_context *ctx,
				       uint32_t qpn)
{
	struct vmmbib_qp *qp;

	pthread_mutex_lock(&ctx->qp_table_lock);
	for (qp = ctx->qp_table[vmmbib_qp_bucket(qpn)]; qp; qp = qp->next)
		if (qp->vqp.qp.qp_num == qpn)
			break;
	pthread_mutex_unlock(&ctx->qp_table_lock);
	return qp;
}

static void vmmbib_free_context(struct ibv_context *ibctx)
{
	struct vmmbib_context *ctx = to_vmmbib_ctx(ibctx);

	if (ctx->uar)
		munmap(ctx->uar, ctx->uar_size);
	pthread_mutex_destroy(&ctx->qp_table_lock);
	verbs_uninit_context(&ctx->ibv_ctx);
	free(ctx);
}

static const struct verbs_context_ops vmmbib_ctx_ops = {
	.free_context = vmmbib_free_context,
	.query_device_ex = vmmbib_query_device_ex,
	.query_port = vmmbib_query_port,

	.alloc_pd = vmmbib_alloc_pd,
	.dealloc_pd = vmmbib_dealloc_pd,
	.reg_mr = vmmbib_reg_mr,
	.dereg_mr = vmmbib_dereg_mr,

	.create_cq = vmmbib_create_cq,
	.poll_cq = vmmbib_poll_cq,
	.req_notify_cq = vmmbib_req_notify_cq,
	.resize_cq = vmmbib_resize_cq,
	.destroy_cq = vmmbib_destroy_cq,

	.create_qp = vmmbib_create_qp,
	.modify_qp = vmmbib_modify_qp,
	.query_qp = vmmbib_query_qp,
	.destroy_qp = vmmbib_destroy_qp,
	.post_send = vmmbib_post_send,
	.post_recv = vmmbib_post_recv,

	.create_srq = vmmbib_create_srq,
	.modify_srq = vmmbib_modify_srq,
	.query_srq = vmmbib_query_srq,
	.destroy_srq = vmmbib_destroy_srq,
	.post_srq_recv = vmmbib_post_srq_recv,

	.create_ah = vmmbib_create_ah,
	.destroy_ah = vmmbib_destroy_ah,
};

/*
 * Checks the kernel's description of the new context against the layout
 * this provider was built for.  Returns 0 or a positive errno.
 */
static int
vmmbib_check_ucontext_resp(struct vmmbib_context *ctx,
			   const struct vmmbib_ualloc_ucontext_resp *resp)
{
	/*
	 * comp_mask bits announce optional reply parts of later ABI versions;
	 * one this provider does not know it simply does not use.
	 */
	if (resp->comp_mask)
		verbs_debug(&ctx->ibv_ctx,
			    "ignoring unknown context comp_mask bits %#x\n",
			    resp->comp_mask);

	if (resp->uar_size != VMMBIB_UAR_SLOT_SIZE) {
		verbs_err(&ctx->ibv_ctx,
			  "kernel reports UAR slot size %u, expected %u\n",
			  resp->uar_size, VMMBIB_UAR_SLOT_SIZE);
		return EPROTO;
	}
	if (resp->db_ring_entries != VMMBIB_DB_RING_ENTRIES) {
		verbs_err(&ctx->ibv_ctx,
			  "kernel reports %u doorbell ring entries, expected %u\n",
			  resp->db_ring_entries, VMMBIB_DB_RING_ENTRIES);
		return EPROTO;
	}
	/* The key is an mmap offset: it must be page aligned. */
	if (resp->uar_mmap_key % VMMBIB_PAGE_SIZE) {
		verbs_err(&ctx->ibv_ctx,
			  "kernel reports unaligned UAR mmap key %#" PRIx64 "\n",
			  (uint64_t)resp->uar_mmap_key);
		return EPROTO;
	}
	return 0;
}

static struct verbs_context *vmmbib_alloc_context(struct ibv_device *ibdev,
						  int cmd_fd,
						  void *private_data)
{
	struct vmmbib_get_context_resp resp = {};
	struct ibv_get_context cmd = {};
	struct vmmbib_context *ctx;
	int ret;

	ctx = verbs_init_and_alloc_context(ibdev, cmd_fd, ctx, ibv_ctx,
					   RDMA_DRIVER_UNKNOWN);
	if (!ctx)
		return NULL;

	ret = ibv_cmd_get_context(&ctx->ibv_ctx, &cmd, sizeof(cmd),
				  &resp.ibv_resp, sizeof(resp));
	if (ret) {
		verbs_err(&ctx->ibv_ctx, "GET_CONTEXT failed: %s\n",
			  strerror(ret));
		goto err_uninit_context;
	}

	ret = vmmbib_check_ucontext_resp(ctx, &resp.drv);
	if (ret)
		goto err_uninit_context;

	ctx->comp_mask = resp.drv.comp_mask;
	ctx->uar_slot = resp.drv.uar_slot;
	ctx->uar_mmap_key = resp.drv.uar_mmap_key;
	ctx->uar_size = resp.drv.uar_size;
	ctx->db_ring_entries = resp.drv.db_ring_entries;

	/*
	 * The UAR slot: page 0 is plain memory shared with the engine (the
	 * doorbell ring), page 1 the trapped kick registers.  Posting never
	 * enters the kernel after this.
	 */
	ctx->uar = mmap(NULL, ctx->uar_size, PROT_READ | PROT_WRITE,
			MAP_SHARED, cmd_fd, ctx->uar_mmap_key);
	if (ctx->uar == MAP_FAILED) {
		ret = errno;
		ctx->uar = NULL;
		verbs_err(&ctx->ibv_ctx,
			  "mmap of UAR slot %u (key %#" PRIx64 ") failed: %s\n",
			  ctx->uar_slot, ctx->uar_mmap_key, strerror(ret));
		goto err_uninit_context;
	}
	ctx->db_page = (uint8_t *)ctx->uar + VMMBIB_UAR_DB_PAGE_OFFSET;
	ctx->kick_page = (uint8_t *)ctx->uar + VMMBIB_UAR_KICK_PAGE_OFFSET;
	pthread_mutex_init(&ctx->qp_table_lock, NULL);

	verbs_set_ops(&ctx->ibv_ctx, &vmmbib_ctx_ops);
	return &ctx->ibv_ctx;

err_uninit_context:
	/*
	 * Closing the command fd (in verbs_uninit_context) makes the kernel
	 * destroy a context it may already have created.
	 */
	verbs_uninit_context(&ctx->ibv_ctx);
	free(ctx);
	errno = ret;
	return NULL;
}

static struct verbs_device *
vmmbib_alloc_device(struct verbs_sysfs_dev *sysfs_dev)
{
	struct vmmbib_device *dev;

	dev = calloc(1, sizeof(*dev));
	if (!dev)
		return NULL;

	dev->page_size = sysconf(_SC_PAGESIZE);
	return &dev->ibv_dev;
}

static void vmmbib_uninit_device(struct verbs_device *verbs_device)
{
	free(to_vmmbib_dev(&verbs_device->device));
}

static const struct verbs_device_ops vmmbib_dev_ops = {
	.name = "vmmbib",
	/* The kernel driver's uverbs_abi_ver, from sysfs abi_version. */
	.match_min_abi_version = VMMBIB_UVERBS_ABI_VERSION,
	.match_max_abi_version = VMMBIB_UVERBS_ABI_VERSION,
	.match_table = vmmbib_match_table,
	.alloc_device = vmmbib_alloc_device,
	.uninit_device = vmmbib_uninit_device,
	.alloc_context = vmmbib_alloc_context,
};

PROVIDER_DRIVER(vmmbib, vmmbib_dev_ops);
