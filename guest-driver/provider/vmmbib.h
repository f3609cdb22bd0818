/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * vmmbypass-ib rdma-core provider: objects and their to_vmmbib_*() helpers.
 *
 * Each object embeds the libibverbs object it extends, so the pointer the
 * library hands back converts to ours with container_of().
 *
 * Files:
 *   vmmbib.c   device matching, the context (UAR slot mapping), the ops table
 *   verbs.c    control verbs through the kernel: PD, MR, CQ, QP, SRQ, AH
 *   cq.c       polling CQ rings in our memory, arming them
 *   qp.c       posting send/receive WQEs, doorbells (docs/spec.md section 4)
 */
#ifndef VMMBIB_H
#define VMMBIB_H

#include <assert.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <infiniband/driver.h>
#include <infiniband/kern-abi.h>
#include <util/util.h>

#include <vmmbypass_ib_abi.h>

struct vmmbib_device {
	struct verbs_device ibv_dev;
	size_t page_size;		/* of this host, for ring allocation */
};

/* Buckets of the context's QPN -> QP table (poll_cq finds QPs by QPN). */
#define VMMBIB_QP_TABLE_SIZE	256

struct vmmbib_qp;

struct vmmbib_context {
	struct verbs_context ibv_ctx;
	/* From the kernel's vmmbib_ualloc_ucontext_resp. */
	uint32_t comp_mask;		/* optional parts the kernel offers */
	uint32_t uar_slot;
	uint64_t uar_mmap_key;		/* mmap offset of the UAR slot */
	uint32_t uar_size;
	uint32_t db_ring_entries;

	/* The UAR slot: page 0 doorbell page, page 1 kick page. */
	void *uar;
	uint8_t *db_page;
	uint8_t *kick_page;

	pthread_mutex_t qp_table_lock;
	struct vmmbib_qp *qp_table[VMMBIB_QP_TABLE_SIZE];
};

struct vmmbib_pd {
	struct ibv_pd ibv_pd;
};

/* A ring in our memory, pinned by the kernel: page aligned and zeroed. */
struct vmmbib_buf {
	void *addr;
	size_t size;			/* allocated, whole pages */
};

struct vmmbib_cq {
	struct verbs_cq vcq;
	pthread_spinlock_t lock;
	struct vmmbib_buf buf;
	struct vmmbib_cq_header *hdr;	/* start of buf */
	struct vmmbib_cqe *cqes;	/* right after the header */
	uint32_t ncqe;			/* ring entries, a power of two */
	uint32_t consumer;		/* free-running */
	uint32_t handle;
};

/* A work queue (SQ, RQ or SRQ) as the poster sees it. */
struct vmmbib_wq {
	pthread_spinlock_t lock;
	struct vmmbib_buf buf;
	uint32_t entries;		/* a power of two */
	uint32_t wqe_shift;		/* log2 of the stride */
	uint32_t max_sge;
	uint32_t head;			/* next to post, free-running */
	/* One past the last WQE the device retired; written by poll_cq. */
	uint32_t tail;
};

struct vmmbib_srq {
	struct verbs_srq vsrq;
	struct vmmbib_wq rq;
	uint32_t handle;
};

struct vmmbib_qp {
	struct verbs_qp vqp;
	struct vmmbib_wq sq;
	struct vmmbib_wq rq;		/* unused with an SRQ */
	struct vmmbib_srq *srq;
	uint32_t handle;
	uint32_t max_inline_data;
	int sq_sig_all;
	struct vmmbib_qp *next;		/* in the context's QP table */
};

struct vmmbib_ah {
	struct ibv_ah ibv_ah;
	uint32_t handle;
};

/*
 * uverbs commands with our private data after the core part.  The private
 * structs are the ones in the ABI header; only the wrappers are ours.
 */
struct vmmbib_get_context_resp {
	struct ib_uverbs_get_context_resp ibv_resp;
	struct vmmbib_ualloc_ucontext_resp drv;
};

struct vmmbib_create_cq_cmd {
	struct ibv_create_cq ibv_cmd;
	struct vmmbib_ucreate_cq drv;
};

