// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The data path of kernel-owned queues: what ib_core's kernel consumers
 * (ib_mad, rdma_cm users, ULPs) call.  WQEs go into the rings in guest
 * memory in the format of docs/spec.md section 5, doorbells into the
 * kernel context's UAR slot with the protocol of section 4, completions
 * come from the CQ rings of section 6.  User queues never come here: the
 * rdma-core provider runs their data path.
 */

#include <linux/io.h>
#include <linux/string.h>
#include <linux/virtio_config.h>

#include "vmmbib.h"

/* The device uses the IB verbs numbering for opcodes and statuses. */
static_assert((int)IB_WR_RDMA_WRITE == (int)VMMBIB_WR_RDMA_WRITE);
static_assert((int)IB_WR_RDMA_WRITE_WITH_IMM == (int)VMMBIB_WR_RDMA_WRITE_WITH_IMM);
static_assert((int)IB_WR_SEND == (int)VMMBIB_WR_SEND);
static_assert((int)IB_WR_SEND_WITH_IMM == (int)VMMBIB_WR_SEND_WITH_IMM);
static_assert((int)IB_WR_RDMA_READ == (int)VMMBIB_WR_RDMA_READ);
static_assert((int)IB_WR_ATOMIC_CMP_AND_SWP == (int)VMMBIB_WR_ATOMIC_CMP_AND_SWP);
static_assert((int)IB_WR_ATOMIC_FETCH_AND_ADD == (int)VMMBIB_WR_ATOMIC_FETCH_AND_ADD);
static_assert((int)IB_WC_SEND == (int)VMMBIB_WC_SEND);
static_assert((int)IB_WC_FETCH_ADD == (int)VMMBIB_WC_FETCH_ADD);
static_assert((int)IB_WC_RECV == (int)VMMBIB_WC_RECV);
static_assert((int)IB_WC_RECV_RDMA_WITH_IMM == (int)VMMBIB_WC_RECV_RDMA_WITH_IMM);
static_assert((int)IB_WC_GENERAL_ERR == (int)VMMBIB_WC_GENERAL_ERR);

/* A doorbell through the trapped register: executed before it returns. */
static void vmmbib_doorbell_mmio(struct vmmbib_dev *dev, u64 db)
{
	writeq(db, dev->uar.kick + VMMBIB_DOORBELL);
}

/*
 * Rings a doorbell of the kernel context (docs/spec.md section 4): claim a
 * ring entry by compare-and-swap on producer, store the doorbell with one
 * 64-bit store, and kick the engine only if it said it sleeps.
 */
static void vmmbib_doorbell(struct vmmbib_dev *dev, u32 kind, u32 handle,
			    u32 value)
{
	u64 db = VMMBIB_DB(kind, VMMBIB_HANDLE_INDEX(handle), value);
	void *page = dev->uar.db;
	__le32 *producer = page + VMMBIB_DB_PRODUCER;
	__le32 *consumer = page + VMMBIB_DB_CONSUMER;
	__le64 *entries = page + VMMBIB_DB_RING;
	u32 prod, cons;

	/* The WQEs are in memory before the engine can see the doorbell. */
	wmb();
	if (le32_to_cpu(READ_ONCE(*(__le32 *)(page + VMMBIB_DB_MODE))) !=
	    VMMBIB_DB_MODE_RING) {
		vmmbib_doorbell_mmio(dev, db);
		return;
	}
	do {
		prod = le32_to_cpu(READ_ONCE(*producer));
		cons = le32_to_cpu(READ_ONCE(*consumer));
		/* A full ring: the register always takes a doorbell. */
		if (prod - cons >= VMMBIB_DB_RING_ENTRIES) {
			vmmbib_doorbell_mmio(dev, db);
			return;
		}
	} while (cmpxchg(producer, cpu_to_le32(prod), cpu_to_le32(prod + 1)) !=
		 cpu_to_le32(prod));
	WRITE_ONCE(entries[prod % VMMBIB_DB_RING_ENTRIES], cpu_to_le64(db));
	/* The engine runs on another host CPU even for a UP guest: mb(). */
	mb();
	if (le32_to_cpu(READ_ONCE(*(__le32 *)(page + VMMBIB_DB_ENGINE_STATE))) ==
	    VMMBIB_ENGINE_ASLEEP)
		writel(1, dev->uar.kick + VMMBIB_KICK);
}

static void *vmmbib_wq_entry(struct vmmbib_wq *wq, u32 index)
{
	return wq->buf + ((size_t)(index & (wq->entries - 1)) << wq->shift);
}

