/*
 * Errors with synthetic guests: work requests that fail with their IB
 * completion statuses, control commands that fail with their device
 * statuses, quotas, and teardown of contexts and devices full of live
 * objects.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <endian.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>

#include "guest.h"
#include "tap.h"


/* A fresh connected pair, a's SEND with @s: its completion status. */
static bool new_pair(struct vm *v, struct rc_pair *p, const char *what)
{
    bool ok = rc_pair_create(p, &v->c, v->pd, &v->c, v->pd, NULL) == OK;

    if (!ok) {
        printf("# %s: could not create a pair\n", what);
    }
    return ok;
}

/* The next send CQE of a has @wr_id and @status; a is then in ERR. */
static bool send_fails(struct rc_pair *p, uint64_t wr_id, uint8_t opcode,
                       uint8_t status)
{
    struct vmmbib_cqe c;

    return cq_wait(&p->a_scq, &c, 1) == 1 && cqe_is(&c, wr_id, opcode,
                                                     status) &&
           qp_state(&p->a) == VMMBIB_QPS_ERR;
}

static void test_wqe_errors(void)
{
    struct vm v;
    struct rc_pair p;
    struct rc_opts o;
    struct vmmbib_cqe c[3];
    struct vmmbib_sge s;
    struct vmmbib_send_wqe w;
    struct vmmbib_dev_stats st0, st1;
    struct gmr ro, tmp, tmp2, nolocal;
    struct gbuf b2;

    TAP_CHECK(vm_init_cfg(&v, NULL), "wqe errors: a device");
    vmmbib_dev_get_stats(v.dev, &st0);

    /* A bad lkey. */
    new_pair(&v, &p, "bad lkey");
    s = buf_sge(&v, 0, 64);
    s.lkey = htole32(v.mr.lkey ^ 0x5500);
    post_send(&p.a, 0x401, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(send_fails(&p, 0x401, VMMBIB_WC_SEND, VMMBIB_WC_LOC_PROT_ERR),
              "bad lkey: LOC_PROT_ERR, the QP is in ERR");
    s = buf_sge(&v, 0, 64);
    post_send(&p.a, 0x402, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&p.a_scq, c, 1) == 1 &&
              cqe_is(&c[0], 0x402, VMMBIB_WC_SEND, VMMBIB_WC_WR_FLUSH_ERR),
              "after the error the next WQE completes WR_FLUSH_ERR");
    TAP_CHECK(qp_state(&p.b) == VMMBIB_QPS_RTS,
              "a local error leaves the responder in RTS");

    /* SGEs outside the MR. */
    new_pair(&v, &p, "bounds");
    s = buf_sge(&v, BUF_SIZE - 10, 100);
    post_send(&p.a, 0x403, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(send_fails(&p, 0x403, VMMBIB_WC_SEND, VMMBIB_WC_LOC_PROT_ERR),
              "SGE past the MR's end: LOC_PROT_ERR");
    new_pair(&v, &p, "bounds below");
    s = sge(&v.mr, v.buf.gpa - 16, 32);
    post_send(&p.a, 0x404, VMMBIB_WR_RDMA_WRITE, &s, 1, v.buf.gpa,
              v.mr.rkey);
    TAP_CHECK(send_fails(&p, 0x404, VMMBIB_WC_RDMA_WRITE,
                         VMMBIB_WC_LOC_PROT_ERR),
              "SGE starting before the MR: LOC_PROT_ERR");

    /* A bad rkey: the requester gets REM_ACCESS_ERR, the responder errs. */
    new_pair(&v, &p, "bad rkey");
    s = buf_sge(&v, 0, 64);
    qp_post_recv(&p.b, 0x4b1, &s, 1);
    post_send(&p.a, 0x405, VMMBIB_WR_RDMA_WRITE, &s, 1, v.buf.gpa + 4096,
              v.mr.rkey + 1);
    TAP_CHECK(send_fails(&p, 0x405, VMMBIB_WC_RDMA_WRITE,
                         VMMBIB_WC_REM_ACCESS_ERR),
              "bad rkey: REM_ACCESS_ERR");
    TAP_CHECK(cq_wait(&p.b_rcq, c, 1) == 1 &&
              cqe_is(&c[0], 0x4b1, VMMBIB_WC_RECV, VMMBIB_WC_WR_FLUSH_ERR) &&
              qp_state(&p.b) == VMMBIB_QPS_ERR &&
              guest_event_count(&v.g, VMMBIB_EVENT_QP_ACCESS_ERR,
                                p.b.handle) == 1,
              "bad rkey: responder in ERR (QP_ACCESS_ERR), receives flushed");

    /* An MR without REMOTE_WRITE. */
    TAP_CHECK(mr_reg(&v.c, v.pd, v.buf.gpa, 8192,
                     VMMBIB_ACCESS_LOCAL_WRITE | VMMBIB_ACCESS_REMOTE_READ,
                     &ro) == OK, "an MR with remote read only");
    new_pair(&v, &p, "mr access");
    s = buf_sge(&v, 16384, 64);
    post_send(&p.a, 0x406, VMMBIB_WR_RDMA_READ, &s, 1, v.buf.gpa, ro.rkey);
    TAP_CHECK(cq_wait(&p.a_scq, c, 1) == 1 &&
              cqe_is(&c[0], 0x406, VMMBIB_WC_RDMA_READ, VMMBIB_WC_SUCCESS),
              "READ through the remote-read MR works");
    post_send(&p.a, 0x407, VMMBIB_WR_RDMA_WRITE, &s, 1, v.buf.gpa, ro.rkey);
    TAP_CHECK(send_fails(&p, 0x407, VMMBIB_WC_RDMA_WRITE,
                         VMMBIB_WC_REM_ACCESS_ERR),
              "WRITE to an MR without REMOTE_WRITE: REM_ACCESS_ERR");

    /* A QP without REMOTE_WRITE. */
    rc_opts_default(&o);
    o.access = VMMBIB_ACCESS_REMOTE_READ;
    TAP_CHECK(rc_pair_create(&p, &v.c, v.pd, &v.c, v.pd, &o) == OK,
              "a pair whose QPs allow remote read only");
    post_send(&p.a, 0x408, VMMBIB_WR_RDMA_READ, &s, 1, v.buf.gpa, v.mr.rkey);
    TAP_CHECK(cq_wait(&p.a_scq, c, 1) == 1 &&
              cqe_is(&c[0], 0x408, VMMBIB_WC_RDMA_READ, VMMBIB_WC_SUCCESS),
              "READ through the read-only QP works");
    post_send(&p.a, 0x409, VMMBIB_WR_RDMA_WRITE, &s, 1, v.buf.gpa,
              v.mr.rkey);
    TAP_CHECK(send_fails(&p, 0x409, VMMBIB_WC_RDMA_WRITE,
                         VMMBIB_WC_REM_ACCESS_ERR),
              "WRITE to a QP without REMOTE_WRITE: REM_ACCESS_ERR");
    o.access = VMMBIB_ACCESS_REMOTE_WRITE;
    TAP_CHECK(rc_pair_create(&p, &v.c, v.pd, &v.c, v.pd, &o) == OK,
              "a pair whose QPs allow remote write only");
    memset(&w, 0, sizeof(w));
    w.wr_id = htole64(0x40a);
    w.opcode = VMMBIB_WR_ATOMIC_FETCH_AND_ADD;
    w.flags = VMMBIB_WQE_SIGNALED;
    w.atomic.remote_addr = htole64(v.buf.gpa + 4096);
    w.atomic.rkey = htole32(v.mr.rkey);
    w.atomic.compare_add = htole64(1);
    s = buf_sge(&v, 16384, 8);
    qp_post_send(&p.a, &w, &s, 1, NULL, 0, true);
    TAP_CHECK(send_fails(&p, 0x40a, VMMBIB_WC_FETCH_ADD,
                         VMMBIB_WC_REM_ACCESS_ERR),
              "atomic to a QP without REMOTE_ATOMIC: REM_ACCESS_ERR");

    /* A receive too small: LOC_LEN_ERR there, REM_INV_REQ_ERR here. */
    new_pair(&v, &p, "short receive");
    s = buf_sge(&v, 4096, 100);
    qp_post_recv(&p.b, 0x4b2, &s, 1);
    qp_post_recv(&p.b, 0x4b3, &s, 1);
    s = buf_sge(&v, 0, 200);
    post_send(&p.a, 0x40b, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(send_fails(&p, 0x40b, VMMBIB_WC_SEND,
                         VMMBIB_WC_REM_INV_REQ_ERR),
              "receive too small: the sender gets REM_INV_REQ_ERR");
    TAP_CHECK(cq_wait(&p.b_rcq, c, 2) == 2 &&
              cqe_is(&c[0], 0x4b2, VMMBIB_WC_RECV, VMMBIB_WC_LOC_LEN_ERR) &&
              cqe_is(&c[1], 0x4b3, VMMBIB_WC_RECV, VMMBIB_WC_WR_FLUSH_ERR) &&
              qp_state(&p.b) == VMMBIB_QPS_ERR,
              "receive too small: LOC_LEN_ERR, the next receive flushed");

    /* A deregistered MR's key, even after its index is reused. */
    gbuf_alloc(&v.g, 4096, &b2);
    TAP_CHECK(mr_reg(&v.c, v.pd, b2.gpa, 4096, ACCESS_ALL_RIGHTS, &tmp) == OK &&
              destroy(&v.c, VMMBIB_CMD_DEREG_MR, tmp.handle) == OK &&
              mr_reg(&v.c, v.pd, b2.gpa, 4096, ACCESS_ALL_RIGHTS, &tmp2) == OK,
              "register, deregister, register again");
    TAP_CHECK(tmp2.lkey != tmp.lkey, "the new MR has a new key");
    new_pair(&v, &p, "new key");
    s = sge(&tmp2, b2.gpa, 64);
    post_send(&p.a, 0x40c, VMMBIB_WR_RDMA_WRITE, &s, 1, v.buf.gpa,
              v.mr.rkey);
    TAP_CHECK(cq_wait(&p.a_scq, c, 1) == 1 &&
              cqe_is(&c[0], 0x40c, VMMBIB_WC_RDMA_WRITE, VMMBIB_WC_SUCCESS),
              "the new key works");
    s = sge(&tmp, b2.gpa, 64);
    post_send(&p.a, 0x40d, VMMBIB_WR_RDMA_WRITE, &s, 1, v.buf.gpa,
              v.mr.rkey);
    TAP_CHECK(send_fails(&p, 0x40d, VMMBIB_WC_RDMA_WRITE,
                         VMMBIB_WC_LOC_PROT_ERR),
              "the stale lkey after DEREG_MR: LOC_PROT_ERR");

    /* READ into local memory that lacks LOCAL_WRITE. */
    TAP_CHECK(mr_reg(&v.c, v.pd, v.buf.gpa, 4096, VMMBIB_ACCESS_REMOTE_READ,
                     &nolocal) == OK, "an MR without local write");
    new_pair(&v, &p, "read local");
    s = sge(&nolocal, v.buf.gpa, 64);
    post_send(&p.a, 0x40e, VMMBIB_WR_RDMA_READ, &s, 1, v.buf.gpa + 8192,
              v.mr.rkey);
    TAP_CHECK(send_fails(&p, 0x40e, VMMBIB_WC_RDMA_READ,
                         VMMBIB_WC_LOC_PROT_ERR),
              "READ into an MR without LOCAL_WRITE: LOC_PROT_ERR");

    /* A receive WQE with a bad lkey: the responder's error. */
    new_pair(&v, &p, "bad recv lkey");
    s = buf_sge(&v, 4096, 64);
    s.lkey = htole32(0x12345);
    qp_post_recv(&p.b, 0x4b4, &s, 1);
    s = buf_sge(&v, 0, 8);
    post_send(&p.a, 0x40f, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(send_fails(&p, 0x40f, VMMBIB_WC_SEND, VMMBIB_WC_REM_OP_ERR),
              "receive with a bad lkey: the sender gets REM_OP_ERR");
    TAP_CHECK(cq_wait(&p.b_rcq, c, 1) == 1 &&
              cqe_is(&c[0], 0x4b4, VMMBIB_WC_RECV, VMMBIB_WC_LOC_PROT_ERR),
              "receive with a bad lkey: LOC_PROT_ERR at the responder");

    /*
     * A misaligned atomic is an invalid request (IBA 9.4.5: NAK Invalid
     * Request), not an access violation.
     */
    new_pair(&v, &p, "misaligned atomic");
    memset(&w, 0, sizeof(w));
    w.wr_id = htole64(0x410);
    w.opcode = VMMBIB_WR_ATOMIC_CMP_AND_SWP;
    w.flags = VMMBIB_WQE_SIGNALED;
    w.atomic.remote_addr = htole64(v.buf.gpa + 4100);
    w.atomic.rkey = htole32(v.mr.rkey);
    s = buf_sge(&v, 16384, 8);
    qp_post_send(&p.a, &w, &s, 1, NULL, 0, true);
    TAP_CHECK(send_fails(&p, 0x410, VMMBIB_WC_COMP_SWAP,
                         VMMBIB_WC_REM_INV_REQ_ERR),
              "misaligned atomic: REM_INV_REQ_ERR");

    /* MODIFY_QP to ERR flushes the posted receives, in order. */
    new_pair(&v, &p, "flush");
    s = buf_sge(&v, 4096, 64);
    qp_post_recv(&p.b, 0x4c1, &s, 1);
    qp_post_recv(&p.b, 0x4c2, &s, 1);
    qp_post_recv(&p.b, 0x4c3, &s, 1);
    TAP_CHECK(ctx_doorbells_drained(&v.c), "flush: the receives are posted");
    {
        struct vmmbib_qp_attr a = { .qp_state = VMMBIB_QPS_ERR };

        TAP_CHECK(qp_modify(&p.b, VMMBIB_QP_STATE, &a) == OK,
                  "MODIFY_QP to ERR");
    }
    TAP_CHECK(cq_wait(&p.b_rcq, c, 3) == 3 &&
              cqe_is(&c[0], 0x4c1, VMMBIB_WC_RECV, VMMBIB_WC_WR_FLUSH_ERR) &&
              cqe_is(&c[1], 0x4c2, VMMBIB_WC_RECV, VMMBIB_WC_WR_FLUSH_ERR) &&
              cqe_is(&c[2], 0x4c3, VMMBIB_WC_RECV, VMMBIB_WC_WR_FLUSH_ERR) &&
              le32toh(c[2].wqe_index) == 2,
              "MODIFY_QP to ERR flushes 3 receives, in order");

    vmmbib_dev_get_stats(v.dev, &st1);
    printf("# error completions: %llu\n",
           (unsigned long long)(st1.error_completions -
                                st0.error_completions));
    TAP_CHECK(st1.error_completions - st0.error_completions >= 20 &&
              st1.bad_doorbells == 0,
              "error completions are counted, no doorbell was bad");
    vm_fini(&v);
}

/* Slot @index of @qp's SQ or RQ, as the guest sees it. */
static uint8_t *sq_slot(struct gqp *qp, uint32_t index)
{
    return qp->sq + ((uint64_t)(index & (qp->sq_wr - 1)) << qp->sq_shift);
}

static uint8_t *rq_slot(struct gqp *qp, uint32_t index)
{
    return qp->rq + ((uint64_t)(index & (qp->rq_wr - 1)) << qp->rq_shift);
}

/*
 * SGE counts (pvrdma: num_sge not checked before filling a fixed array)
 * and WQEs that fail being consumed exactly once (pvrdma: an error path
 * that left the WQE in the ring).  A send WQE with one SGE more than the
 * QP's max_send_sge, or 255, completes LOC_LEN_ERR at its own index and
 * touches no memory; the WQE after it is flushed at the next index, and
 * nothing completes twice.  A receive WQE with too many SGEs fails the
 * SEND that lands on it, not the device.
 */
static void test_sge_counts(void)
{
    struct vm v;
    struct rc_pair p;
    struct vmmbib_cqe c[4];
    struct vmmbib_sge s[5];
    struct vmmbib_dev_stats st0, st1;
    uint32_t idx, max, i;
    struct vmmbib_send_wqe *h;
    struct vmmbib_recv_wqe *rh;

    TAP_CHECK(vm_init_cfg(&v, NULL), "sge counts: a device");
    vmmbib_dev_get_stats(v.dev, &st0);
    memset(v.buf.p + 4096, 0, 4096);
    pattern_fill(v.buf.p, 512, 33);

    new_pair(&v, &p, "sge counts");
    max = le32toh(p.a.caps.max_send_sge);
    TAP_CHECK(max >= 1 && max < 255, "sge counts: max_send_sge below 255");
    for (i = 0; i < 5; i++) {
        s[i] = buf_sge(&v, 64 * i, 64);
    }
    /* A valid WQE, then num_sge raised past the granted maximum. */
    idx = post_send(&p.a, 0x501, VMMBIB_WR_RDMA_WRITE, s, 1,
                    v.buf.gpa + 4096, v.mr.rkey);
    TAP_CHECK(cq_wait(&p.a_scq, c, 1) == 1 &&
              cqe_is(&c[0], 0x501, VMMBIB_WC_RDMA_WRITE, VMMBIB_WC_SUCCESS),
              "sge counts: one SGE works");
    memset(v.buf.p + 4096, 0, 4096);
    idx = qp_post_send(&p.a, &(struct vmmbib_send_wqe) {
                           .wr_id = htole64(0x502),
                           .opcode = VMMBIB_WR_RDMA_WRITE,
                           .flags = VMMBIB_WQE_SIGNALED,
                           .rdma = { .remote_addr = htole64(v.buf.gpa + 4096),
                                     .rkey = htole32(v.mr.rkey) },
                       }, s, 1, NULL, 0, false);
    h = (void *)sq_slot(&p.a, idx);
    h->num_sge = max + 1;
    qp_sq_doorbell(&p.a);
    TAP_CHECK(cq_wait(&p.a_scq, c, 1) == 1 &&
              cqe_is(&c[0], 0x502, VMMBIB_WC_RDMA_WRITE,
                     VMMBIB_WC_LOC_LEN_ERR) &&
              le32toh(c[0].wqe_index) == idx,
              "num_sge max_send_sge + 1: LOC_LEN_ERR at its own index");
    TAP_CHECK(v.buf.p[4096] == 0 && qp_state(&p.a) == VMMBIB_QPS_ERR,
              "... nothing was written and the QP is in ERR");
    idx = post_send(&p.a, 0x503, VMMBIB_WR_RDMA_WRITE, s, 1,
                    v.buf.gpa + 4096, v.mr.rkey);
    TAP_CHECK(cq_wait(&p.a_scq, c, 1) == 1 &&
              cqe_is(&c[0], 0x503, VMMBIB_WC_RDMA_WRITE,
                     VMMBIB_WC_WR_FLUSH_ERR) &&
              le32toh(c[0].wqe_index) == idx,
              "the failed WQE was consumed: the next one is flushed at the "
              "next index");
    msleep(5);
    TAP_CHECK(cq_poll(&p.a_scq, c, 4) == 0,
              "no WQE completed twice");

    /* 255 SGEs: more than any stride holds. */
    new_pair(&v, &p, "255 sges");
    idx = qp_post_send(&p.a, &(struct vmmbib_send_wqe) {
                           .wr_id = htole64(0x504),
                           .opcode = VMMBIB_WR_SEND,
                           .flags = VMMBIB_WQE_SIGNALED,
                       }, s, 1, NULL, 0, false);
    h = (void *)sq_slot(&p.a, idx);
    h->num_sge = 255;
    qp_sq_doorbell(&p.a);
    TAP_CHECK(cq_wait(&p.a_scq, c, 1) == 1 &&
              cqe_is(&c[0], 0x504, VMMBIB_WC_SEND, VMMBIB_WC_LOC_LEN_ERR) &&
              le32toh(c[0].wqe_index) == idx,
              "num_sge 255: LOC_LEN_ERR at its own index");

    /* A receive WQE with too many SGEs. */
    new_pair(&v, &p, "recv sges");
    max = le32toh(p.b.caps.max_recv_sge);
    idx = qp_write_recv(&p.b, 0x5b1, s, 1, false);
    rh = (void *)rq_slot(&p.b, idx);
    rh->num_sge = htole32(max + 1);
    qp_rq_doorbell(&p.b);
    qp_post_recv(&p.b, 0x5b2, s, 1);
    post_send(&p.a, 0x505, VMMBIB_WR_SEND, s, 1, 0, 0);
    TAP_CHECK(cq_wait(&p.a_scq, c, 1) == 1 &&
              cqe_is(&c[0], 0x505, VMMBIB_WC_SEND, VMMBIB_WC_REM_OP_ERR),
              "a receive with max_recv_sge + 1 SGEs: the sender gets "
              "REM_OP_ERR");
    TAP_CHECK(cq_wait(&p.b_rcq, c, 2) == 2 &&
              cqe_is(&c[0], 0x5b1, VMMBIB_WC_RECV, VMMBIB_WC_LOC_PROT_ERR) &&
              le32toh(c[0].wqe_index) == idx &&
              cqe_is(&c[1], 0x5b2, VMMBIB_WC_RECV, VMMBIB_WC_WR_FLUSH_ERR) &&
              le32toh(c[1].wqe_index) == idx + 1,
              "... it fails at its index, the next receive is flushed");
    vmmbib_dev_get_stats(v.dev, &st1);
    TAP_CHECK(st1.bad_doorbells == st0.bad_doorbells,
              "sge counts: every doorbell was good, the WQEs were bad");
    vm_fini(&v);
}

/*
 * Table indexes at the edges (pvrdma: an off-by-one in its resource
 * table bounds).  With max_qp, max_cq and max_mr 2 the objects at index
 * 2, the tables' last slot, work: a SEND from the QP there, through the
 * CQ there, with the MR there.  Index 3 and index 0 name nothing, as a
 * handle, a key or a doorbell.
 */
static void test_table_edges(void)
{
    struct vmmbib_dev_config cfg;
    struct vm v;
    struct gcq cq1, cq2;
    struct gqp qa, qb;
    struct gmr m2;
    struct vmmbib_sge s;
    struct vmmbib_cqe e;
    struct vmmbib_dev_stats st0, st1;
    struct vmmbib_cmd_query_qp qq;
    struct vmmbib_resp_query_qp qr;
    uint32_t past, gen;

    guest_dev_config(&cfg);
    cfg.limits.max_cq = 2;
    cfg.limits.max_qp = 2;
    cfg.limits.max_mr = 2;
    TAP_CHECK(vm_init_cfg(&v, &cfg) &&
              mr_reg(&v.c, v.pd, v.buf.gpa, BUF_SIZE, ACCESS_ALL_RIGHTS,
                     &m2) == OK &&
              cq_create(&v.c, 16, &cq1) == OK &&
              cq_create(&v.c, 16, &cq2) == OK &&
              qp_create(&v.c, v.pd, &cq1, &cq1, NULL, NULL, &qa) == OK &&
              qp_create(&v.c, v.pd, &cq2, &cq2, NULL, NULL, &qb) == OK,
              "table edges: max_qp, max_cq, max_mr 2, all taken");
    TAP_CHECK(VMMBIB_HANDLE_INDEX(qb.handle) == 2 &&
              VMMBIB_HANDLE_INDEX(cq2.handle) == 2 && (m2.lkey >> 8) == 2,
              "the second QP, CQ and MR sit at index 2, the last slot");
    TAP_CHECK(rc_connect(&qa, &qb, NULL) == OK,
              "the QP at the last index connects");
    pattern_fill(v.buf.p, 300, 71);
    s = sge(&v.mr, v.buf.gpa + 8192, 512);
    qp_post_recv(&qa, 0x601, &s, 1);
    s = sge(&m2, v.buf.gpa, 300);
    post_send(&qb, 0x602, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&cq2, &e, 1) == 1 &&
              cqe_is(&e, 0x602, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS) &&
              cq_wait(&cq1, &e, 1) == 1 &&
              cqe_is(&e, 0x601, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              pattern_check(v.buf.p + 8192, 300, 71),
              "a SEND from the last QP index, last CQ index, last MR index");

    /* One past the end, and 0, as handles. */
    gen = qb.handle & ~VMMBIB_HANDLE_INDEX_MASK;
    past = gen | 3;
    qq = (struct vmmbib_cmd_query_qp) { .qp_handle = htole32(past) };
    TAP_CHECK(cmd(v.dev, VMMBIB_CMD_QUERY_QP, v.c.handle, &qq, sizeof(qq),
                  &qr, sizeof(qr)) == VMMBIB_STATUS_BAD_HANDLE,
              "QUERY_QP of index 3 (size + 1): BAD_HANDLE");
    qq.qp_handle = htole32(gen);
    TAP_CHECK(cmd(v.dev, VMMBIB_CMD_QUERY_QP, v.c.handle, &qq, sizeof(qq),
                  &qr, sizeof(qr)) == VMMBIB_STATUS_BAD_HANDLE,
              "QUERY_QP of index 0: BAD_HANDLE");
    TAP_CHECK(destroy(&v.c, VMMBIB_CMD_DESTROY_QP, past) ==
              VMMBIB_STATUS_BAD_HANDLE &&
              destroy(&v.c, VMMBIB_CMD_DESTROY_CQ,
                      (cq2.handle & ~VMMBIB_HANDLE_INDEX_MASK) | 3) ==
              VMMBIB_STATUS_BAD_HANDLE &&
              destroy(&v.c, VMMBIB_CMD_DEREG_MR,
                      (m2.handle & ~VMMBIB_HANDLE_INDEX_MASK) | 3) ==
              VMMBIB_STATUS_BAD_HANDLE,
              "DESTROY_QP, DESTROY_CQ, DEREG_MR of index 3: BAD_HANDLE");

    /* As a key: index 3 with the last MR's key byte. */
    s = sge(&m2, v.buf.gpa, 64);
    s.lkey = htole32((3u << 8) | (m2.lkey & 0xff));
    post_send(&qb, 0x603, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&cq2, &e, 1) == 1 &&
              cqe_is(&e, 0x603, VMMBIB_WC_SEND, VMMBIB_WC_LOC_PROT_ERR),
              "an lkey of MR index 3: LOC_PROT_ERR");

    /* As doorbells. */
    vmmbib_dev_get_stats(v.dev, &st0);
    ctx_doorbell(&v.c, VMMBIB_DB(VMMBIB_DB_KIND_SQ, 3, 1));
    ctx_doorbell(&v.c, VMMBIB_DB(VMMBIB_DB_KIND_SQ, 0, 1));
    ctx_doorbell(&v.c, VMMBIB_DB(VMMBIB_DB_KIND_RQ, 3, 1));
    ctx_doorbell(&v.c, VMMBIB_DB(VMMBIB_DB_KIND_CQ_ARM, 3, 0));
    ctx_doorbell(&v.c, VMMBIB_DB(VMMBIB_DB_KIND_CQ_ARM, 0, 0));
    TAP_CHECK(ctx_doorbells_drained(&v.c), "table edges: doorbells taken");
    vmmbib_dev_get_stats(v.dev, &st1);
    TAP_CHECK(st1.bad_doorbells == st0.bad_doorbells + 5,
              "SQ, RQ and CQ_ARM doorbells of index 3 or 0: each bad");
    TAP_CHECK(qp_state(&qa) == VMMBIB_QPS_RTS, "the other QP is untouched");
    vm_fini(&v);
}

/* Rewrites num_sge and the first SGE's length of every SQ slot, forever. */
struct sq_racer {
    struct gqp *qp;
    uint32_t len_ok, len_bad;
    int stop;
    unsigned long flips;
};

static void *sq_race(void *arg)
{
    struct sq_racer *r = arg;
    unsigned long i;

    for (i = 0; !__atomic_load_n(&r->stop, __ATOMIC_RELAXED); i++) {
        uint32_t slot;

        __atomic_store_n(&r->flips, i, __ATOMIC_RELAXED);

        for (slot = 0; slot < r->qp->sq_wr; slot++) {
            uint8_t *p = r->qp->sq + ((uint64_t)slot << r->qp->sq_shift);
            volatile struct vmmbib_send_wqe *h = (void *)p;
            volatile struct vmmbib_sge *g = (void *)(p + sizeof(*h));

            h->num_sge = i & 1 ? 255 : 1;
            g->length = htole32(i & 2 ? r->len_bad : r->len_ok);
        }
    }
    return NULL;
}

/*
 * Double fetch (pvrdma read guest values it had checked a second time).
 * While a guest thread keeps flipping each SQ slot's num_sge between 1
 * and 255 and its SGE's length between 64 (inside its MR) and 4096 (past
 * its end, over bytes 0xee), WQEs are posted.  Each completes once, in
 * order: SUCCESS having written exactly the 64 bytes the MR allows, or an
 * error having written nothing, or flushed.  An engine that checks one
 * copy and uses another writes the bytes past the MR (or, with 255 SGEs,
 * overruns its SGE array, which the sanitizers suite reports).
 */
#define ROUNDS 100

static void test_double_fetch(void)
{
    struct vm v;
    struct rc_pair p;
    struct gbuf src, dst;
    struct gmr sm, dm;
    struct sq_racer r;
    pthread_t t;
    struct vmmbib_cqe e[8];
    struct vmmbib_sge s;
    unsigned int round, i, ok = 0, errs = 0, bad = 0;
    static const uint8_t zero[4096];

    TAP_CHECK(vm_init_cfg(&v, NULL), "double fetch: a device");
    gbuf_alloc(&v.g, 8192, &src);
    gbuf_alloc(&v.g, 8 * 8192, &dst);
    memset(src.p, 0xee, 8192);
    pattern_fill(src.p + 4096 - 64, 64, 44);
    TAP_CHECK(mr_reg(&v.c, v.pd, src.gpa, 4096, ACCESS_ALL_RIGHTS, &sm) == OK &&
              mr_reg(&v.c, v.pd, dst.gpa, dst.len, ACCESS_ALL_RIGHTS,
                     &dm) == OK,
              "double fetch: a 4 KiB source MR with 0xee past it, a target");
    for (round = 0; round < ROUNDS; round++) {
        uint32_t first;

        if (!new_pair(&v, &p, "double fetch")) {
            bad++;
            break;
        }
        memset(dst.p, 0, dst.len);
        r = (struct sq_racer) { .qp = &p.a, .len_ok = 64, .len_bad = 4096 };
        if (pthread_create(&t, NULL, sq_race, &r)) {
            bad++;
            break;
        }
        while (__atomic_load_n(&r.flips, __ATOMIC_RELAXED) < 1000) {
            sched_yield();  /* the racer runs before the first post */
        }
        s = sge(&sm, src.gpa + 4096 - 64, 64);
        first = p.a.sq_prod;
        for (i = 0; i < 8; i++) {
            post_send(&p.a, 0x700 + i, VMMBIB_WR_RDMA_WRITE, &s, 1,
                      dst.gpa + i * 8192, dm.rkey);
        }
        if (cq_wait(&p.a_scq, e, 8) != 8) {
            bad++;
        }
        __atomic_store_n(&r.stop, 1, __ATOMIC_RELAXED);
        pthread_join(t, NULL);
        for (i = 0; i < 8; i++) {
            uint8_t *d = dst.p + i * 8192;
            bool in_order = le64toh(e[i].wr_id) == 0x700 + i &&
                            le32toh(e[i].wqe_index) == first + i;

            if (in_order && e[i].status == VMMBIB_WC_SUCCESS &&
                pattern_check(d, 64, 44) && !memcmp(d + 64, zero, 4096)) {
                ok++;
            } else if (in_order && e[i].status != VMMBIB_WC_SUCCESS &&
                       !memcmp(d, zero, 4096) &&
                       !memcmp(d + 4096, zero, 4096)) {
                errs++;
            } else {
                bad++;
                cqe_dump("double fetch", &e[i]);
            }
        }
        msleep(1);
        if (cq_poll(&p.a_scq, e, 1) != 0) {
            bad++;
        }
    }
    printf("# double fetch: %u WQEs succeeded, %u failed cleanly, "
           "%u otherwise\n", ok, errs, bad);
    TAP_CHECK(bad == 0 && ok + errs == ROUNDS * 8,
              "under a racing guest every WQE completes once, in order, "
              "moving only the bytes its MR allows");
    vm_fini(&v);
}

static int reg_range(struct gctx *c, uint32_t pd, uint64_t iova, uint64_t len,
                     uint64_t addr, uint32_t npages, uint8_t levels)
{
    struct vmmbib_cmd_reg_mr q = {
        .pd_handle = htole32(pd),
        .access = htole32(VMMBIB_ACCESS_LOCAL_WRITE),
        .iova = htole64(iova),
        .length = htole64(len),
        .first_page_offset = htole32(iova & (VMMBIB_PAGE_SIZE - 1)),
        .pages = {
            .addr = htole64(addr),
            .npages = htole32(npages),
            .levels = levels,
            .page_shift = VMMBIB_PAGE_SHIFT,
        },
    };
    struct vmmbib_resp_mr r;

    return cmd(c->dev, VMMBIB_CMD_REG_MR, c->handle, &q, sizeof(q), &r,
               sizeof(r));
}

/*
 * Page counts larger than their directory (pvrdma read a ring's page
 * table past its one page): one directory page holds 512 entries, so
 * npages 512 at level 1 registers and 513 is INVALID, even when the
 * guest page after the directory holds more valid entries.
 */
static void test_directory_bounds(void)
{
    struct vm v;
    struct gbuf b;
    uint64_t dir, *d;
    uint32_t i, per = VMMBIB_PAGE_SIZE / 8;
    struct vmmbib_dev_stats st0, st1;

    TAP_CHECK(vm_init_cfg(&v, NULL), "directory bounds: a device");
    gbuf_alloc(&v.g, (uint64_t)(per + 1) * VMMBIB_PAGE_SIZE, &b);
    dir = guest_alloc(&v.g, 2 * VMMBIB_PAGE_SIZE);
    d = gva(&v.g, dir);
    for (i = 0; i < 2 * per; i++) {
        d[i] = htole64(b.gpa + (uint64_t)(i % (per + 1)) * VMMBIB_PAGE_SIZE);
    }
    vmmbib_dev_get_stats(v.dev, &st0);
    TAP_CHECK(reg_range(&v.c, v.pd, 0x100000, (uint64_t)(per + 1) *
                        VMMBIB_PAGE_SIZE, dir, per + 1, 1) ==
              VMMBIB_STATUS_INVALID,
              "513 pages through one level-1 directory page: INVALID");
    vmmbib_dev_get_stats(v.dev, &st1);
    TAP_CHECK(st1.pinned_pages == st0.pinned_pages && st1.mrs == st0.mrs,
              "... nothing pinned, no MR");
    TAP_CHECK(reg_range(&v.c, v.pd, 0x100000, (uint64_t)per *
                        VMMBIB_PAGE_SIZE, dir, per, 1) == OK,
              "512 pages, a full directory page: OK");
    vm_fini(&v);
}

static void test_command_errors(void)
{
    struct vm v;
    struct gctx cb;
    uint32_t pdb, pd2, ah;
    struct gcq cqa, cqb, big;
    struct gqp qa, qb;
    struct gmr m;
    struct gbuf b;
    struct vmmbib_qp_attr a;
    struct vmmbib_cmd_query_qp qq;
    struct vmmbib_resp_query_qp qr;
    struct vmmbib_cmd_create_cq ccq;
    struct vmmbib_resp_create_cq rcq;
    struct rc_opts o;
    uint64_t dir, outside;
    uint64_t *d;

    TAP_CHECK(vm_init_cfg(&v, NULL) && ctx_create(&cb, v.dev, &v.g) == OK &&
              pd_create(&cb, &pdb) == OK &&
              cq_create(&v.c, 16, &cqa) == OK &&
              cq_create(&cb, 16, &cqb) == OK &&
              qp_create(&v.c, v.pd, &cqa, &cqa, NULL, NULL, &qa) == OK,
              "cmd errors: contexts A and B");
    gbuf_alloc(&v.g, 8192, &b);

    /* Objects of another context. */
    TAP_CHECK(mr_reg(&cb, v.pd, b.gpa, 8192, VMMBIB_ACCESS_LOCAL_WRITE,
                     &m) == VMMBIB_STATUS_NOT_OWNER,
              "REG_MR on another context's PD: NOT_OWNER");
    TAP_CHECK(destroy(&cb, VMMBIB_CMD_DESTROY_PD, v.pd) ==
              VMMBIB_STATUS_NOT_OWNER,
              "DESTROY_PD of another context's PD: NOT_OWNER");
    TAP_CHECK(destroy(&cb, VMMBIB_CMD_DEREG_MR, v.mr.handle) ==
              VMMBIB_STATUS_NOT_OWNER, "DEREG_MR of another's MR: NOT_OWNER");
    TAP_CHECK(qp_create(&cb, pdb, &cqa, &cqb, NULL, NULL, &qb) ==
              VMMBIB_STATUS_NOT_OWNER,
              "CREATE_QP with another context's CQ: NOT_OWNER");
    TAP_CHECK(qp_create(&cb, v.pd, &cqb, &cqb, NULL, NULL, &qb) ==
              VMMBIB_STATUS_NOT_OWNER,
              "CREATE_QP with another context's PD: NOT_OWNER");
    qq = (struct vmmbib_cmd_query_qp) { .qp_handle = htole32(qa.handle) };
    TAP_CHECK(cmd(v.dev, VMMBIB_CMD_QUERY_QP, cb.handle, &qq, sizeof(qq), &qr,
                  sizeof(qr)) == VMMBIB_STATUS_NOT_OWNER,
              "QUERY_QP of another's QP: NOT_OWNER");
    TAP_CHECK(ah_create(&cb, v.pd, 1, &ah) == VMMBIB_STATUS_NOT_OWNER,
              "CREATE_AH on another's PD: NOT_OWNER");
    TAP_CHECK(qp_create(&cb, pdb, &cqb, &cqb, NULL, NULL, &qb) == OK &&
              mr_reg(&cb, pdb, b.gpa, 8192, VMMBIB_ACCESS_LOCAL_WRITE,
                     &m) == OK,
              "B's own objects still work after those");

    /* Objects in use. */
    TAP_CHECK(destroy(&v.c, VMMBIB_CMD_DESTROY_PD, v.pd) == VMMBIB_STATUS_BUSY,
              "DESTROY_PD with MRs and a QP: BUSY");
    TAP_CHECK(destroy(&v.c, VMMBIB_CMD_DESTROY_CQ, cqa.handle) ==
              VMMBIB_STATUS_BUSY, "DESTROY_CQ under a QP: BUSY");
    TAP_CHECK(pd_create(&v.c, &pd2) == OK &&
              mr_reg(&v.c, pd2, b.gpa, 4096, VMMBIB_ACCESS_LOCAL_WRITE,
                     &m) == OK &&
              destroy(&v.c, VMMBIB_CMD_DESTROY_PD, pd2) == VMMBIB_STATUS_BUSY,
              "DESTROY_PD with an MR: BUSY");
    TAP_CHECK(destroy(&v.c, VMMBIB_CMD_DEREG_MR, m.handle) == OK &&
              destroy(&v.c, VMMBIB_CMD_DESTROY_PD, pd2) == OK,
              "after DEREG_MR the PD goes");
    TAP_CHECK(destroy(&v.c, VMMBIB_CMD_DESTROY_PD, pd2) ==
              VMMBIB_STATUS_BAD_HANDLE, "a destroyed PD's handle: BAD_HANDLE");

    /* Page lists. */
    outside = v.g.base + v.g.size;
    TAP_CHECK(reg_range(&v.c, v.pd, 0x10000, 4096, outside, 1, 0) ==
              VMMBIB_STATUS_BAD_ADDRESS,
              "a page just past guest RAM: BAD_ADDRESS");
    TAP_CHECK(reg_range(&v.c, v.pd, 0x10000, 4096, 0, 1, 0) ==
              VMMBIB_STATUS_BAD_ADDRESS,
              "page 0, below guest RAM: BAD_ADDRESS");
    TAP_CHECK(reg_range(&v.c, v.pd, 0x10000, 8192, outside, 2, 1) ==
              VMMBIB_STATUS_BAD_ADDRESS,
              "a directory page outside guest RAM: BAD_ADDRESS");
    dir = guest_alloc(&v.g, 4096);
    d = gva(&v.g, dir);
    d[0] = htole64(b.gpa);
    d[1] = htole64(outside + 8192);
    TAP_CHECK(reg_range(&v.c, v.pd, 0x10000, 8192, dir, 2, 1) ==
              VMMBIB_STATUS_BAD_ADDRESS,
              "a directory entry outside guest RAM: BAD_ADDRESS");
    d[1] = htole64(b.gpa + 4096);
    TAP_CHECK(reg_range(&v.c, v.pd, 0x10000, 8192, dir, 2, 1) == OK,
              "the same list with the entry fixed registers");
    TAP_CHECK(reg_range(&v.c, v.pd, 0x10000, 8192, dir, 3, 1) ==
              VMMBIB_STATUS_INVALID, "npages 3 for 8 KiB: INVALID");
    TAP_CHECK(reg_range(&v.c, v.pd, 0x10000, 8192, dir, 1, 1) ==
              VMMBIB_STATUS_INVALID, "npages 1 for 8 KiB: INVALID");
    TAP_CHECK(reg_range(&v.c, v.pd, 0x10ff0, 32, dir, 1, 1) ==
              VMMBIB_STATUS_INVALID,
              "32 bytes crossing a page with npages 1: INVALID");
    TAP_CHECK(reg_range(&v.c, v.pd, 0x10000, 8192, b.gpa, 2, 0) ==
              VMMBIB_STATUS_INVALID, "2 pages at level 0: INVALID");
    TAP_CHECK(reg_range(&v.c, v.pd, 0x10000, 0, b.gpa, 1, 0) ==
              VMMBIB_STATUS_INVALID, "length 0: INVALID");
    TAP_CHECK(reg_range(&v.c, v.pd, 0x10000, 4096, b.gpa, 1, 0) == OK,
              "a valid REG_MR after the bad ones");

    /* CQ sizes. */
    TAP_CHECK(cq_create(&v.c, 3, &big) == VMMBIB_STATUS_INVALID,
              "cqe 3 (not a power of two): INVALID");
    TAP_CHECK(cq_create(&v.c, 0, &big) == VMMBIB_STATUS_INVALID,
              "cqe 0: INVALID");
    memset(&ccq, 0, sizeof(ccq));
    ccq.cqe = htole32(128);     /* needs 64 + 128 * 64 bytes: 3 pages */
    guest_page_list_range(&v.g, guest_alloc(&v.g, 8192), 8192, &ccq.pages);
    TAP_CHECK(cmd(v.dev, VMMBIB_CMD_CREATE_CQ, v.c.handle, &ccq, sizeof(ccq),
                  &rcq, sizeof(rcq)) == VMMBIB_STATUS_INVALID,
              "a CQ ring too small for its cqe: INVALID");
    TAP_CHECK(cq_create(&v.c, 128, &big) == OK, "cqe 128 with 3 pages: OK");
    {
        struct vmmbib_cmd_resize_cq rq = {
            .cq_handle = htole32(big.handle),
            .cqe = htole32(256),    /* 64 + 256 * 64 bytes: 5 pages */
        };
        struct vmmbib_resp_resize_cq rr;

        guest_page_list_range(&v.g, guest_alloc(&v.g, 4 * 4096), 4 * 4096,
                              &rq.pages);
        TAP_CHECK(cmd(v.dev, VMMBIB_CMD_RESIZE_CQ, v.c.handle, &rq,
                      sizeof(rq), &rr, sizeof(rr)) ==
                  VMMBIB_STATUS_INVALID && big.cqe == 128,
                  "RESIZE_CQ to 256 CQEs with 4 pages: INVALID");
    }

    /* The QP state machine. */
    memset(&a, 0, sizeof(a));
    a.qp_state = VMMBIB_QPS_RTR;
    TAP_CHECK(qp_modify(&qa, VMMBIB_QP_STATE, &a) == VMMBIB_STATUS_BAD_STATE,
              "RESET -> RTR: BAD_STATE");
    memset(&a, 0, sizeof(a));
    a.qp_state = VMMBIB_QPS_INIT;
    a.port_num = 1;
    TAP_CHECK(qp_modify(&qa, VMMBIB_QP_STATE | VMMBIB_QP_PKEY_INDEX |
                        VMMBIB_QP_PORT, &a) == VMMBIB_STATUS_BAD_STATE,
              "RESET -> INIT without ACCESS_FLAGS: BAD_STATE");
    a.port_num = 2;
    TAP_CHECK(qp_modify(&qa, VMMBIB_QP_STATE | VMMBIB_QP_PKEY_INDEX |
                        VMMBIB_QP_PORT | VMMBIB_QP_ACCESS_FLAGS, &a) ==
              VMMBIB_STATUS_INVALID, "RESET -> INIT on port 2: INVALID");
    a.qp_state = VMMBIB_QPS_INIT;
    a.cur_qp_state = VMMBIB_QPS_RTS;
    TAP_CHECK(qp_modify(&qa, VMMBIB_QP_STATE | VMMBIB_QP_CUR_STATE, &a) ==
              VMMBIB_STATUS_BAD_STATE, "a wrong cur_qp_state: BAD_STATE");
    TAP_CHECK(qp_rc_init(&qa, VMMBIB_ACCESS_REMOTE_WRITE) == OK,
              "RESET -> INIT");
    rc_opts_default(&o);
    memset(&a, 0, sizeof(a));
    a.qp_state = VMMBIB_QPS_RTR;
    a.path_mtu = VMMBIB_MTU_1024;
    a.ah_attr.dlid = htole16(port_lid(v.dev));
    a.ah_attr.port_num = 1;
    TAP_CHECK(qp_modify(&qa, VMMBIB_QP_STATE | VMMBIB_QP_AV |
                        VMMBIB_QP_PATH_MTU | VMMBIB_QP_RQ_PSN |
                        VMMBIB_QP_MAX_DEST_RD_ATOMIC |
                        VMMBIB_QP_MIN_RNR_TIMER, &a) ==
              VMMBIB_STATUS_BAD_STATE,
              "INIT -> RTR without DEST_QPN: BAD_STATE");
    TAP_CHECK(qp_state(&qa) == VMMBIB_QPS_INIT,
              "a refused modify leaves the QP in INIT");
    TAP_CHECK(qp_rc_rtr(&qa, port_lid(v.dev), qa.qpn, &o) == OK &&
              qp_rc_rts(&qa, &o) == OK && qp_state(&qa) == VMMBIB_QPS_RTS,
              "the full INIT -> RTR -> RTS still works");
    vm_fini(&v);
}

static void test_quotas(void)
{
    struct vmmbib_dev_config cfg;
    struct guest g;
    struct vmmbib_dev *dev;
    struct vmmbib_dev_stats st;
    struct gctx c;
    struct gbuf b;
    struct gmr m1, m2, m3;
    uint32_t pd, pd2, pd3;

    guest_init(&g, GUEST_RAM_SIZE);
    guest_dev_config(&cfg);
    cfg.limits.max_pinned_pages = 8;
    cfg.limits.max_pd = 2;
    dev = guest_dev_new(&g, NULL, &cfg);
    gbuf_alloc(&g, 16 * 4096, &b);
    TAP_CHECK(ctx_create(&c, dev, &g) == OK && pd_create(&c, &pd) == OK,
              "quotas: a device with max_pinned_pages 8, max_pd 2");
    TAP_CHECK(mr_reg(&c, pd, b.gpa, 16 * 4096, VMMBIB_ACCESS_LOCAL_WRITE,
                     &m1) == VMMBIB_STATUS_NO_RESOURCES,
              "REG_MR of 16 pages over a quota of 8: NO_RESOURCES");
    TAP_CHECK(mr_reg(&c, pd, b.gpa, 5 * 4096, VMMBIB_ACCESS_LOCAL_WRITE,
                     &m1) == OK &&
              mr_reg(&c, pd, b.gpa, 3 * 4096, VMMBIB_ACCESS_LOCAL_WRITE,
                     &m2) == OK,
              "5 + 3 pages fit exactly");
    vmmbib_dev_get_stats(dev, &st);
    TAP_CHECK(st.pinned_pages == 8, "pinned_pages counts 8");
    TAP_CHECK(mr_reg(&c, pd, b.gpa, 100, VMMBIB_ACCESS_LOCAL_WRITE, &m3) ==
              VMMBIB_STATUS_NO_RESOURCES, "one more page: NO_RESOURCES");
    TAP_CHECK(destroy(&c, VMMBIB_CMD_DEREG_MR, m2.handle) == OK &&
              mr_reg(&c, pd, b.gpa, 100, VMMBIB_ACCESS_LOCAL_WRITE,
                     &m3) == OK,
              "after a DEREG_MR the page fits again");
    vmmbib_dev_get_stats(dev, &st);
    TAP_CHECK(st.pinned_pages == 6, "pinned_pages is back to 6");

    TAP_CHECK(pd_create(&c, &pd2) == OK, "a second PD");
    TAP_CHECK(pd_create(&c, &pd3) == VMMBIB_STATUS_NO_RESOURCES,
              "max_pd 2: the third CREATE_PD gets NO_RESOURCES");
    TAP_CHECK(destroy(&c, VMMBIB_CMD_DESTROY_PD, pd2) == OK &&
              pd_create(&c, &pd3) == OK && pd3 != pd2,
              "after a DESTROY_PD a new one is created, with a new handle");
    vmmbib_dev_free(dev);
    guest_fini(&g);
}

/*
 * Object quotas: the object after the last one a limit allows gets
 * NO_RESOURCES and pins nothing, the device keeps serving, and freeing one
 * lets creation succeed again.
 */
static void test_object_quotas(void)
{
    struct vmmbib_dev_config cfg;
    struct vm v;
    struct vmmbib_dev_stats st0, st;
    struct gcq cq1, cq2, cq3;
    struct gqp qa, qb, qc;
    struct gsrq s1, s2;
    struct gmr m2, m3;
    struct vmmbib_cqe e;
    struct vmmbib_sge s;
    struct vmmbib_resp_query_device qd;
    uint32_t ah1, ah2;

    guest_dev_config(&cfg);
    cfg.limits.max_cq = 2;
    cfg.limits.max_qp = 2;
    cfg.limits.max_mr = 2;
    cfg.limits.max_srq = 1;
    cfg.limits.max_ah = 1;
    TAP_CHECK(vm_init_cfg(&v, &cfg),
              "object quotas: max_cq 2, max_qp 2, max_mr 2, max_srq 1, "
              "max_ah 1 (one MR in use)");

    TAP_CHECK(mr_reg(&v.c, v.pd, v.buf.gpa, 4096, VMMBIB_ACCESS_LOCAL_WRITE,
                     &m2) == OK, "max_mr: the second MR");
    TAP_CHECK(mr_reg(&v.c, v.pd, v.buf.gpa, 4096, VMMBIB_ACCESS_LOCAL_WRITE,
                     &m3) == VMMBIB_STATUS_NO_RESOURCES,
              "max_mr: the third REG_MR gets NO_RESOURCES");
    TAP_CHECK(mr_dma(&v.c, v.pd, VMMBIB_ACCESS_LOCAL_WRITE, &m3) ==
              VMMBIB_STATUS_NO_RESOURCES,
              "max_mr: so does CREATE_DMA_MR");

    TAP_CHECK(cq_create(&v.c, 16, &cq1) == OK &&
              cq_create(&v.c, 16, &cq2) == OK, "max_cq: two CQs");
    TAP_CHECK(cq_create(&v.c, 16, &cq3) == VMMBIB_STATUS_NO_RESOURCES,
              "max_cq: the third CREATE_CQ gets NO_RESOURCES");

    TAP_CHECK(qp_create(&v.c, v.pd, &cq1, &cq1, NULL, NULL, &qa) == OK &&
              qp_create(&v.c, v.pd, &cq2, &cq2, NULL, NULL, &qb) == OK,
              "max_qp: two QPs");
    TAP_CHECK(qp_create(&v.c, v.pd, &cq1, &cq1, NULL, NULL, &qc) ==
              VMMBIB_STATUS_NO_RESOURCES,
              "max_qp: the third CREATE_QP gets NO_RESOURCES");

    TAP_CHECK(srq_create(&v.c, v.pd, 8, 0, &s1) == OK, "max_srq: one SRQ");
    TAP_CHECK(srq_create(&v.c, v.pd, 8, 0, &s2) ==
              VMMBIB_STATUS_NO_RESOURCES,
              "max_srq: the second CREATE_SRQ gets NO_RESOURCES");

    TAP_CHECK(ah_create(&v.c, v.pd, port_lid(v.dev), &ah1) == OK,
              "max_ah: one AH");
    TAP_CHECK(ah_create(&v.c, v.pd, port_lid(v.dev), &ah2) ==
              VMMBIB_STATUS_NO_RESOURCES,
              "max_ah: the second CREATE_AH gets NO_RESOURCES");

    vmmbib_dev_get_stats(v.dev, &st);
    TAP_CHECK(st.mrs == 2 && st.cqs == 2 && st.qps == 2 && st.srqs == 1 &&
              st.ahs == 1,
              "object quotas: the counters hold exactly the limits");
    /* The refused creations pinned nothing: retry and compare. */
    vmmbib_dev_get_stats(v.dev, &st0);
    TAP_CHECK(cq_create(&v.c, 16, &cq3) == VMMBIB_STATUS_NO_RESOURCES &&
              qp_create(&v.c, v.pd, &cq1, &cq1, NULL, NULL, &qc) ==
              VMMBIB_STATUS_NO_RESOURCES &&
              srq_create(&v.c, v.pd, 8, 0, &s2) ==
              VMMBIB_STATUS_NO_RESOURCES, "refused again");
    vmmbib_dev_get_stats(v.dev, &st);
    TAP_CHECK(st.pinned_pages == st0.pinned_pages,
              "object quotas: a refused CQ, QP or SRQ keeps no pinned page");

    /* The device still serves valid requests: a SEND with its data. */
    TAP_CHECK(cmd(v.dev, VMMBIB_CMD_QUERY_DEVICE, 0, NULL, 0, &qd,
                  sizeof(qd)) == OK && le32toh(qd.max_qp) == 2 &&
              le32toh(qd.max_ah) == 1, "QUERY_DEVICE reports the limits");
    TAP_CHECK(rc_connect(&qa, &qb, NULL) == OK,
              "at the limits: the two QPs connect");
    pattern_fill(v.buf.p, 500, 95);
    s = buf_sge(&v, 8192, 512);
    qp_post_recv(&qb, 0x71, &s, 1);
    s = buf_sge(&v, 0, 500);
    post_send(&qa, 0x72, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&cq1, &e, 1) == 1 &&
              cqe_is(&e, 0x72, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS) &&
              cq_wait(&cq2, &e, 1) == 1 &&
              cqe_is(&e, 0x71, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              pattern_check(v.buf.p + 8192, 500, 95),
              "at the limits: a SEND moves its data");

    /* Freeing one of a kind makes room for one. */
    TAP_CHECK(destroy(&v.c, VMMBIB_CMD_DEREG_MR, m2.handle) == OK &&
              mr_reg(&v.c, v.pd, v.buf.gpa, 4096,
                     VMMBIB_ACCESS_LOCAL_WRITE, &m3) == OK,
              "max_mr: after DEREG_MR a REG_MR succeeds");
    TAP_CHECK(destroy(&v.c, VMMBIB_CMD_DESTROY_SRQ, s1.handle) == OK &&
              srq_create(&v.c, v.pd, 8, 0, &s2) == OK,
              "max_srq: after DESTROY_SRQ a CREATE_SRQ succeeds");
    TAP_CHECK(destroy(&v.c, VMMBIB_CMD_DESTROY_AH, ah1) == OK &&
              ah_create(&v.c, v.pd, port_lid(v.dev), &ah2) == OK &&
              ah2 != ah1,
              "max_ah: after DESTROY_AH a CREATE_AH succeeds, new handle");
    TAP_CHECK(destroy(&v.c, VMMBIB_CMD_DESTROY_QP, qb.handle) == OK &&
              qp_create(&v.c, v.pd, &cq1, &cq1, NULL, NULL, &qc) == OK,
              "max_qp: after DESTROY_QP a CREATE_QP succeeds");
    TAP_CHECK(destroy(&v.c, VMMBIB_CMD_DESTROY_CQ, cq2.handle) == OK &&
              cq_create(&v.c, 16, &cq3) == OK,
              "max_cq: after DESTROY_CQ a CREATE_CQ succeeds");
    vmmbib_dev_get_stats(v.dev, &st);
    TAP_CHECK(st.mrs == 2 && st.cqs == 2 && st.qps == 2 && st.srqs == 1 &&
              st.ahs == 1, "object quotas: still exactly at the limits");
    vm_fini(&v);
}

/* Every object kind of one context, with work in flight. */
struct objs {
    struct rc_pair p;
    struct gqp ud, sq;
    struct gcq cq;
    struct gsrq srq;
    struct gbuf b;
    struct gmr m, dma;
    uint32_t pd, ah;
};

static bool populate(struct gctx *c, struct objs *o)
{
    struct rc_opts ro;
    struct qp_opts uo;
    struct vmmbib_sge s;

    rc_opts_default(&ro);
    ro.rnr_retry = 7;           /* the send below waits for a receive */
    qp_opts_default(&uo, VMMBIB_QPT_UD);
    gbuf_alloc(c->g, 40000, &o->b);
    if (pd_create(c, &o->pd) ||
        mr_reg(c, o->pd, o->b.gpa, o->b.len, ACCESS_ALL_RIGHTS, &o->m) ||
        mr_dma(c, o->pd, VMMBIB_ACCESS_LOCAL_WRITE, &o->dma) ||
        rc_pair_create(&o->p, c, o->pd, c, o->pd, &ro) ||
        cq_create(c, 32, &o->cq) ||
        qp_create(c, o->pd, &o->cq, &o->cq, NULL, &uo, &o->ud) ||
        ud_to_rts(&o->ud, 7) ||
        srq_create(c, o->pd, 8, 0, &o->srq) ||
        qp_create(c, o->pd, &o->cq, &o->cq, &o->srq, NULL, &o->sq) ||
        ah_create(c, o->pd, port_lid(c->dev), &o->ah)) {
        return false;
    }
    /* A send stuck in RNR retries, and receives posted everywhere. */
    s = sge(&o->m, o->b.gpa, 64);
    post_send(&o->p.a, 1, VMMBIB_WR_SEND, &s, 1, 0, 0);
    qp_post_recv(&o->p.a, 2, &s, 1);
    qp_post_recv(&o->ud, 3, &s, 1);
    srq_post_recv(&o->srq, 4, &s, 1);
    s = sge(&o->dma, o->b.gpa + 4096, 64);
    qp_post_recv(&o->p.a, 5, &s, 1);
    return ctx_doorbells_drained(c);
}

static void test_teardown(void)
{
    struct guest g;
    struct vmmbib_dev *dev;
    struct gctx ca, cb, c;
    static struct objs oa, ob;
    struct vmmbib_dev_stats s0, sa, sb, st;
    struct rc_pair p;
    struct gbuf b;
    struct gmr m;
    uint32_t pd;
    struct vmmbib_sge s;
    struct vmmbib_cqe e;

    guest_init(&g, GUEST_RAM_SIZE);
    dev = guest_dev_new(&g, NULL, NULL);
    vmmbib_dev_get_stats(dev, &s0);
    TAP_CHECK(ctx_create(&ca, dev, &g) == OK && populate(&ca, &oa),
              "teardown: context A with one of everything, work in flight");
    vmmbib_dev_get_stats(dev, &sa);
    TAP_CHECK(ctx_create(&cb, dev, &g) == OK && populate(&cb, &ob),
              "teardown: context B likewise");
    vmmbib_dev_get_stats(dev, &sb);
    printf("# A: %u PDs, %u MRs, %u CQs, %u QPs, %u SRQs, %u AHs, "
           "%llu pinned pages\n", sa.pds, sa.mrs, sa.cqs, sa.qps, sa.srqs,
           sa.ahs, (unsigned long long)sa.pinned_pages);
    TAP_CHECK(s0.pds == 0 && s0.pinned_pages == 0 && sa.ucontexts == 1 &&
              sa.pds == 1 && sa.mrs == 2 && sa.cqs == 5 && sa.qps == 4 &&
              sa.srqs == 1 && sa.ahs == 1 && sa.pinned_pages > 0 &&
              sb.ucontexts == 2 && sb.qps == 8 &&
              sb.pinned_pages == 2 * sa.pinned_pages,
              "teardown: the counters count every object and pinned page");

    msleep(5);      /* let the stuck sends retry a few times */
    TAP_CHECK(ctx_destroy(&ca) == OK, "DESTROY_UCONTEXT with live objects");
    vmmbib_dev_get_stats(dev, &st);
    TAP_CHECK(st.ucontexts == 1 && st.pds == sb.pds - sa.pds &&
              st.mrs == sb.mrs - sa.mrs && st.cqs == sb.cqs - sa.cqs &&
              st.qps == sb.qps - sa.qps && st.srqs == sb.srqs - sa.srqs &&
              st.ahs == sb.ahs - sa.ahs &&
              st.pinned_pages == sb.pinned_pages - sa.pinned_pages,
              "DESTROY_UCONTEXT frees exactly that context's objects");
    TAP_CHECK(qp_state(&oa.p.a) == -1 &&
              pd_create(&ca, &pd) == VMMBIB_STATUS_BAD_HANDLE,
              "the destroyed context's handle is gone");
    TAP_CHECK(qp_state(&ob.p.a) == VMMBIB_QPS_RTS,
              "context B's QPs are untouched");
    /* B's stuck send completes once B posts its receive. */
    s = sge(&ob.m, ob.b.gpa + 8192, 64);
    qp_post_recv(&ob.p.b, 9, &s, 1);
    TAP_CHECK(cq_wait(&ob.p.a_scq, &e, 1) == 1 &&
              cqe_is(&e, 1, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS),
              "B's RNR-waiting send still runs after A is gone");
    msleep(5);

    vmmbib_dev_reset(dev);
    vmmbib_dev_get_stats(dev, &st);
    TAP_CHECK(st.ucontexts == 0 && st.pds == 0 && st.mrs == 0 &&
              st.cqs == 0 && st.qps == 0 && st.srqs == 0 && st.ahs == 0 &&
              st.pinned_pages == 0,
              "vmmbib_dev_reset leaves every counter at 0");

    /* The device works after the reset. */
    gbuf_alloc(&g, 8192, &b);
    pattern_fill(b.p, 100, 90);
    TAP_CHECK(ctx_create(&c, dev, &g) == OK && c.slot == 0 &&
              pd_create(&c, &pd) == OK &&
              mr_reg(&c, pd, b.gpa, 8192, ACCESS_ALL_RIGHTS, &m) == OK &&
              rc_pair_create(&p, &c, pd, &c, pd, NULL) == OK,
              "after reset: a new context in slot 0 and a pair");
    s = sge(&m, b.gpa + 4096, 100);
    qp_post_recv(&p.b, 0x21, &s, 1);
    s = sge(&m, b.gpa, 100);
    post_send(&p.a, 0x22, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&p.b_rcq, &e, 1) == 1 &&
              cqe_is(&e, 0x21, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              pattern_check(b.p + 4096, 100, 90),
              "after reset: a SEND goes through");
    TAP_CHECK(ctx_destroy(&c) == OK, "DESTROY_UCONTEXT of the last context");
    vmmbib_dev_get_stats(dev, &st);
    TAP_CHECK(st.ucontexts == 0 && st.pds == 0 && st.mrs == 0 &&
              st.cqs == 0 && st.qps == 0 && st.srqs == 0 && st.ahs == 0 &&
              st.pinned_pages == 0,
              "DESTROY_UCONTEXT of the last context leaves every counter 0");
    vmmbib_dev_free(dev);
    guest_fini(&g);
}

int main(void)
{
    test_wqe_errors();
    test_sge_counts();
    test_table_edges();
    test_double_fetch();
    test_command_errors();
    test_directory_bounds();
    test_quotas();
    test_object_quotas();
    test_teardown();
    return tap_done();
}
