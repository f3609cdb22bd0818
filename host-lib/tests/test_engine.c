/*
 * Engine behaviour with synthetic guests: RNR retries, CQ arming and
 * overflow, hostile doorbells, sleeping and kicks, MMIO doorbells, stale
 * doorbells after a trapped one, the configured idle time, and fairness
 * between devices.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <endian.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "guest.h"
#include "internal.h"
#include "tap.h"


static uint64_t cpu_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_rnr(void)
{
    struct vm v;
    struct rc_pair p;
    struct rc_opts o;
    struct vmmbib_cqe c;
    struct vmmbib_sge s;

    TAP_CHECK(vm_init(&v), "rnr: a device");

    /* rnr_retry 0: the first RNR NAK fails the WQE. */
    rc_opts_default(&o);
    o.rnr_retry = 0;
    TAP_CHECK(rc_pair_create(&p, &v.c, v.pd, &v.c, v.pd, &o) == OK,
              "rnr: a pair with rnr_retry 0");
    s = buf_sge(&v, 0, 64);
    post_send(&p.a, 0x91, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x91, VMMBIB_WC_SEND, VMMBIB_WC_RNR_RETRY_EXC_ERR),
              "no receive, rnr_retry 0: RNR_RETRY_EXC_ERR");
    TAP_CHECK(qp_state(&p.a) == VMMBIB_QPS_ERR &&
              qp_state(&p.b) == VMMBIB_QPS_RTS,
              "rnr: the requester is in ERR, the responder still in RTS");

    /* rnr_retry 7 retries forever: a receive posted 20 ms later works. */
    rc_opts_default(&o);
    o.rnr_retry = 7;
    TAP_CHECK(rc_pair_create(&p, &v.c, v.pd, &v.c, v.pd, &o) == OK,
              "rnr: a pair with rnr_retry 7");
    pattern_fill(v.buf.p, 64, 50);
    post_send(&p.a, 0x92, VMMBIB_WR_SEND, &s, 1, 0, 0);
    msleep(20);
    TAP_CHECK(cq_poll(&p.a_scq, &c, 1) == 0,
              "rnr_retry 7: no completion while no receive is posted");
    s = buf_sge(&v, 4096, 64);
    qp_post_recv(&p.b, 0x93, &s, 1);
    TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x92, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS),
              "rnr_retry 7: the send succeeds once the receive is posted");
    TAP_CHECK(cq_wait(&p.b_rcq, &c, 1) == 1 &&
              cqe_is(&c, 0x93, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              pattern_check(v.buf.p + 4096, 64, 50),
              "rnr_retry 7: the late receive gets the payload");

    /*
     * The RNR NAK carries the responder's min_rnr_timer (IBA 9.7.5.2.8;
     * verbs set it on the responder in INIT->RTR): a requester whose own
     * value is 0 (655 ms) must retry after the responder's 10 us.
     */
    rc_opts_default(&o);
    o.rnr_retry = 7;
    memset(&p, 0, sizeof(p));
    TAP_CHECK(cq_create(&v.c, 16, &p.a_scq) == OK &&
              cq_create(&v.c, 16, &p.a_rcq) == OK &&
              cq_create(&v.c, 16, &p.b_scq) == OK &&
              cq_create(&v.c, 16, &p.b_rcq) == OK &&
              qp_create(&v.c, v.pd, &p.a_scq, &p.a_rcq, NULL, NULL,
                        &p.a) == OK &&
              qp_create(&v.c, v.pd, &p.b_scq, &p.b_rcq, NULL, NULL,
                        &p.b) == OK &&
              qp_rc_init(&p.a, o.access) == OK &&
              qp_rc_init(&p.b, o.access) == OK &&
              (o.min_rnr_timer = 0,
               qp_rc_rtr(&p.a, port_lid(v.dev), p.b.qpn, &o)) == OK &&
              (o.min_rnr_timer = 1,
               qp_rc_rtr(&p.b, port_lid(v.dev), p.a.qpn, &o)) == OK &&
              qp_rc_rts(&p.a, &o) == OK && qp_rc_rts(&p.b, &o) == OK,
              "rnr: a pair whose responder has min_rnr_timer 10 us");
    s = buf_sge(&v, 0, 64);
    post_send(&p.a, 0x94, VMMBIB_WR_SEND, &s, 1, 0, 0);
    msleep(20);
    {
        uint64_t t0 = mono_ms(), dt;

        s = buf_sge(&v, 8192, 64);
        qp_post_recv(&p.b, 0x95, &s, 1);
        TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 &&
                  cqe_is(&c, 0x94, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS),
                  "rnr timer: the send completes");
        dt = mono_ms() - t0;
        if (dt >= 300) {
            printf("# completed %llu ms after the receive was posted\n",
                   (unsigned long long)dt);
        }
        TAP_CHECK(dt < 300,
                  "rnr timer: retried after the responder's timer, not "
                  "the requester's 655 ms");
    }
    vm_fini(&v);
}