static void vmmbib_write_sges(struct vmmbib_sge *dst,
			      const struct ib_sge *src, int num)
{
	int i;

	for (i = 0; i < num; i++) {
		dst[i].addr = cpu_to_le64(src[i].addr);
		dst[i].length = cpu_to_le32(src[i].length);
		dst[i].lkey = cpu_to_le32(src[i].lkey);
	}
}

/* Inline data: kernel SGEs name kernel virtual addresses. */
static int vmmbib_write_inline(struct vmmbib_qp *qp,
			       struct vmmbib_send_wqe *wqe,
			       const struct ib_send_wr *wr)
{
	u8 *data = (u8 *)(wqe + 1);
	u32 len = 0;
	int i;

	for (i = 0; i < wr->num_sge; i++) {
		if (wr->sg_list[i].length > qp->max_inline - len)
			return -EINVAL;
		memcpy(data + len, (void *)(uintptr_t)wr->sg_list[i].addr,
		       wr->sg_list[i].length);
		len += wr->sg_list[i].length;
	}
	wqe->inline_len = cpu_to_le32(len);
	return 0;
}

static int vmmbib_write_send_wqe(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
				 const struct ib_send_wr *wr)
{
	struct vmmbib_wq *sq = &qp->sq;
	bool ud = qp->ibqp.qp_type == IB_QPT_UD ||
		  qp->ibqp.qp_type == IB_QPT_GSI;
	struct vmmbib_send_wqe *wqe;

	if (sq->head - READ_ONCE(sq->tail) >= sq->entries)
		return -ENOMEM;
	if (wr->num_sge < 0 || wr->num_sge > sq->max_sge)
		return -EINVAL;

	wqe = vmmbib_wq_entry(sq, sq->head);
	memset(wqe, 0, sizeof(*wqe));
	wqe->wr_id = cpu_to_le64(wr->wr_id);
	wqe->opcode = wr->opcode;
	if (wr->send_flags & IB_SEND_SIGNALED)
		wqe->flags |= VMMBIB_WQE_SIGNALED;
	if (wr->send_flags & IB_SEND_SOLICITED)
		wqe->flags |= VMMBIB_WQE_SOLICITED;
	if (wr->send_flags & IB_SEND_FENCE)
		wqe->flags |= VMMBIB_WQE_FENCE;

	switch (wr->opcode) {
	case IB_WR_SEND_WITH_IMM:
		wqe->imm_data = wr->ex.imm_data;
		fallthrough;
	case IB_WR_SEND:
		if (ud) {
			wqe->ud.ah_handle =
				cpu_to_le32(to_vmmbib_ah(ud_wr(wr)->ah)->handle);
			wqe->ud.remote_qpn = cpu_to_le32(ud_wr(wr)->remote_qpn);
			wqe->ud.remote_qkey =
				cpu_to_le32(ud_wr(wr)->remote_qkey);
		}
		break;
	case IB_WR_RDMA_WRITE_WITH_IMM:
		wqe->imm_data = wr->ex.imm_data;
		fallthrough;
	case IB_WR_RDMA_WRITE:
	case IB_WR_RDMA_READ:
		if (ud)
			return -EINVAL;
		wqe->rdma.remote_addr = cpu_to_le64(rdma_wr(wr)->remote_addr);
		wqe->rdma.rkey = cpu_to_le32(rdma_wr(wr)->rkey);
		break;
	case IB_WR_ATOMIC_CMP_AND_SWP:
	case IB_WR_ATOMIC_FETCH_AND_ADD:
		if (ud || !virtio_has_feature(dev->vdev, VMMBIB_F_ATOMIC))
			return -EINVAL;
		wqe->atomic.remote_addr =
			cpu_to_le64(atomic_wr(wr)->remote_addr);
		wqe->atomic.rkey = cpu_to_le32(atomic_wr(wr)->rkey);
		wqe->atomic.compare_add = cpu_to_le64(atomic_wr(wr)->compare_add);
		wqe->atomic.swap = cpu_to_le64(atomic_wr(wr)->swap);
		break;
	default:
		return -EINVAL;
	}

	if (wr->send_flags & IB_SEND_INLINE) {
		wqe->flags |= VMMBIB_WQE_INLINE;
		return vmmbib_write_inline(qp, wqe, wr);
	}
	wqe->num_sge = wr->num_sge;
	vmmbib_write_sges((struct vmmbib_sge *)(wqe + 1), wr->sg_list,
			  wr->num_sge);
	return 0;
}

