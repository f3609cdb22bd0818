// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * vmmbypass-ib provider: the control verbs.  They go through the kernel
 * driver (ibv_cmd_*), which turns them into device commands; what is ours
 * here is the rings: allocated in this process, page aligned and zeroed,
 * described to the kernel in the driver-private udata (docs/spec.md, 7).
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <ccan/minmax.h>

#include "vmmbib.h"

int vmmbib_alloc_buf(struct vmmbib_buf *buf, size_t size, size_t page_size)
{
	int ret;

	buf->size = align(size, page_size);
	ret = posix_memalign(&buf->addr, page_size, buf->size);
	if (ret)
		return ret;
	memset(buf->addr, 0, buf->size);
	/* A fork must not give the child (copy-on-write) our pinned pages. */
	ret = ibv_dontfork_range(buf->addr, buf->size);
	if (ret) {
		free(buf->addr);
		buf->addr = NULL;
		return ret;
	}
	return 0;
}

void vmmbib_free_buf(struct vmmbib_buf *buf)
{
	if (!buf->addr)
		return;
	ibv_dofork_range(buf->addr, buf->size);
	free(buf->addr);
	buf->addr = NULL;
}

static size_t vmmbib_page_size(struct ibv_context *ibctx)
{
	return to_vmmbib_dev(ibctx->device)->page_size;
}

/* ---- PD and MR ---------------------------------------------------------- */

struct ibv_pd *vmmbib_alloc_pd(struct ibv_context *ibctx)
{
	struct ib_uverbs_alloc_pd_resp resp;
	struct ibv_alloc_pd cmd;
	struct vmmbib_pd *pd;
	int ret;

	pd = calloc(1, sizeof(*pd));
	if (!pd)
		return NULL;
	ret = ibv_cmd_alloc_pd(ibctx, &pd->ibv_pd, &cmd, sizeof(cmd), &resp,
			       sizeof(resp));
	if (ret) {
		free(pd);
		errno = ret;
		return NULL;
	}
	return &pd->ibv_pd;
}

int vmmbib_dealloc_pd(struct ibv_pd *ibpd)
{
	int ret;

	ret = ibv_cmd_dealloc_pd(ibpd);
	if (ret)
		return ret;
	free(container_of(ibpd, struct vmmbib_pd, ibv_pd));
	return 0;
}

struct ibv_mr *vmmbib_reg_mr(struct ibv_pd *pd, void *addr, size_t length,
			     uint64_t hca_va, int access)
{
	struct ib_uverbs_reg_mr_resp resp;
	struct ibv_reg_mr cmd;
	struct verbs_mr *vmr;
	int ret;

	vmr = calloc(1, sizeof(*vmr));
	if (!vmr)
		return NULL;
	ret = ibv_cmd_reg_mr(pd, addr, length, hca_va, access, vmr, &cmd,
			     sizeof(cmd), &resp, sizeof(resp));
	if (ret) {
		free(vmr);
		errno = ret;
		return NULL;
	}
	return &vmr->ibv_mr;
}

int vmmbib_dereg_mr(struct verbs_mr *vmr)
{
	int ret;

	ret = ibv_cmd_dereg_mr(vmr);
	if (ret)
		return ret;
	free(vmr);
	return 0;
}

/* ---- CQ ------------------------------------------------------------------ */

/* Ring bytes for @ncqe entries: the header, then the CQEs. */
static size_t vmmbib_cq_ring_bytes(uint32_t ncqe)
{
	return sizeof(struct vmmbib_cq_header) +
	       (size_t)ncqe * sizeof(struct vmmbib_cqe);
}

/* Entries for a CQ of at least @cqe: a power of two with one spare. */
static int vmmbib_cq_entries(int cqe, uint32_t *ncqe)
{
	if (cqe < 1 || cqe >= (1 << 30))
		return EINVAL;
	*ncqe = roundup_pow_of_two((uint64_t)cqe + 1);
	return 0;
}

static void vmmbib_cq_set_ring(struct vmmbib_cq *cq, struct vmmbib_buf *buf,
			       uint32_t ncqe)
{
	cq->buf = *buf;
	cq->hdr = buf->addr;
	cq->cqes = (struct vmmbib_cqe *)(cq->hdr + 1);
	cq->ncqe = ncqe;
	cq->consumer = 0;
}

