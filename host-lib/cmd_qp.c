/*
 * Queue pairs: creation with rings in guest memory, the modify and query
 * commands, destruction.  The state machine itself is in qp_state.c.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "verbs/verbs.h"

#define SEND_WQE_HDR sizeof(struct vmmbib_send_wqe)
#define RECV_WQE_HDR sizeof(struct vmmbib_recv_wqe)
#define SGE_SIZE sizeof(struct vmmbib_sge)

/*
 * A ring of @entries WQEs of stride 1 << @shift, at least @min_stride
 * bytes each, in the pages of @list.
 */
int vmmbib_ring_load(struct vmmbib_dev *dev, struct vmmbib_ring *ring,
                     uint32_t entries, uint32_t max_entries, uint8_t shift,
                     uint32_t min_stride, const struct vmmbib_page_list *list)
{
    uint64_t bytes;

    memset(ring, 0, sizeof(*ring));
    if (!vmmbib_is_pow2(entries) || entries > max_entries ||
        shift < 4 || shift > VMMBIB_PAGE_SHIFT ||
        (1u << shift) < min_stride) {
        return VMMBIB_STATUS_INVALID;
    }
    bytes = (uint64_t)entries << shift;
    if (((uint64_t)vmmbib_le32(list->npages) << VMMBIB_PAGE_SHIFT) < bytes) {
        return VMMBIB_STATUS_INVALID;
    }
    ring->entries = entries;
    ring->stride_shift = shift;
    return vmmbib_pages_load(dev, list, dev->cfg.limits.max_mr_pages,
                             &ring->pages);
}

static int check_caps(const struct vmmbib_limits *l,
                      const struct vmmbib_qp_caps *caps, bool has_srq)
{
    uint32_t send_sge = vmmbib_le32(caps->max_send_sge);
    uint32_t recv_sge = vmmbib_le32(caps->max_recv_sge);
    uint32_t inline_data = vmmbib_le32(caps->max_inline_data);

    if (caps->reserved[0] || caps->reserved[1] ||
        send_sge > l->max_send_sge || recv_sge > l->max_recv_sge ||
        inline_data > l->max_inline_data) {
        return VMMBIB_STATUS_INVALID;
    }
    if (has_srq ? vmmbib_le32(caps->max_recv_wr) != 0 || recv_sge != 0 :
        recv_sge == 0) {
        return VMMBIB_STATUS_INVALID;
    }
    return VMMBIB_STATUS_OK;
}

static void qp_release(struct vmmbib_dev *dev, struct vmmbib_qp *qp)
{
    if (qp->sq.pages.hva) {
        vmmbib_pages_release(dev, &qp->sq.pages);
    }
    if (qp->rq.pages.hva) {
        vmmbib_pages_release(dev, &qp->rq.pages);
    }
    free(qp);
}

static int create_rings(struct vmmbib_cmd_ctx *c, struct vmmbib_qp *qp,
                        const struct vmmbib_cmd_create_qp *q)
{
    const struct vmmbib_limits *l = &c->dev->cfg.limits;
    const struct vmmbib_qp_caps *caps = &q->caps;
    uint32_t send_sge = vmmbib_le32(caps->max_send_sge);
    uint32_t inline_data = vmmbib_le32(caps->max_inline_data);
    uint32_t min_stride = SEND_WQE_HDR + (send_sge > inline_data / SGE_SIZE ?
                                          send_sge * SGE_SIZE :
                                          inline_data);
    int status;

    status = vmmbib_ring_load(c->dev, &qp->sq, vmmbib_le32(caps->max_send_wr),
                              l->max_qp_wr, caps->sq_wqe_shift, min_stride,
                              &q->sq_pages);
    if (status != VMMBIB_STATUS_OK || qp->srq) {
        if (qp->srq && status == VMMBIB_STATUS_OK &&
            (q->rq_pages.npages || q->rq_pages.addr)) {
            return VMMBIB_STATUS_INVALID;
        }
        return status;
    }
    return vmmbib_ring_load(c->dev, &qp->rq, vmmbib_le32(caps->max_recv_wr),
                            l->max_qp_wr, caps->rq_wqe_shift,
                            RECV_WQE_HDR +
                            vmmbib_le32(caps->max_recv_sge) * SGE_SIZE,
                            &q->rq_pages);
}

