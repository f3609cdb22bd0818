/*
 * The verbs backend's data path: send and receive WQEs from the guest's
 * rings become host WQEs (lkeys translated, everything else as the guest
 * wrote it), and host completions become guest CQEs.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "data.h"

/*
 * A host wr_id names one guest WQE: recv << 63 | srq << 62 | QP (or SRQ)
 * index << 32 | slot.
 */
#define WRID_RECV       (1ull << 63)
#define WRID_SRQ        (1ull << 62)
#define WRID_QP_SHIFT   32

static uint64_t host_wr_id(bool recv, const struct vmmbib_qp *qp,
                           uint32_t slot)
{
    return (recv ? WRID_RECV : 0) |
           (uint64_t)VMMBIB_HANDLE_INDEX(qp->handle) << WRID_QP_SHIFT | slot;
}

static struct vverbs_qp *vqp(struct vmmbib_dev *dev,
                             const struct vmmbib_qp *qp)
{
    return dev->verbs->qps[VMMBIB_HANDLE_INDEX(qp->handle)];
}

static const uint8_t *ring_slot(const struct vmmbib_ring *ring, uint32_t index)
{
    return vmmbib_pages_at(&ring->pages,
                           (uint64_t)(index & (ring->entries - 1)) <<
                           ring->stride_shift);
}

/*
 * Guest SGEs to host SGEs: each key must name an MR of @pd granting
 * @access over the range (the soft engine's own check), whose host MR's
 * lkey replaces it; addresses are iovas the host MR was registered at.
 * Returns a WC status.
 */
static int translate_sges(struct vmmbib_dev *dev, struct vmmbib_pd *pd,
                          const struct vmmbib_sge *sge, uint32_t n,
                          uint32_t access, struct ibv_sge *out,
                          uint32_t *nout, uint64_t *total)
{
    uint32_t i;

    *nout = 0;
    *total = 0;
    for (i = 0; i < n; i++) {
        uint32_t key = vmmbib_le32(sge[i].lkey);
        uint32_t len = vmmbib_le32(sge[i].length);
        uint64_t addr = vmmbib_le64(sge[i].addr);
        struct vmmbib_mr *mr;
        uint32_t lkey;

        if (!len) {
            continue;
        }
        if (vmmbib_mr_check(dev, pd, key, addr, len, access, &mr) ||
            !vverbs_lkey(dev, mr, addr, len, &lkey)) {
            return VMMBIB_WC_LOC_PROT_ERR;
        }
        out[*nout] = (struct ibv_sge) {
            .addr = addr, .length = len, .lkey = lkey,
        };
        (*nout)++;
        *total += len;
    }
    return VMMBIB_WC_SUCCESS;
}

static void post_cqe(struct vmmbib_dev *dev, struct vmmbib_cq *cq,
                     struct vmmbib_qp *qp, uint64_t wr_id, uint32_t index,
                     uint8_t opcode, uint8_t status)
{
    struct vmmbib_cqe cqe = {
        .wr_id = htole64(wr_id),
        .qpn = htole32(qp->qpn),
        .wqe_index = htole32(index),
        .opcode = opcode,
        .status = status,
    };

    vmmbib_cq_post(dev, cq, &cqe, false);
}

/*
 * A send WQE the relay rejects: it completes in error after the WQEs
 * before it, which the host still runs, and the QP goes to ERR.
 */
static void send_failed(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                        const struct vmmbib_send_wqe_copy *w, uint8_t status)
{
    uint8_t op = w->hdr.opcode;

    vverbs_qp_quiesce(dev, qp, false);
    post_cqe(dev, qp->send_cq, qp, vmmbib_le64(w->hdr.wr_id),
             qp->sq.consumer, vmmbib_wc_opcode_of(op), status);
    qp->sq.consumer++;
    dev->stats.wqes++;
    /* UD loses its SQ only (IBA 10.3.1.6); the host QP keeps receiving. */
    if (qp->type == VMMBIB_QPT_UD) {
        vmmbib_qp_to_sqe(dev, qp);
    } else {
        vmmbib_qp_to_error(dev, qp, 0);
    }
}

