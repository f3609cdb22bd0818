/*
 * The requester side of the engine: takes send WQEs from an SQ in guest
 * memory and executes them against the destination QP, which for this
 * software HCA is reached directly in the memory of the subnet's devices.
 * Also doorbells, error handling and flushing.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <endian.h>
#include <string.h>
#include <time.h>

#include "data.h"
#include "sa.h"
#include "verbs/verbs.h"

#define UD_MTU VMMBIB_PAGE_SIZE

static const uint8_t wc_opcode_of[] = {
    [VMMBIB_WR_RDMA_WRITE] = VMMBIB_WC_RDMA_WRITE,
    [VMMBIB_WR_RDMA_WRITE_WITH_IMM] = VMMBIB_WC_RDMA_WRITE,
    [VMMBIB_WR_SEND] = VMMBIB_WC_SEND,
    [VMMBIB_WR_SEND_WITH_IMM] = VMMBIB_WC_SEND,
    [VMMBIB_WR_RDMA_READ] = VMMBIB_WC_RDMA_READ,
    [VMMBIB_WR_ATOMIC_CMP_AND_SWP] = VMMBIB_WC_COMP_SWAP,
    [VMMBIB_WR_ATOMIC_FETCH_AND_ADD] = VMMBIB_WC_FETCH_ADD,
};

uint8_t vmmbib_wc_opcode_of(unsigned int wr_opcode)
{
    return wr_opcode < sizeof(wc_opcode_of) ? wc_opcode_of[wr_opcode] :
                                              VMMBIB_WC_SEND;
}

/* Time the IBA RNR NAK timer code @t stands for (IBA table 45), in ns. */
static uint64_t rnr_timer_ns(uint8_t t)
{
    static const uint32_t us[32] = {
        655360, 10, 20, 30, 40, 60, 80, 120, 160, 240, 320, 480, 640, 960,
        1280, 1920, 2560, 3840, 5120, 7680, 10240, 15360, 20480, 30720,
        40960, 61440, 81920, 122880, 163840, 245760, 327680, 491520,
    };

    return (uint64_t)us[t & 31] * 1000;
}

static void send_cqe(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                     uint64_t wr_id, uint8_t opcode, uint8_t status,
                     uint32_t byte_len)
{
    struct vmmbib_cqe cqe = {
        .wr_id = htole64(wr_id),
        .qpn = htole32(qp->qpn),
        .byte_len = htole32(byte_len),
        .wqe_index = htole32(qp->sq.consumer - 1),
        .opcode = vmmbib_wc_opcode_of(opcode),
        .status = status,
    };

    vmmbib_cq_post(dev, qp->send_cq, &cqe, false);
}

/*
 * The local SGEs of a WQE (or its inline data) as checked segments.
 * Returns the WC status: LOC_LEN_ERR or LOC_PROT_ERR on a bad SGE.
 */
static int local_segs(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                      const struct vmmbib_send_wqe_copy *w, uint32_t stride,
                      uint32_t access, struct vmmbib_seg *segs,
                      unsigned int *nsegs)
{
    const struct vmmbib_sge *sge = (const void *)w->data;
    uint32_t n = w->hdr.num_sge, i;

    *nsegs = 0;
    if (w->hdr.flags & VMMBIB_WQE_INLINE) {
        uint32_t len = vmmbib_le32(w->hdr.inline_len);

        if (len > vmmbib_le32(qp->caps.max_inline_data) ||
            len > stride - sizeof(w->hdr)) {
            return VMMBIB_WC_LOC_LEN_ERR;
        }
        segs[0] = (struct vmmbib_seg) {
            .dev = dev, .len = len, .inline_data = w->data,
        };
        *nsegs = len ? 1 : 0;
        return VMMBIB_WC_SUCCESS;
    }
    if (n > vmmbib_le32(qp->caps.max_send_sge) ||
        sizeof(w->hdr) + (uint64_t)n * sizeof(*sge) > stride) {
        return VMMBIB_WC_LOC_LEN_ERR;
    }
    for (i = 0; i < n; i++) {
        struct vmmbib_seg *seg = &segs[*nsegs];
        uint32_t len = vmmbib_le32(sge[i].length);

        if (!len) {
            continue;
        }
        *seg = (struct vmmbib_seg) {
            .dev = dev, .addr = vmmbib_le64(sge[i].addr), .len = len,
        };
        if (vmmbib_mr_check(dev, qp->pd, vmmbib_le32(sge[i].lkey), seg->addr,
                            len, access, &seg->mr)) {
            return VMMBIB_WC_LOC_PROT_ERR;
        }
        (*nsegs)++;
    }
    return VMMBIB_WC_SUCCESS;
}

/* The responder QP of an RC requester, if it is there and connected. */
static struct vmmbib_qp *rc_peer(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                                 struct vmmbib_dev **peer_dev)
{
    struct vmmbib_qp *peer;