static void test_cq_arm(void)
{
    struct vm v;
    struct rc_pair p;
    struct vmmbib_cqe c[5];
    struct vmmbib_sge s;
    struct vmmbib_send_wqe w;
    struct gcq small;
    struct gqp q, peer;
    struct gcq pcq;
    int got;

    TAP_CHECK(vm_init(&v) &&
              rc_pair_create(&p, &v.c, v.pd, &v.c, v.pd, NULL) == OK,
              "cq arm: a connected pair");
    cq_arm(&p.b_rcq, VMMBIB_DB_ARM_NEXT);
    s = buf_sge(&v, 4096, 256);
    qp_post_recv(&p.b, 1, &s, 1);
    s = buf_sge(&v, 0, 16);
    post_send(&p.a, 2, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&p.b_rcq, c, 1) == 1 && cq_wait(&p.a_scq, c + 1, 1) == 1,
              "cq arm: both completions arrive");
    TAP_CHECK(guest_wait_event(&v.g, VMMBIB_EVENT_COMP, p.b_rcq.handle, 1,
                               wait_timeout_ms()),
              "an armed CQ raises COMP after a completion");
    TAP_CHECK(guest_event_count(&v.g, VMMBIB_EVENT_COMP, p.a_scq.handle) == 0,
              "a CQ never armed raises no COMP");

    /* The arm was consumed: no event for the next completion. */
    s = buf_sge(&v, 4096, 256);
    qp_post_recv(&p.b, 3, &s, 1);
    s = buf_sge(&v, 0, 16);
    post_send(&p.a, 4, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&p.b_rcq, c, 1) == 1 && cq_wait(&p.a_scq, c + 1, 1) == 1,
              "cq arm: a second exchange completes");
    msleep(10);
    TAP_CHECK(guest_event_count(&v.g, VMMBIB_EVENT_COMP, p.b_rcq.handle) == 1,
              "no COMP without a new arm");

    /* Solicited only: an ordinary SEND does not fire, a solicited one does. */
    cq_arm(&p.b_rcq, VMMBIB_DB_ARM_SOLICITED);
    s = buf_sge(&v, 4096, 256);
    qp_post_recv(&p.b, 5, &s, 1);
    qp_post_recv(&p.b, 7, &s, 1);
    s = buf_sge(&v, 0, 16);
    post_send(&p.a, 6, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&p.b_rcq, c, 1) == 1 && cq_wait(&p.a_scq, c + 1, 1) == 1,
              "cq arm solicited: an unsolicited SEND completes");
    msleep(10);
    TAP_CHECK(guest_event_count(&v.g, VMMBIB_EVENT_COMP, p.b_rcq.handle) == 1,
              "arm solicited: no COMP for an unsolicited receive");
    memset(&w, 0, sizeof(w));
    w.wr_id = htole64(8);
    w.opcode = VMMBIB_WR_SEND;
    w.flags = VMMBIB_WQE_SIGNALED | VMMBIB_WQE_SOLICITED;
    qp_post_send(&p.a, &w, &s, 1, NULL, 0, true);
    TAP_CHECK(cq_wait(&p.b_rcq, c, 1) == 1 && le64toh(c[0].wr_id) == 7,
              "cq arm solicited: the solicited SEND is received");
    TAP_CHECK(guest_wait_event(&v.g, VMMBIB_EVENT_COMP, p.b_rcq.handle, 2,
                               wait_timeout_ms()),
              "arm solicited: COMP for the solicited receive");

    /* Overflow: a 4-entry CQ holds 4 unconsumed CQEs, not 5. */
    TAP_CHECK(cq_create(&v.c, 4, &small) == OK &&
              cq_create(&v.c, 16, &pcq) == OK &&
              qp_create(&v.c, v.pd, &small, &small, NULL, NULL, &q) == OK &&
              qp_create(&v.c, v.pd, &pcq, &pcq, NULL, NULL, &peer) == OK &&
              rc_connect(&q, &peer, NULL) == OK,
              "cq overflow: a QP on a 4-entry CQ");
    s = buf_sge(&v, 0, 8);
    for (int i = 0; i < 4; i++) {
        post_send(&q, 0x10 + i, VMMBIB_WR_RDMA_WRITE, &s, 1,
                  v.buf.gpa + 32768, v.mr.rkey);
    }
    /* Wait for the 4th without consuming: the owner bit of its slot. */
    {
        struct vmmbib_cqe *last = (void *)(small.ring +
                                           sizeof(struct vmmbib_cq_header) +
                                           3 * sizeof(struct vmmbib_cqe));
        uint64_t end = mono_ms() + wait_timeout_ms();

        while (!(__atomic_load_n(&last->owner, __ATOMIC_ACQUIRE) &
                 VMMBIB_CQE_OWNER) && mono_ms() < end) {
            msleep(1);
        }
    }
    msleep(5);
    TAP_CHECK(guest_event_count(&v.g, VMMBIB_EVENT_CQ_ERR, small.handle) == 0,
              "cq overflow: 4 CQEs fill a 4-entry CQ without error");
    post_send(&q, 0x14, VMMBIB_WR_RDMA_WRITE, &s, 1, v.buf.gpa + 32768,
              v.mr.rkey);
    TAP_CHECK(guest_wait_event(&v.g, VMMBIB_EVENT_CQ_ERR, small.handle, 1,
                               wait_timeout_ms()),
              "cq overflow: the 5th completion raises CQ_ERR");
    got = cq_poll(&small, c, 5);
    TAP_CHECK(got == 4 && le64toh(c[0].wr_id) == 0x10 &&
              le64toh(c[3].wr_id) == 0x13,
              "cq overflow: the 4 CQEs written before are intact");
    vm_fini(&v);
}