static int vmmbib_post_send(struct ib_qp *ibqp, const struct ib_send_wr *wr,
			    const struct ib_send_wr **bad_wr)
{
	struct vmmbib_dev *dev = to_vmmbib_dev(ibqp->device);
	struct vmmbib_qp *qp = to_vmmbib_qp(ibqp);
	struct vmmbib_wq *sq = &qp->sq;
	unsigned long flags;
	u32 start;
	int err = 0;

	if (!qp->kbuf.va) {
		*bad_wr = wr;
		return -EOPNOTSUPP;
	}

	spin_lock_irqsave(&sq->lock, flags);
	start = sq->head;
	for (; wr; wr = wr->next) {
		err = vmmbib_write_send_wqe(dev, qp, wr);
		if (err) {
			*bad_wr = wr;
			break;
		}
		sq->head++;
	}
	/* Under the lock: the queue's producer values reach it in order. */
	if (sq->head != start)
		vmmbib_doorbell(dev, VMMBIB_DB_KIND_SQ, qp->handle, sq->head);
	spin_unlock_irqrestore(&sq->lock, flags);
	return err;
}

/* Posts receive WQEs to @wq, of which @done have completed. */
static int vmmbib_post_recv_wq(struct vmmbib_dev *dev, struct vmmbib_wq *wq,
			       u32 kind, u32 handle, const u32 *done,
			       const atomic_t *done_atomic,
			       const struct ib_recv_wr *wr,
			       const struct ib_recv_wr **bad_wr)
{
	struct vmmbib_recv_wqe *wqe;
	unsigned long flags;
	u32 start, completed;
	int err = 0;

	spin_lock_irqsave(&wq->lock, flags);
	start = wq->head;
	for (; wr; wr = wr->next) {
		completed = done ? READ_ONCE(*done) : atomic_read(done_atomic);
		if (wq->head - completed >= wq->entries)
			err = -ENOMEM;
		else if (wr->num_sge < 0 || wr->num_sge > wq->max_sge)
			err = -EINVAL;
		if (err) {
			*bad_wr = wr;
			break;
		}
		wqe = vmmbib_wq_entry(wq, wq->head);
		wqe->wr_id = cpu_to_le64(wr->wr_id);
		wqe->num_sge = cpu_to_le32(wr->num_sge);
		wqe->reserved = 0;
		vmmbib_write_sges((struct vmmbib_sge *)(wqe + 1), wr->sg_list,
				  wr->num_sge);
		wq->head++;
	}
	if (wq->head != start)
		vmmbib_doorbell(dev, kind, handle, wq->head);
	spin_unlock_irqrestore(&wq->lock, flags);
	return err;
}

static int vmmbib_post_recv(struct ib_qp *ibqp, const struct ib_recv_wr *wr,
			    const struct ib_recv_wr **bad_wr)
{
	struct vmmbib_qp *qp = to_vmmbib_qp(ibqp);

	if (!qp->kbuf.va || ibqp->srq) {
		*bad_wr = wr;
		return -EINVAL;
	}
	return vmmbib_post_recv_wq(to_vmmbib_dev(ibqp->device), &qp->rq,
				   VMMBIB_DB_KIND_RQ, qp->handle, &qp->rq.tail,
				   NULL, wr, bad_wr);
}

static int vmmbib_post_srq_recv(struct ib_srq *ibsrq,
				const struct ib_recv_wr *wr,
				const struct ib_recv_wr **bad_wr)
{
	struct vmmbib_srq *srq = to_vmmbib_srq(ibsrq);

	if (!srq->kbuf.va) {
		*bad_wr = wr;
		return -EINVAL;
	}
	return vmmbib_post_recv_wq(to_vmmbib_dev(ibsrq->device), &srq->rq,
				   VMMBIB_DB_KIND_SRQ, srq->handle, NULL,
				   &srq->done, wr, bad_wr);
}

/* The CQE at the consumer index if the device has written it, or NULL. */
static struct vmmbib_cqe *vmmbib_next_cqe(struct vmmbib_cq *cq)
{
	struct vmmbib_cqe *cqe;
	u8 owner;

	cqe = cq->kbuf.va + sizeof(struct vmmbib_cq_header) +
	      (size_t)(cq->cons & (cq->cqe - 1)) * sizeof(*cqe);
	/* The owner bit is set on even laps of the ring, clear on odd. */
	owner = (cq->cons / cq->cqe) & 1 ? 0 : VMMBIB_CQE_OWNER;
	if ((READ_ONCE(cqe->owner) & VMMBIB_CQE_OWNER) != owner)
		return NULL;
	/* The body was written before the owner byte. */
	dma_rmb();
	return cqe;
}

/*
 * Fills @wc from @cqe and frees the completed WQEs of its queue.  Returns
 * false for a completion of a QP that no longer exists.
 */