/*
 * A UD WQE's destination: an AH of the QP's own context and PD (its host
 * AH), a 24-bit QPN, and a Q_Key that is not a controlled one: the high
 * bit means the QP's own (IBA 10.2.5), as the soft engine does.
 */
static int build_ud(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                    const struct vmmbib_send_wqe *h, struct ibv_send_wr *wr)
{
    struct vmmbib_ah *ah = vmmbib_table_lookup(&dev->ahs,
                                               vmmbib_le32(h->ud.ah_handle));
    uint32_t qkey = vmmbib_le32(h->ud.remote_qkey);
    uint32_t qpn = vmmbib_le32(h->ud.remote_qpn);
    struct ibv_ah *hah;

    if (h->opcode != VMMBIB_WR_SEND && h->opcode != VMMBIB_WR_SEND_WITH_IMM) {
        return VMMBIB_WC_LOC_QP_OP_ERR;
    }
    if (!ah || ah->uctx != qp->uctx || ah->pd != qp->pd ||
        qpn > VMMBIB_MAX_QPN) {
        return VMMBIB_WC_LOC_QP_OP_ERR;
    }
    hah = dev->verbs->ahs[VMMBIB_HANDLE_INDEX(ah->handle)];
    if (!hah) {
        return VMMBIB_WC_LOC_QP_OP_ERR;
    }
    if (qkey & 0x80000000u) {
        qkey = vmmbib_le32(qp->attr.qkey);
    }
    wr->wr.ud.ah = hah;
    wr->wr.ud.remote_qpn = qpn;
    wr->wr.ud.remote_qkey = qkey;
    return VMMBIB_WC_SUCCESS;
}

/* Build the host WR of @w; returns a WC status. */
static int build_send(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                      struct vmmbib_send_wqe_copy *w, struct ibv_send_wr *wr,
                      struct ibv_sge *sg, uint64_t *total)
{
    const struct vmmbib_send_wqe *h = &w->hdr;
    uint32_t stride = 1u << qp->sq.stride_shift;
    uint32_t n = h->num_sge, nout;
    bool reads_in = h->opcode == VMMBIB_WR_RDMA_READ ||
                    h->opcode >= VMMBIB_WR_ATOMIC_CMP_AND_SWP;
    int status;

