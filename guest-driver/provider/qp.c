// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * vmmbypass-ib provider: posting work requests and ringing doorbells
 * (docs/spec.md, sections 4 and 5).
 *
 * WQEs are written straight into the rings in our memory; the doorbell is
 * one 64-bit value stored into the doorbell ring of the context's UAR slot,
 * which the engine polls while it is awake.  Only when the engine sleeps
 * (or the ring is full, or the device runs in MMIO mode) does a post touch
 * a trapped register: in steady state a post costs no exit and no syscall.
 */
#include <config.h>

#include <endian.h>
#include <errno.h>
#include <string.h>

#include <util/mmio.h>
#include <util/udma_barrier.h>

#include "vmmbib.h"

static inline uint32_t vmmbib_db_read32(struct vmmbib_context *ctx,
					unsigned int off)
{
	return le32toh(__atomic_load_n((uint32_t *)(ctx->db_page + off),
				       __ATOMIC_ACQUIRE));
}

/* The trapped path: the device executes @db before the write returns. */
static void vmmbib_doorbell_mmio(struct vmmbib_context *ctx, uint64_t db)
{
	mmio_write64_le(ctx->kick_page + VMMBIB_DOORBELL, htole64(db));
}

void vmmbib_ring_doorbell(struct vmmbib_context *ctx, uint64_t db)
{
	uint32_t *producer = (uint32_t *)(ctx->db_page + VMMBIB_DB_PRODUCER);
	uint64_t *ring = (uint64_t *)(ctx->db_page + VMMBIB_DB_RING);
	uint32_t size = ctx->db_ring_entries;
	uint32_t prod, cons, expected;

	/* 1. The WQEs (or the consumer index) reach memory before the doorbell. */
	udma_to_device_barrier();

	if (vmmbib_db_read32(ctx, VMMBIB_DB_MODE) == VMMBIB_DB_MODE_MMIO) {
		vmmbib_doorbell_mmio(ctx, db);
		return;
	}

	/* 2./3. Claim a ring entry; a full ring falls back to the register. */
	for (;;) {
		prod = vmmbib_db_read32(ctx, VMMBIB_DB_PRODUCER);
		cons = vmmbib_db_read32(ctx, VMMBIB_DB_CONSUMER);
		if (prod - cons >= size) {
			vmmbib_doorbell_mmio(ctx, db);
			return;
		}
		expected = htole32(prod);
		if (__atomic_compare_exchange_n(producer, &expected,
						htole32(prod + 1), false,
						__ATOMIC_ACQ_REL,
						__ATOMIC_RELAXED))
			break;
	}
	__atomic_store_n(&ring[prod % size], htole64(db), __ATOMIC_RELEASE);

	/*
	 * 4. Our entry is visible before we look at the engine state: either
	 * the engine's last check before sleeping sees the entry, or we see
	 * ASLEEP here and wake it.
	 */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (vmmbib_db_read32(ctx, VMMBIB_DB_ENGINE_STATE) == VMMBIB_ENGINE_ASLEEP)
		mmio_write32(ctx->kick_page + VMMBIB_KICK, 1);
}

static void vmmbib_write_sges(struct vmmbib_sge *dst,
			      const struct ibv_sge *sg, int num)
{
	int i;

	for (i = 0; i < num; i++) {
		dst[i].addr = htole64(sg[i].addr);
		dst[i].length = htole32(sg[i].length);
		dst[i].lkey = htole32(sg[i].lkey);
	}
}

/* Copies the gather list into the WQE as inline data; 0 or an errno. */
static int vmmbib_write_inline(struct vmmbib_qp *qp,
			       struct vmmbib_send_wqe *wqe,
			       const struct ibv_send_wr *wr)
{
	uint8_t *dst = (uint8_t *)(wqe + 1);
	uint32_t len = 0;
	int i;

	for (i = 0; i < wr->num_sge; i++) {
		uint32_t l = wr->sg_list[i].length;

		if (l > qp->max_inline_data - len)
			return EINVAL;
		memcpy(dst + len, (void *)(uintptr_t)wr->sg_list[i].addr, l);
		len += l;
	}
	wqe->inline_len = htole32(len);
	return 0;
}