int vmmbib_cmd_create_qp(struct vmmbib_cmd_ctx *c)
{
    const struct vmmbib_cmd_create_qp *q = c->req;
    struct vmmbib_resp_create_qp *r = c->resp;
    struct vmmbib_dev *dev = c->dev;
    uint32_t srq_handle = vmmbib_le32(q->srq_handle);
    static const uint8_t zero[sizeof(q->reserved)];
    struct vmmbib_qp *qp;
    int status;

    if (memcmp(q->reserved, zero, sizeof(zero)) || q->sq_sig_all > 1 ||
        (q->qp_type != VMMBIB_QPT_RC && !vmmbib_qpt_is_ud(q->qp_type))) {
        return VMMBIB_STATUS_INVALID;
    }
    /* One GSI QP per device: QP number 1 is taken. */
    if (q->qp_type == VMMBIB_QPT_GSI && dev->gsi) {
        return VMMBIB_STATUS_BUSY;
    }
    qp = calloc(1, sizeof(*qp));
    if (!qp) {
        return VMMBIB_STATUS_NO_RESOURCES;
    }
    qp->uctx = c->uctx;
    qp->dev = dev;
    qp->pd = vmmbib_lookup(c, &dev->pds, vmmbib_le32(q->pd_handle), &status);
    if (qp->pd) {
        qp->send_cq = vmmbib_lookup(c, &dev->cqs,
                                    vmmbib_le32(q->send_cq_handle), &status);
    }
    if (qp->send_cq) {
        qp->recv_cq = vmmbib_lookup(c, &dev->cqs,
                                    vmmbib_le32(q->recv_cq_handle), &status);
    }
    if (qp->recv_cq && srq_handle != VMMBIB_HANDLE_NONE) {
        qp->srq = vmmbib_lookup(c, &dev->srqs, srq_handle, &status);
        if (qp->srq && qp->srq->pd != qp->pd) {
            qp->srq = NULL;
            status = VMMBIB_STATUS_NOT_OWNER;
        }
    }
    if (!qp->recv_cq || (srq_handle != VMMBIB_HANDLE_NONE && !qp->srq)) {
        free(qp);
        return status;
    }
    status = check_caps(&dev->cfg.limits, &q->caps, qp->srq);
    if (status == VMMBIB_STATUS_OK) {
        status = create_rings(c, qp, q);
    }
    if (status != VMMBIB_STATUS_OK) {
        qp_release(dev, qp);
        return status;
    }
    qp->type = q->qp_type;
    qp->sq_sig_all = q->sq_sig_all;
    qp->caps = q->caps;
    qp->state = VMMBIB_QPS_RESET;
    qp->handle = vmmbib_table_insert(&dev->qps, qp);
    if (qp->handle == VMMBIB_HANDLE_NONE) {
        qp_release(dev, qp);
        return VMMBIB_STATUS_NO_RESOURCES;
    }
    if (qp->type == VMMBIB_QPT_GSI) {
        /* QP1: its Q_Key and port are fixed (IBA 10.2.5, 14.2.5). */
        qp->qpn = VMMBIB_GSI_QPN;
        qp->attr.qkey = htole32(VMMBIB_GSI_QKEY);
        qp->attr.port_num = 1;
        dev->gsi = qp;
    } else {
        qp->qpn = VMMBIB_HANDLE_INDEX(qp->handle) + 1;
    }
    qp->pd->users++;
    qp->send_cq->users++;
    qp->recv_cq->users++;
    if (qp->srq) {
        qp->srq->users++;
    }
    if (dev->verbs) {
        status = vmmbib_verbs_qp_create(dev, qp);
        if (status != VMMBIB_STATUS_OK) {
            vmmbib_qp_free(dev, qp);
            return status;
        }
    }
    r->qp_handle = htole32(qp->handle);
    r->qpn = htole32(qp->qpn);
    r->caps = qp->caps;
    return VMMBIB_STATUS_OK;
}

/* Apply a checked modify; the engine lock is held. */
static void apply_attrs(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                        uint32_t mask, const struct vmmbib_qp_attr *a)
{
    struct vmmbib_qp_attr *cur = &qp->attr;

#define COPY_IF(bit, field) \
    if (mask & VMMBIB_QP_##bit) {   \
        cur->field = a->field;      \
    }
    COPY_IF(ACCESS_FLAGS, qp_access_flags);
    COPY_IF(PKEY_INDEX, pkey_index);
    COPY_IF(PORT, port_num);
    COPY_IF(QKEY, qkey);
    COPY_IF(AV, ah_attr);
    COPY_IF(PATH_MTU, path_mtu);
    COPY_IF(TIMEOUT, timeout);
    COPY_IF(RETRY_CNT, retry_cnt);
    COPY_IF(RNR_RETRY, rnr_retry);
    COPY_IF(RQ_PSN, rq_psn);
    COPY_IF(MAX_QP_RD_ATOMIC, max_rd_atomic);
    COPY_IF(MIN_RNR_TIMER, min_rnr_timer);
    COPY_IF(SQ_PSN, sq_psn);
    COPY_IF(MAX_DEST_RD_ATOMIC, max_dest_rd_atomic);
    COPY_IF(PATH_MIG_STATE, path_mig_state);
    COPY_IF(DEST_QPN, dest_qp_num);
    COPY_IF(EN_SQD_ASYNC_NOTIFY, en_sqd_async_notify);
#undef COPY_IF

    if (!(mask & VMMBIB_QP_STATE) || a->qp_state == qp->state) {
        return;
    }
    switch (a->qp_state) {
    case VMMBIB_QPS_RESET:
        /* Back to a fresh QP: empty queues, indices from 0. */
        vmmbib_engine_qp_forget(dev->engine, qp);
        qp->sq.producer = qp->sq.consumer = 0;
        qp->rq.producer = qp->rq.consumer = 0;
        memset(&qp->attr, 0, sizeof(qp->attr));
        if (qp->type == VMMBIB_QPT_GSI) {
            qp->attr.qkey = htole32(VMMBIB_GSI_QKEY);
            qp->attr.port_num = 1;
        }
        qp->rnr_deadline_ns = 0;
        qp->sq_draining = false;
        qp->comm_est = false;
        qp->recv_busy = false;
        qp->state = VMMBIB_QPS_RESET;
        break;
    case VMMBIB_QPS_ERR:
        vmmbib_qp_to_error(dev, qp, 0);
        break;
    case VMMBIB_QPS_SQD:
        /* The notify flag belongs to this transition, not a past one. */
        if (!(mask & VMMBIB_QP_EN_SQD_ASYNC_NOTIFY)) {
            cur->en_sqd_async_notify = 0;
        }
        qp->state = VMMBIB_QPS_SQD;
        /* The engine finishes what it began, then reports the drain. */
        qp->sq_draining = true;
        vmmbib_engine_qp_activate(dev->engine, qp);
        vmmbib_engine_wake(dev->engine);
        break;
    default:
        qp->state = a->qp_state;
        qp->sq_draining = false;
        if (qp->state == VMMBIB_QPS_RTS) {
            /* Work posted before RTS (or in SQD, SQE) may now run. */
            vmmbib_engine_qp_activate(dev->engine, qp);
            vmmbib_engine_wake(dev->engine);
        }
        break;
    }
}

