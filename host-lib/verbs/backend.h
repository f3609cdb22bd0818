/*
 * The verbs backend's private state, shared by verbs.c (device, control
 * objects, completion thread) and relay.c (the data path).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef VMMBIB_VERBS_BACKEND_H
#define VMMBIB_VERBS_BACKEND_H

#include <infiniband/verbs.h>

#include "verbs.h"

/* What the relay remembers of a send WQE it posted, by ring slot. */
struct vverbs_send_slot {
    uint64_t wr_id;         /* the guest's */
    uint32_t byte_len;
    uint8_t opcode;         /* VMMBIB_WR_* */
};

/*
 * A guest MR's host side.  REG_MR: one host MR, on the guest pages'
 * host range when they are host-contiguous, else on an alias (a reserved
 * host range each page run is mapped into again).  DMA MR: one host MR
 * per guest RAM region, at the region's guest physical address.
 */
struct vverbs_dma_region {
    uint64_t gpa;
    uint64_t size;
    struct ibv_mr *mr;
};

struct vverbs_mr {
    struct ibv_mr *mr;              /* REG_MR */
    uint8_t *alias;                 /* or NULL: the pages' own mapping */
    size_t alias_len;
    uint32_t alias_maps;            /* host mappings the alias holds */
    struct vverbs_dma_region *regions;  /* DMA MR */
    uint32_t nregions;
};

/* Host mappings one device's aliases may hold (each costs the VMM a VMA). */
#define VVERBS_MAX_ALIAS_MAPS   16384
/* RAM regions a DMA MR covers. */
#define VVERBS_MAX_DMA_REGIONS  64

struct vverbs_qp;

struct vverbs_srq {
    struct ibv_srq *srq;
    uint64_t *rq;                   /* guest wr_id by SRQ slot */
    struct vverbs_qp *qps;          /* the QPs using it */
    bool error;                     /* a malformed WQE stopped the relay */
};

struct vverbs_qp {
    struct ibv_qp *qp;
    uint32_t index;                 /* the guest QP's handle index */
    struct vverbs_qp *next_on_srq;
    struct vverbs_send_slot *sq;    /* [guest sq entries] */
    uint64_t *rq;                   /* guest wr_id by RQ slot */
    uint32_t sq_pending;    /* signaled sends posted, not yet completed */
    uint32_t rq_pending;    /* receives posted, not yet completed */
    enum ibv_qp_state host_state;
    bool erroring;          /* moved to ERR on the host, until RESET */
};

struct vmmbib_verbs {
    struct ibv_context *ctx;
    struct ibv_comp_channel *channel;
    uint8_t port;
    uint32_t gid_index;
    struct ibv_port_attr port_attr;
    struct ibv_device_attr dev_attr;
    union ibv_gid gid;
    /* Host objects by guest handle index; [0] unused. */
    struct ibv_pd **pds;
    struct vverbs_mr **mrs;
    struct ibv_cq **cqs;
    struct vverbs_qp **qps;
    struct vverbs_srq **srqs;
    struct ibv_ah **ahs;
    uint32_t alias_maps;    /* held by all aliases of the device */
    uint32_t dma_mrs;       /* DMA MRs: RAM is counted as pinned once */
    uint64_t dma_pinned;    /* pages counted for them */
    pthread_t thread;
    bool thread_running;
    int stop_pipe[2];
};

/*
 * The host lkey for guest [addr, addr + len) of @mr, which the guest
 * checks passed; false if no host MR covers it.
 */
bool vverbs_lkey(struct vmmbib_dev *dev, const struct vmmbib_mr *mr,
                 uint64_t addr, uint64_t len, uint32_t *lkey);

/* relay.c: poll host CQ @index dry, writing guest CQEs; engine lock held. */
void vverbs_cq_poll(struct vmmbib_dev *dev, uint32_t index);
/*
 * Poll @qp's host CQs until it has no pending send (and, with @recv, no
 * pending receive) completion, or a second passed.
 */
void vverbs_qp_quiesce(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                       bool recv);

#endif /* VMMBIB_VERBS_BACKEND_H */