/* Builds the WQE of @wr at the SQ head; 0 or an errno (nothing posted). */
static int vmmbib_build_send(struct vmmbib_qp *qp, const struct ibv_send_wr *wr)
{
	struct vmmbib_send_wqe *wqe = vmmbib_wq_entry(&qp->sq, qp->sq.head);
	enum ibv_qp_type type = qp->vqp.qp.qp_type;
	uint8_t flags = 0;
	int ret;

	switch (wr->opcode) {
	case IBV_WR_SEND:
	case IBV_WR_SEND_WITH_IMM:
		break;
	case IBV_WR_RDMA_WRITE:
	case IBV_WR_RDMA_WRITE_WITH_IMM:
	case IBV_WR_RDMA_READ:
	case IBV_WR_ATOMIC_CMP_AND_SWP:
	case IBV_WR_ATOMIC_FETCH_AND_ADD:
		if (type != IBV_QPT_RC)
			return EINVAL;
		break;
	default:
		return EINVAL;
	}
	if (wr->num_sge < 0)
		return EINVAL;

	if (wr->send_flags & IBV_SEND_SIGNALED || qp->sq_sig_all)
		flags |= VMMBIB_WQE_SIGNALED;
	if (wr->send_flags & IBV_SEND_SOLICITED)
		flags |= VMMBIB_WQE_SOLICITED;
	if (wr->send_flags & IBV_SEND_FENCE)
		flags |= VMMBIB_WQE_FENCE;
	/* Inline data is gathered now; reads and atomics write locally. */
	if (wr->send_flags & IBV_SEND_INLINE &&
	    wr->opcode != IBV_WR_RDMA_READ &&
	    wr->opcode != IBV_WR_ATOMIC_CMP_AND_SWP &&
	    wr->opcode != IBV_WR_ATOMIC_FETCH_AND_ADD)
		flags |= VMMBIB_WQE_INLINE;

	memset(wqe, 0, sizeof(*wqe));
	wqe->wr_id = htole64(wr->wr_id);
	wqe->opcode = wr->opcode;	/* the verbs numbering */
	wqe->flags = flags;
	if (wr->opcode == IBV_WR_SEND_WITH_IMM ||
	    wr->opcode == IBV_WR_RDMA_WRITE_WITH_IMM)
		wqe->imm_data = wr->imm_data;

	switch (wr->opcode) {
	case IBV_WR_RDMA_WRITE:
	case IBV_WR_RDMA_WRITE_WITH_IMM:
	case IBV_WR_RDMA_READ:
		wqe->rdma.remote_addr = htole64(wr->wr.rdma.remote_addr);
		wqe->rdma.rkey = htole32(wr->wr.rdma.rkey);
		break;
	case IBV_WR_ATOMIC_CMP_AND_SWP:
	case IBV_WR_ATOMIC_FETCH_AND_ADD:
		wqe->atomic.remote_addr = htole64(wr->wr.atomic.remote_addr);
		wqe->atomic.rkey = htole32(wr->wr.atomic.rkey);
		wqe->atomic.compare_add = htole64(wr->wr.atomic.compare_add);
		wqe->atomic.swap = htole64(wr->wr.atomic.swap);
		break;
	default:
		if (type == IBV_QPT_UD) {
			if (!wr->wr.ud.ah)
				return EINVAL;
			wqe->ud.ah_handle =
				htole32(to_vmmbib_ah(wr->wr.ud.ah)->handle);
			wqe->ud.remote_qpn = htole32(wr->wr.ud.remote_qpn);
			wqe->ud.remote_qkey = htole32(wr->wr.ud.remote_qkey);
		}
		break;
	}

	if (flags & VMMBIB_WQE_INLINE) {
		ret = vmmbib_write_inline(qp, wqe, wr);
		if (ret)
			return ret;
	} else {
		if ((uint32_t)wr->num_sge > qp->sq.max_sge)
			return EINVAL;
		wqe->num_sge = wr->num_sge;
		vmmbib_write_sges((struct vmmbib_sge *)(wqe + 1), wr->sg_list,
				  wr->num_sge);
	}
	return 0;
}