    if (h->opcode > VMMBIB_WR_ATOMIC_FETCH_AND_ADD) {
        return VMMBIB_WC_LOC_QP_OP_ERR;
    }
    if (h->flags & VMMBIB_WQE_INLINE) {
        uint32_t len = vmmbib_le32(h->inline_len);

        if (reads_in) {
            return VMMBIB_WC_LOC_QP_OP_ERR;
        }
        if (len > vmmbib_le32(qp->caps.max_inline_data) ||
            len > stride - sizeof(*h)) {
            return VMMBIB_WC_LOC_LEN_ERR;
        }
        /* ibv_post_send copies inline data: our copy may go afterwards. */
        sg[0] = (struct ibv_sge) {
            .addr = (uintptr_t)w->data, .length = len,
        };
        nout = len ? 1 : 0;
        *total = len;
        wr->send_flags |= IBV_SEND_INLINE;
    } else {
        if (n > vmmbib_le32(qp->caps.max_send_sge) ||
            sizeof(*h) + (uint64_t)n * sizeof(struct vmmbib_sge) > stride) {
            return VMMBIB_WC_LOC_LEN_ERR;
        }
        status = translate_sges(dev, qp->pd, (const void *)w->data, n,
                                reads_in ? VMMBIB_ACCESS_LOCAL_WRITE : 0, sg,
                                &nout, total);
        if (status != VMMBIB_WC_SUCCESS) {
            return status;
        }
    }
    if (*total > (1ull << 31)) {
        return VMMBIB_WC_LOC_LEN_ERR;
    }
    /* VMMBIB_WR_* are IB verbs' opcodes. */
    wr->opcode = h->opcode;
    wr->sg_list = sg;
    wr->num_sge = nout;
    wr->imm_data = h->imm_data;
    if (h->flags & VMMBIB_WQE_SOLICITED) {
        wr->send_flags |= IBV_SEND_SOLICITED;
    }
    if (h->flags & VMMBIB_WQE_FENCE) {
        wr->send_flags |= IBV_SEND_FENCE;
    }
    if (qp->type == VMMBIB_QPT_UD) {
        /* One packet: the host port's MTU. */
        if (*total > (1u << (dev->verbs->port_attr.active_mtu + 7))) {
            return VMMBIB_WC_LOC_LEN_ERR;
        }
        return build_ud(dev, qp, h, wr);
    }
    if (h->opcode >= VMMBIB_WR_ATOMIC_CMP_AND_SWP) {
        if (*total != 8 || nout != 1) {
            return VMMBIB_WC_LOC_LEN_ERR;
        }
        wr->wr.atomic.remote_addr = vmmbib_le64(h->atomic.remote_addr);
        wr->wr.atomic.rkey = vmmbib_le32(h->atomic.rkey);
        wr->wr.atomic.compare_add = vmmbib_le64(h->atomic.compare_add);
        wr->wr.atomic.swap = vmmbib_le64(h->atomic.swap);
    } else {
        wr->wr.rdma.remote_addr = vmmbib_le64(h->rdma.remote_addr);
        wr->wr.rdma.rkey = vmmbib_le32(h->rdma.rkey);
    }
    return VMMBIB_WC_SUCCESS;
}

/* Relay the WQE at the SQ's consumer: 1 done, 0 host SQ full. */
static int relay_send(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                      struct vverbs_qp *vq)
{
    static __thread struct vmmbib_send_wqe_copy w;
    struct ibv_sge sg[VMMBIB_MAX_WQE_SGE];
    struct ibv_send_wr wr = { 0 }, *bad;
    uint32_t slot = qp->sq.consumer & (qp->sq.entries - 1);
    bool signaled;
    uint64_t total = 0;
    int status, ret;

    memcpy(&w, ring_slot(&qp->sq, qp->sq.consumer), 1u << qp->sq.stride_shift);
    status = build_send(dev, qp, &w, &wr, sg, &total);
    if (status != VMMBIB_WC_SUCCESS) {
        send_failed(dev, qp, &w, status);
        return 1;
    }
    signaled = qp->sq_sig_all || (w.hdr.flags & VMMBIB_WQE_SIGNALED);
    if (signaled) {
        wr.send_flags |= IBV_SEND_SIGNALED;
    }
    wr.wr_id = host_wr_id(false, qp, qp->sq.consumer);
    ret = ibv_post_send(vq->qp, &wr, &bad);
    if (ret == ENOMEM) {
        return 0;   /* completions will free host slots */
    }
    if (ret) {
        send_failed(dev, qp, &w, VMMBIB_WC_LOC_QP_OP_ERR);
        return 1;
    }
    vq->sq[slot] = (struct vverbs_send_slot) {
        .wr_id = vmmbib_le64(w.hdr.wr_id),
        .byte_len = total,
        .opcode = w.hdr.opcode,
    };
    vq->sq_pending += signaled;
    qp->sq.consumer++;
    dev->stats.wqes++;
    return 1;
}

unsigned int vmmbib_verbs_run_sq(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                                 unsigned int budget)
{
    struct vverbs_qp *vq = vqp(dev, qp);
    unsigned int done = 0;

    if (!vq) {
        return 0;
    }
    while (done < budget && qp->sq.consumer != qp->sq.producer &&
           qp->state == VMMBIB_QPS_RTS) {
        if (!relay_send(dev, qp, vq)) {
            break;
        }
        done++;
    }
    return done;
}

