/*
 * libFuzzer target: WQE execution.  A connected RC pair and a UD QP are
 * set up once; each input's bytes become up to 8 send WQEs of one of them
 * (the first byte chooses), with receives posted on the peer, executed
 * synchronously through the trapped-doorbell path.  Whatever the bytes,
 * the library must complete every WQE (successfully or with an error) and
 * touch only registered memory; ASan checks the latter.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <stdlib.h>
#include <string.h>

#include "../tests/guest.h"

#define WQES 8

static struct guest g;
static struct vmmbib_dev *dev;
static struct gctx ctx;
static struct rc_pair rc;
static struct gcq ud_cq;
static struct gqp ud_a, ud_b;
static struct gmr mr;
static struct gbuf buf;
static uint32_t pd, ah;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void connect_all(void)
{
    if (rc_connect(&rc.a, &rc.b, NULL) || ud_to_rts(&ud_a, 0x11) ||
        ud_to_rts(&ud_b, 0x11)) {
        abort();
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct vmmbib_dev_config cfg;
    struct qp_opts o;

    (void)argc;
    (void)argv;
    guest_init(&g, 8u << 20);
    guest_dev_config(&cfg);
    cfg.doorbell_mode = VMMBIB_DB_MODE_MMIO;
    dev = guest_dev_new(&g, NULL, &cfg);
    if (!dev || ctx_create(&ctx, dev, &g) || pd_create(&ctx, &pd)) {
        abort();
    }
    gbuf_alloc(&g, 64 * 1024, &buf);
    if (mr_reg(&ctx, pd, buf.gpa, buf.len, VMMBIB_ACCESS_ALL, &mr) ||
        rc_pair_create(&rc, &ctx, pd, &ctx, pd, NULL) ||
        cq_create(&ctx, 64, &ud_cq)) {
        abort();
    }
    qp_opts_default(&o, VMMBIB_QPT_UD);
    if (qp_create(&ctx, pd, &ud_cq, &ud_cq, NULL, &o, &ud_a) ||
        qp_create(&ctx, pd, &ud_cq, &ud_cq, NULL, &o, &ud_b) ||
        ah_create(&ctx, pd, port_lid(dev), &ah) ||
        ud_to_rts(&ud_a, 0x11) || ud_to_rts(&ud_b, 0x11)) {
        abort();   /* rc_pair_create connected the RC pair already */
    }
    return 0;
}

static uint32_t recvs_outstanding;

/* Take every CQE; count the receives that completed. */
static void drain(struct gcq *cq)
{
    struct vmmbib_cqe e[16];
    int n, i;

    while ((n = cq_poll(cq, e, 16)) > 0) {
        for (i = 0; i < n; i++) {
            if (e[i].opcode & VMMBIB_WC_RECV && recvs_outstanding) {
                recvs_outstanding--;
            }
        }
    }
}

/* Back to RTS after an error completion moved a QP to ERR. */
static void recover(void)
{
    struct vmmbib_qp_attr reset = { .qp_state = VMMBIB_QPS_RESET };
    struct gqp *qps[] = { &rc.a, &rc.b, &ud_a, &ud_b };
    unsigned int i;

    for (i = 0; i < 4; i++) {
        if (qp_state(qps[i]) != VMMBIB_QPS_RTS &&
            qp_state(qps[i]) != VMMBIB_QPS_RTR) {
            break;
        }
    }
    if (i == 4) {
        return;
    }
    for (i = 0; i < 4; i++) {
        if (qp_modify(qps[i], VMMBIB_QP_STATE, &reset)) {
            abort();
        }
        /* RESET empties the rings: the guest restarts at index 0 too. */
        qps[i]->sq_prod = 0;
        qps[i]->rq_prod = 0;
    }
    recvs_outstanding = 0;
    connect_all();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct gqp *qp, *peer;
    struct vmmbib_sge rsge;
    uint32_t stride, n, i;

    if (size < 1) {
        return 0;
    }
    qp = data[0] & 1 ? &ud_a : &rc.a;
    peer = data[0] & 1 ? &ud_b : &rc.b;
    data++;
    size--;
    stride = 1u << qp->sq_shift;
    n = size / stride + (size % stride != 0);
    if (n > WQES) {
        n = WQES;
    }

    /* Receives to land in: the buffer's second half. */
    rsge = sge(&mr, buf.gpa + buf.len / 2, buf.len / 2);
    /* Never more than the RQ holds: overflowing it is another test. */
    for (i = 0; i < n && recvs_outstanding < peer->rq_wr; i++) {
        qp_post_recv(peer, i, &rsge, 1);
        recvs_outstanding++;
    }
    for (i = 0; i < n; i++) {
        uint8_t *slot = qp->sq + ((qp->sq_prod & (qp->sq_wr - 1)) <<
                                  qp->sq_shift);
        size_t len = size < stride ? size : stride;

        memset(slot, 0, stride);
        memcpy(slot, data, len);
        data += len;
        size -= len;
        qp->sq_prod++;
    }
    /* The trapped path runs the WQEs in this thread, before it returns. */
    vmmbib_dev_doorbell(dev, ctx.slot,
                        VMMBIB_DB(VMMBIB_DB_KIND_SQ,
                                  VMMBIB_HANDLE_INDEX(qp->handle),
                                  qp->sq_prod));
    drain(qp->scq);
    drain(peer->rcq);
    drain(&ud_cq);
    recover();
    return 0;
}