struct ibv_cq *vmmbib_create_cq(struct ibv_context *ibctx, int cqe,
				struct ibv_comp_channel *channel,
				int comp_vector)
{
	struct vmmbib_create_cq_resp resp = {};
	struct vmmbib_create_cq_cmd cmd = {};
	struct vmmbib_buf buf = {};
	struct vmmbib_cq *cq;
	uint32_t ncqe;
	int ret;

	ret = vmmbib_cq_entries(cqe, &ncqe);
	if (ret)
		goto err;

	cq = calloc(1, sizeof(*cq));
	if (!cq) {
		ret = ENOMEM;
		goto err;
	}
	ret = vmmbib_alloc_buf(&buf, vmmbib_cq_ring_bytes(ncqe),
			       vmmbib_page_size(ibctx));
	if (ret)
		goto err_free_cq;
	pthread_spin_init(&cq->lock, PTHREAD_PROCESS_PRIVATE);

	cmd.drv.ring_addr = (uintptr_t)buf.addr;
	cmd.drv.ring_size = buf.size;
	ret = ibv_cmd_create_cq(ibctx, ncqe, channel, comp_vector, &cq->vcq.cq,
				&cmd.ibv_cmd, sizeof(cmd), &resp.ibv_resp,
				sizeof(resp));
	if (ret)
		goto err_free_buf;
	if (resp.drv.cqe != ncqe) {
		verbs_err(verbs_get_ctx(ibctx),
			  "kernel created a CQ of %u entries, asked %u\n",
			  resp.drv.cqe, ncqe);
		ibv_cmd_destroy_cq(&cq->vcq.cq);
		ret = EPROTO;
		goto err_free_buf;
	}
	cq->handle = resp.drv.cq_handle;
	vmmbib_cq_set_ring(cq, &buf, ncqe);
	/* The device keeps one entry spare to tell full from overflow. */
	cq->vcq.cq.cqe = ncqe - 1;
	return &cq->vcq.cq;

err_free_buf:
	pthread_spin_destroy(&cq->lock);
	vmmbib_free_buf(&buf);
err_free_cq:
	free(cq);
err:
	errno = ret;
	return NULL;
}

int vmmbib_resize_cq(struct ibv_cq *ibcq, int cqe)
{
	struct vmmbib_cq *cq = to_vmmbib_cq(ibcq);
	struct vmmbib_resize_cq_resp resp = {};
	struct vmmbib_resize_cq_cmd cmd = {};
	struct vmmbib_buf buf = {}, old;
	uint32_t ncqe;
	int ret;

	ret = vmmbib_cq_entries(cqe, &ncqe);
	if (ret)
		return ret;
	ret = vmmbib_alloc_buf(&buf, vmmbib_cq_ring_bytes(ncqe),
			       vmmbib_page_size(ibcq->context));
	if (ret)
		return ret;

	/*
	 * Under the CQ lock: the device moves the CQEs past our published
	 * consumer_index to the start of the new ring, so no poll may run
	 * between the command and the switch to the new ring.
	 */
	pthread_spin_lock(&cq->lock);
	cmd.drv.ring_addr = (uintptr_t)buf.addr;
	cmd.drv.ring_size = buf.size;
	ret = ibv_cmd_resize_cq(ibcq, ncqe, &cmd.ibv_cmd, sizeof(cmd),
				&resp.ibv_resp, sizeof(resp));
	if (ret) {
		pthread_spin_unlock(&cq->lock);
		vmmbib_free_buf(&buf);
		return ret;
	}
	old = cq->buf;
	vmmbib_cq_set_ring(cq, &buf, resp.drv.cqe);
	ibcq->cqe = resp.drv.cqe - 1;
	pthread_spin_unlock(&cq->lock);
	vmmbib_free_buf(&old);
	return 0;
}

int vmmbib_destroy_cq(struct ibv_cq *ibcq)
{
	struct vmmbib_cq *cq = to_vmmbib_cq(ibcq);
	int ret;

	ret = ibv_cmd_destroy_cq(ibcq);
	if (ret)
		return ret;
	vmmbib_free_buf(&cq->buf);
	pthread_spin_destroy(&cq->lock);
	free(cq);
	return 0;
}