/* A receive WQE the relay rejects: the QP goes to ERR, then it fails. */
static void recv_failed(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                        uint64_t wr_id)
{
    uint32_t index = qp->rq.consumer;

    /* The receives posted before it flush first, as on an HCA. */
    vmmbib_verbs_qp_to_error(dev, qp);
    qp->rq.consumer++;
    dev->stats.wqes++;
    post_cqe(dev, qp->recv_cq, qp, wr_id, index, VMMBIB_WC_RECV,
             VMMBIB_WC_LOC_PROT_ERR);
    vmmbib_qp_to_error(dev, qp, VMMBIB_EVENT_QP_ACCESS_ERR);
}

/*
 * Copy the receive WQE at @rq's consumer once (the guest may rewrite the
 * ring meanwhile) and translate its scatter list into @sg for the host.
 * False if it is malformed: too many SGEs for @max_sge or the stride, or
 * an SGE that @pd's MRs do not cover for local write.
 */
static bool take_recv_wqe(struct vmmbib_dev *dev, struct vmmbib_pd *pd,
                          const struct vmmbib_ring *rq, uint32_t max_sge,
                          struct ibv_sge *sg, uint32_t *nsg, uint64_t *wr_id)
{
    uint32_t stride = 1u << rq->stride_shift;
    uint8_t wqe[VMMBIB_PAGE_SIZE];
    struct vmmbib_recv_wqe hdr;
    uint64_t total;
    uint32_t n;

    memcpy(wqe, ring_slot(rq, rq->consumer), stride);
    memcpy(&hdr, wqe, sizeof(hdr));
    *wr_id = vmmbib_le64(hdr.wr_id);
    n = vmmbib_le32(hdr.num_sge);
    return n <= max_sge &&
           sizeof(hdr) + (uint64_t)n * sizeof(struct vmmbib_sge) <= stride &&
           translate_sges(dev, pd,
                          (const struct vmmbib_sge *)(wqe + sizeof(hdr)), n,
                          VMMBIB_ACCESS_LOCAL_WRITE, sg, nsg, &total) ==
           VMMBIB_WC_SUCCESS;
}

void vmmbib_verbs_post_recvs(struct vmmbib_dev *dev, struct vmmbib_qp *qp)
{
    struct vverbs_qp *vq = vqp(dev, qp);
    uint32_t max_sge = vmmbib_le32(qp->caps.max_recv_sge);

    /* A host QP in RESET takes no receives (IBA 10.8.2.2): they wait. */
    if (!vq || qp->srq || vq->host_state == IBV_QPS_RESET || vq->erroring) {
        return;
    }
    while (qp->rq.consumer != qp->rq.producer) {
        struct ibv_sge sg[VMMBIB_MAX_WQE_SGE];
        struct ibv_recv_wr wr = { 0 }, *bad;
        uint32_t nsg;
        uint64_t wr_id;

        if (!take_recv_wqe(dev, qp->pd, &qp->rq, max_sge, sg, &nsg,
                           &wr_id)) {
            recv_failed(dev, qp, wr_id);
            return;
        }
        wr.wr_id = host_wr_id(true, qp, qp->rq.consumer);
        wr.sg_list = sg;
        wr.num_sge = nsg;
        if (ibv_post_recv(vq->qp, &wr, &bad)) {
            break;  /* host RQ full: the rest go when receives complete */
        }
        vq->rq[qp->rq.consumer & (qp->rq.entries - 1)] = wr_id;
        vq->rq_pending++;
        qp->rq.consumer++;
        dev->stats.wqes++;
    }
}

/*
 * The guest's SRQ producer moved: post its new receives to the host SRQ.
 * A malformed one stops the SRQ (SRQ_ERR, IBA 11.6.3.1 "SRQ catastrophic
 * error"): no QP owns it yet to complete it in error.
 */