static bool vmmbib_cqe_to_wc(struct vmmbib_dev *dev,
			     const struct vmmbib_cqe *cqe, struct ib_wc *wc)
{
	u32 wqe_index = le32_to_cpu(cqe->wqe_index);
	struct vmmbib_qp *qp;
	struct vmmbib_srq *srq;

	/* The CQ lock keeps the QP from going: see vmmbib_kqp_unlink(). */
	qp = xa_load(&dev->kqps, le32_to_cpu(cqe->qpn));
	if (!qp)
		return false;

	memset(wc, 0, sizeof(*wc));
	wc->wr_id = le64_to_cpu(cqe->wr_id);
	wc->status = cqe->status;
	wc->opcode = cqe->opcode;
	wc->vendor_err = cqe->vendor_err;
	wc->byte_len = le32_to_cpu(cqe->byte_len);
	wc->qp = &qp->ibqp;
	wc->src_qp = le32_to_cpu(cqe->src_qp);
	if (cqe->wc_flags & VMMBIB_WC_F_GRH)
		wc->wc_flags |= IB_WC_GRH;
	if (cqe->wc_flags & VMMBIB_WC_F_WITH_IMM) {
		wc->wc_flags |= IB_WC_WITH_IMM;
		wc->ex.imm_data = cqe->imm_data;
	}
	wc->slid = le16_to_cpu(cqe->slid);
	wc->sl = cqe->sl;
	wc->dlid_path_bits = cqe->dlid_path_bits;
	wc->pkey_index = le16_to_cpu(cqe->pkey_index);
	wc->port_num = 1;

	/* A send completion retires every WQE up to its own. */
	if (!(cqe->opcode & VMMBIB_WC_RECV)) {
		WRITE_ONCE(qp->sq.tail, wqe_index + 1);
	} else if (qp->ibqp.srq) {
		srq = to_vmmbib_srq(qp->ibqp.srq);
		atomic_inc(&srq->done);
	} else {
		WRITE_ONCE(qp->rq.tail, wqe_index + 1);
	}
	return true;
}

static int vmmbib_poll_cq(struct ib_cq *ibcq, int num_entries,
			  struct ib_wc *wc)
{
	struct vmmbib_dev *dev = to_vmmbib_dev(ibcq->device);
	struct vmmbib_cq *cq = to_vmmbib_cq(ibcq);
	struct vmmbib_cq_header *hdr = cq->kbuf.va;
	struct vmmbib_cqe *cqe;
	unsigned long flags;
	u32 start;
	int n = 0;

	if (!cq->kbuf.va)
		return -EOPNOTSUPP;

	spin_lock_irqsave(&cq->lock, flags);
	start = cq->cons;
	while (n < num_entries) {
		cqe = vmmbib_next_cqe(cq);
		if (!cqe)
			break;
		if (vmmbib_cqe_to_wc(dev, cqe, &wc[n]))
			n++;
		cq->cons++;
	}
	/* The device reads the consumer index to detect an overflow. */
	if (cq->cons != start)
		WRITE_ONCE(hdr->consumer_index, cpu_to_le32(cq->cons));
	spin_unlock_irqrestore(&cq->lock, flags);
	return n;
}

/*
 * Arms through the trapped DOORBELL register, which the device executes
 * before the write returns: a CQE that lands after the arm raises an
 * event, and one that landed before is seen by the check below.  An arm
 * through the doorbell ring would take effect some time later, and a
 * completion in between would go unnoticed.
 */
static int vmmbib_req_notify_cq(struct ib_cq *ibcq,
				enum ib_cq_notify_flags flags)
{
	struct vmmbib_dev *dev = to_vmmbib_dev(ibcq->device);
	struct vmmbib_cq *cq = to_vmmbib_cq(ibcq);
	unsigned long irqflags;
	u32 value;
	int missed = 0;

	if (!cq->kbuf.va)
		return -EOPNOTSUPP;

	value = (flags & IB_CQ_SOLICITED_MASK) == IB_CQ_SOLICITED ?
		VMMBIB_DB_ARM_SOLICITED : VMMBIB_DB_ARM_NEXT;
	/* The consumer index first: the device compares against it. */
	wmb();
	vmmbib_doorbell_mmio(dev, VMMBIB_DB(VMMBIB_DB_KIND_CQ_ARM,
					    VMMBIB_HANDLE_INDEX(cq->handle),
					    value));

	if (flags & IB_CQ_REPORT_MISSED_EVENTS) {
		spin_lock_irqsave(&cq->lock, irqflags);
		missed = vmmbib_next_cqe(cq) ? 1 : 0;
		spin_unlock_irqrestore(&cq->lock, irqflags);
	}
	return missed;
}

const struct ib_device_ops vmmbib_kverbs_ops = {
	.post_send = vmmbib_post_send,
	.post_recv = vmmbib_post_recv,
	.post_srq_recv = vmmbib_post_srq_recv,
	.poll_cq = vmmbib_poll_cq,
	.req_notify_cq = vmmbib_req_notify_cq,
};