struct vmmbib_create_cq_resp {
	struct ib_uverbs_create_cq_resp ibv_resp;
	struct vmmbib_ucreate_cq_resp drv;
};

struct vmmbib_resize_cq_cmd {
	struct ibv_resize_cq ibv_cmd;
	struct vmmbib_uresize_cq drv;
};

struct vmmbib_resize_cq_resp {
	struct ib_uverbs_resize_cq_resp ibv_resp;
	struct vmmbib_uresize_cq_resp drv;
};

struct vmmbib_create_qp_cmd {
	struct ibv_create_qp ibv_cmd;
	struct vmmbib_ucreate_qp drv;
};

struct vmmbib_create_qp_resp {
	struct ib_uverbs_create_qp_resp ibv_resp;
	struct vmmbib_ucreate_qp_resp drv;
};

struct vmmbib_create_srq_cmd {
	struct ibv_create_srq ibv_cmd;
	struct vmmbib_ucreate_srq drv;
};

struct vmmbib_create_srq_resp {
	struct ib_uverbs_create_srq_resp ibv_resp;
	struct vmmbib_ucreate_srq_resp drv;
};

struct vmmbib_create_ah_resp {
	struct ib_uverbs_create_ah_resp ibv_resp;
	struct vmmbib_ucreate_ah_resp drv;
};