int vmmbib_post_send(struct ibv_qp *ibqp, struct ibv_send_wr *wr,
		     struct ibv_send_wr **bad_wr)
{
	struct vmmbib_qp *qp = to_vmmbib_qp(ibqp);
	uint32_t start;
	int ret = 0;

	pthread_spin_lock(&qp->sq.lock);
	start = qp->sq.head;
	for (; wr; wr = wr->next) {
		if (!vmmbib_wq_free(&qp->sq)) {
			ret = ENOMEM;
			break;
		}
		ret = vmmbib_build_send(qp, wr);
		if (ret)
			break;
		qp->sq.head++;
	}
	if (ret)
		*bad_wr = wr;
	/* One doorbell for the whole list: the new producer index. */
	if (qp->sq.head != start)
		vmmbib_ring_doorbell(to_vmmbib_ctx(ibqp->context),
				     VMMBIB_DB(VMMBIB_DB_KIND_SQ,
					       VMMBIB_HANDLE_INDEX(qp->handle),
					       qp->sq.head));
	pthread_spin_unlock(&qp->sq.lock);
	return ret;
}

/*
 * Posts a list of receive WRs to @wq (an RQ or SRQ) and rings one doorbell
 * of @kind for queue @queue.
 */
static int vmmbib_post_recv_wq(struct vmmbib_context *ctx,
			       struct vmmbib_wq *wq, unsigned int kind,
			       uint32_t queue, struct ibv_recv_wr *wr,
			       struct ibv_recv_wr **bad_wr)
{
	uint32_t start;
	int ret = 0;

	pthread_spin_lock(&wq->lock);
	start = wq->head;
	for (; wr; wr = wr->next) {
		struct vmmbib_recv_wqe *wqe;

		if (!vmmbib_wq_free(wq)) {
			ret = ENOMEM;
			break;
		}
		if (wr->num_sge < 0 || (uint32_t)wr->num_sge > wq->max_sge) {
			ret = EINVAL;
			break;
		}
		wqe = vmmbib_wq_entry(wq, wq->head);
		wqe->wr_id = htole64(wr->wr_id);
		wqe->num_sge = htole32(wr->num_sge);
		wqe->reserved = 0;
		vmmbib_write_sges((struct vmmbib_sge *)(wqe + 1), wr->sg_list,
				  wr->num_sge);
		wq->head++;
	}
	if (ret)
		*bad_wr = wr;
	if (wq->head != start)
		vmmbib_ring_doorbell(ctx, VMMBIB_DB(kind, queue, wq->head));
	pthread_spin_unlock(&wq->lock);
	return ret;
}

int vmmbib_post_recv(struct ibv_qp *ibqp, struct ibv_recv_wr *wr,
		     struct ibv_recv_wr **bad_wr)
{
	struct vmmbib_qp *qp = to_vmmbib_qp(ibqp);

	if (qp->srq) {
		*bad_wr = wr;
		return EINVAL;
	}
	return vmmbib_post_recv_wq(to_vmmbib_ctx(ibqp->context), &qp->rq,
				   VMMBIB_DB_KIND_RQ,
				   VMMBIB_HANDLE_INDEX(qp->handle), wr, bad_wr);
}

int vmmbib_post_srq_recv(struct ibv_srq *ibsrq, struct ibv_recv_wr *wr,
			 struct ibv_recv_wr **bad_wr)
{
	struct vmmbib_srq *srq = to_vmmbib_srq(ibsrq);

	return vmmbib_post_recv_wq(to_vmmbib_ctx(ibsrq->context), &srq->rq,
				   VMMBIB_DB_KIND_SRQ,
				   VMMBIB_HANDLE_INDEX(srq->handle), wr, bad_wr);
}
