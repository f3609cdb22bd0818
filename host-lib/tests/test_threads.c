/*
 * An engine with several threads (VMMBIB_TEST_ENGINE_THREADS, default 4;
 * docs/daemon.md, Scheduling): data moved between VMs by threads copying
 * at once, checked byte for byte and by counters; then the paths that
 * free what a copy uses (DEREG_MR, DESTROY_QP, a VM's device freed) while
 * other threads copy.  The checks are outcomes: bytes, statuses, counters,
 * and memory that must stay untouched once the command has returned.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <endian.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "guest.h"
#include "tap.h"

#define NVMS        4
#define VM_BUF      (1u << 20)      /* each VM's registered buffer */
#define MSG         (64u << 10)     /* parallel test: one message */
#define ROUNDS      3
/* Where things are in a VM's buffer. */
#define SRC_OFF     0               /* SEND and WRITE sources */
#define LAND_OFF    (256u << 10)    /* SEND and WRITE land here */
#define READ_DST    (512u << 10)    /* READ lands here */
#define READ_SRC    (768u << 10)    /* READ reads here */

/* Teardown tests: many large WQEs, so copies run when the command comes. */
#define BIG_MSG     (64u << 10)
#define BIG_WQES    128
#define BIG_CQE     256

static unsigned int nthreads(void)
{
    unsigned int n = test_engine_threads();

    return n ? n : 4;
}

static struct vmmbib_engine *threads_engine(void)
{
    struct vmmbib_engine_config cfg = {
        .idle_poll_us = 50, .threads = nthreads(),
    };
    char err[128] = "";
    struct vmmbib_engine *eng = vmmbib_engine_new(&cfg, err, sizeof(err));

    if (!eng) {
        printf("# vmmbib_engine_new: %s\n", err);
    }
    return eng;
}

static bool vm_big(struct vm *v, struct vmmbib_engine *eng)
{
    vm_dev(v, eng, NULL);
    return v->dev && vm_ctx(v, VM_BUF, ACCESS_ALL_RIGHTS);
}

/* Like rc_pair_create, with room for BIG_WQES signaled WQEs and flushes. */
static int big_pair(struct rc_pair *p, struct vm *x, struct vm *y)
{
    struct qp_opts o;
    int s;

    memset(p, 0, sizeof(*p));
    qp_opts_default(&o, VMMBIB_QPT_RC);
    o.sq_wr = 2 * BIG_WQES;
    o.rq_wr = 2 * BIG_WQES;
    if ((s = cq_create(&x->c, BIG_CQE, &p->a_scq)) ||
        (s = cq_create(&x->c, BIG_CQE, &p->a_rcq)) ||
        (s = cq_create(&y->c, BIG_CQE, &p->b_scq)) ||
        (s = cq_create(&y->c, BIG_CQE, &p->b_rcq)) ||
        (s = qp_create(&x->c, x->pd, &p->a_scq, &p->a_rcq, NULL, &o,
                       &p->a)) ||
        (s = qp_create(&y->c, y->pd, &p->b_scq, &p->b_rcq, NULL, &o,
                       &p->b))) {
        return s;
    }
    return rc_connect(&p->a, &p->b, NULL);
}

static uint64_t sum_stat(struct vm *vms, unsigned int n, size_t field)
{
    uint64_t sum = 0;

    for (unsigned int i = 0; i < n; i++) {
        struct vmmbib_dev_stats st;
        uint64_t v;

        vmmbib_dev_get_stats(vms[i].dev, &st);
        memcpy(&v, (uint8_t *)&st + field, sizeof(v));
        sum += v;
    }
    return sum;
}

/*
 * Four VMs in a ring, each sending to the next: a SEND, an RDMA WRITE and
 * an RDMA READ of 64 KiB per pair and round, all four pairs posted before
 * any completes, so the threads copy for different VMs at once.
 */