    peer = vmmbib_find_qp(dev->engine, &qp->attr.ah_attr,
                          vmmbib_le32(qp->attr.dest_qp_num), peer_dev);
    /* A packet to a QP not ready to receive is dropped (IBA 9.6.1). */
    if (!peer || peer->type != VMMBIB_QPT_RC ||
        (peer->state != VMMBIB_QPS_RTR && peer->state != VMMBIB_QPS_RTS &&
         peer->state != VMMBIB_QPS_SQD)) {
        return NULL;
    }
    return peer;
}

/* An rkey of the responder, checked as IBA 9.7.5.1.3 says. */
static int remote_seg(struct vmmbib_dev *pdev, struct vmmbib_qp *peer,
                      uint32_t rkey, uint64_t addr, uint64_t len,
                      uint32_t access, struct vmmbib_seg *seg)
{
    uint32_t qp_access = vmmbib_le32(peer->attr.qp_access_flags);

    *seg = (struct vmmbib_seg) { .dev = pdev, .addr = addr, .len = len };
    if (!(qp_access & access) ||
        vmmbib_mr_check(pdev, peer->pd, rkey, addr, len, access, &seg->mr)) {
        return -1;
    }
    return 0;
}

/* Responder side of an error the requester caused: it goes to ERR too. */
static int responder_error(struct vmmbib_dev *pdev, struct vmmbib_qp *peer,
                           uint16_t event, int requester_status)
{
    vmmbib_qp_to_error(pdev, peer, event);
    return requester_status;
}

static bool can_receive(const struct vmmbib_qp *qp)
{
    return qp->state == VMMBIB_QPS_RTR || qp->state == VMMBIB_QPS_RTS ||
           qp->state == VMMBIB_QPS_SQD ||
           (qp->state == VMMBIB_QPS_SQE && vmmbib_qpt_is_ud(qp->type));
}

/* The receive ring a delivery to @qp takes from. */
static struct vmmbib_ring *recv_ring(struct vmmbib_qp *qp)
{
    return qp->srq ? &qp->srq->rq : &qp->rq;
}

/*
 * After a copy to @peer without the lock: another thread may have moved
 * it to ERR meanwhile, and left to us what the copy kept it from doing.
 */
static void peer_after_copy(struct vmmbib_dev *pdev, struct vmmbib_qp *peer)
{
    if (peer->state != VMMBIB_QPS_ERR) {
        return;
    }
    vmmbib_qp_flush(pdev, peer);
    if (peer->last_wqe_pending) {
        peer->last_wqe_pending = false;
        vmmbib_dev_event(pdev, VMMBIB_EVENT_QP_LAST_WQE_REACHED,
                         peer->handle, peer->uctx);
    }
}

/*
 * Deliver a SEND or an immediate from @dev's SQ @sq to @peer: take a
 * receive WQE, scatter @src into it after @skip bytes, complete it.  With
 * @grh (UD), @skip is the GRH area and the @grh bytes go there.  *status
 * is the requester's completion status when the result is REMOTE_ERROR.
 * NO_PEER if @peer no longer receives (another thread moved it to ERR),
 * BUSY if another thread's delivery to its receive ring is in flight.
 */
static enum vmmbib_deliver deliver(struct vmmbib_dev *dev,
                                   struct vmmbib_ring *sq,
                                   struct vmmbib_dev *pdev,
                                   struct vmmbib_qp *peer,
                                   const struct vmmbib_seg *src,
                                   unsigned int nsrc, uint64_t skip,
                                   const uint8_t *grh,
                                   struct vmmbib_cqe *cqe, bool solicited,
                                   bool copy, int *status)
{
    static __thread struct vmmbib_recv recv;
    uint64_t len = vmmbib_sg_len(src, nsrc);
    struct vmmbib_seg grh_seg = {
        .dev = pdev, .len = skip, .inline_data = grh,
    };
    struct vmmbib_ring *ring = recv_ring(peer);
    int got, failed;

    if (!can_receive(peer)) {
        return VMMBIB_NO_PEER;
    }
    if (ring->inflight) {
        return VMMBIB_BUSY;
    }
    got = vmmbib_recv_take(pdev, peer, &recv);
    if (got == 0) {
        return VMMBIB_RNR;
    }
    if (got < 0) {
        cqe->status = VMMBIB_WC_LOC_PROT_ERR;
        vmmbib_recv_complete(pdev, peer, &recv, cqe, true);
        *status = responder_error(pdev, peer, VMMBIB_EVENT_QP_ACCESS_ERR,
                                  VMMBIB_WC_REM_OP_ERR);
        return VMMBIB_REMOTE_ERROR;
    }
    failed = copy && (skip + len > vmmbib_sg_len(recv.segs, recv.nsegs) ||
                      (grh && vmmbib_sg_copy(recv.segs, recv.nsegs, 0,
                                             &grh_seg, 1, skip)));
    if (copy && !failed) {
        peer->recv_inflight = true;
        failed = vmmbib_engine_copy(dev, sq, pdev, ring, recv.segs,
                                    recv.nsegs, skip, src, nsrc, len);
        peer->recv_inflight = false;
    }
    if (failed) {
        cqe->status = VMMBIB_WC_LOC_LEN_ERR;
        cqe->byte_len = 0;
        vmmbib_recv_complete(pdev, peer, &recv, cqe, true);
        if (vmmbib_qpt_is_ud(peer->type)) {
            peer_after_copy(pdev, peer);
            return VMMBIB_DELIVERED;    /* UD: only that receive fails */
        }
        *status = responder_error(pdev, peer, VMMBIB_EVENT_QP_REQ_ERR,
                                  VMMBIB_WC_REM_INV_REQ_ERR);
        peer_after_copy(pdev, peer);
        return VMMBIB_REMOTE_ERROR;
    }
    cqe->status = VMMBIB_WC_SUCCESS;
    vmmbib_recv_complete(pdev, peer, &recv, cqe, solicited);
    peer_after_copy(pdev, peer);
    return VMMBIB_DELIVERED;
}