static void test_hostile_doorbells(void)
{
    struct vm v;
    struct gctx cb;
    uint32_t pdb;
    struct rc_pair pa, pb;
    struct vmmbib_dev_stats st0, st1;
    struct vmmbib_cqe c;
    struct vmmbib_sge s;
    struct vmmbib_send_wqe w;
    struct gbuf bbuf;
    struct gmr bmr;

    TAP_CHECK(vm_init(&v) && ctx_create(&cb, v.dev, &v.g) == OK &&
              pd_create(&cb, &pdb) == OK &&
              rc_pair_create(&pa, &v.c, v.pd, &v.c, v.pd, NULL) == OK &&
              rc_pair_create(&pb, &cb, pdb, &cb, pdb, NULL) == OK,
              "hostile: two contexts with a pair each");
    gbuf_alloc(&v.g, 8192, &bbuf);
    TAP_CHECK(mr_reg(&cb, pdb, bbuf.gpa, bbuf.len, ACCESS_ALL_RIGHTS,
                     &bmr) == OK, "hostile: context B's MR");

    /* B writes a WQE but does not ring; A rings for it. */
    pattern_fill(bbuf.p, 100, 60);
    memset(&w, 0, sizeof(w));
    w.wr_id = htole64(0xb1);
    w.opcode = VMMBIB_WR_RDMA_WRITE;
    w.flags = VMMBIB_WQE_SIGNALED;
    w.rdma.remote_addr = htole64(bbuf.gpa + 4096);
    w.rdma.rkey = htole32(bmr.rkey);
    s = sge(&bmr, bbuf.gpa, 100);
    qp_post_send(&pb.a, &w, &s, 1, NULL, 0, false);

    vmmbib_dev_get_stats(v.dev, &st0);
    ctx_doorbell(&v.c, VMMBIB_DB(VMMBIB_DB_KIND_SQ,
                                 VMMBIB_HANDLE_INDEX(pb.a.handle), 1));
    TAP_CHECK(ctx_doorbells_drained(&v.c), "hostile: the engine took it");
    vmmbib_dev_get_stats(v.dev, &st1);
    TAP_CHECK(st1.bad_doorbells == st0.bad_doorbells + 1,
              "SQ doorbell naming another context's QP is counted bad");
    msleep(10);
    TAP_CHECK(cq_poll(&pb.a_scq, &c, 1) == 0 &&
              bbuf.p[4096] == 0 && qp_state(&pb.a) == VMMBIB_QPS_RTS,
              "... and ignored: the other QP did nothing and is in RTS");

    /* More doorbells into B's objects, and ones that name nothing. */
    ctx_doorbell(&v.c, VMMBIB_DB(VMMBIB_DB_KIND_RQ,
                                 VMMBIB_HANDLE_INDEX(pb.b.handle), 5));
    ctx_doorbell(&v.c, VMMBIB_DB(VMMBIB_DB_KIND_CQ_ARM,
                                 VMMBIB_HANDLE_INDEX(pb.b_rcq.handle), 0));
    ctx_doorbell(&v.c, VMMBIB_DB(VMMBIB_DB_KIND_SQ, 0xfffff0, 1));
    ctx_doorbell(&v.c, VMMBIB_DB(VMMBIB_DB_KIND_SRQ, 1, 1));
    ctx_doorbell(&v.c, VMMBIB_DB(9, VMMBIB_HANDLE_INDEX(pa.a.handle), 1));
    ctx_doorbell(&v.c, VMMBIB_DB(0, VMMBIB_HANDLE_INDEX(pa.a.handle), 1));
    ctx_doorbell(&v.c, VMMBIB_DB(VMMBIB_DB_KIND_CQ_ARM,
                                 VMMBIB_HANDLE_INDEX(pa.a_scq.handle), 2));
    TAP_CHECK(ctx_doorbells_drained(&v.c), "hostile: 7 more taken");
    vmmbib_dev_get_stats(v.dev, &st1);
    TAP_CHECK(st1.bad_doorbells == st0.bad_doorbells + 8,
              "foreign RQ/CQ, unknown queue, no SRQ, unknown kinds, bad arm "
              "value: each counted");
    /* A trapped doorbell for a slot no context owns. */
    vmmbib_dev_doorbell(v.dev, 7, VMMBIB_DB(VMMBIB_DB_KIND_SQ, 1, 1));
    vmmbib_dev_get_stats(v.dev, &st1);
    TAP_CHECK(st1.bad_doorbells == st0.bad_doorbells + 9,
              "a trapped doorbell of an unused slot is counted");

    /* B's own doorbell still works and the B objects are intact. */
    s = sge(&bmr, bbuf.gpa + 4096 + 1024, 64);
    qp_post_recv(&pb.b, 0xb2, &s, 1);
    qp_sq_doorbell(&pb.a);
    TAP_CHECK(cq_wait(&pb.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0xb1, VMMBIB_WC_RDMA_WRITE, VMMBIB_WC_SUCCESS) &&
              pattern_check(bbuf.p + 4096, 100, 60),
              "B's own doorbell runs the WQE");
    s = sge(&bmr, bbuf.gpa, 8);
    post_send(&pb.a, 0xb3, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&pb.b_rcq, &c, 1) == 1 &&
              cqe_is(&c, 0xb2, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              cq_wait(&pb.a_scq, &c, 1) == 1,
              "B's RQ kept its own producer (A's RQ doorbell was ignored)");
    TAP_CHECK(guest_event_count(&v.g, VMMBIB_EVENT_COMP,
                                pb.b_rcq.handle) == 0,
              "A's CQ_ARM did not arm B's CQ");

    /* A producer that jumps past the SQ's size: that QP goes to ERR. */
    ctx_doorbell(&v.c, VMMBIB_DB(VMMBIB_DB_KIND_SQ,
                                 VMMBIB_HANDLE_INDEX(pa.a.handle),
                                 pa.a.sq_wr + 1));
    TAP_CHECK(guest_wait_event(&v.g, VMMBIB_EVENT_QP_FATAL, pa.a.handle, 1,
                               wait_timeout_ms()) &&
              qp_state(&pa.a) == VMMBIB_QPS_ERR,
              "SQ producer advanced by more than its size: QP_FATAL, ERR");
    s = buf_sge(&v, 0, 8);
    post_send(&pa.a, 0xa9, VMMBIB_WR_RDMA_WRITE, &s, 1, v.buf.gpa + 100,
              v.mr.rkey);
    TAP_CHECK(cq_wait(&pa.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0xa9, VMMBIB_WC_RDMA_WRITE, VMMBIB_WC_WR_FLUSH_ERR),
              "... and its next WQE is flushed");
    TAP_CHECK(qp_state(&pa.b) == VMMBIB_QPS_RTS &&
              qp_state(&pb.a) == VMMBIB_QPS_RTS,
              "no other QP was touched");
    /* An RQ producer jump does the same. */
    ctx_doorbell(&v.c, VMMBIB_DB(VMMBIB_DB_KIND_RQ,
                                 VMMBIB_HANDLE_INDEX(pa.b.handle),
                                 pa.b.rq_prod + pa.b.rq_wr + 1));
    TAP_CHECK(guest_wait_event(&v.g, VMMBIB_EVENT_QP_FATAL, pa.b.handle, 1,
                               wait_timeout_ms()) &&
              qp_state(&pa.b) == VMMBIB_QPS_ERR,
              "RQ producer advanced by more than its size: ERR");
    vm_fini(&v);
}