/* ---- work queues ----------------------------------------------------------- */

/*
 * Sizes a work queue: @wr entries (at least 1, rounded up to a power of
 * two) of a power-of-two stride of at least @min_stride bytes.
 */
static int vmmbib_wq_init(struct vmmbib_wq *wq, uint32_t wr, uint32_t max_sge,
			  uint32_t min_stride, size_t page_size)
{
	int ret;

	if (wr > (1u << 24) || min_stride > VMMBIB_PAGE_SIZE)
		return EINVAL;
	wq->entries = roundup_pow_of_two(wr ? wr : 1);
	wq->wqe_shift = __builtin_ctzll(roundup_pow_of_two(min_stride));
	wq->max_sge = max_sge;
	wq->head = 0;
	wq->tail = 0;
	ret = vmmbib_alloc_buf(&wq->buf, (size_t)wq->entries << wq->wqe_shift,
			       page_size);
	if (ret)
		return ret;
	pthread_spin_init(&wq->lock, PTHREAD_PROCESS_PRIVATE);
	return 0;
}

static void vmmbib_wq_cleanup(struct vmmbib_wq *wq)
{
	if (!wq->buf.addr)
		return;
	vmmbib_free_buf(&wq->buf);
	pthread_spin_destroy(&wq->lock);
}

static size_t vmmbib_wq_bytes(const struct vmmbib_wq *wq)
{
	return (size_t)wq->entries << wq->wqe_shift;
}

static uint32_t vmmbib_recv_stride(uint32_t max_sge)
{
	return sizeof(struct vmmbib_recv_wqe) +
	       max_sge * sizeof(struct vmmbib_sge);
}

/* ---- QP ------------------------------------------------------------------- */

struct ibv_qp *vmmbib_create_qp(struct ibv_pd *pd,
				struct ibv_qp_init_attr *attr)
{
	struct vmmbib_context *ctx = to_vmmbib_ctx(pd->context);
	size_t page_size = vmmbib_page_size(pd->context);
	struct vmmbib_create_qp_resp resp = {};
	struct vmmbib_create_qp_cmd cmd = {};
	struct ibv_qp_cap *cap = &attr->cap;
	uint32_t sq_stride;
	struct vmmbib_qp *qp;
	int ret;

	if (attr->qp_type != IBV_QPT_RC && attr->qp_type != IBV_QPT_UD) {
		ret = EOPNOTSUPP;
		goto err;
	}
	if (cap->max_send_sge > 255 || cap->max_recv_sge > 255 ||
	    cap->max_inline_data > VMMBIB_PAGE_SIZE / 2) {
		ret = EINVAL;
		goto err;
	}

	qp = calloc(1, sizeof(*qp));
	if (!qp) {
		ret = ENOMEM;
		goto err;
	}

	/* SQ stride: the header and every SGE, or the header and inline data. */
	sq_stride = max_t(uint32_t,
			  sizeof(struct vmmbib_send_wqe) +
				  cap->max_send_sge * sizeof(struct vmmbib_sge),
			  sizeof(struct vmmbib_send_wqe) + cap->max_inline_data);
	ret = vmmbib_wq_init(&qp->sq, cap->max_send_wr, cap->max_send_sge,
			     sq_stride, page_size);
	if (ret)
		goto err_free_qp;
	if (attr->srq) {
		qp->srq = to_vmmbib_srq(attr->srq);
	} else {
		ret = vmmbib_wq_init(&qp->rq, cap->max_recv_wr,
				     cap->max_recv_sge,
				     vmmbib_recv_stride(cap->max_recv_sge),
				     page_size);
		if (ret)
			goto err_free_sq;
	}

	/* The rings are powers of two: ask the kernel for what we allocated. */
	cap->max_send_wr = qp->sq.entries;
	if (!attr->srq)
		cap->max_recv_wr = qp->rq.entries;
	cmd.drv.sq_addr = (uintptr_t)qp->sq.buf.addr;
	cmd.drv.sq_size = vmmbib_wq_bytes(&qp->sq);
	cmd.drv.sq_wqe_shift = qp->sq.wqe_shift;
	if (!attr->srq) {
		cmd.drv.rq_addr = (uintptr_t)qp->rq.buf.addr;
		cmd.drv.rq_size = vmmbib_wq_bytes(&qp->rq);
		cmd.drv.rq_wqe_shift = qp->rq.wqe_shift;
	}
	ret = ibv_cmd_create_qp(pd, &qp->vqp.qp, attr, &cmd.ibv_cmd,
				sizeof(cmd), &resp.ibv_resp, sizeof(resp));
	if (ret)
		goto err_free_rq;

