/*
 * The data path's internal interfaces: scatter/gather segments (mem.c),
 * the requester (requester.c) and the responder (responder.c).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef VMMBIB_DATA_H
#define VMMBIB_DATA_H

#include "internal.h"

/* Most SGEs a WQE can carry: the max-*-sge limit of device.c. */
#define VMMBIB_MAX_WQE_SGE  64

/* A send WQE copied out of the ring once, before any check. */
struct vmmbib_send_wqe_copy {
    struct vmmbib_send_wqe hdr;
    uint8_t data[VMMBIB_PAGE_SIZE - sizeof(struct vmmbib_send_wqe)];
};

/* The completion opcode of send WQE opcode @wr_opcode (SEND if unknown). */
uint8_t vmmbib_wc_opcode_of(unsigned int wr_opcode);

/* A checked range of guest memory, or inline data. */
struct vmmbib_seg {
    struct vmmbib_dev *dev;
    struct vmmbib_mr *mr;
    uint64_t addr;
    uint64_t len;
    const uint8_t *inline_data;
};

/* 0, or -1 if the key does not grant @access to [addr, addr + len). */
int vmmbib_mr_check(struct vmmbib_dev *dev, struct vmmbib_pd *pd,
                    uint32_t key, uint64_t addr, uint64_t len,
                    uint32_t access, struct vmmbib_mr **out);
uint64_t vmmbib_sg_len(const struct vmmbib_seg *segs, unsigned int n);
/* Copy @len bytes; -1 if a list is too short or memory vanished. */
int vmmbib_sg_copy(const struct vmmbib_seg *dst, unsigned int ndst,
                   uint64_t dst_skip, const struct vmmbib_seg *src,
                   unsigned int nsrc, uint64_t len);
/* Host address of 8 bytes at the start of @seg, or NULL. */
uint8_t *vmmbib_seg_ptr8(const struct vmmbib_seg *seg);

/* A receive WQE taken from an RQ or SRQ, its SGEs checked. */
struct vmmbib_recv {
    uint64_t wr_id;
    uint32_t wqe_index;
    unsigned int nsegs;
    struct vmmbib_seg segs[VMMBIB_MAX_WQE_SGE];
};

/* What a requester learns from delivering to a responder. */
enum vmmbib_deliver {
    VMMBIB_DELIVERED,
    VMMBIB_RNR,             /* no receive WQE: retry later */
    VMMBIB_NO_PEER,         /* nobody answers: the requester times out */
    VMMBIB_REMOTE_ERROR,    /* the responder rejected it: status given */
    VMMBIB_BUSY,            /* another thread's delivery holds the RQ */
};

/*
 * engine.c: copy as vmmbib_sg_copy does, for a WQE of @sq (the requester
 * @dev's) into or from the memory of @pdev; @rq is the receive ring the
 * copy delivers to, or NULL.  With several engine threads a large copy
 * runs without the engine lock: the caller must check again, after, what
 * other threads may have changed (a QP gone to ERR).
 */
int vmmbib_engine_copy(struct vmmbib_dev *dev, struct vmmbib_ring *sq,
                       struct vmmbib_dev *pdev, struct vmmbib_ring *rq,
                       const struct vmmbib_seg *dst, unsigned int ndst,
                       uint64_t dst_skip, const struct vmmbib_seg *src,
                       unsigned int nsrc, uint64_t len);

/* responder.c */
/* The QP @qpn at the port @av routes to: by dgid with a GRH, else dlid. */
struct vmmbib_qp *vmmbib_find_qp(struct vmmbib_engine *eng,
                                 const struct vmmbib_ah_attr *av,
                                 uint32_t qpn, struct vmmbib_dev **dev);
/* Take the next receive WQE of @qp; 1 taken, 0 none, -1 malformed. */
int vmmbib_recv_take(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                     struct vmmbib_recv *recv);
void vmmbib_recv_complete(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                          const struct vmmbib_recv *recv,
                          struct vmmbib_cqe *cqe, bool solicited);

#endif /* VMMBIB_DATA_H */