static void test_engine_sleep(void)
{
    struct vm v;
    struct rc_pair p;
    struct vmmbib_cqe c;
    struct vmmbib_sge s;
    struct vmmbib_dev_stats st0, st1;
    uint64_t cpu0, cpu;

    TAP_CHECK(vm_init(&v) &&
              rc_pair_create(&p, &v.c, v.pd, &v.c, v.pd, NULL) == OK,
              "sleep: a connected pair");
    /* Some work, so the engine is certainly awake after it. */
    s = buf_sge(&v, 0, 8);
    post_send(&p.a, 1, VMMBIB_WR_RDMA_WRITE, &s, 1, v.buf.gpa + 64,
              v.mr.rkey);
    TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 && c.status == VMMBIB_WC_SUCCESS,
              "sleep: a first WRITE completes");
    msleep(20);
    TAP_CHECK(db_word(&v.c, VMMBIB_DB_ENGINE_STATE) == VMMBIB_ENGINE_ASLEEP,
              "after 20 ms without work the doorbell page says ASLEEP");
    cpu0 = cpu_ms();
    msleep(100);
    cpu = cpu_ms() - cpu0;
    printf("# %llu ms of CPU in 100 ms asleep\n", (unsigned long long)cpu);
    TAP_CHECK(cpu < 20, "an asleep engine does not spin");
    vmmbib_dev_get_stats(v.dev, &st0);
    pattern_fill(v.buf.p + 256, 200, 70);
    s = buf_sge(&v, 8192, 256);
    qp_post_recv(&p.b, 2, &s, 1);
    s = buf_sge(&v, 256, 200);
    post_send(&p.a, 3, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 3, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS) &&
              cq_wait(&p.b_rcq, &c, 1) == 1 &&
              cqe_is(&c, 2, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              pattern_check(v.buf.p + 8192, 200, 70),
              "a post with the kick the protocol requires wakes it");
    /* The receive's doorbell kicked; the send's too if it slept again. */
    vmmbib_dev_get_stats(v.dev, &st1);
    printf("# %llu kicks counted\n",
           (unsigned long long)(st1.kicks - st0.kicks));
    TAP_CHECK(st1.kicks - st0.kicks >= 1 && st1.kicks - st0.kicks <= 2,
              "the engine counted the kicks it read from the eventfd");
    vm_fini(&v);
}