	if (resp.drv.max_send_wr != qp->sq.entries ||
	    (!attr->srq && resp.drv.max_recv_wr != qp->rq.entries)) {
		verbs_err(&ctx->ibv_ctx,
			  "kernel granted %u/%u WRs, the rings hold %u/%u\n",
			  resp.drv.max_send_wr, resp.drv.max_recv_wr,
			  qp->sq.entries, attr->srq ? 0 : qp->rq.entries);
		ibv_cmd_destroy_qp(&qp->vqp.qp);
		ret = EPROTO;
		goto err_free_rq;
	}
	qp->handle = resp.drv.qp_handle;
	qp->max_inline_data = resp.drv.max_inline_data;
	qp->sq.max_sge = resp.drv.max_send_sge;
	if (!attr->srq)
		qp->rq.max_sge = resp.drv.max_recv_sge;
	qp->sq_sig_all = attr->sq_sig_all;
	cap->max_send_wr = resp.drv.max_send_wr;
	cap->max_recv_wr = attr->srq ? 0 : resp.drv.max_recv_wr;
	cap->max_send_sge = resp.drv.max_send_sge;
	cap->max_recv_sge = attr->srq ? 0 : resp.drv.max_recv_sge;
	cap->max_inline_data = resp.drv.max_inline_data;

	vmmbib_qp_table_add(ctx, qp);
	return &qp->vqp.qp;

err_free_rq:
	vmmbib_wq_cleanup(&qp->rq);
err_free_sq:
	vmmbib_wq_cleanup(&qp->sq);
err_free_qp:
	free(qp);
err:
	errno = ret;
	return NULL;
}

int vmmbib_modify_qp(struct ibv_qp *ibqp, struct ibv_qp_attr *attr,
		     int attr_mask)
{
	struct vmmbib_qp *qp = to_vmmbib_qp(ibqp);
	struct ibv_modify_qp cmd;
	int ret;

	ret = ibv_cmd_modify_qp(ibqp, attr, attr_mask, &cmd, sizeof(cmd));
	if (ret)
		return ret;

	/* The device starts a reset QP's rings at index 0 again; so do we. */
	if ((attr_mask & IBV_QP_STATE) && attr->qp_state == IBV_QPS_RESET) {
		pthread_spin_lock(&qp->sq.lock);
		qp->sq.head = 0;
		__atomic_store_n(&qp->sq.tail, 0, __ATOMIC_RELEASE);
		pthread_spin_unlock(&qp->sq.lock);
		if (!qp->srq) {
			pthread_spin_lock(&qp->rq.lock);
			qp->rq.head = 0;
			__atomic_store_n(&qp->rq.tail, 0, __ATOMIC_RELEASE);
			pthread_spin_unlock(&qp->rq.lock);
		}
	}
	return 0;
}

int vmmbib_query_qp(struct ibv_qp *ibqp, struct ibv_qp_attr *attr,
		    int attr_mask, struct ibv_qp_init_attr *init_attr)
{
	struct ibv_query_qp cmd;

	return ibv_cmd_query_qp(ibqp, attr, attr_mask, init_attr, &cmd,
				sizeof(cmd));
}

int vmmbib_destroy_qp(struct ibv_qp *ibqp)
{
	struct vmmbib_context *ctx = to_vmmbib_ctx(ibqp->context);
	struct vmmbib_qp *qp = to_vmmbib_qp(ibqp);
	int ret;

	ret = ibv_cmd_destroy_qp(ibqp);
	if (ret)
		return ret;
	/*
	 * CQEs of this QP still in a CQ are returned by poll_cq without
	 * touching the (gone) QP: it looks QPs up by number.
	 */
	vmmbib_qp_table_del(ctx, qp);
	vmmbib_wq_cleanup(&qp->rq);
	vmmbib_wq_cleanup(&qp->sq);
	free(qp);
	return 0;
}