int vmmbib_cmd_modify_qp(struct vmmbib_cmd_ctx *c)
{
    const struct vmmbib_cmd_modify_qp *q = c->req;
    uint32_t mask = vmmbib_le32(q->attr_mask);
    struct vmmbib_qp *qp;
    int status;

    qp = vmmbib_lookup(c, &c->dev->qps, vmmbib_le32(q->qp_handle), &status);
    if (!qp) {
        return status;
    }
    status = vmmbib_qp_check_modify(qp, mask, &q->attr);
    if (status != VMMBIB_STATUS_OK) {
        return status;
    }
    if ((mask & VMMBIB_QP_MAX_QP_RD_ATOMIC &&
         q->attr.max_rd_atomic > c->dev->cfg.limits.max_qp_rd_atom) ||
        (mask & VMMBIB_QP_MAX_DEST_RD_ATOMIC &&
         q->attr.max_dest_rd_atomic > c->dev->cfg.limits.max_qp_rd_atom)) {
        return VMMBIB_STATUS_INVALID;
    }
    if (c->dev->verbs) {
        status = vmmbib_verbs_qp_modify(c->dev, qp, mask, &q->attr);
        if (status != VMMBIB_STATUS_OK) {
            return status;
        }
    }
    apply_attrs(c->dev, qp, mask, &q->attr);
    return VMMBIB_STATUS_OK;
}

int vmmbib_cmd_query_qp(struct vmmbib_cmd_ctx *c)
{
    const struct vmmbib_cmd_query_qp *q = c->req;
    struct vmmbib_resp_query_qp *r = c->resp;
    struct vmmbib_qp *qp;
    int status;

    if (q->reserved) {
        return VMMBIB_STATUS_INVALID;
    }
    qp = vmmbib_lookup(c, &c->dev->qps, vmmbib_le32(q->qp_handle), &status);
    if (!qp) {
        return status;
    }
    r->attr = qp->attr;
    r->attr.qp_state = qp->state;
    r->attr.cur_qp_state = qp->state;
    r->attr.sq_draining = qp->sq_draining;
    r->caps = qp->caps;
    return VMMBIB_STATUS_OK;
}

void vmmbib_qp_free(struct vmmbib_dev *dev, struct vmmbib_qp *qp)
{
    vmmbib_engine_qp_forget(dev->engine, qp);
    if (dev->gsi == qp) {
        dev->gsi = NULL;
    }
    qp->pd->users--;
    qp->send_cq->users--;
    qp->recv_cq->users--;
    if (qp->srq) {
        qp->srq->users--;
    }
    if (dev->verbs) {
        vmmbib_verbs_qp_destroy(dev, qp);
    }
    vmmbib_table_remove(&dev->qps, qp->handle);
    qp_release(dev, qp);
}

int vmmbib_cmd_destroy_qp(struct vmmbib_cmd_ctx *c)
{
    const struct vmmbib_cmd_destroy *q = c->req;
    struct vmmbib_qp *qp;
    int status;

    if (q->reserved) {
        return VMMBIB_STATUS_INVALID;
    }
    qp = vmmbib_lookup(c, &c->dev->qps, vmmbib_le32(q->handle), &status);
    if (!qp) {
        return status;
    }
    vmmbib_qp_free(c->dev, qp);
    return VMMBIB_STATUS_OK;
}
