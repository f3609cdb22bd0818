// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * vmmbypass-ib provider: completion queues (docs/spec.md, section 6).
 *
 * The CQ ring is our memory: a 64-byte header holding the consumer index we
 * publish, then 64-byte CQEs.  The device writes a CQE's body, then its
 * owner byte: set on even laps of the ring, clear on odd ones, so an entry
 * is new when its owner byte matches the lap of our consumer index.
 */
#include <config.h>

#include <endian.h>
#include <errno.h>

#include <util/udma_barrier.h>

#include "vmmbib.h"

/* The owner byte a new CQE at free-running index @idx carries. */
static inline uint8_t vmmbib_cqe_owner(const struct vmmbib_cq *cq,
				       uint32_t idx)
{
	return ((idx / cq->ncqe) & 1) ? 0 : VMMBIB_CQE_OWNER;
}

/* Retires the WQE a completion reports, so the poster may reuse its slot. */
static void vmmbib_cqe_retire(struct vmmbib_context *ctx,
			      const struct vmmbib_cqe *cqe, uint8_t opcode)
{
	struct vmmbib_qp *qp = vmmbib_qp_table_find(ctx, le32toh(cqe->qpn));

	if (!qp)
		return;	/* a CQE of a destroyed QP */
	if (!(opcode & VMMBIB_WC_RECV)) {
		/* A send CQE also retires the unsignaled WQEs before it. */
		__atomic_store_n(&qp->sq.tail, le32toh(cqe->wqe_index) + 1,
				 __ATOMIC_RELEASE);
	} else if (qp->srq) {
		/* SRQ WQEs are taken in order, one CQE each. */
		__atomic_fetch_add(&qp->srq->rq.tail, 1, __ATOMIC_RELEASE);
	} else {
		__atomic_store_n(&qp->rq.tail, le32toh(cqe->wqe_index) + 1,
				 __ATOMIC_RELEASE);
	}
}

static void vmmbib_cqe_to_wc(const struct vmmbib_cqe *cqe, struct ibv_wc *wc)
{
	wc->wr_id = le64toh(cqe->wr_id);
	/* Our status and opcode numbering is the verbs one. */
	wc->status = cqe->status;
	wc->opcode = cqe->opcode;
	wc->vendor_err = cqe->vendor_err;
	wc->byte_len = le32toh(cqe->byte_len);
	wc->imm_data = cqe->imm_data;	/* both big-endian */
	wc->qp_num = le32toh(cqe->qpn);
	wc->src_qp = le32toh(cqe->src_qp);
	wc->wc_flags = 0;
	if (cqe->wc_flags & VMMBIB_WC_F_GRH)
		wc->wc_flags |= IBV_WC_GRH;
	if (cqe->wc_flags & VMMBIB_WC_F_WITH_IMM)
		wc->wc_flags |= IBV_WC_WITH_IMM;
	wc->pkey_index = le16toh(cqe->pkey_index);
	wc->slid = le16toh(cqe->slid);
	wc->sl = cqe->sl;
	wc->dlid_path_bits = cqe->dlid_path_bits;
}

int vmmbib_poll_cq(struct ibv_cq *ibcq, int ne, struct ibv_wc *wc)
{
	struct vmmbib_context *ctx = to_vmmbib_ctx(ibcq->context);
	struct vmmbib_cq *cq = to_vmmbib_cq(ibcq);
	int n;

	pthread_spin_lock(&cq->lock);
	for (n = 0; n < ne; n++) {
		uint32_t idx = cq->consumer;
		struct vmmbib_cqe *cqe = &cq->cqes[idx & (cq->ncqe - 1)];

		if (__atomic_load_n(&cqe->owner, __ATOMIC_RELAXED) !=
		    vmmbib_cqe_owner(cq, idx))
			break;
		/* The body was written before the owner byte. */
		udma_from_device_barrier();
		vmmbib_cqe_to_wc(cqe, &wc[n]);
		vmmbib_cqe_retire(ctx, cqe, cqe->opcode);
		cq->consumer = idx + 1;
	}
	if (n) {
		/*
		 * Publish the consumer index only after the entries are read:
		 * the device may reuse them from then on.
		 */
		__atomic_store_n(&cq->hdr->consumer_index,
				 htole32(cq->consumer), __ATOMIC_RELEASE);
	}
	pthread_spin_unlock(&cq->lock);
	return n;
}

int vmmbib_req_notify_cq(struct ibv_cq *ibcq, int solicited_only)
{
	struct vmmbib_cq *cq = to_vmmbib_cq(ibcq);

	vmmbib_ring_doorbell(to_vmmbib_ctx(ibcq->context),
			     VMMBIB_DB(VMMBIB_DB_KIND_CQ_ARM,
				       VMMBIB_HANDLE_INDEX(cq->handle),
				       solicited_only ? VMMBIB_DB_ARM_SOLICITED :
							VMMBIB_DB_ARM_NEXT));
	return 0;
}