/* The libibverbs helpers send whatever follows the core part as udata. */
#define VMMBIB_ASSERT_NO_PAD(type, field, core)				\
	static_assert(offsetof(struct type, field) == sizeof(core) &&	\
		      sizeof(struct type) ==				\
			      sizeof(core) + sizeof(((struct type *)0)->field), \
		      "padding in " #type)
VMMBIB_ASSERT_NO_PAD(vmmbib_get_context_resp, drv, struct ib_uverbs_get_context_resp);
VMMBIB_ASSERT_NO_PAD(vmmbib_create_cq_cmd, drv, struct ibv_create_cq);
VMMBIB_ASSERT_NO_PAD(vmmbib_create_cq_resp, drv, struct ib_uverbs_create_cq_resp);
VMMBIB_ASSERT_NO_PAD(vmmbib_resize_cq_cmd, drv, struct ibv_resize_cq);
VMMBIB_ASSERT_NO_PAD(vmmbib_resize_cq_resp, drv, struct ib_uverbs_resize_cq_resp);
VMMBIB_ASSERT_NO_PAD(vmmbib_create_qp_cmd, drv, struct ibv_create_qp);
VMMBIB_ASSERT_NO_PAD(vmmbib_create_qp_resp, drv, struct ib_uverbs_create_qp_resp);
VMMBIB_ASSERT_NO_PAD(vmmbib_create_srq_cmd, drv, struct ibv_create_srq);
VMMBIB_ASSERT_NO_PAD(vmmbib_create_srq_resp, drv, struct ib_uverbs_create_srq_resp);
VMMBIB_ASSERT_NO_PAD(vmmbib_create_ah_resp, drv, struct ib_uverbs_create_ah_resp);

static inline struct vmmbib_device *to_vmmbib_dev(struct ibv_device *ibdev)
{
	return container_of(ibdev, struct vmmbib_device, ibv_dev.device);
}

static inline struct vmmbib_context *to_vmmbib_ctx(struct ibv_context *ibctx)
{
	return container_of(ibctx, struct vmmbib_context, ibv_ctx.context);
}

static inline struct vmmbib_cq *to_vmmbib_cq(struct ibv_cq *ibcq)
{
	return container_of(ibcq, struct vmmbib_cq, vcq.cq);
}

static inline struct vmmbib_qp *to_vmmbib_qp(struct ibv_qp *ibqp)
{
	return container_of(ibqp, struct vmmbib_qp, vqp.qp);
}

static inline struct vmmbib_srq *to_vmmbib_srq(struct ibv_srq *ibsrq)
{
	return container_of(ibsrq, struct vmmbib_srq, vsrq.srq);
}

static inline struct vmmbib_ah *to_vmmbib_ah(struct ibv_ah *ibah)
{
	return container_of(ibah, struct vmmbib_ah, ibv_ah);
}

/* The WQE at free-running index @idx of @wq. */
static inline void *vmmbib_wq_entry(struct vmmbib_wq *wq, uint32_t idx)
{
	return (uint8_t *)wq->buf.addr +
	       ((size_t)(idx & (wq->entries - 1)) << wq->wqe_shift);
}

/* Free entries of @wq; tail is advanced by poll_cq without our lock. */
static inline uint32_t vmmbib_wq_free(struct vmmbib_wq *wq)
{
	return wq->entries -
	       (wq->head - __atomic_load_n(&wq->tail, __ATOMIC_ACQUIRE));
}

/* verbs.c */
int vmmbib_alloc_buf(struct vmmbib_buf *buf, size_t size, size_t page_size);
void vmmbib_free_buf(struct vmmbib_buf *buf);
struct ibv_pd *vmmbib_alloc_pd(struct ibv_context *ibctx);
int vmmbib_dealloc_pd(struct ibv_pd *pd);
struct ibv_mr *vmmbib_reg_mr(struct ibv_pd *pd, void *addr, size_t length,
			     uint64_t hca_va, int access);
int vmmbib_dereg_mr(struct verbs_mr *vmr);
struct ibv_cq *vmmbib_create_cq(struct ibv_context *ibctx, int cqe,
				struct ibv_comp_channel *channel,
				int comp_vector);
int vmmbib_resize_cq(struct ibv_cq *ibcq, int cqe);
int vmmbib_destroy_cq(struct ibv_cq *ibcq);
struct ibv_qp *vmmbib_create_qp(struct ibv_pd *pd,
				struct ibv_qp_init_attr *attr);
int vmmbib_modify_qp(struct ibv_qp *ibqp, struct ibv_qp_attr *attr,
		     int attr_mask);
int vmmbib_query_qp(struct ibv_qp *ibqp, struct ibv_qp_attr *attr,
		    int attr_mask, struct ibv_qp_init_attr *init_attr);
int vmmbib_destroy_qp(struct ibv_qp *ibqp);
struct ibv_srq *vmmbib_create_srq(struct ibv_pd *pd,
				  struct ibv_srq_init_attr *attr);
int vmmbib_modify_srq(struct ibv_srq *ibsrq, struct ibv_srq_attr *attr,
		      int attr_mask);
int vmmbib_query_srq(struct ibv_srq *ibsrq, struct ibv_srq_attr *attr);
int vmmbib_destroy_srq(struct ibv_srq *ibsrq);
struct ibv_ah *vmmbib_create_ah(struct ibv_pd *pd, struct ibv_ah_attr *attr);
int vmmbib_destroy_ah(struct ibv_ah *ibah);

/* vmmbib.c: the QPN -> QP table */
void vmmbib_qp_table_add(struct vmmbib_context *ctx, struct vmmbib_qp *qp);
void vmmbib_qp_table_del(struct vmmbib_context *ctx, struct vmmbib_qp *qp);
struct vmmbib_qp *vmmbib_qp_table_find(struct vmmbib_context *ctx,
				       uint32_t qpn);

/* cq.c */
int vmmbib_poll_cq(struct ibv_cq *ibcq, int ne, struct ibv_wc *wc);
int vmmbib_req_notify_cq(struct ibv_cq *ibcq, int solicited_only);

/* qp.c */
void vmmbib_ring_doorbell(struct vmmbib_context *ctx, uint64_t db);
int vmmbib_post_send(struct ibv_qp *ibqp, struct ibv_send_wr *wr,
		     struct ibv_send_wr **bad_wr);
int vmmbib_post_recv(struct ibv_qp *ibqp, struct ibv_recv_wr *wr,
		     struct ibv_recv_wr **bad_wr);
int vmmbib_post_srq_recv(struct ibv_srq *ibsrq, struct ibv_recv_wr *wr,
			 struct ibv_recv_wr **bad_wr);

#endif /* VMMBIB_H */