void vmmbib_verbs_post_srq_recvs(struct vmmbib_dev *dev,
                                 struct vmmbib_srq *srq)
{
    uint32_t si = VMMBIB_HANDLE_INDEX(srq->handle);
    struct vverbs_srq *vs = dev->verbs->srqs[si];

    if (!vs || vs->error) {
        return;
    }
    while (srq->rq.consumer != srq->rq.producer) {
        struct ibv_sge sg[VMMBIB_MAX_WQE_SGE];
        struct ibv_recv_wr wr = { 0 }, *bad;
        uint32_t nsg;
        uint64_t wr_id;

        if (!take_recv_wqe(dev, srq->pd, &srq->rq, srq->max_sge, sg, &nsg,
                           &wr_id)) {
            vs->error = true;
            vmmbib_dev_event(dev, VMMBIB_EVENT_SRQ_ERR, srq->handle,
                             srq->uctx);
            return;
        }
        wr.wr_id = WRID_RECV | WRID_SRQ | (uint64_t)si << WRID_QP_SHIFT |
                   srq->rq.consumer;
        wr.sg_list = sg;
        wr.num_sge = nsg;
        if (ibv_post_srq_recv(vs->srq, &wr, &bad)) {
            break;  /* host SRQ full: the rest go when receives complete */
        }
        vs->rq[srq->rq.consumer & (srq->rq.entries - 1)] = wr_id;
        srq->rq.consumer++;
        dev->stats.wqes++;
    }
}

/* The guest QP of a host QPN among those using SRQ @si, or NULL. */
static struct vmmbib_qp *srq_qp(struct vmmbib_dev *dev, uint32_t si,
                                uint32_t qp_num, struct vverbs_qp **vqp_out)
{
    struct vverbs_srq *vs = dev->verbs->srqs[si];
    struct vverbs_qp *vq;

    for (vq = vs ? vs->qps : NULL; vq; vq = vq->next_on_srq) {
        if (vq->qp->qp_num == qp_num) {
            *vqp_out = vq;
            return vmmbib_table_at(&dev->qps, vq->index);
        }
    }
    return NULL;
}