static void test_parallel(void)
{
    struct vmmbib_engine *eng = threads_engine();
    struct vm *v = calloc(NVMS, sizeof(*v));
    struct rc_pair *p = calloc(NVMS, sizeof(*p));
    struct vmmbib_engine_stats es0, es1;
    uint64_t cqes0, wqes0;
    bool all_ok = true, data_ok = true;

    TAP_CHECK(eng && v && p, "parallel: an engine with the threads asked for");
    if (!eng || !v || !p) {
        return;
    }
    for (unsigned int i = 0; i < NVMS; i++) {
        all_ok &= vm_big(&v[i], eng);
    }
    for (unsigned int i = 0; i < NVMS && all_ok; i++) {
        struct vm *d = &v[(i + 1) % NVMS];

        all_ok &= rc_pair_create(&p[i], &v[i].c, v[i].pd, &d->c, d->pd,
                                 NULL) == OK;
    }
    TAP_CHECK(all_ok, "parallel: 4 VMs, each connected to the next");
    if (!all_ok) {
        goto out;
    }
    vmmbib_engine_get_stats(eng, &es0);
    cqes0 = sum_stat(v, NVMS, offsetof(struct vmmbib_dev_stats, cqes));
    wqes0 = sum_stat(v, NVMS, offsetof(struct vmmbib_dev_stats, wqes));
    for (unsigned int r = 0; r < ROUNDS; r++) {
        for (unsigned int i = 0; i < NVMS; i++) {
            struct vm *s = &v[i], *d = &v[(i + 1) % NVMS];
            unsigned int seed = 100 * r + 10 * i;
            struct vmmbib_sge sg;

            pattern_fill(s->buf.p + SRC_OFF, MSG, seed);
            pattern_fill(s->buf.p + SRC_OFF + MSG, MSG, seed + 1);
            pattern_fill(d->buf.p + READ_SRC, MSG, seed + 2);
            memset(d->buf.p + LAND_OFF, 0, 2 * MSG);
            memset(s->buf.p + READ_DST, 0, MSG);
            sg = buf_sge(d, LAND_OFF, MSG);
            qp_post_recv(&p[i].b, seed, &sg, 1);
            sg = buf_sge(s, SRC_OFF, MSG);
            post_send(&p[i].a, seed, VMMBIB_WR_SEND, &sg, 1, 0, 0);
            sg = buf_sge(s, SRC_OFF + MSG, MSG);
            post_send(&p[i].a, seed + 1, VMMBIB_WR_RDMA_WRITE, &sg, 1,
                      d->buf.gpa + LAND_OFF + MSG, d->mr.rkey);
            sg = buf_sge(s, READ_DST, MSG);
            post_send(&p[i].a, seed + 2, VMMBIB_WR_RDMA_READ, &sg, 1,
                      d->buf.gpa + READ_SRC, d->mr.rkey);
        }
        for (unsigned int i = 0; i < NVMS; i++) {
            struct vm *s = &v[i], *d = &v[(i + 1) % NVMS];
            unsigned int seed = 100 * r + 10 * i;
            struct vmmbib_cqe c[3], rc;
            bool ok = cq_wait(&p[i].a_scq, c, 3) == 3 &&
                      cq_wait(&p[i].b_rcq, &rc, 1) == 1;

            ok = ok && cqe_is(&c[0], seed, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS) &&
                 cqe_is(&c[1], seed + 1, VMMBIB_WC_RDMA_WRITE,
                        VMMBIB_WC_SUCCESS) &&
                 cqe_is(&c[2], seed + 2, VMMBIB_WC_RDMA_READ,
                        VMMBIB_WC_SUCCESS) &&
                 cqe_is(&rc, seed, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
                 le32toh(rc.byte_len) == MSG;
            all_ok &= ok;
            data_ok &= pattern_check(d->buf.p + LAND_OFF, MSG, seed) &&
                       pattern_check(d->buf.p + LAND_OFF + MSG, MSG,
                                     seed + 1) &&
                       pattern_check(s->buf.p + READ_DST, MSG, seed + 2);
        }
    }
    TAP_CHECK(all_ok, "parallel: 3 rounds of SEND, WRITE and READ on 4 "
              "pairs complete in order, with success");
    TAP_CHECK(data_ok, "parallel: every byte landed where it was sent");
    TAP_CHECK(sum_stat(v, NVMS, offsetof(struct vmmbib_dev_stats, cqes)) -
              cqes0 == 4 * NVMS * ROUNDS &&
              sum_stat(v, NVMS, offsetof(struct vmmbib_dev_stats, wqes)) -
              wqes0 == 4 * NVMS * ROUNDS,
              "parallel: the devices counted 48 WQEs and 48 CQEs");
    vmmbib_engine_get_stats(eng, &es1);
    printf("# engine: %u threads, %llu turns, %llu copies without the "
           "lock (at most %u at once), %llu with it, %llu busy retries, "
           "%llu parks, %llu unparks, %llu sleeps\n", es1.threads,
           (unsigned long long)(es1.turns - es0.turns),
           (unsigned long long)(es1.unlocked_copies - es0.unlocked_copies),
           es1.max_parallel_copies,
           (unsigned long long)(es1.locked_copies - es0.locked_copies),
           (unsigned long long)(es1.busy_retries - es0.busy_retries),
           (unsigned long long)(es1.parks - es0.parks),
           (unsigned long long)(es1.unparks - es0.unparks),
           (unsigned long long)(es1.sleeps - es0.sleeps));
    /* No command ran meanwhile: every copy left the lock to the others. */
    TAP_CHECK(es1.threads == nthreads() &&
              es1.unlocked_copies - es0.unlocked_copies ==
              (nthreads() > 1 ? 3 * NVMS * ROUNDS : 0) &&
              es1.locked_copies == es0.locked_copies,
              "parallel: with several threads each of the 36 copies ran "
              "without the engine lock");
out:
    for (unsigned int i = 0; i < NVMS; i++) {
        if (v[i].dev) {
            vm_fini(&v[i]);
        }
    }
    free(v);
    free(p);
    vmmbib_engine_free(eng);
}

/*
 * Statuses of a queue whose destination went away: successes, at most
 * one @err, then only flushes.  Returns the successes, -1 if not so.
 */
static int tail_statuses(const struct vmmbib_cqe *c, int n, uint8_t err)
{
    int ok = 0, i = 0;

    while (i < n && c[i].status == VMMBIB_WC_SUCCESS) {
        ok++;
        i++;
    }
    if (i < n && c[i].status == err) {
        i++;
    }
    while (i < n && c[i].status == VMMBIB_WC_WR_FLUSH_ERR) {
        i++;
    }
    if (i != n) {
        cqe_dump("unexpected", &c[i]);
        return -1;
    }
    return ok;
}

/* Wait for @n CQEs on @cq; true if they came. */
static bool wait_all(struct gcq *cq, struct vmmbib_cqe *c, int n)
{
    int got = 0;

    for (int tries = 0; tries < 20 && got < n; tries++) {
        got += cq_wait(cq, c + got, n - got);
    }
    return got == n;
}

/* Wait until the first CQE of @cq shows, without consuming it. */
static void wait_first(struct gcq *cq)
{
    struct vmmbib_cq_header *h = (void *)cq->ring;
    struct vmmbib_cqe *e = (void *)(cq->ring + sizeof(*h) +
                                    (uint64_t)(cq->cons & (cq->cqe - 1)) *
                                    sizeof(*e));
    uint8_t want = (cq->cons / cq->cqe) & 1 ? 0 : VMMBIB_CQE_OWNER;
    uint64_t end = mono_ms() + wait_timeout_ms();

    while ((__atomic_load_n(&e->owner, __ATOMIC_ACQUIRE) &
            VMMBIB_CQE_OWNER) != want && mono_ms() < end) {
        continue;
    }
}

/*
 * DEREG_MR while other threads write into the MR: once DEREG_MR has
 * returned, no byte of it may change (the guest may reuse the memory);
 * the writes after it fail with REM_ACCESS_ERR.
 */
static void test_dereg_mr(void)
{
    struct vmmbib_engine *eng = threads_engine();
    static struct vmmbib_cqe c[BIG_WQES];
    struct vm x = { 0 }, y = { 0 };
    struct rc_pair p;
    struct gmr m;
    int ok;

    TAP_CHECK(eng && vm_big(&x, eng) && vm_big(&y, eng) &&
              big_pair(&p, &x, &y) == OK &&
              mr_reg(&y.c, y.pd, y.buf.gpa + LAND_OFF, BIG_MSG,
                     ACCESS_ALL_RIGHTS, &m) == OK,
              "dereg: x's QP connected to y's, an MR of y's");
    pattern_fill(x.buf.p, BIG_MSG, 7);
    for (unsigned int i = 0; i < BIG_WQES; i++) {
        struct vmmbib_sge sg = buf_sge(&x, 0, BIG_MSG);
        struct vmmbib_send_wqe w = {
            .wr_id = htole64(i), .opcode = VMMBIB_WR_RDMA_WRITE,
            .flags = VMMBIB_WQE_SIGNALED,
        };

        w.rdma.remote_addr = htole64(m.iova);
        w.rdma.rkey = htole32(m.rkey);
        qp_post_send(&p.a, &w, &sg, 1, NULL, 0, false);
    }
    qp_sq_doorbell(&p.a);
    wait_first(&p.a_scq);
    TAP_CHECK(destroy(&y.c, VMMBIB_CMD_DEREG_MR, m.handle) == OK,
              "dereg: DEREG_MR while x writes into the MR");
    /* The guest reuses the memory at once. */
    pattern_fill(y.buf.p + LAND_OFF, BIG_MSG, 99);
    TAP_CHECK(wait_all(&p.a_scq, c, BIG_WQES),
              "dereg: all 128 WRITEs completed");
    ok = tail_statuses(c, BIG_WQES, VMMBIB_WC_REM_ACCESS_ERR);
    printf("# %d of %u WRITEs landed before DEREG_MR\n", ok, BIG_WQES);
    TAP_CHECK(ok >= 0, "dereg: successes, then REM_ACCESS_ERR, then "
              "flushes");
    TAP_CHECK(pattern_check(y.buf.p + LAND_OFF, BIG_MSG, 99),
              "dereg: no byte of the MR changed after DEREG_MR returned");
    vm_fini(&x);
    vm_fini(&y);
    vmmbib_engine_free(eng);
}

/*
 * After a fault: a new RC pair from @x to @y works, one SEND of pattern
 * @seed from @x's READ_SRC landing byte for byte at @land in @y.
 */
static void new_pair_send(const char *test, struct vm *x, struct vm *y,
                          uint64_t land, unsigned int seed)
{
    struct rc_pair r;
    struct vmmbib_cqe e[2];
    struct vmmbib_sge sg;

    TAP_CHECK(rc_pair_create(&r, &x->c, x->pd, &y->c, y->pd, NULL) == OK,
              "%s: a new pair from x to y", test);
    pattern_fill(x->buf.p + READ_SRC, MSG, seed);
    memset(y->buf.p + land, 0, MSG);
    sg = buf_sge(y, land, MSG);
    qp_post_recv(&r.b, 1, &sg, 1);
    sg = buf_sge(x, READ_SRC, MSG);
    post_send(&r.a, 2, VMMBIB_WR_SEND, &sg, 1, 0, 0);
    TAP_CHECK(cq_wait(&r.a_scq, &e[0], 1) == 1 &&
              cqe_is(&e[0], 2, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS) &&
              cq_wait(&r.b_rcq, &e[1], 1) == 1 &&
              cqe_is(&e[1], 1, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              pattern_check(y->buf.p + land, MSG, seed),
              "%s: the new pair's SEND arrives byte for byte", test);
}

/*
 * DESTROY_QP of a receiver while other threads deliver to it, and of a
 * sender while its SQ runs: the receive buffers stay untouched after the
 * command; the other side times out; a new pair then works.
 */
static void test_destroy_qp(void)
{
    struct vmmbib_engine *eng = threads_engine();
    static struct vmmbib_cqe c[BIG_WQES];
    struct vm x = { 0 }, y = { 0 };
    struct rc_pair p, q;
    struct vmmbib_sge sg;
    int ok;

    TAP_CHECK(eng && vm_big(&x, eng) && vm_big(&y, eng) &&
              big_pair(&p, &x, &y) == OK && big_pair(&q, &y, &x) == OK,
              "destroy: two pairs between x and y");
    pattern_fill(x.buf.p, BIG_MSG, 11);
    pattern_fill(y.buf.p, BIG_MSG, 12);
    for (unsigned int i = 0; i < BIG_WQES; i++) {
        sg = buf_sge(&y, LAND_OFF, BIG_MSG);
        qp_write_recv(&p.b, i, &sg, 1, false);
        sg = buf_sge(&x, LAND_OFF, BIG_MSG);
        qp_write_recv(&q.b, i, &sg, 1, false);
    }
    qp_rq_doorbell(&p.b);
    qp_rq_doorbell(&q.b);
    for (unsigned int i = 0; i < BIG_WQES; i++) {
        struct vmmbib_send_wqe w = {
            .wr_id = htole64(i), .opcode = VMMBIB_WR_SEND,
            .flags = VMMBIB_WQE_SIGNALED,
        };

        sg = buf_sge(&x, 0, BIG_MSG);
        qp_post_send(&p.a, &w, &sg, 1, NULL, 0, false);
        sg = buf_sge(&y, 0, BIG_MSG);
        qp_post_send(&q.a, &w, &sg, 1, NULL, 0, false);
    }
    qp_sq_doorbell(&p.a);
    qp_sq_doorbell(&q.a);
    wait_first(&p.b_rcq);
    /* The receiver of one pair and the sender of the other. */
    TAP_CHECK(destroy(&y.c, VMMBIB_CMD_DESTROY_QP, p.b.handle) == OK &&
              destroy(&y.c, VMMBIB_CMD_DESTROY_QP, q.a.handle) == OK,
              "destroy: DESTROY_QP of a receiver and a sender in flight");
    pattern_fill(y.buf.p + LAND_OFF, BIG_MSG, 98);
    TAP_CHECK(wait_all(&p.a_scq, c, BIG_WQES),
              "destroy: all 128 SENDs to the destroyed QP completed");
    ok = tail_statuses(c, BIG_WQES, VMMBIB_WC_RETRY_EXC_ERR);
    printf("# %d of %u SENDs were received before DESTROY_QP\n", ok,
           BIG_WQES);
    TAP_CHECK(ok >= 0, "destroy: successes, then RETRY_EXC_ERR, then "
              "flushes");
    TAP_CHECK(pattern_check(y.buf.p + LAND_OFF, BIG_MSG, 98),
              "destroy: the receive buffer did not change after "
              "DESTROY_QP returned");

    /* A new pair on the same devices works, every byte checked. */
    new_pair_send("destroy", &x, &y, READ_DST, 13);
    vm_fini(&x);
    vm_fini(&y);
    vmmbib_engine_free(eng);
}

/*
 * A VM's device freed (the daemon's detach, its RAM unmapped right after)
 * while other threads write into and read from its memory: nothing
 * touches the freed RAM (a crash or a sanitizer report if it did); the
 * peer's WQEs end with RETRY_EXC_ERR and flushes, and it keeps working
 * with a third VM.
 */
static void test_detach(void)
{
    struct vmmbib_engine *eng = threads_engine();
    static struct vmmbib_cqe c[2 * BIG_WQES];
    struct vm x = { 0 }, y = { 0 }, z = { 0 };
    struct rc_pair p;
    struct vmmbib_sge sg;
    int ok;

    TAP_CHECK(eng && vm_big(&x, eng) && vm_big(&y, eng) && vm_big(&z, eng) &&
              big_pair(&p, &x, &z) == OK,
              "detach: three VMs, x connected to z");
    pattern_fill(x.buf.p, BIG_MSG, 21);
    for (unsigned int i = 0; i < BIG_WQES; i++) {
        struct vmmbib_send_wqe w = {
            .wr_id = htole64(i), .flags = VMMBIB_WQE_SIGNALED,
        };

        w.opcode = i & 1 ? VMMBIB_WR_RDMA_READ : VMMBIB_WR_RDMA_WRITE;
        w.rdma.remote_addr = htole64(z.buf.gpa + (i & 1 ? READ_SRC :
                                                  LAND_OFF));
        w.rdma.rkey = htole32(z.mr.rkey);
        sg = buf_sge(&x, i & 1 ? READ_DST : 0, BIG_MSG);
        qp_post_send(&p.a, &w, &sg, 1, NULL, 0, false);
    }
    qp_sq_doorbell(&p.a);
    wait_first(&p.a_scq);
    vm_fini(&z);
    /* A touch of the freed RAM would crash here or be a sanitizer report. */
    printf("# detach: z's device freed and its RAM unmapped while x's WQEs "
           "ran\n");
    TAP_CHECK(wait_all(&p.a_scq, c, BIG_WQES),
              "detach: all 128 of x's WQEs completed");
    ok = tail_statuses(c, BIG_WQES, VMMBIB_WC_RETRY_EXC_ERR);
    printf("# %d of %u WQEs ran before z went away\n", ok, BIG_WQES);
    TAP_CHECK(ok >= 0, "detach: successes, then RETRY_EXC_ERR, then "
              "flushes");

    new_pair_send("detach", &x, &y, LAND_OFF, 22);
    vm_fini(&x);
    vm_fini(&y);
    vmmbib_engine_free(eng);
}

/* Shared-receive test: datagrams and SENDs from two VMs to one queue. */
#define SHARED_N    32              /* from each sender */
#define UD_LEN      4000
#define UD_SLOT     4096
#define SRQ_LEN     (8u << 10)
#define QKEY        0x11111111u

static unsigned int sender_seed(unsigned int sender, unsigned int m)
{
    return 1000 * (sender + 1) + m;
}

/*
 * Check @n receive CQEs that took the receive WQEs 0..n-1 of one ring in
 * order (as the engine completes them: one delivery at a time per ring),
 * each from the port @lids[i], whose m-th message has sender_seed(i, m); its
 * bytes at @buf + k * @slot + @skip.
 */
static bool shared_check(const struct vmmbib_cqe *c, unsigned int n,
                         const uint16_t *lids, const uint8_t *buf,
                         uint32_t slot, uint32_t skip, uint32_t len)
{
    unsigned int next[2] = { 0, 0 };

    for (unsigned int k = 0; k < n; k++) {
        uint16_t src = le16toh(c[k].slid);
        unsigned int i = src == lids[0] ? 0 : src == lids[1] ? 1 : 2;

        if (i == 2 || c[k].status != VMMBIB_WC_SUCCESS ||
            le64toh(c[k].wr_id) != k || le32toh(c[k].wqe_index) != k ||
            le32toh(c[k].byte_len) != len + skip ||
            !pattern_check(buf + (uint64_t)k * slot + skip, len,
                           sender_seed(i, next[i]++))) {
            printf("# receive %u: wrong (from LID %u)\n", k, src);
            cqe_dump("receive", &c[k]);
            return false;
        }
    }
    return next[0] == SHARED_N && next[1] == SHARED_N;
}

/*
 * One UD QP, then one SRQ of two RC QPs, each receiving from two VMs at
 * once: another thread's delivery to the same ring waits (BUSY, retried),
 * so nothing is dropped, the ring's WQEs complete in ring order, and
 * each sender's messages arrive in its order, byte for byte.
 */
static void test_shared_receive(void)
{
    struct vmmbib_engine *eng = threads_engine();
    static struct vmmbib_cqe c[2 * SHARED_N];
    struct vm v[3] = { 0 };
    struct gcq scq[3], rcq[3];
    struct gqp ud[3], rc[2], zrc[2];
    struct gsrq srq;
    struct vmmbib_engine_stats es0, es1;
    struct qp_opts o;
    uint32_t ah[2];
    uint16_t lids[2];
    bool ok = eng != NULL;
    int got;

    for (unsigned int i = 0; i < 3 && ok; i++) {
        ok = vm_big(&v[i], eng) &&
             cq_create(&v[i].c, 4 * SHARED_N, &scq[i]) == OK &&
             cq_create(&v[i].c, 4 * SHARED_N, &rcq[i]) == OK;
        qp_opts_default(&o, VMMBIB_QPT_UD);
        o.sq_wr = o.rq_wr = 2 * SHARED_N;
        ok = ok && qp_create(&v[i].c, v[i].pd, &scq[i], &rcq[i], NULL, &o,
                             &ud[i]) == OK && ud_to_rts(&ud[i], QKEY) == OK;
    }
    for (unsigned int i = 0; i < 2 && ok; i++) {
        ok = ah_create(&v[i].c, v[i].pd, port_lid(v[2].dev), &ah[i]) == OK;
    }
    TAP_CHECK(ok, "shared: x and y each with a UD QP and an AH to z's");
    if (!ok) {
        goto out;
    }
    vmmbib_engine_get_stats(eng, &es0);
    for (unsigned int k = 0; k < 2 * SHARED_N; k++) {
        struct vmmbib_sge sg = buf_sge(&v[2], LAND_OFF + k * UD_SLOT,
                                       UD_SLOT);

        qp_write_recv(&ud[2], k, &sg, 1, false);
    }
    qp_rq_doorbell(&ud[2]);
    for (unsigned int m = 0; m < SHARED_N; m++) {
        for (unsigned int i = 0; i < 2; i++) {
            struct vmmbib_sge sg = buf_sge(&v[i], m * UD_SLOT, UD_LEN);

            pattern_fill(v[i].buf.p + m * UD_SLOT, UD_LEN, sender_seed(i, m));
            ud_send(&ud[i], m, ah[i], ud[2].qpn, QKEY, &sg, false);
        }
    }
    qp_sq_doorbell(&ud[0]);
    qp_sq_doorbell(&ud[1]);
    got = cq_wait(&rcq[2], c, 2 * SHARED_N);
    lids[0] = port_lid(v[0].dev);
    lids[1] = port_lid(v[1].dev);
    TAP_CHECK(got == 2 * SHARED_N &&
              shared_check(c, got, lids, v[2].buf.p + LAND_OFF, UD_SLOT,
                           VMMBIB_GRH_SIZE, UD_LEN),
              "shared: z's UD QP got all 64 datagrams of x and y, in its "
              "RQ's order, each sender's in order, byte for byte");
    got = cq_wait(&scq[0], c, SHARED_N) + cq_wait(&scq[1], c, SHARED_N);
    TAP_CHECK(got == 2 * SHARED_N, "shared: x's and y's sends completed");

    /* An SRQ on z, two RC QPs on it: one connected to x, one to y. */
    qp_opts_default(&o, VMMBIB_QPT_RC);
    o.sq_wr = o.rq_wr = 2 * SHARED_N;
    ok = srq_create(&v[2].c, v[2].pd, 2 * SHARED_N, 0, &srq) == OK;
    for (unsigned int i = 0; i < 2 && ok; i++) {
        ok = qp_create(&v[i].c, v[i].pd, &scq[i], &rcq[i], NULL, &o,
                       &rc[i]) == OK &&
             qp_create(&v[2].c, v[2].pd, &scq[2], &rcq[2], &srq, &o,
                       &zrc[i]) == OK &&
             rc_connect(&rc[i], &zrc[i], NULL) == OK;
    }
    TAP_CHECK(ok, "shared: z's SRQ with two RC QPs, one connected to x, "
              "one to y");
    if (!ok) {
        goto out;
    }
    for (unsigned int k = 0; k < 2 * SHARED_N; k++) {
        struct vmmbib_sge sg = buf_sge(&v[2], LAND_OFF + k * SRQ_LEN,
                                       SRQ_LEN);

        srq_post_recv(&srq, k, &sg, 1);
    }
    for (unsigned int m = 0; m < SHARED_N; m++) {
        for (unsigned int i = 0; i < 2; i++) {
            struct vmmbib_sge sg = buf_sge(&v[i], m * SRQ_LEN, SRQ_LEN);
            struct vmmbib_send_wqe w = {
                .wr_id = htole64(m), .opcode = VMMBIB_WR_SEND,
                .flags = VMMBIB_WQE_SIGNALED,
            };

            pattern_fill(v[i].buf.p + m * SRQ_LEN, SRQ_LEN,
                         sender_seed(i, m));
            qp_post_send(&rc[i], &w, &sg, 1, NULL, 0, false);
        }
    }
    qp_sq_doorbell(&rc[0]);
    qp_sq_doorbell(&rc[1]);
    got = cq_wait(&rcq[2], c, 2 * SHARED_N);
    TAP_CHECK(got == 2 * SHARED_N &&
              shared_check(c, got, lids, v[2].buf.p + LAND_OFF, SRQ_LEN, 0,
                           SRQ_LEN),
              "shared: the SRQ's 64 WQEs completed in its order, each "
              "sender's SENDs in order, byte for byte");
    got = cq_wait(&scq[0], c, SHARED_N) + cq_wait(&scq[1], c, SHARED_N);
    TAP_CHECK(got == 2 * SHARED_N, "shared: the RC SENDs completed");
    vmmbib_engine_get_stats(eng, &es1);
    printf("# %llu copies without the lock, %llu retries of a WQE whose "
           "receive ring was busy\n",
           (unsigned long long)(es1.unlocked_copies - es0.unlocked_copies),
           (unsigned long long)(es1.busy_retries - es0.busy_retries));
out:
    for (unsigned int i = 0; i < 3; i++) {
        if (v[i].dev) {
            vm_fini(&v[i]);
        }
    }
    vmmbib_engine_free(eng);
}

/* The configuration: 0 means one thread; more than 64 is refused. */
static void test_config(void)
{
    struct vmmbib_engine_config cfg = { .threads = 65 };
    struct vmmbib_engine_stats st;
    struct vmmbib_engine *eng;
    char err[128] = "";

    TAP_CHECK(!vmmbib_engine_new(&cfg, err, sizeof(err)) &&
              strstr(err, "engine-threads=65 is out of range: use 1"),
              "config: 65 threads refused with a sentence saying the range");
    printf("# %s\n", err);
    cfg.threads = 0;
    eng = vmmbib_engine_new(&cfg, err, sizeof(err));
    if (eng) {
        vmmbib_engine_get_stats(eng, &st);
    }
    TAP_CHECK(eng && st.threads == 1, "config: 0 means one thread");
    vmmbib_engine_free(eng);
    cfg.threads = VMMBIB_ENGINE_THREADS_MAX;
    eng = vmmbib_engine_new(&cfg, err, sizeof(err));
    if (eng) {
        vmmbib_engine_get_stats(eng, &st);
    }
    TAP_CHECK(eng && st.threads == VMMBIB_ENGINE_THREADS_MAX,
              "config: 64 threads start and stop");
    vmmbib_engine_free(eng);
}

int main(void)
{
    printf("# %u engine threads\n", nthreads());
    test_config();
    test_parallel();
    test_shared_receive();
    test_dereg_mr();
    test_destroy_qp();
    test_detach();
    return tap_done();
}
