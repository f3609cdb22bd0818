/*
 * The responder side of the engine: finding the destination QP on the
 * subnet, taking receive WQEs from an RQ or SRQ, and completing them.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <string.h>

#include "data.h"

struct vmmbib_qp *vmmbib_find_qp(struct vmmbib_engine *eng,
                                 const struct vmmbib_ah_attr *av,
                                 uint32_t qpn, struct vmmbib_dev **dev)
{
    /* A global address names the port by GID, a local one by LID. */
    struct vmmbib_dev *d = av->ah_flags & VMMBIB_AH_GRH ?
                           vmmbib_engine_find_gid(eng, av->dgid) :
                           vmmbib_engine_find_lid(eng, vmmbib_le16(av->dlid));
    struct vmmbib_qp *qp;

    if (!d || qpn == 0 || qpn > VMMBIB_MAX_QPN) {
        return NULL;
    }
    /* QPN 1 is the port's GSI QP; the others are table index + 1. */
    qp = qpn == VMMBIB_GSI_QPN ? d->gsi : vmmbib_table_at(&d->qps, qpn - 1);
    if (!qp || qp->qpn != qpn) {
        return NULL;
    }
    *dev = d;
    return qp;
}

/* A receive WQE's ring slot: its header and SGEs, copied once. */
static int parse_recv(struct vmmbib_dev *dev, struct vmmbib_pd *pd,
                      const struct vmmbib_ring *ring, uint32_t max_sge,
                      struct vmmbib_recv *recv)
{
    uint8_t wqe[VMMBIB_PAGE_SIZE];
    struct vmmbib_recv_wqe hdr;
    const struct vmmbib_sge *sge;
    uint32_t stride = 1u << ring->stride_shift;
    uint32_t i, n;

    recv->wqe_index = ring->consumer;
    memcpy(wqe, vmmbib_pages_at(&ring->pages,
                                (uint64_t)(ring->consumer &
                                           (ring->entries - 1)) << ring->stride_shift),
           stride);
    memcpy(&hdr, wqe, sizeof(hdr));
    recv->wr_id = vmmbib_le64(hdr.wr_id);
    n = vmmbib_le32(hdr.num_sge);
    if (n > max_sge || sizeof(hdr) + (uint64_t)n * sizeof(*sge) > stride) {
        return -1;
    }
    sge = (const struct vmmbib_sge *)(wqe + sizeof(hdr));
    recv->nsegs = 0;
    for (i = 0; i < n; i++) {
        struct vmmbib_seg *seg = &recv->segs[recv->nsegs];
        uint32_t len = vmmbib_le32(sge[i].length);

        if (!len) {
            continue;
        }
        seg->dev = dev;
        seg->addr = vmmbib_le64(sge[i].addr);
        seg->len = len;
        seg->inline_data = NULL;
        if (vmmbib_mr_check(dev, pd, vmmbib_le32(sge[i].lkey), seg->addr,
                            len, VMMBIB_ACCESS_LOCAL_WRITE, &seg->mr)) {
            return -1;
        }
        recv->nsegs++;
    }
    return 0;
}

int vmmbib_recv_take(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                     struct vmmbib_recv *recv)
{
    struct vmmbib_srq *srq = qp->srq;
    struct vmmbib_ring *ring = srq ? &srq->rq : &qp->rq;
    uint32_t max_sge = srq ? srq->max_sge :
                       vmmbib_le32(qp->caps.max_recv_sge);
    int ret;

    if (ring->consumer == ring->producer) {
        return 0;
    }
    ret = parse_recv(dev, srq ? srq->pd : qp->pd, ring, max_sge, recv);
    /* A malformed WQE is consumed too: it completes with an error. */
    ring->consumer++;
    dev->stats.wqes++;
    if (srq && srq->limit && ring->producer - ring->consumer < srq->limit) {
        /* IBA 10.2.9.2: the limit event fires once, then disarms. */
        srq->limit = 0;
        vmmbib_dev_event(dev, VMMBIB_EVENT_SRQ_LIMIT_REACHED, srq->handle,
                         srq->uctx);
    }
    return ret ? -1 : 1;
}

void vmmbib_recv_complete(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                          const struct vmmbib_recv *recv,
                          struct vmmbib_cqe *cqe, bool solicited)
{
    cqe->wr_id = htole64(recv->wr_id);
    cqe->qpn = htole32(qp->qpn);
    cqe->wqe_index = htole32(recv->wqe_index);
    vmmbib_cq_post(dev, qp->recv_cq, cqe, solicited);
}