/* One host completion to the guest CQE it stands for. */
static void complete(struct vmmbib_dev *dev, const struct ibv_wc *wc)
{
    bool recv = wc->wr_id & WRID_RECV;
    bool on_srq = wc->wr_id & WRID_SRQ;
    uint32_t index = (wc->wr_id >> WRID_QP_SHIFT) & VMMBIB_HANDLE_INDEX_MASK;
    uint32_t ring_index = (uint32_t)wc->wr_id;
    struct vmmbib_qp *qp = NULL;
    struct vverbs_qp *vq = NULL;
    struct vmmbib_srq *srq = NULL;
    struct vmmbib_cqe cqe = { 0 };
    struct vmmbib_cq *cq;

    if (on_srq) {
        srq = vmmbib_table_at(&dev->srqs, index);
        qp = srq ? srq_qp(dev, index, wc->qp_num, &vq) : NULL;
    } else {
        qp = vmmbib_table_at(&dev->qps, index);
        vq = dev->verbs->qps[index];
    }
    /* Of a QP destroyed since (its index maybe reused): nobody's. */
    if (!qp || !vq || vq->qp->qp_num != wc->qp_num ||
        (on_srq && qp->srq != srq)) {
        return;
    }
    cqe.qpn = htole32(qp->qpn);
    cqe.wqe_index = htole32(ring_index);
    cqe.status = wc->status <= IBV_WC_GENERAL_ERR ? wc->status :
                 VMMBIB_WC_GENERAL_ERR;
    cqe.vendor_err = wc->vendor_err;
    if (recv) {
        if (on_srq) {
            cqe.wr_id = htole64(dev->verbs->srqs[index]->rq[ring_index &
                                                     (srq->rq.entries - 1)]);
        } else {
            vq->rq_pending -= vq->rq_pending > 0;
            cqe.wr_id = htole64(vq->rq[ring_index & (qp->rq.entries - 1)]);
        }
        cqe.opcode = wc->opcode == IBV_WC_RECV_RDMA_WITH_IMM ?
                     VMMBIB_WC_RECV_RDMA_WITH_IMM : VMMBIB_WC_RECV;
        cqe.byte_len = htole32(wc->byte_len);
        if (wc->wc_flags & IBV_WC_WITH_IMM) {
            cqe.wc_flags = VMMBIB_WC_F_WITH_IMM;
            cqe.imm_data = wc->imm_data;
        }
        if (qp->type == VMMBIB_QPT_UD) {
            /*
             * The sender's host QPN (its guest QPN), the host's SLID and SL;
             * the GRH in the buffer's first 40 bytes is the host's.
             */
            cqe.src_qp = htole32(wc->src_qp);
            cqe.slid = htole16(wc->slid);
            cqe.sl = wc->sl;
            cqe.pkey_index = htole16(wc->pkey_index);
            if (wc->wc_flags & IBV_WC_GRH) {
                cqe.wc_flags |= VMMBIB_WC_F_GRH;
            }
        } else {
            /* RC: the HCA need not say (src_qp is UD's); the path's. */
            cqe.src_qp = qp->attr.dest_qp_num;
            /* The guest's view of the sender: its path's LID. */
            cqe.slid = qp->attr.ah_attr.dlid;
        }
        cq = qp->recv_cq;
        /* A host RQ (or SRQ) that was full has room again. */
        if (srq && srq->rq.consumer != srq->rq.producer) {
            vmmbib_verbs_post_srq_recvs(dev, srq);
        } else if (!srq && qp->rq.consumer != qp->rq.producer) {
            vmmbib_verbs_post_recvs(dev, qp);
        }
    } else {
        const struct vverbs_send_slot *s =
            &vq->sq[ring_index & (qp->sq.entries - 1)];

        vq->sq_pending -= vq->sq_pending > 0;
        cqe.wr_id = htole64(s->wr_id);
        cqe.opcode = vmmbib_wc_opcode_of(s->opcode);
        cqe.byte_len = htole32(cqe.status == VMMBIB_WC_SUCCESS ?
                               s->byte_len : 0);
        cq = qp->send_cq;
    }
    vmmbib_cq_post(dev, cq, &cqe, false);
    /* An error the HCA reports stops the QP, as in the soft engine. */
    if (cqe.status != VMMBIB_WC_SUCCESS &&
        cqe.status != VMMBIB_WC_WR_FLUSH_ERR &&
        qp->state != VMMBIB_QPS_ERR) {
        vmmbib_qp_to_error(dev, qp, 0);
    }
}

void vverbs_cq_poll(struct vmmbib_dev *dev, uint32_t index)
{
    struct ibv_cq *hcq = dev->verbs->cqs[index];
    struct ibv_wc wc[16];
    int n, i;

    if (!hcq) {
        return;
    }
    do {
        n = ibv_poll_cq(hcq, 16, wc);
        for (i = 0; i < n; i++) {
            complete(dev, &wc[i]);
        }
    } while (n == 16);
}

static uint64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

void vverbs_qp_quiesce(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                       bool recv)
{
    struct vverbs_qp *vq = vqp(dev, qp);
    uint64_t end = mono_ns() + 1000000000ull;
    uint32_t sidx = VMMBIB_HANDLE_INDEX(qp->send_cq->handle);
    uint32_t ridx = VMMBIB_HANDLE_INDEX(qp->recv_cq->handle);

    while (vq && (vq->sq_pending || (recv && vq->rq_pending)) &&
           mono_ns() < end) {
        vverbs_cq_poll(dev, sidx);
        if (recv) {
            vverbs_cq_poll(dev, ridx);
        }
        vq = vqp(dev, qp);
    }
}