static void test_mmio(void)
{
    struct vmmbib_dev_config cfg;
    struct vm v;
    struct rc_pair p;
    struct vmmbib_cqe c;
    struct vmmbib_sge s;
    struct vmmbib_dev_stats st0, st1;

    guest_dev_config(&cfg);
    cfg.doorbell_mode = VMMBIB_DB_MODE_MMIO;
    TAP_CHECK(vm_init_cfg(&v, &cfg) &&
              rc_pair_create(&p, &v.c, v.pd, &v.c, v.pd, NULL) == OK,
              "mmio: a device with doorbell=mmio and a pair");
    TAP_CHECK(db_word(&v.c, VMMBIB_DB_MODE) == VMMBIB_DB_MODE_MMIO,
              "mmio: the doorbell page says MMIO");
    msleep(5);
    vmmbib_dev_get_stats(v.dev, &st0);
    pattern_fill(v.buf.p, 500, 80);
    s = buf_sge(&v, 4096, 1024);
    qp_post_recv(&p.b, 0x21, &s, 1);
    s = buf_sge(&v, 0, 500);
    post_send(&p.a, 0x22, VMMBIB_WR_SEND, &s, 1, 0, 0);
    /* No waiting: the trapped write executed before it returned. */
    TAP_CHECK(cq_poll(&p.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x22, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS),
              "mmio: the send CQE is there when the doorbell write returns");
    TAP_CHECK(cq_poll(&p.b_rcq, &c, 1) == 1 &&
              cqe_is(&c, 0x21, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(c.byte_len) == 500 && pattern_check(v.buf.p + 4096,
                                                          500, 80),
              "mmio: so is the receive, with the data");
    vmmbib_dev_get_stats(v.dev, &st1);
    TAP_CHECK(st1.doorbells == st0.doorbells + 2 &&
              db_word(&v.c, VMMBIB_DB_PRODUCER) == 0,
              "mmio: 2 doorbells executed, none through the ring");
    vm_fini(&v);
}

/*
 * Posts spaced around the engine's idle period (50 us), so that many of
 * them race with its going to sleep: none may be lost.
 */
static void test_sleep_race(void)
{
    struct vm v;
    struct rc_pair p;
    struct vmmbib_cqe c;
    struct vmmbib_sge s;
    int done = 0;

    TAP_CHECK(vm_init(&v) &&
              rc_pair_create(&p, &v.c, v.pd, &v.c, v.pd, NULL) == OK,
              "sleep race: a connected pair");
    s = buf_sge(&v, 0, 8);
    for (int i = 0; i < 300; i++) {
        usleep((i % 8) * 15);
        post_send(&p.a, i, VMMBIB_WR_RDMA_WRITE, &s, 1, v.buf.gpa + 64,
                  v.mr.rkey);
        if (cq_wait(&p.a_scq, &c, 1) != 1 || le64toh(c.wr_id) != (uint64_t)i ||
            c.status != VMMBIB_WC_SUCCESS) {
            break;
        }
        done++;
    }
    TAP_CHECK(done == 300, "sleep race: 300 posts around the idle period "
              "all complete");
    vm_fini(&v);
}

/* Two threads post through one doorbell ring at once. */
struct producer {
    struct vm *v;
    struct gqp *qp;
    struct gcq *cq;
    int done;
};

#define PRODUCER_POSTS 400

static void *producer_thread(void *opaque)
{
    struct producer *pr = opaque;
    struct vmmbib_sge s = buf_sge(pr->v, 0, 16);
    struct vmmbib_cqe c[16];
    int posted = 0;

    while (pr->done < PRODUCER_POSTS) {
        int n;

        while (posted < PRODUCER_POSTS &&
               posted - pr->done < (int)pr->qp->sq_wr) {
            post_send(pr->qp, posted, VMMBIB_WR_RDMA_WRITE, &s, 1,
                      pr->v->buf.gpa + 4096, pr->v->mr.rkey);
            posted++;
        }
        n = cq_wait(pr->cq, c, 1);
        if (n != 1 || c[0].status != VMMBIB_WC_SUCCESS ||
            le64toh(c[0].wr_id) != (uint64_t)pr->done) {
            break;
        }
        pr->done++;
    }
    return NULL;
}

static void test_concurrent_producers(void)
{
    struct vm v;
    struct rc_pair p1, p2;
    struct producer pr[2];
    pthread_t t[2];
    struct vmmbib_dev_stats st0, st1;

    TAP_CHECK(vm_init(&v) &&
              rc_pair_create(&p1, &v.c, v.pd, &v.c, v.pd, NULL) == OK &&
              rc_pair_create(&p2, &v.c, v.pd, &v.c, v.pd, NULL) == OK,
              "concurrent: two pairs in one context");
    vmmbib_dev_get_stats(v.dev, &st0);
    pr[0] = (struct producer) { &v, &p1.a, &p1.a_scq, 0 };
    pr[1] = (struct producer) { &v, &p2.a, &p2.a_scq, 0 };
    for (int i = 0; i < 2; i++) {
        pthread_create(&t[i], NULL, producer_thread, &pr[i]);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
    }
    vmmbib_dev_get_stats(v.dev, &st1);
    TAP_CHECK(pr[0].done == PRODUCER_POSTS && pr[1].done == PRODUCER_POSTS,
              "concurrent: both threads' WQEs all complete, in order");
    TAP_CHECK(st1.doorbells - st0.doorbells == 2 * PRODUCER_POSTS &&
              st1.bad_doorbells == 0 &&
              db_word(&v.c, VMMBIB_DB_CONSUMER) ==
              db_word(&v.c, VMMBIB_DB_PRODUCER),
              "concurrent: every doorbell executed once, the ring drained");
    vm_fini(&v);
}

/*
 * Regression for 457b930: with the ring full a driver sends the next
 * doorbell through the trapped register, which runs at once; the older
 * doorbell still in the ring then arrives behind the consumer.  An older
 * producer index says nothing new and must not put the QP in ERR.
 */
static void test_stale_doorbell(void)
{
    struct vm v;
    struct rc_pair p;
    struct vmmbib_cqe c[4];
    struct vmmbib_sge s;
    struct vmmbib_send_wqe w;
    struct vmmbib_dev_stats st0, st1;
    uint32_t qidx_a, qidx_b;

    TAP_CHECK(vm_init(&v) &&
              rc_pair_create(&p, &v.c, v.pd, &v.c, v.pd, NULL) == OK,
              "stale doorbell: a connected pair");
    qidx_a = VMMBIB_HANDLE_INDEX(p.a.handle);
    qidx_b = VMMBIB_HANDLE_INDEX(p.b.handle);
    vmmbib_dev_get_stats(v.dev, &st0);

    /* Two receives; the newer RQ index trapped, the older one ringed. */
    s = buf_sge(&v, 8192, 256);
    qp_write_recv(&p.b, 0x41, &s, 1, false);
    s = buf_sge(&v, 8192 + 256, 256);
    qp_write_recv(&p.b, 0x42, &s, 1, false);
    vmmbib_dev_doorbell(v.dev, v.c.slot,
                        VMMBIB_DB(VMMBIB_DB_KIND_RQ, qidx_b, 2));
    ctx_doorbell(&v.c, VMMBIB_DB(VMMBIB_DB_KIND_RQ, qidx_b, 1));

    /* Two WRITEs: index 2 trapped (they run at once), then index 1. */
    memset(&w, 0, sizeof(w));
    w.opcode = VMMBIB_WR_RDMA_WRITE;
    w.flags = VMMBIB_WQE_SIGNALED;
    w.rdma.rkey = htole32(v.mr.rkey);
    for (int i = 0; i < 2; i++) {
        pattern_fill(v.buf.p + 100 * i, 50, 90 + i);
        w.wr_id = htole64(0x51 + i);
        w.rdma.remote_addr = htole64(v.buf.gpa + 4096 + 100 * i);
        s = buf_sge(&v, 100 * i, 50);
        qp_post_send(&p.a, &w, &s, 1, NULL, 0, false);
    }
    vmmbib_dev_doorbell(v.dev, v.c.slot,
                        VMMBIB_DB(VMMBIB_DB_KIND_SQ, qidx_a, 2));
    TAP_CHECK(cq_poll(&p.a_scq, c, 4) == 2 &&
              cqe_is(&c[0], 0x51, VMMBIB_WC_RDMA_WRITE, VMMBIB_WC_SUCCESS) &&
              cqe_is(&c[1], 0x52, VMMBIB_WC_RDMA_WRITE, VMMBIB_WC_SUCCESS),
              "stale doorbell: the trapped SQ doorbell ran both WQEs");
    ctx_doorbell(&v.c, VMMBIB_DB(VMMBIB_DB_KIND_SQ, qidx_a, 1));
    TAP_CHECK(ctx_doorbells_drained(&v.c), "stale doorbell: the engine "
              "took the older doorbells from the ring");
    msleep(10);
    vmmbib_dev_get_stats(v.dev, &st1);
    TAP_CHECK(qp_state(&p.a) == VMMBIB_QPS_RTS &&
              qp_state(&p.b) == VMMBIB_QPS_RTS &&
              guest_event_count(&v.g, VMMBIB_EVENT_QP_FATAL, p.a.handle) == 0 &&
              guest_event_count(&v.g, VMMBIB_EVENT_QP_FATAL, p.b.handle) == 0,
              "stale doorbell: an older producer index leaves both QPs in RTS");
    TAP_CHECK(cq_poll(&p.a_scq, c, 4) == 0 && cq_poll(&p.b_rcq, c, 4) == 0,
              "stale doorbell: nothing ran twice, nothing was flushed");
    TAP_CHECK(st1.doorbells == st0.doorbells + 4 &&
              st1.bad_doorbells == st0.bad_doorbells &&
              st1.error_completions == st0.error_completions,
              "stale doorbell: 4 doorbells, none bad, no error completion");
    TAP_CHECK(pattern_check(v.buf.p + 4096, 50, 90) &&
              pattern_check(v.buf.p + 4196, 50, 91),
              "stale doorbell: both WRITEs' data landed");

    /* The queues carry on from where they are: both receives are there. */
    for (int i = 0; i < 2; i++) {
        pattern_fill(v.buf.p + 1024 + 64 * i, 40, 92 + i);
        s = buf_sge(&v, 1024 + 64 * i, 40);
        post_send(&p.a, 0x61 + i, VMMBIB_WR_SEND, &s, 1, 0, 0);
    }
    TAP_CHECK(cq_wait(&p.b_rcq, c, 2) == 2 &&
              cqe_is(&c[0], 0x41, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              cqe_is(&c[1], 0x42, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              pattern_check(v.buf.p + 8192, 40, 92) &&
              pattern_check(v.buf.p + 8192 + 256, 40, 93) &&
              cq_wait(&p.a_scq, c, 2) == 2 &&
              cqe_is(&c[1], 0x62, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS),
              "stale doorbell: the next SENDs use both receives, in order");
    vm_fini(&v);
}

/*
 * A doorbell still in the ring when the guest destroys its QP: the
 * command executes it first, so it never names a queue that is gone
 * (a pingpong that exits right after its last post does this).
 */
static void test_doorbell_before_destroy(void)
{
    struct vm v;
    struct rc_pair p;
    struct vmmbib_dev_stats st0, st1;
    struct vmmbib_sge s;
    struct vmmbib_send_wqe w;
    uint64_t *ring;
    uint32_t producer, qidx;

    TAP_CHECK(vm_init(&v) &&
              rc_pair_create(&p, &v.c, v.pd, &v.c, v.pd, NULL) == OK,
              "doorbell before destroy: a connected pair");
    qidx = VMMBIB_HANDLE_INDEX(p.a.handle);
    msleep(20);     /* the engine has been idle long enough to sleep */
    TAP_CHECK(db_word(&v.c, VMMBIB_DB_ENGINE_STATE) == VMMBIB_ENGINE_ASLEEP,
              "doorbell before destroy: the engine sleeps");
    vmmbib_dev_get_stats(v.dev, &st0);

    /* A WRITE and its doorbell in the ring, the engine not kicked yet. */
    memset(&w, 0, sizeof(w));
    w.opcode = VMMBIB_WR_RDMA_WRITE;
    w.rdma.rkey = htole32(v.mr.rkey);
    w.rdma.remote_addr = htole64(v.buf.gpa + 4096);
    s = buf_sge(&v, 0, 8);
    qp_post_send(&p.a, &w, &s, 1, NULL, 0, false);
    producer = db_word(&v.c, VMMBIB_DB_PRODUCER);
    ring = (uint64_t *)(v.c.db + VMMBIB_DB_RING);
    __atomic_store_n((uint32_t *)(v.c.db + VMMBIB_DB_PRODUCER),
                     htole32(producer + 1), __ATOMIC_RELEASE);
    __atomic_store_n(&ring[producer % VMMBIB_DB_RING_ENTRIES],
                     htole64(VMMBIB_DB(VMMBIB_DB_KIND_SQ, qidx, 1)),
                     __ATOMIC_RELEASE);

    TAP_CHECK(destroy(&v.c, VMMBIB_CMD_DESTROY_QP, p.a.handle) == OK,
              "doorbell before destroy: DESTROY_QP succeeds");
    TAP_CHECK(db_word(&v.c, VMMBIB_DB_CONSUMER) == producer + 1,
              "doorbell before destroy: the command took the doorbell first");
    vmmbib_dev_kick(v.dev);
    msleep(10);
    vmmbib_dev_get_stats(v.dev, &st1);
    TAP_CHECK(st1.doorbells == st0.doorbells + 1 &&
              st1.bad_doorbells == st0.bad_doorbells,
              "doorbell before destroy: executed once, not counted bad");
    vm_fini(&v);
}

/* The idle time before sleeping comes from the device config. */
static void test_idle_config(void)
{
    struct vmmbib_dev_config cfg;
    struct vmmbib_engine_config ecfg = { 0 };
    struct vmmbib_engine *eng;
    struct vmmbib_dev *dev;
    struct guest g;
    struct gctx c;
    char err[256] = "";
    bool awake_at_30ms, asleep_later = false;

    guest_init(&g, GUEST_RAM_SIZE);
    guest_dev_config(&cfg);
    cfg.idle_poll_us = VMMBIB_IDLE_POLL_US_MAX + 1;
    dev = vmmbib_dev_new(&cfg, NULL, &guest_host_ops, &g, err, sizeof(err));
    printf("# %s\n", err);
    TAP_CHECK(!dev && strstr(err, "idle-poll-us=1000001"),
              "idle: more than the maximum is refused, naming the value");
    ecfg.idle_poll_us = VMMBIB_IDLE_POLL_US_MAX + 1;
    eng = vmmbib_engine_new(&ecfg, err, sizeof(err));
    TAP_CHECK(!eng && strstr(err, "idle-poll-us"),
              "idle: the engine config is checked the same way");

    /* 150 ms of polling: still awake after 30 ms, asleep in the end. */
    cfg.idle_poll_us = 150000;
    dev = guest_dev_new(&g, NULL, &cfg);
    TAP_CHECK(ctx_create(&c, dev, &g) == OK, "idle: a device polling 150 ms");
    vmmbib_dev_kick(dev);       /* awake now, whatever it was */
    msleep(30);
    awake_at_30ms = db_word(&c, VMMBIB_DB_ENGINE_STATE) ==
                    VMMBIB_ENGINE_AWAKE;
    for (int i = 0; i < 100 && !asleep_later; i++) {
        msleep(10);
        asleep_later = db_word(&c, VMMBIB_DB_ENGINE_STATE) ==
                       VMMBIB_ENGINE_ASLEEP;
    }
    TAP_CHECK(awake_at_30ms, "idle: 30 ms after a kick it still polls");
    TAP_CHECK(asleep_later, "idle: after its idle time it sleeps");
    vmmbib_dev_free(dev);

    /* 0 is the default, 50 us: asleep long before 30 ms. */
    cfg.idle_poll_us = 0;
    dev = guest_dev_new(&g, NULL, &cfg);
    TAP_CHECK(ctx_create(&c, dev, &g) == OK, "idle: a device with 0");
    vmmbib_dev_kick(dev);
    msleep(30);
    TAP_CHECK(db_word(&c, VMMBIB_DB_ENGINE_STATE) == VMMBIB_ENGINE_ASLEEP,
              "idle: 0 means the 50 us default");
    vmmbib_dev_free(dev);
    guest_fini(&g);
}

/*
 * A context created while the engine sleeps must see ASLEEP too, or its
 * first doorbell never kicks and waits forever (docs/spec.md section 4:
 * "no doorbell waits for the next kick").  Last: a failure here makes
 * later waits short.
 */
static void test_context_while_asleep(void)
{
    struct vm v;
    struct rc_pair p;
    struct vmmbib_cqe c;
    struct vmmbib_sge s;

    vm_dev(&v, NULL, NULL);
    msleep(20);     /* the engine has gone to sleep: no context yet */
    TAP_CHECK(vm_ctx(&v, BUF_SIZE, ACCESS_ALL_RIGHTS) &&
              rc_pair_create(&p, &v.c, v.pd, &v.c, v.pd, NULL) == OK,
              "asleep: a context and a pair created on an idle device");
    /*
     * Whether the engine woke for it or not, it is idle: ASLEEP shows (in
     * 50 us of idle polling, but a loaded host may not run it for long).
     */
    for (int i = 0; i < 5000 &&
         db_word(&v.c, VMMBIB_DB_ENGINE_STATE) != VMMBIB_ENGINE_ASLEEP; i++) {
        msleep(1);
    }
    TAP_CHECK(db_word(&v.c, VMMBIB_DB_ENGINE_STATE) == VMMBIB_ENGINE_ASLEEP,
              "asleep: the idle engine's state shows in the new page");
    s = buf_sge(&v, 0, 8);
    post_send(&p.a, 1, VMMBIB_WR_RDMA_WRITE, &s, 1, v.buf.gpa + 64,
              v.mr.rkey);
    TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 && c.status == VMMBIB_WC_SUCCESS,
              "asleep: the first post of the new context completes");
    vm_fini(&v);
}

/*
 * Fairness across devices: device A has 8 busy QPs, device B one, both
 * on one engine, each with the same number of WQEs queued.  While both
 * have work, each must get about half of what the engine runs (Jain's
 * index of the two counts >= 0.95); a scheduler fair only across QPs
 * gives A 8 times B's share (index 0.62).
 *
 * The engine itself numbers the WQEs, so no sampling is involved: every
 * WQE of both devices is a FETCH_AND_ADD of 1 to one counter in B's
 * memory, and the value it fetched is its place in the engine's order.
 * The window runs from the first WQE after which both devices had begun
 * to the last before either had finished.
 */
#define FAIR_A_QPS      8
#define FAIR_WQES       4096    /* per device */
#define FAIR_COUNTER    (60u << 10)     /* offset in B's buffer */

struct fair_dev {
    struct vm v;
    struct gcq scq, rcq;
    struct gqp snd[FAIR_A_QPS], rcv[FAIR_A_QPS];
    unsigned int nqps;
};

/* @nqps senders on @f, each connected to a QP on @peer (may be @f). */
static bool fair_dev_init(struct fair_dev *f, struct fair_dev *peer,
                          struct vmmbib_engine *eng, unsigned int nqps)
{
    struct qp_opts o;

    f->nqps = nqps;
    if (!vm_init_on(&f->v, eng, NULL) ||
        cq_create(&f->v.c, 16, &f->scq) != OK ||
        cq_create(&f->v.c, 16, &f->rcq) != OK) {
        return false;
    }
    qp_opts_default(&o, VMMBIB_QPT_RC);
    o.sq_wr = FAIR_WQES / nqps;
    for (unsigned int i = 0; i < nqps; i++) {
        if (qp_create(&f->v.c, f->v.pd, &f->scq, &f->rcq, NULL, &o,
                      &f->snd[i]) != OK ||
            qp_create(&peer->v.c, peer->v.pd, &peer->scq, &peer->rcq, NULL,
                      NULL, &f->rcv[i]) != OK ||
            rc_connect(&f->snd[i], &f->rcv[i], NULL) != OK) {
            return false;
        }
    }
    return true;
}

/*
 * Fill every SQ with unsignaled FETCH_AND_ADDs to the counter in @t's
 * buffer (the last one signaled); WQE k of QP i fetches into 8 bytes at
 * (i * per_qp + k) * 8 of @f's buffer.
 */
static void fair_dev_fill(struct fair_dev *f, struct fair_dev *t)
{
    uint32_t per_qp = FAIR_WQES / f->nqps;

    for (unsigned int i = 0; i < f->nqps; i++) {
        for (uint32_t k = 0; k < per_qp; k++) {
            struct vmmbib_sge s = buf_sge(&f->v, (i * per_qp + k) * 8, 8);
            struct vmmbib_send_wqe w = {
                .wr_id = htole64(k),
                .opcode = VMMBIB_WR_ATOMIC_FETCH_AND_ADD,
                .flags = k == per_qp - 1 ? VMMBIB_WQE_SIGNALED : 0,
            };

            w.atomic.remote_addr = htole64(t->v.buf.gpa + FAIR_COUNTER);
            w.atomic.rkey = htole32(t->v.mr.rkey);
            w.atomic.compare_add = htole64(1);
            qp_post_send(&f->snd[i], &w, &s, 1, NULL, 0, false);
        }
    }
}

/* The places in the engine's order of @f's WQEs: lowest and highest. */
static void fair_span(struct fair_dev *f, uint64_t *first, uint64_t *last,
                      uint8_t *seen)
{
    *first = UINT64_MAX;
    *last = 0;
    for (uint32_t n = 0; n < FAIR_WQES; n++) {
        uint64_t v;

        memcpy(&v, f->v.buf.p + n * 8, 8);
        v = le64toh(v);
        *first = v < *first ? v : *first;
        *last = v > *last ? v : *last;
        if (v < 2 * FAIR_WQES) {
            seen[v]++;
        }
    }
}

static uint64_t fair_count(struct fair_dev *f, uint64_t from, uint64_t to)
{
    uint64_t count = 0;

    for (uint32_t n = 0; n < FAIR_WQES; n++) {
        uint64_t v;

        memcpy(&v, f->v.buf.p + n * 8, 8);
        v = le64toh(v);
        count += v >= from && v <= to;
    }
    return count;
}

static void test_fairness(void)
{
    struct vmmbib_engine *eng = engine_new();
    struct fair_dev *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
    uint8_t *seen = calloc(2 * FAIR_WQES, 1);
    struct vmmbib_cqe c[FAIR_A_QPS];
    uint64_t a_first, a_last, b_first, b_last, from, to, na = 0, nb = 0;
    bool each_once = true;
    int got_a = 0, got_b;
    double jain = 0;

    TAP_CHECK(eng && a && b && seen && fair_dev_init(b, b, eng, 1) &&
              fair_dev_init(a, b, eng, FAIR_A_QPS),
              "fairness: device A with 8 RC QPs, device B with 1, one engine");
    fair_dev_fill(a, b);
    fair_dev_fill(b, b);
    /*
     * Both devices start together: the engine reads doorbells under its
     * lock, so while this thread holds it no device can run alone (this
     * thread, preempted between doorbells, once let B finish first).
     * Ring mode and 9 entries in 256: no doorbell goes through the
     * trapped register, which would take the lock again.
     */
    vmmbib_engine_enter(eng);
    qp_sq_doorbell(&b->snd[0]);
    for (unsigned int i = 0; i < FAIR_A_QPS; i++) {
        qp_sq_doorbell(&a->snd[i]);
    }
    vmmbib_engine_leave(eng);
    for (int i = 0; i < FAIR_A_QPS && got_a < FAIR_A_QPS; i++) {
        got_a += cq_wait(&a->scq, c + got_a, FAIR_A_QPS - got_a);
    }
    got_b = cq_wait(&b->scq, c, 1);
    TAP_CHECK(got_a == FAIR_A_QPS && got_b == 1,
              "fairness: every SQ's last FETCH_AND_ADD completed");

    fair_span(a, &a_first, &a_last, seen);
    fair_span(b, &b_first, &b_last, seen);
    for (uint32_t v = 0; v < 2 * FAIR_WQES; v++) {
        each_once &= seen[v] == 1;
    }
    TAP_CHECK(each_once, "fairness: the WQEs fetched 0 to %u, each once",
              2 * FAIR_WQES - 1);
    from = a_first > b_first ? a_first : b_first;
    to = a_last < b_last ? a_last : b_last;
    if (from <= to) {
        na = fair_count(a, from, to);
        nb = fair_count(b, from, to);
    }
    if (na + nb) {
        jain = (double)(na + nb) * (na + nb) /
               (2.0 * ((double)na * na + (double)nb * nb));
    }
    printf("# both ran from WQE %llu to %llu: A ran %llu, B %llu; Jain's "
           "index %.3f\n", (unsigned long long)from, (unsigned long long)to,
           (unsigned long long)na, (unsigned long long)nb, jain);
    TAP_CHECK(na + nb >= FAIR_WQES, "fairness: both devices ran together "
              "for at least half of all WQEs");
    TAP_CHECK(jain >= 0.95,
              "fairness: the device with 1 QP gets as many WQEs as the one "
              "with 8 (Jain's index >= 0.95)");
    vm_fini(&a->v);
    vm_fini(&b->v);
    free(a);
    free(b);
    free(seen);
    vmmbib_engine_free(eng);
}

int main(void)
{
    test_rnr();
    test_cq_arm();
    test_hostile_doorbells();
    test_engine_sleep();
    test_mmio();
    test_sleep_race();
    test_concurrent_producers();
    test_stale_doorbell();
    test_doorbell_before_destroy();
    test_idle_config();
    test_fairness();
    test_context_while_asleep();
    return tap_done();
}
