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

struct vverbs_qp {
    struct ibv_qp *qp;
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
    struct ibv_mr **mrs;
    struct ibv_cq **cqs;
    struct vverbs_qp **qps;
    pthread_t thread;
    bool thread_running;
    int stop_pipe[2];
};

/* relay.c: poll host CQ @index dry, writing guest CQEs; engine lock held. */
void vverbs_cq_poll(struct vmmbib_dev *dev, uint32_t index);
/*
 * Poll @qp's host CQs until it has no pending send (and, with @recv, no
 * pending receive) completion, or a second passed.
 */
void vverbs_qp_quiesce(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                       bool recv);

#endif /* VMMBIB_VERBS_BACKEND_H */