/* ---- SRQ ------------------------------------------------------------------ */

struct ibv_srq *vmmbib_create_srq(struct ibv_pd *pd,
				  struct ibv_srq_init_attr *attr)
{
	struct vmmbib_create_srq_resp resp = {};
	struct vmmbib_create_srq_cmd cmd = {};
	struct vmmbib_srq *srq;
	int ret;

	if (attr->attr.max_sge > 255) {
		ret = EINVAL;
		goto err;
	}
	srq = calloc(1, sizeof(*srq));
	if (!srq) {
		ret = ENOMEM;
		goto err;
	}
	ret = vmmbib_wq_init(&srq->rq, attr->attr.max_wr, attr->attr.max_sge,
			     vmmbib_recv_stride(attr->attr.max_sge),
			     vmmbib_page_size(pd->context));
	if (ret)
		goto err_free_srq;

	attr->attr.max_wr = srq->rq.entries;
	cmd.drv.ring_addr = (uintptr_t)srq->rq.buf.addr;
	cmd.drv.ring_size = vmmbib_wq_bytes(&srq->rq);
	cmd.drv.wqe_shift = srq->rq.wqe_shift;
	ret = ibv_cmd_create_srq(pd, &srq->vsrq.srq, attr, &cmd.ibv_cmd,
				 sizeof(cmd), &resp.ibv_resp, sizeof(resp));
	if (ret)
		goto err_free_rq;
	if (resp.drv.max_wr != srq->rq.entries) {
		verbs_err(verbs_get_ctx(pd->context),
			  "kernel granted %u SRQ WRs, the ring holds %u\n",
			  resp.drv.max_wr, srq->rq.entries);
		ibv_cmd_destroy_srq(&srq->vsrq.srq);
		ret = EPROTO;
		goto err_free_rq;
	}
	srq->handle = resp.drv.srq_handle;
	srq->rq.max_sge = resp.drv.max_sge;
	attr->attr.max_wr = resp.drv.max_wr;
	attr->attr.max_sge = resp.drv.max_sge;
	return &srq->vsrq.srq;

err_free_rq:
	vmmbib_wq_cleanup(&srq->rq);
err_free_srq:
	free(srq);
err:
	errno = ret;
	return NULL;
}

int vmmbib_modify_srq(struct ibv_srq *ibsrq, struct ibv_srq_attr *attr,
		      int attr_mask)
{
	struct ibv_modify_srq cmd;

	return ibv_cmd_modify_srq(ibsrq, attr, attr_mask, &cmd, sizeof(cmd));
}

int vmmbib_query_srq(struct ibv_srq *ibsrq, struct ibv_srq_attr *attr)
{
	struct ibv_query_srq cmd;

	return ibv_cmd_query_srq(ibsrq, attr, &cmd, sizeof(cmd));
}

int vmmbib_destroy_srq(struct ibv_srq *ibsrq)
{
	struct vmmbib_srq *srq = to_vmmbib_srq(ibsrq);
	int ret;

	ret = ibv_cmd_destroy_srq(ibsrq);
	if (ret)
		return ret;
	vmmbib_wq_cleanup(&srq->rq);
	free(srq);
	return 0;
}

/* ---- AH ------------------------------------------------------------------- */

struct ibv_ah *vmmbib_create_ah(struct ibv_pd *pd, struct ibv_ah_attr *attr)
{
	struct vmmbib_create_ah_resp resp = {};
	struct vmmbib_ah *ah;
	int ret;

	ah = calloc(1, sizeof(*ah));
	if (!ah)
		return NULL;
	ret = ibv_cmd_create_ah(pd, &ah->ibv_ah, attr, &resp.ibv_resp,
				sizeof(resp));
	if (ret) {
		free(ah);
		errno = ret;
		return NULL;
	}
	/* UD WQEs name the device's AH, not the uverbs one. */
	ah->handle = resp.drv.ah_handle;
	return &ah->ibv_ah;
}

int vmmbib_destroy_ah(struct ibv_ah *ibah)
{
	int ret;

	ret = ibv_cmd_destroy_ah(ibah);
	if (ret)
		return ret;
	free(to_vmmbib_ah(ibah));
	return 0;
}