static enum vmmbib_deliver exec_rc(struct vmmbib_dev *dev,
                                   struct vmmbib_qp *qp,
                                   const struct vmmbib_send_wqe_copy *w, uint32_t stride,
                                   uint32_t *byte_len, int *status)
{
    static __thread struct vmmbib_seg segs[VMMBIB_MAX_WQE_SGE];
    const struct vmmbib_send_wqe *h = &w->hdr;
    bool solicited = h->flags & VMMBIB_WQE_SOLICITED;
    struct vmmbib_dev *pdev;
    struct vmmbib_qp *peer;
    struct vmmbib_seg rseg;
    struct vmmbib_cqe rcqe = {
        .src_qp = htole32(qp->qpn),
        .slid = htole16(dev->lid),
        .imm_data = h->imm_data,
    };
    uint32_t rkey = vmmbib_le32(h->rdma.rkey);
    uint64_t raddr = vmmbib_le64(h->rdma.remote_addr);
    unsigned int n;
    uint64_t len;

    /* READ and atomics write into the local SGEs; the rest read them. */
    *status = local_segs(dev, qp, w, stride,
                         h->opcode == VMMBIB_WR_RDMA_READ ||
                         h->opcode >= VMMBIB_WR_ATOMIC_CMP_AND_SWP ?
                         VMMBIB_ACCESS_LOCAL_WRITE : 0, segs, &n);
    if (*status != VMMBIB_WC_SUCCESS) {
        return VMMBIB_REMOTE_ERROR;
    }
    len = vmmbib_sg_len(segs, n);
    if (len > (1ull << 31)) {
        *status = VMMBIB_WC_LOC_LEN_ERR;
        return VMMBIB_REMOTE_ERROR;
    }
    *byte_len = len;
    peer = rc_peer(dev, qp, &pdev);
    if (!peer) {
        return VMMBIB_NO_PEER;
    }
    if (peer->state == VMMBIB_QPS_RTR && !peer->comm_est) {
        /* IBA 11.6.3.1: the first packet that reaches a QP in RTR. */
        peer->comm_est = true;
        vmmbib_dev_event(pdev, VMMBIB_EVENT_COMM_EST, peer->handle,
                         peer->uctx);
    }

    switch (h->opcode) {
    case VMMBIB_WR_SEND:
    case VMMBIB_WR_SEND_WITH_IMM:
        rcqe.opcode = VMMBIB_WC_RECV;
        rcqe.byte_len = htole32(len);
        rcqe.wc_flags = h->opcode == VMMBIB_WR_SEND_WITH_IMM ?
                        VMMBIB_WC_F_WITH_IMM : 0;
        return deliver(dev, &qp->sq, pdev, peer, segs, n, 0, NULL, &rcqe,
                       solicited, true, status);
    case VMMBIB_WR_RDMA_WRITE:
    case VMMBIB_WR_RDMA_WRITE_WITH_IMM:
        if (remote_seg(pdev, peer, rkey, raddr, len,
                       VMMBIB_ACCESS_REMOTE_WRITE, &rseg)) {
            *status = responder_error(pdev, peer, VMMBIB_EVENT_QP_ACCESS_ERR,
                                      VMMBIB_WC_REM_ACCESS_ERR);
            return VMMBIB_REMOTE_ERROR;
        }
        if (h->opcode == VMMBIB_WR_RDMA_WRITE_WITH_IMM) {
            /* The immediate needs a receive WQE before anything lands. */
            struct vmmbib_ring *ring = recv_ring(peer);

            if (ring->inflight) {
                return VMMBIB_BUSY;
            }
            if (ring->consumer == ring->producer) {
                return VMMBIB_RNR;
            }
        }
        if (len && vmmbib_engine_copy(dev, &qp->sq, pdev, NULL, &rseg, 1, 0,
                                      segs, n, len)) {
            *status = VMMBIB_WC_LOC_PROT_ERR;
            return VMMBIB_REMOTE_ERROR;
        }
        if (h->opcode == VMMBIB_WR_RDMA_WRITE ||
            qp->state == VMMBIB_QPS_ERR) {
            /* In ERR (moved there during the copy) run_one flushes it. */
            return VMMBIB_DELIVERED;
        }
        rcqe.opcode = VMMBIB_WC_RECV_RDMA_WITH_IMM;
        rcqe.byte_len = htole32(len);
        rcqe.wc_flags = VMMBIB_WC_F_WITH_IMM;
        return deliver(dev, &qp->sq, pdev, peer, NULL, 0, 0, NULL, &rcqe,
                       solicited, false, status);
    case VMMBIB_WR_RDMA_READ:
        if (remote_seg(pdev, peer, rkey, raddr, len,
                       VMMBIB_ACCESS_REMOTE_READ, &rseg)) {
            *status = responder_error(pdev, peer, VMMBIB_EVENT_QP_ACCESS_ERR,
                                      VMMBIB_WC_REM_ACCESS_ERR);
            return VMMBIB_REMOTE_ERROR;
        }
        if (len && vmmbib_engine_copy(dev, &qp->sq, pdev, NULL, segs, n, 0,
                                      &rseg, 1, len)) {
            *status = VMMBIB_WC_LOC_PROT_ERR;
            return VMMBIB_REMOTE_ERROR;
        }
        return VMMBIB_DELIVERED;
    default:
        break;
    }

    /* Atomics: one 8-byte aligned target, an 8-byte local result. */
    raddr = vmmbib_le64(h->atomic.remote_addr);
    rkey = vmmbib_le32(h->atomic.rkey);
    if (len != 8 || n != 1) {
        *status = VMMBIB_WC_LOC_LEN_ERR;
        return VMMBIB_REMOTE_ERROR;
    }
    *byte_len = 8;
    if (raddr & 7) {
        /* IBA 9.4.5: a misaligned atomic is an invalid request. */
        *status = responder_error(pdev, peer, VMMBIB_EVENT_QP_REQ_ERR,
                                  VMMBIB_WC_REM_INV_REQ_ERR);
        return VMMBIB_REMOTE_ERROR;
    }
    if (remote_seg(pdev, peer, rkey, raddr, 8, VMMBIB_ACCESS_REMOTE_ATOMIC,
                   &rseg)) {
        *status = responder_error(pdev, peer, VMMBIB_EVENT_QP_ACCESS_ERR,
                                  VMMBIB_WC_REM_ACCESS_ERR);
        return VMMBIB_REMOTE_ERROR;
    } else {
        uint64_t *target = (uint64_t *)vmmbib_seg_ptr8(&rseg);
        uint64_t old, result;
        struct vmmbib_seg res = { .dev = dev, .len = 8,
                                  .inline_data = (uint8_t *)&result };

        if (!target) {
            *status = VMMBIB_WC_REM_ACCESS_ERR;
            return VMMBIB_REMOTE_ERROR;
        }
        if (h->opcode == VMMBIB_WR_ATOMIC_CMP_AND_SWP) {
            old = vmmbib_le64(h->atomic.compare_add);
            /* IB atomics are in the responder's byte order (little). */
            __atomic_compare_exchange_n(target, &old,
                                        vmmbib_le64(h->atomic.swap), false,
                                        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
        } else {
            old = __atomic_fetch_add(target, vmmbib_le64(h->atomic.compare_add),
                                     __ATOMIC_SEQ_CST);
        }
        result = old;
        if (vmmbib_sg_copy(segs, n, 0, &res, 1, 8)) {
            *status = VMMBIB_WC_LOC_PROT_ERR;
            return VMMBIB_REMOTE_ERROR;
        }
    }
    return VMMBIB_DELIVERED;
}

/* IBA 9.2 and 9.3: the headers a UD SEND carries after the GRH. */
#define BTH_SIZE    12
#define DETH_SIZE   8
#define IMMDT_SIZE  4
#define ICRC_SIZE   4
#define GRH_NEXT_HEADER_BTH 0x1b

/*
 * The GRH a datagram from @dev's port through @av would carry (IBA 8.3.1),
 * as the responder puts it in the first 40 bytes of the receive buffer.
 * PayLen counts what follows the GRH up to the ICRC: the transport
 * headers and the payload padded to 4 bytes.
 */
static void build_grh(uint8_t *grh, const struct vmmbib_dev *dev,
                      const struct vmmbib_ah_attr *av, uint64_t len,
                      bool imm)
{
    uint32_t word0 = 6u << 28 | (uint32_t)av->traffic_class << 20 |
                     (vmmbib_le32(av->flow_label) & 0xfffff);
    uint16_t paylen = BTH_SIZE + DETH_SIZE + (imm ? IMMDT_SIZE : 0) +
                      ((len + 3) & ~3ull) + ICRC_SIZE;

    word0 = htobe32(word0);
    paylen = htobe16(paylen);
    memcpy(grh, &word0, 4);
    memcpy(grh + 4, &paylen, 2);
    grh[6] = GRH_NEXT_HEADER_BTH;
    grh[7] = av->hop_limit;
    vmmbib_port_gid(dev, grh + 8);
    memcpy(grh + 24, av->dgid, 16);
}

/*
 * A datagram to QP1 at the sender's own port, which is its SM LID (or
 * GID): SubnAdm MADs go to the engine's subnet administrator (sa.c),
 * whose response @qp receives at once, from QP1 and the SM LID.  Returns
 * false for anything else, which the port's own GSI QP receives.
 */
static bool sa_exchange(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                        const struct vmmbib_ah_attr *av,
                        const struct vmmbib_seg *segs, unsigned int n,
                        uint64_t len, uint32_t qkey, bool imm)
{
    static __thread uint8_t req[VMMBIB_MAD_SIZE], resp[VMMBIB_MAD_SIZE];
    struct vmmbib_seg req_seg = {
        .dev = dev, .len = sizeof(req), .inline_data = req,
    };
    struct vmmbib_seg resp_seg = {
        .dev = dev, .len = sizeof(resp), .inline_data = resp,
    };
    bool global = av->ah_flags & VMMBIB_AH_GRH;
    uint8_t gid[16], grh[VMMBIB_GRH_SIZE];
    struct vmmbib_cqe cqe = {
        .opcode = VMMBIB_WC_RECV,
        .byte_len = htole32(VMMBIB_MAD_SIZE + VMMBIB_GRH_SIZE),
        .src_qp = htole32(VMMBIB_GSI_QPN),
        .slid = htole16(dev->lid),
        .sl = av->sl,
        .wc_flags = global ? VMMBIB_WC_F_GRH : 0,
    };
    int status;

    vmmbib_port_gid(dev, gid);
    if (global ? memcmp(av->dgid, gid, sizeof(gid)) :
        vmmbib_le16(av->dlid) != dev->lid) {
        return false;
    }
    if (len < VMMBIB_MAD_HDR_SIZE ||
        vmmbib_sg_copy(&req_seg, 1, 0, segs, n,
                       len < sizeof(req) ? len : sizeof(req)) ||
        req[1] != VMMBIB_MGMT_CLASS_SUBN_ADM) {
        return false;
    }
    /* QP1 takes only Q_Key 0x80010000; a MAD is 256 bytes, no more. */
    dev->stats.sa_requests++;
    if (qkey != VMMBIB_GSI_QKEY || imm || len != VMMBIB_MAD_SIZE ||
        vmmbib_sa_answer(dev, req, resp)) {
        dev->stats.sa_dropped++;
        return true;
    }
    if (qp->state != VMMBIB_QPS_RTR && qp->state != VMMBIB_QPS_RTS &&
        qp->state != VMMBIB_QPS_SQD && qp->state != VMMBIB_QPS_SQE) {
        return true;
    }
    if (global) {
        build_grh(grh, dev, av, VMMBIB_MAD_SIZE, false);
    }
    /* No receive posted (or busy): the response is lost, as on a wire. */
    deliver(dev, &qp->sq, dev, qp, &resp_seg, 1, VMMBIB_GRH_SIZE,
            global ? grh : NULL, &cqe, false, true, &status);
    return true;
}

static enum vmmbib_deliver exec_ud(struct vmmbib_dev *dev,
                                   struct vmmbib_qp *qp,
                                   const struct vmmbib_send_wqe_copy *w, uint32_t stride,
                                   uint32_t *byte_len, int *status)
{
    static __thread struct vmmbib_seg segs[VMMBIB_MAX_WQE_SGE];
    const struct vmmbib_send_wqe *h = &w->hdr;
    struct vmmbib_ah *ah = vmmbib_table_lookup(&dev->ahs,
                                               vmmbib_le32(h->ud.ah_handle));
    uint32_t qkey = vmmbib_le32(h->ud.remote_qkey);
    bool imm = h->opcode == VMMBIB_WR_SEND_WITH_IMM;
    uint8_t grh[VMMBIB_GRH_SIZE];
    bool global;
    struct vmmbib_dev *pdev;
    struct vmmbib_qp *peer;
    struct vmmbib_cqe rcqe = { .opcode = VMMBIB_WC_RECV };
    unsigned int n;
    uint64_t len;

    if (h->opcode != VMMBIB_WR_SEND && !imm) {
        *status = VMMBIB_WC_LOC_QP_OP_ERR;
        return VMMBIB_REMOTE_ERROR;
    }
    if (!ah || ah->uctx != qp->uctx || ah->pd != qp->pd) {
        *status = VMMBIB_WC_LOC_QP_OP_ERR;
        return VMMBIB_REMOTE_ERROR;
    }
    *status = local_segs(dev, qp, w, stride, 0, segs, &n);
    if (*status != VMMBIB_WC_SUCCESS) {
        return VMMBIB_REMOTE_ERROR;
    }
    len = vmmbib_sg_len(segs, n);
    if (len > UD_MTU) {
        *status = VMMBIB_WC_LOC_LEN_ERR;
        return VMMBIB_REMOTE_ERROR;
    }
    *byte_len = len;
    *status = VMMBIB_WC_SUCCESS;
    /* Q_Key with the high bit set means "use the QP's" (IBA 10.2.5). */
    if (qkey & 0x80000000u) {
        qkey = vmmbib_le32(qp->attr.qkey);
    }
    if (vmmbib_le32(h->ud.remote_qpn) == VMMBIB_GSI_QPN &&
        sa_exchange(dev, qp, &ah->attr, segs, n, len, qkey, imm)) {
        return VMMBIB_DELIVERED;
    }
    peer = vmmbib_find_qp(dev->engine, &ah->attr,
                          vmmbib_le32(h->ud.remote_qpn), &pdev);
    /* Unreliable: a datagram nobody can take is dropped, not an error. */
    if (!peer || !vmmbib_qpt_is_ud(peer->type) ||
        (peer->state != VMMBIB_QPS_RTR && peer->state != VMMBIB_QPS_RTS &&
         peer->state != VMMBIB_QPS_SQD && peer->state != VMMBIB_QPS_SQE) ||
        vmmbib_le32(peer->attr.qkey) != qkey) {
        return VMMBIB_DELIVERED;
    }
    global = ah->attr.ah_flags & VMMBIB_AH_GRH;
    if (global) {
        build_grh(grh, dev, &ah->attr, len, imm);
    }
    rcqe.byte_len = htole32(len + VMMBIB_GRH_SIZE);
    rcqe.src_qp = htole32(qp->qpn);
    rcqe.slid = htole16(dev->lid);
    rcqe.sl = ah->attr.sl;
    rcqe.imm_data = h->imm_data;
    rcqe.wc_flags = (imm ? VMMBIB_WC_F_WITH_IMM : 0) |
                    (global ? VMMBIB_WC_F_GRH : 0);
    /*
     * The receiver's first 40 bytes are the GRH area, then the payload.
     * Without a GRH on the wire the area is left as it was (IBA 11.4.1.1).
     */
    switch (deliver(dev, &qp->sq, pdev, peer, segs, n, VMMBIB_GRH_SIZE,
                    global ? grh : NULL, &rcqe,
                    h->flags & VMMBIB_WQE_SOLICITED, true, status)) {
    case VMMBIB_BUSY:
        return VMMBIB_BUSY;     /* another thread delivers there: retry */
    case VMMBIB_RNR:
    case VMMBIB_NO_PEER:
        *status = VMMBIB_WC_SUCCESS;    /* dropped */
        break;
    default:
        break;
    }
    return VMMBIB_DELIVERED;
}

/*
 * Execute the WQE at the SQ head.  Returns false if it must wait (RNR
 * backoff); the WQE then stays at the head.
 */
static bool run_one(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                    uint64_t now_ns)
{
    static __thread struct vmmbib_send_wqe_copy w;
    uint32_t stride = 1u << qp->sq.stride_shift;
    enum vmmbib_deliver result;
    uint32_t byte_len = 0;
    int status = VMMBIB_WC_SUCCESS;
    bool signaled;

    memcpy(&w, vmmbib_pages_at(&qp->sq.pages,
                               (uint64_t)(qp->sq.consumer &
                                          (qp->sq.entries - 1)) <<
                               qp->sq.stride_shift), stride);
    if (w.hdr.opcode > VMMBIB_WR_ATOMIC_FETCH_AND_ADD ||
        (w.hdr.flags & ~(VMMBIB_WQE_SIGNALED | VMMBIB_WQE_SOLICITED |
                         VMMBIB_WQE_INLINE | VMMBIB_WQE_FENCE))) {
        result = VMMBIB_REMOTE_ERROR;
        status = VMMBIB_WC_LOC_QP_OP_ERR;
    } else if (qp->type == VMMBIB_QPT_RC) {
        result = exec_rc(dev, qp, &w, stride, &byte_len, &status);
    } else {
        result = exec_ud(dev, qp, &w, stride, &byte_len, &status);
    }
    qp->recv_busy = result == VMMBIB_BUSY;
    if (qp->state == VMMBIB_QPS_ERR) {
        /*
         * The QP was its own responder (loopback) and a bad receive WQE
         * moved it to ERR, or another thread did during a copy: its SQ,
         * this WQE included, is flushed (here, if the copy kept it from
         * being flushed then).
         */
        vmmbib_qp_flush(dev, qp);
        return true;
    }
    if (result == VMMBIB_BUSY) {
        return false;   /* the WQE stays at the head; soon again */
    }

    if (result == VMMBIB_RNR || result == VMMBIB_NO_PEER) {
        uint8_t retry = result == VMMBIB_RNR ? qp->attr.rnr_retry :
                        qp->attr.retry_cnt;
        /* An RNR NAK carries the responder's timer (IBA 9.7.5.2.8). */
        struct vmmbib_dev *pdev;
        struct vmmbib_qp *peer = result == VMMBIB_RNR ?
                                 rc_peer(dev, qp, &pdev) : NULL;
        uint8_t timer = peer ? peer->attr.min_rnr_timer :
                        qp->attr.min_rnr_timer;

        if (!qp->rnr_deadline_ns) {
            /* First attempt at this WQE: arm the retry budget. */
            qp->rnr_retries = retry;
        }
        if (result == VMMBIB_RNR && retry == 7) {
            qp->rnr_deadline_ns = now_ns + rnr_timer_ns(timer);
            return false;   /* 7 means retry forever (IBA 9.7.5.2.8) */
        }
        if (qp->rnr_retries) {
            qp->rnr_retries--;
            qp->rnr_deadline_ns = now_ns +
                (result == VMMBIB_RNR ? rnr_timer_ns(timer) :
                 /* 4.096 us * 2^timeout, at least 1 ms here */
                 (4096ull << (qp->attr.timeout < 8 ? 8 : qp->attr.timeout)));
            return false;
        }
        status = result == VMMBIB_RNR ? VMMBIB_WC_RNR_RETRY_EXC_ERR :
                 VMMBIB_WC_RETRY_EXC_ERR;
    }
    qp->rnr_deadline_ns = 0;
    qp->sq.consumer++;
    dev->stats.wqes++;
    signaled = qp->sq_sig_all || (w.hdr.flags & VMMBIB_WQE_SIGNALED);
    if (status != VMMBIB_WC_SUCCESS) {
        /*
         * An error always completes, and the queue stops (IBA 10.8.3):
         * a reliable QP goes to ERR, a UD QP only loses its SQ (SQE)
         * and keeps receiving (IBA 10.3.1.6).
         */
        send_cqe(dev, qp, vmmbib_le64(w.hdr.wr_id), w.hdr.opcode, status, 0);
        if (vmmbib_qpt_is_ud(qp->type)) {
            vmmbib_qp_to_sqe(dev, qp);
        } else {
            vmmbib_qp_to_error(dev, qp, 0);
        }
        return true;
    }
    if (signaled) {
        send_cqe(dev, qp, vmmbib_le64(w.hdr.wr_id), w.hdr.opcode, status,
                 byte_len);
    }
    return true;
}

static void flush_ring(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                       struct vmmbib_ring *ring, bool send);

bool vmmbib_qp_has_sq_work(const struct vmmbib_qp *qp)
{
    return (qp->state == VMMBIB_QPS_RTS &&
            qp->sq.consumer != qp->sq.producer) ||
           (qp->state == VMMBIB_QPS_SQD && qp->sq_draining);
}

/*
 * SQD: no new WQE starts, the one begun before the transition (waiting
 * out an RNR NAK or a timeout) finishes; then the SQ is drained and, if
 * the transition asked for it, SQ_DRAINED tells the guest (IBA 10.3.1.5).
 */
static unsigned int sq_drain(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                             uint64_t now_ns)
{
    unsigned int done = 0;

    if (!qp->sq_draining) {
        return 0;
    }
    if (qp->rnr_deadline_ns) {
        if (now_ns < qp->rnr_deadline_ns || !run_one(dev, qp, now_ns)) {
            return 0;
        }
        done = 1;
        if (qp->state != VMMBIB_QPS_SQD) {
            return done;    /* it failed: the QP left SQD for ERR */
        }
    }
    qp->sq_draining = false;
    if (qp->attr.en_sqd_async_notify) {
        vmmbib_dev_event(dev, VMMBIB_EVENT_SQ_DRAINED, qp->handle, qp->uctx);
    }
    return done;
}

unsigned int vmmbib_qp_run_sq(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                              unsigned int budget, uint64_t now_ns)
{
    unsigned int done = 0;

    qp->recv_busy = false;
    switch (qp->state) {
    case VMMBIB_QPS_ERR:
        vmmbib_qp_flush(dev, qp);
        return 0;
    case VMMBIB_QPS_SQE:
        /* WQEs posted in SQE complete as flushed (IBA 10.3.1.6). */
        flush_ring(dev, qp, &qp->sq, true);
        return 0;
    case VMMBIB_QPS_SQD:
        return sq_drain(dev, qp, now_ns);
    case VMMBIB_QPS_RTS:
        break;
    default:
        return 0;   /* posted WQEs wait for RTS */
    }
    /* GSI stays with the engine's SA and MAD delivery (design-verbs.md). */
    if (dev->verbs && qp->type != VMMBIB_QPT_GSI) {
        return vmmbib_verbs_run_sq(dev, qp, budget);
    }
    while (done < budget && qp->sq.consumer != qp->sq.producer &&
           qp->state == VMMBIB_QPS_RTS) {
        if (qp->rnr_deadline_ns && now_ns < qp->rnr_deadline_ns) {
            break;
        }
        if (!run_one(dev, qp, now_ns)) {
            break;
        }
        done++;
    }
    return done;
}

static void flush_ring(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                       struct vmmbib_ring *ring, bool send)
{
    if (ring->inflight) {
        /*
         * A copy without the lock serves this ring's WQE: the thread that
         * runs it flushes when it is done (run_one, peer_after_copy), so
         * that no buffer completes while copied and CQEs stay in order.
         */
        return;
    }
    while (ring->consumer != ring->producer) {
        const uint8_t *wqe = vmmbib_pages_at(&ring->pages,
                                             (uint64_t)(ring->consumer &
                                                        (ring->entries - 1)) <<
                                             ring->stride_shift);
        uint64_t wr_id;
        struct vmmbib_cqe cqe = {
            .qpn = htole32(qp->qpn),
            .status = VMMBIB_WC_WR_FLUSH_ERR,
            .wqe_index = htole32(ring->consumer),
            .opcode = VMMBIB_WC_RECV,
        };

        memcpy(&wr_id, wqe, sizeof(wr_id));
        cqe.wr_id = wr_id;
        if (send) {
            uint8_t op = wqe[offsetof(struct vmmbib_send_wqe, opcode)];

            cqe.opcode = vmmbib_wc_opcode_of(op);
        }
        ring->consumer++;
        vmmbib_cq_post(dev, send ? qp->send_cq : qp->recv_cq, &cqe, false);
    }
}

void vmmbib_qp_flush(struct vmmbib_dev *dev, struct vmmbib_qp *qp)
{
    /* Each queue's outstanding WQEs complete with WR_FLUSH_ERR. */
    flush_ring(dev, qp, &qp->sq, true);
    if (!qp->srq) {
        flush_ring(dev, qp, &qp->rq, false);
    }
}

void vmmbib_qp_to_sqe(struct vmmbib_dev *dev, struct vmmbib_qp *qp)
{
    qp->state = VMMBIB_QPS_SQE;
    qp->rnr_deadline_ns = 0;
    qp->sq_draining = false;
    vmmbib_engine_qp_forget(dev->engine, qp);
    flush_ring(dev, qp, &qp->sq, true);
}

void vmmbib_qp_to_error(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                        uint16_t event)
{
    bool was_error = qp->state == VMMBIB_QPS_ERR;

    qp->state = VMMBIB_QPS_ERR;
    qp->rnr_deadline_ns = 0;
    qp->sq_draining = false;
    vmmbib_engine_qp_forget(dev->engine, qp);
    if (dev->verbs) {
        /* What the host QP holds completes before the rest is flushed. */
        vmmbib_verbs_qp_to_error(dev, qp);
    }
    vmmbib_qp_flush(dev, qp);
    if (!was_error && event) {
        vmmbib_dev_event(dev, event, qp->handle, qp->uctx);
    }
    if (!was_error && qp->srq) {
        if (qp->recv_inflight) {
            /* After the SRQ WQE being delivered to it completes. */
            qp->last_wqe_pending = true;
        } else {
            vmmbib_dev_event(dev, VMMBIB_EVENT_QP_LAST_WQE_REACHED,
                             qp->handle, qp->uctx);
        }
    }
}

/*
 * A new producer index for @ring.  Doorbells of one queue may arrive out of
 * order (one from the ring, a later one through the trapped register when
 * the ring was full): an index not newer than the last says nothing new.
 * A newer one may advance the queue by at most its size.
 */
static bool ring_advance(struct vmmbib_ring *ring, uint32_t producer)
{
    if ((int32_t)(producer - ring->producer) <= 0) {
        return true;
    }
    if (producer - ring->consumer > ring->entries) {
        return false;
    }
    ring->producer = producer;
    return true;
}

void vmmbib_doorbell_execute(struct vmmbib_dev *dev,
                             struct vmmbib_ucontext *uctx, uint64_t db)
{
    unsigned int kind = (db >> VMMBIB_DB_KIND_SHIFT) & VMMBIB_DB_KIND_MASK;
    uint32_t index = (db >> VMMBIB_DB_QUEUE_SHIFT) & VMMBIB_DB_QUEUE_MASK;
    uint32_t value = db & VMMBIB_DB_VALUE_MASK;
    struct vmmbib_qp *qp = NULL;
    struct vmmbib_srq *srq;
    struct vmmbib_cq *cq;

    dev->stats.doorbells++;
    if (kind == VMMBIB_DB_KIND_SQ || kind == VMMBIB_DB_KIND_RQ) {
        qp = vmmbib_table_at(&dev->qps, index);
    }
    switch (kind) {
    case VMMBIB_DB_KIND_SQ:
        if (!qp || qp->uctx != uctx) {
            break;
        }
        if (!ring_advance(&qp->sq, value)) {
            vmmbib_qp_to_error(dev, qp, VMMBIB_EVENT_QP_FATAL);
        } else {
            vmmbib_engine_qp_activate(dev->engine, qp);
        }
        return;
    case VMMBIB_DB_KIND_RQ:
        if (!qp || qp->uctx != uctx || qp->srq) {
            break;
        }
        if (!ring_advance(&qp->rq, value)) {
            vmmbib_qp_to_error(dev, qp, VMMBIB_EVENT_QP_FATAL);
        } else if (qp->state == VMMBIB_QPS_ERR) {
            vmmbib_qp_flush(dev, qp);
        } else if (dev->verbs) {
            vmmbib_verbs_post_recvs(dev, qp);
        }
        return;
    case VMMBIB_DB_KIND_SRQ:
        srq = vmmbib_table_at(&dev->srqs, index);
        if (!srq || srq->uctx != uctx) {
            break;
        }
        if (!ring_advance(&srq->rq, value)) {
            vmmbib_dev_event(dev, VMMBIB_EVENT_SRQ_ERR, srq->handle,
                             srq->uctx);
        } else if (dev->verbs) {
            vmmbib_verbs_post_srq_recvs(dev, srq);
        }
        return;
    case VMMBIB_DB_KIND_CQ_ARM:
        cq = vmmbib_table_at(&dev->cqs, index);
        if (!cq || cq->uctx != uctx || value > VMMBIB_DB_ARM_SOLICITED) {
            break;
        }
        /* A stronger request wins over a pending solicited-only one. */
        if (!cq->armed || value == VMMBIB_DB_ARM_NEXT) {
            cq->armed = 1 + value;
        }
        return;
    default:
        break;
    }
    dev->stats.bad_doorbells++;
}
