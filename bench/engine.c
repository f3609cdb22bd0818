/*
 * Benchmark of the host-lib engine with synthetic guests (host-lib/tests/
 * guest.c): two "VMs" (a device each, own guest RAM) on ONE engine thread,
 * driven by one guest thread that posts WQEs, rings doorbells and polls
 * CQs exactly as docs/spec.md tells a driver to.  No QEMU, no kernel.
 *
 * Two ways to measure a message rate:
 *   burst      the guest writes a batch of WQEs, rings one doorbell and
 *              waits; the rate is taken between the batch's first and last
 *              completion, so it is what the engine thread alone executes
 *              (its capacity), with the WQEs still in the other core's
 *              cache as in a real VM;
 *   pipelined  the guest keeps WQEs outstanding and posts while the engine
 *              runs (one doorbell per WQE or per batch, a signaled WQE every
 *              SIG_EVERY): the steady state of a streaming application,
 *              limited by whichever of the two threads is slower and by
 *              the cache-line transfers between their cores.
 * Next to every measurement goes a core-to-core probe (a cache line bounced
 * between the two CPUs), because on a VM the host may move our vCPUs and
 * that latency changes by a factor of 5 from one second to the next.
 *
 * Measures, in one run so that ratios compare like with like:
 *   - 8-byte RDMA WRITE and SEND message rates, burst and pipelined;
 *   - SEND 8 B ping-pong latency on one QP pair (median, p99);
 *   - 64 KiB RDMA WRITE bandwidth next to memcpy of the same buffers;
 *   - 8-byte WRITE capacity with 1 QP per side and with 1024 of which one
 *     is busy: bursts alternating between two device pairs (1 and 1024
 *     QPs per device) on the same engine, and literal rounds that create
 *     and destroy the idle QPs;
 *   - host memory per object, from mallinfo2() deltas.
 * Every run checks what the engine delivered (the data of the last lap of
 * WRITEs and the last WRITE byte for byte, every SEND's payload, every
 * completion's status, the engine's WQE count), so a broken engine cannot
 * produce a fast number.
 *
 * Progress goes to stderr; stdout gets one JSON object (the summary that
 * bench/report.py turns into docs/performance.md).
 *
 *   bench-engine [--quick] [--only KEY]
 *                [--profile write|write1024|send|write64k [--count N]]
 *
 * --only runs the steps whose key contains KEY (write8_burst, write8_pipe,
 * send8, lat_send8, write64k, write8_1024qp, mem).  --profile runs only
 * bursts, N WQEs in all, for callgrind; write1024 with 1023 idle QPs per
 * side next to the busy one.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "guest.h"
/* Only for sizeof() of the host objects, printed next to the measurement. */
#include "internal.h"

#define GUEST_RAM       (96ull << 20)
#define QUEUE_WR        16384u  /* SQ, RQ and CQs of the busy QPs */
#define SMALL           8u      /* the small message size */
#define SMALL_BURST     QUEUE_WR
#define PIPE_DEPTH      1024u   /* WQEs outstanding when pipelined */
#define SIG_EVERY       64u     /* one signaled WQE per this many */
#define DB_BATCH        32u     /* WQEs per doorbell in the batched run */
#define BIG             (64u << 10)
#define BIG_SLOTS       16u     /* 64 KiB buffers per side (1 MiB) */
#define BIG_BURST       256u    /* 16 MiB per burst */
#define BIG_DEPTH       16u
#define BIG_SIG         4u
#define IDLE_QPS        1023u   /* next to the busy one: 1024 per side */
#define LAT_MAX_SAMPLES (1u << 20)
#define MAX_REPS        16

static const char *only;        /* --only: the figures whose key has it */
static double rep_secs = 0.5;   /* one measured interval */
static double warm_secs = 0.1;
static unsigned int reps = 3;

/* ---- small helpers ---- */

static void die(const char *fmt, ...)
{
    va_list ap;

    fflush(stdout);
    fprintf(stderr, "bench/engine: FAILED: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    exit(1);
}

static void progress(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "# ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
}

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;

    if (clock_gettime(id, &ts)) {
        return 0;
    }
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static uint64_t now_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

#define CHECK(cond, ...) do { if (!(cond)) die(__VA_ARGS__); } while (0)

/*
 * Called by the guest thread each time it polls without progress.  It
 * spins, like a verbs application, but after ~20 us without progress it
 * yields: when other work on the machine leaves the guest thread and the
 * engine thread one CPU between them, a guest that spins through its time
 * slices would starve the engine it is waiting for (a real guest's vCPU is
 * another host thread, and would be descheduled the same way).
 */
static void relax(unsigned int *spins)
{
    if (++*spins >= 2000) {
        sched_yield();
        *spins = 0;
    }
}
#define CHECK_OK(expr) do {                                               \
        int s_ = (expr);                                                  \
        if (s_ != OK) {                                                   \
            die("%s returned %s at %s:%d", #expr,                         \
                s_ < 0 ? "a malformed reply" : vmmbib_status_name(s_),    \
                __FILE__, __LINE__);                                      \
        }                                                                 \
    } while (0)

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

static double median(const double *v, unsigned int n)
{
    double s[MAX_REPS];

    memcpy(s, v, n * sizeof(*v));
    qsort(s, n, sizeof(*s), cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* ---- CPU accounting: who had the CPUs during a measurement ---- */

/*
 * The engine thread is libvmmbib's; we find its tid as the thread that
 * appears when the engine is created, and read its CPU time through the
 * per-thread CPU clock id Linux derives from a tid (what glibc's
 * pthread_getcpuclockid returns for a pthread_t).
 */
#define MAX_TIDS 64

static int list_tids(pid_t *tids, int max)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    int n = 0;

    if (!d) {
        return 0;
    }
    while ((e = readdir(d)) && n < max) {
        if (e->d_name[0] != '.') {
            tids[n++] = atoi(e->d_name);
        }
    }
    closedir(d);
    return n;
}

static clockid_t engine_clock;
static bool have_engine_clock;
static pid_t engine_tid;
static bool pinned;

static clockid_t tid_cpu_clock(pid_t tid)
{
    /* CPUCLOCK_PERTHREAD_MASK (4) | CPUCLOCK_SCHED (2), tid in ~id >> 3. */
    return (clockid_t)((~(unsigned int)tid) << 3) | 6;
}

/* Jiffies: busy time of all CPUs (from /proc/stat) and of this process. */
static void busy_jiffies(uint64_t *all, uint64_t *self)
{
    unsigned long long v[8] = { 0 };
    unsigned long ut = 0, st = 0;
    char buf[1024];
    FILE *f;

    *all = *self = 0;
    f = fopen("/proc/stat", "r");
    if (f) {
        if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0],
                   &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) == 8) {
            /* user nice system idle iowait irq softirq steal: not 3, 4 */
            *all = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
        }
        fclose(f);
    }
    f = fopen("/proc/self/stat", "r");
    if (f) {
        if (fgets(buf, sizeof(buf), f)) {
            char *p = strrchr(buf, ')');

            /* Fields 14 and 15 (utime, stime); p is at the end of field 2. */
            if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u "
                            "%*u %lu %lu", &ut, &st) == 2) {
                *self = ut + st;
            }
        }
        fclose(f);
    }
}

struct cpu_snap {
    uint64_t wall, engine, guest, all, self;
};

static void cpu_snap(struct cpu_snap *s)
{
    s->wall = now_ns();
    s->engine = have_engine_clock ? clock_ns(engine_clock) : 0;
    s->guest = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    busy_jiffies(&s->all, &s->self);
}

/* Shares of one CPU (engine, guest thread) and CPUs used by others. */
struct cpu_use {
    double engine, guest, others;
};

static void cpu_use(const struct cpu_snap *a, const struct cpu_snap *b,
                    struct cpu_use *u)
{
    double wall = (double)(b->wall - a->wall);
    double hz = (double)sysconf(_SC_CLK_TCK);
    double other_j = (double)(b->all - a->all) - (double)(b->self - a->self);

    u->engine = have_engine_clock ? (b->engine - a->engine) / wall : -1;
    u->guest = (b->guest - a->guest) / wall;
    u->others = other_j < 0 ? 0 : other_j / hz / (wall / 1e9);
}

/*
 * The guest thread on CPU 0, the engine thread on CPU 1, as a deployment
 * with a dedicated engine core would have it.  Unpinned, the scheduler's
 * wake-up placement puts the engine on the CPU of the guest that kicked
 * it now and then, and the two time-share one CPU while the other idles.
 */
static void pin_threads(pid_t engine)
{
    cpu_set_t all, cpu;

    if (!engine || sysconf(_SC_NPROCESSORS_ONLN) < 2 ||
        sched_getaffinity(0, sizeof(all), &all) || !CPU_ISSET(0, &all) ||
        !CPU_ISSET(1, &all)) {
        progress("not pinning threads (fewer than 2 CPUs usable)");
        return;
    }
    CPU_ZERO(&cpu);
    CPU_SET(1, &cpu);
    if (sched_setaffinity(engine, sizeof(cpu), &cpu)) {
        progress("cannot pin the engine thread: %s", strerror(errno));
        return;
    }
    CPU_ZERO(&cpu);
    CPU_SET(0, &cpu);
    if (sched_setaffinity(0, sizeof(cpu), &cpu)) {
        progress("cannot pin the guest thread: %s", strerror(errno));
        return;
    }
    pinned = true;
}

/* ---- the core-to-core probe ---- */

static uint64_t probe_ping __attribute__((aligned(64)));
static uint64_t probe_pong __attribute__((aligned(64)));

static void *probe_echo(void *arg)
{
    uint64_t seen = 0;

    (void)arg;
    for (;;) {
        uint64_t v = __atomic_load_n(&probe_ping, __ATOMIC_ACQUIRE);

        if (v == seen) {
            continue;
        }
        if (v == UINT64_MAX) {
            return NULL;
        }
        seen = v;
        __atomic_store_n(&probe_pong, v, __ATOMIC_RELEASE);
    }
}

/*
 * Round trip of a cache line between CPU 0 and CPU 1, in ns (median of 5
 * runs of 500), or -1 if there is only one CPU.  Runs while the engine is
 * idle; takes a few milliseconds.
 */
static bool no_probe;          /* --profile: not under valgrind */

static double c2c_probe(void)
{
    static uint64_t value;
    cpu_set_t saved, one;
    pthread_attr_t attr;
    pthread_t t;
    double runs[5];
    int i, j;

    if (no_probe || sysconf(_SC_NPROCESSORS_ONLN) < 2 ||
        sched_getaffinity(0, sizeof(saved), &saved)) {
        return -1;
    }
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    sched_setaffinity(0, sizeof(one), &one);
    CPU_ZERO(&one);
    CPU_SET(1, &one);
    pthread_attr_init(&attr);
    pthread_attr_setaffinity_np(&attr, sizeof(one), &one);
    CHECK(!pthread_create(&t, &attr, probe_echo, NULL),
          "cannot start the probe thread");
    pthread_attr_destroy(&attr);
    for (i = 0; i < 5; i++) {
        uint64_t t0 = now_ns();

        for (j = 0; j < 500; j++) {
            uint64_t v = ++value;

            __atomic_store_n(&probe_ping, v, __ATOMIC_RELEASE);
            while (__atomic_load_n(&probe_pong, __ATOMIC_ACQUIRE) != v) {
            }
        }
        runs[i] = (now_ns() - t0) / 500.0;
    }
    __atomic_store_n(&probe_ping, UINT64_MAX, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    probe_ping = probe_pong = 0;
    value = 0;
    sched_setaffinity(0, sizeof(saved), &saved);
    return median(runs, 5);
}

/* ---- waiting for the machine to be quiet ---- */

#define QUIET_CPUS      0.25    /* others may use this much of a CPU */
#define QUIET_WAIT_REP  3.0     /* seconds a rep waits at most */
#define QUIET_WAIT_RUN  40.0    /* and a whole run */

static double quiet_waited;     /* seconds, this run */

/* CPUs used by other processes over the next @ms milliseconds. */
static double others_now(unsigned int ms)
{
    struct cpu_snap a, b;
    struct cpu_use u;

    cpu_snap(&a);
    msleep(ms);
    cpu_snap(&b);
    cpu_use(&a, &b, &u);
    return u.others;
}

/*
 * The machine is shared (other users' builds and TCG guests): before a
 * measurement, wait a little for a quiet moment.  Bounded; the figure
 * records what the others used during it either way.
 */
static void wait_quiet(void)
{
    uint64_t start = now_ns();
    double load;

    while ((load = others_now(100)) > QUIET_CPUS &&
           quiet_waited + (now_ns() - start) / 1e9 < QUIET_WAIT_RUN &&
           (now_ns() - start) / 1e9 < QUIET_WAIT_REP) {
        msleep(200);
    }
    quiet_waited += (now_ns() - start) / 1e9;
    if (load > QUIET_CPUS) {
        progress("  (other processes use %.1f CPUs; measuring anyway)",
                 load);
    }
}

/* ---- JSON summary ---- */

static char json[65536];
static size_t json_len;

static void jraw(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    json_len += vsnprintf(json + json_len, sizeof(json) - json_len, fmt, ap);
    va_end(ap);
    CHECK(json_len < sizeof(json), "JSON summary too long");
}

static void jnum(const char *key, double v)
{
    jraw("%s\"%s\": %.6g", json_len > 1 ? ", " : "", key, v);
}

static void jstr(const char *key, const char *v)
{
    jraw("%s\"%s\": \"%s\"", json_len > 1 ? ", " : "", key, v);
}

static void jarr(const char *key, const double *v, unsigned int n)
{
    unsigned int i;

    jraw("%s\"%s\": [", json_len > 1 ? ", " : "", key);
    for (i = 0; i < n; i++) {
        jraw("%s%.6g", i ? ", " : "", v[i]);
    }
    jraw("]");
}

/* ---- the two VMs and their QPs ---- */

struct bench_vm {
    struct guest g;
    struct vmmbib_dev *dev;
    struct gctx c;
    uint32_t pd;
    struct gbuf small, big;     /* registered message buffers */
    struct gmr small_mr, big_mr;
};

/* A QP with its own send and receive CQ, and what the guest knows. */
struct bqp {
    struct gcq scq, rcq;
    struct gqp qp;
    uint32_t sq_done;           /* WQEs known complete */
    uint32_t rq_done;           /* receives completed */
    struct gbuf rbuf;           /* receive buffers, one slot per RQ entry */
    struct gmr rmr;
    bool rq_unrung;             /* receives posted, doorbell deferred */
};

static struct vmmbib_engine *eng;
static struct bench_vm vm_a, vm_b;
static struct bqp qa, qb;       /* the busy pair: qa on A, qb on B */

static void bench_vm_init(struct bench_vm *v, uint64_t ram)
{
    guest_init(&v->g, ram);
    v->dev = guest_dev_new(&v->g, eng, NULL);
    CHECK_OK(ctx_create(&v->c, v->dev, &v->g));
    CHECK_OK(pd_create(&v->c, &v->pd));
    gbuf_alloc(&v->g, (uint64_t)SMALL_BURST * SMALL, &v->small);
    gbuf_alloc(&v->g, (uint64_t)BIG_SLOTS * BIG, &v->big);
    CHECK_OK(mr_reg(&v->c, v->pd, v->small.gpa, v->small.len,
                    ACCESS_ALL_RIGHTS, &v->small_mr));
    CHECK_OK(mr_reg(&v->c, v->pd, v->big.gpa, v->big.len, ACCESS_ALL_RIGHTS,
                    &v->big_mr));
}

/* Rings sized for 1 SGE (what an 8-byte or 64 KiB message needs). */
static void small_wqe_opts(struct qp_opts *o)
{
    qp_opts_default(o, VMMBIB_QPT_RC);
    o->send_sge = 1;
    o->recv_sge = 1;
    o->inline_data = 64;
    o->sq_shift = 7;            /* 64 + max(16, 64) = 128 */
    o->rq_shift = 5;            /* 16 + 16 = 32 */
}

static void bqp_create(struct bench_vm *v, struct bqp *q)
{
    struct qp_opts o;

    memset(q, 0, sizeof(*q));
    small_wqe_opts(&o);
    o.sq_wr = QUEUE_WR;
    o.rq_wr = QUEUE_WR;
    CHECK_OK(cq_create(&v->c, QUEUE_WR, &q->scq));
    CHECK_OK(cq_create(&v->c, QUEUE_WR, &q->rcq));
    CHECK_OK(qp_create(&v->c, v->pd, &q->scq, &q->rcq, NULL, &o, &q->qp));
    gbuf_alloc(&v->g, (uint64_t)QUEUE_WR * SMALL, &q->rbuf);
    CHECK_OK(mr_reg(&v->c, v->pd, q->rbuf.gpa, q->rbuf.len,
                    ACCESS_ALL_RIGHTS, &q->rmr));
}

static void rc_opts_bench(struct rc_opts *o)
{
    rc_opts_default(o);
    o->rnr_retry = 7;           /* never fail on a momentarily empty RQ */
}

/*
 * Doorbells.  When a context's doorbell ring is full, docs/spec.md has the
 * driver write the trapped DOORBELL register instead; libvmmbib executes
 * that in the writing thread (here: the guest thread), which is not the
 * engine thread we measure.  SQ and RQ doorbells carry the queue's
 * absolute producer index, so a driver may equally skip one while the
 * ring is full and let the next carry the newer index: the benchmark does
 * that, and retries until the last one is in the ring.
 */
static bool db_ring_full(struct gctx *c)
{
    return db_word(c, VMMBIB_DB_PRODUCER) - db_word(c, VMMBIB_DB_CONSUMER) >=
           VMMBIB_DB_RING_ENTRIES;
}

static bool sq_doorbell(struct gqp *qp)
{
    if (db_ring_full(qp->c)) {
        return false;
    }
    qp_sq_doorbell(qp);
    return true;
}

static void rq_doorbell(struct bqp *q)
{
    if (db_ring_full(q->qp.c)) {
        q->rq_unrung = true;
        return;
    }
    qp_rq_doorbell(&q->qp);
    q->rq_unrung = false;
}

/* Post a receive for RQ entry rq_prod: its slot of q->rbuf. */
static void post_recv_slot(struct bqp *q, bool ring)
{
    uint32_t slot = q->qp.rq_prod & (QUEUE_WR - 1);
    struct vmmbib_sge s = sge(&q->rmr, q->rbuf.gpa + (uint64_t)slot * SMALL,
                              SMALL);

    qp_write_recv(&q->qp, q->qp.rq_prod, &s, 1, ring);
}

/* Top up an RQ to full, one doorbell. */
static void fill_rq(struct bqp *q)
{
    while (q->qp.rq_prod - q->rq_done < QUEUE_WR) {
        post_recv_slot(q, false);
        q->rq_unrung = true;
    }
    if (q->rq_unrung) {
        rq_doorbell(q);
    }
}

static void cqe_check(const struct vmmbib_cqe *e, const char *what)
{
    if (e->status != VMMBIB_WC_SUCCESS) {
        cqe_dump(what, e);
        die("%s: completion with status %u (wr_id %" PRIu64 ")", what,
            e->status, le64toh(e->wr_id));
    }
}

/* A stamp the engine must deliver for message k of a run. */
static uint64_t stamp(uint64_t salt, uint64_t k)
{
    return (k + 1) * 0x9e3779b97f4a7c15ull ^ salt;
}

/* ---- streams of messages on the busy pair ---- */

struct stream {
    struct bqp *req, *resp;
    uint8_t opcode;             /* VMMBIB_WR_RDMA_WRITE or _SEND */
    uint32_t size;
    bool burst;
    uint32_t depth;             /* pipelined: outstanding, a multiple of sig;
                                   burst: WQEs per burst */
    uint32_t sig;
    uint32_t db_batch;          /* pipelined: WQEs per SQ doorbell */
    /* source slots on the requester, WRITE targets on the responder */
    uint8_t *src, *dst;
    uint64_t src_addr, dst_addr;
    uint32_t lkey, rkey;
    uint32_t nslots;
    uint64_t count;             /* --profile: run this many, untimed */
};

struct result {
    double rate;                /* messages per second */
    double secs;                /* measured (burst: engine busy) time */
    uint64_t msgs;
    double dbs_per_msg;         /* doorbells the engine executed */
    double c2c_ns;              /* the probe, before and after */
    unsigned int bursts;        /* burst mode: bursts measured */
    struct cpu_use cpu;
};

/* Doorbells and WQEs the engine executed for both VMs so far. */
static void engine_counts(uint64_t *dbs, uint64_t *wqes)
{
    struct vmmbib_dev_stats sa, sb;

    vmmbib_dev_get_stats(vm_a.dev, &sa);
    vmmbib_dev_get_stats(vm_b.dev, &sb);
    *dbs = sa.doorbells + sb.doorbells;
    *wqes = sa.wqes + sb.wqes;
}

static void stream_post(struct stream *s, uint64_t k, uint64_t salt,
                        bool signaled)
{
    struct gqp *qp = &s->req->qp;
    uint32_t slot = (uint32_t)(k % s->nslots);
    uint8_t *src = s->src + (uint64_t)slot * s->size;
    uint64_t v = stamp(salt, k);
    struct vmmbib_sge sg = {
        .addr = htole64(s->src_addr + (uint64_t)slot * s->size),
        .length = htole32(s->size),
        .lkey = htole32(s->lkey),
    };
    struct vmmbib_send_wqe w = {
        .wr_id = htole64(k),
        .opcode = s->opcode,
        .flags = signaled ? VMMBIB_WQE_SIGNALED : 0,
    };

    /* The message's first and last 8 bytes carry its stamp. */
    memcpy(src, &v, sizeof(v));
    if (s->size >= 16) {
        memcpy(src + s->size - 8, &v, sizeof(v));
    }
    if (s->opcode == VMMBIB_WR_RDMA_WRITE) {
        w.rdma.remote_addr = htole64(s->dst_addr + (uint64_t)slot * s->size);
        w.rdma.rkey = htole32(s->rkey);
    }
    qp_post_send(qp, &w, &sg, 1, NULL, 0, false);
}

/* Poll the responder's receive CQ: check each payload, repost if asked. */
static unsigned int stream_recv(struct stream *s, uint64_t salt,
                                uint64_t *received, bool repost)
{
    struct vmmbib_cqe cqes[64];
    struct bqp *r = s->resp;
    int n = cq_poll(&r->rcq, cqes, 64), i;

    for (i = 0; i < n; i++) {
        uint32_t slot = (uint32_t)le64toh(cqes[i].wr_id) & (QUEUE_WR - 1);
        uint64_t got, want = stamp(salt, *received);

        cqe_check(&cqes[i], "SEND receive");
        memcpy(&got, r->rbuf.p + (uint64_t)slot * SMALL, sizeof(got));
        CHECK(le32toh(cqes[i].byte_len) == s->size && got == want,
              "SEND %" PRIu64 " delivered %u bytes, payload %#" PRIx64
              " instead of %#" PRIx64, *received,
              le32toh(cqes[i].byte_len), got, want);
        (*received)++;
        r->rq_done++;
        if (repost) {
            post_recv_slot(r, false);
            r->rq_unrung = true;
        }
    }
    if (r->rq_unrung && repost) {
        rq_doorbell(r);
    }
    return n;
}

/*
 * The CQE @ahead entries after the consumer's if it is already there
 * (without consuming it), else NULL.
 */
static const struct vmmbib_cqe *cq_peek(const struct gcq *cq, uint32_t ahead)
{
    uint32_t i = cq->cons + ahead;
    const struct vmmbib_cqe *e = (const void *)(cq->ring +
        sizeof(struct vmmbib_cq_header) +
        (uint64_t)(i & (cq->cqe - 1)) * sizeof(*e));
    uint8_t want = (i / cq->cqe) & 1 ? 0 : VMMBIB_CQE_OWNER;

    return (__atomic_load_n(&e->owner, __ATOMIC_ACQUIRE) &
            VMMBIB_CQE_OWNER) == want ? e : NULL;
}

static void send_cqes(struct bqp *q, const char *what)
{
    struct vmmbib_cqe cqes[64];
    int n, i;

    while ((n = cq_poll(&q->scq, cqes, 64)) > 0) {
        for (i = 0; i < n; i++) {
            cqe_check(&cqes[i], what);
            q->sq_done = le32toh(cqes[i].wqe_index) + 1;
        }
    }
}

/*
 * The guard: the last lap of @sent WRITEs (the last of each slot) landed,
 * and the very last one byte for byte (its source slot is still intact).
 */
static void check_writes(struct stream *s, uint64_t salt, uint64_t sent)
{
    uint64_t k0 = sent > s->nslots ? sent - s->nslots : 0, k;

    for (k = k0; k < sent; k++) {
        const uint8_t *d = s->dst + (k % s->nslots) * s->size;
        uint64_t v = stamp(salt, k), a, b = v;

        memcpy(&a, d, 8);
        if (s->size >= 16) {
            memcpy(&b, d + s->size - 8, 8);
        }
        CHECK(a == v && b == v, "RDMA WRITE %" PRIu64 " of %" PRIu64
              " (%u bytes) did not land in the responder's memory", k, sent,
              s->size);
    }
    k = sent - 1;
    CHECK(!memcmp(s->dst + (k % s->nslots) * s->size,
                  s->src + (k % s->nslots) * s->size, s->size),
          "the last RDMA WRITE (%u bytes) differs from its source", s->size);
}

static void stall(struct stream *s, uint64_t start, uint64_t base,
                  uint32_t unrung)
{
    struct gqp *qp = &s->req->qp;
    const uint64_t *ring = (const void *)(qp->c->db + VMMBIB_DB_RING);
    uint32_t k = db_word(qp->c, VMMBIB_DB_CONSUMER);

    die("the engine stalled: %u of %u WQEs complete after %.1f s "
        "(doorbell ring: producer %u consumer %u, entry there %#" PRIx64
        ", engine_state %u; %u WQEs without doorbell; QP state %d)",
        s->req->sq_done - (uint32_t)base, qp->sq_prod - (uint32_t)base,
        (now_ns() - start) / 1e9, db_word(qp->c, VMMBIB_DB_PRODUCER), k,
        le64toh(ring[k % VMMBIB_DB_RING_ENTRIES]),
        db_word(qp->c, VMMBIB_DB_ENGINE_STATE), unrung, qp_state(qp));
}

/*
 * Pipelined: keep @depth WQEs outstanding for warm_secs + rep_secs; the
 * rate is taken between two completions that bracket the measured
 * interval.  Ends with every WQE complete and checked.
 */
static void pipelined_run(struct stream *s, struct result *res)
{
    struct bqp *q = s->req;
    struct gqp *qp = &q->qp;
    struct vmmbib_cqe cqes[64];
    uint64_t salt = now_ns() * 0x2545f4914f6cdd1dull;
    uint64_t base = qp->sq_prod, received = 0, sent;
    uint64_t start = now_ns(), t0 = 0, t1 = 0, hard;
    uint32_t d0 = 0, d1 = 0, unrung = 0;
    unsigned int spins = 0;
    struct cpu_snap c0, c1;
    int phase = 0;              /* 0 warm-up, 1 measured, 2 draining */

    CHECK(qp->sq_prod == q->sq_done, "stream started with WQEs in flight");
    CHECK(s->depth <= s->nslots && s->depth % s->sig == 0,
          "bad stream parameters");
    hard = start + (uint64_t)((warm_secs + rep_secs) * 1e9) +
           30000000000ull;
    for (;;) {
        uint64_t now;
        int n, i;

        /* Post while there is room; when stopping, up to a signaled one. */
        while (qp->sq_prod - q->sq_done < s->depth &&
               (phase < 2 || qp->sq_prod % s->sig)) {
            stream_post(s, qp->sq_prod - base, salt,
                        qp->sq_prod % s->sig == s->sig - 1);
            if (++unrung >= s->db_batch && sq_doorbell(qp)) {
                unrung = 0;
            }
        }
        if (unrung && sq_doorbell(qp)) {
            unrung = 0;
        }
        n = cq_poll(&q->scq, cqes, 64);
        for (i = 0; i < n; i++) {
            cqe_check(&cqes[i], "pipelined send");
            q->sq_done = le32toh(cqes[i].wqe_index) + 1;
        }
        if ((s->opcode == VMMBIB_WR_SEND &&
             stream_recv(s, salt, &received, true)) || n) {
            spins = 0;
        } else {
            relax(&spins);
        }
        now = now_ns();
        if (n && phase == 0 && now - start >= warm_secs * 1e9) {
            phase = 1;
            t0 = now;
            d0 = q->sq_done;
            cpu_snap(&c0);
        } else if (n && phase == 1 && now - t0 >= rep_secs * 1e9) {
            phase = 2;
            t1 = now;
            d1 = q->sq_done;
            cpu_snap(&c1);
        }
        if (phase == 2 && q->sq_done == qp->sq_prod && !unrung &&
            (s->opcode != VMMBIB_WR_SEND ||
             received == qp->sq_prod - base)) {
            break;
        }
        if (now > hard) {
            stall(s, start, base, unrung);
        }
    }
    sent = qp->sq_prod - base;
    if (s->opcode == VMMBIB_WR_RDMA_WRITE) {
        check_writes(s, salt, sent);
    }
    res->msgs = (uint32_t)(d1 - d0);
    res->secs = (t1 - t0) / 1e9;
    res->rate = res->msgs / res->secs;
    cpu_use(&c0, &c1, &res->cpu);
}

/*
 * Bursts: write @depth WQEs (the first, the last and every sig-th
 * signaled), ring one doorbell, wait.  The engine's time for a burst runs
 * from the moment the guest sees the first completion to the last, which
 * leaves out the guest's posting and the engine's wake-up; the WQEs
 * counted are those completed after that moment (if the guest thread was
 * late, the completions already there say how far the engine got; a
 * burst seen less than half is not counted).  Repeats for warm_secs +
 * rep_secs, or until @count WQEs ran.
 */
#define MAX_BURSTS 8192
static double burst_rates[MAX_BURSTS];

static void burst_run(struct stream *s, struct result *res)
{
    unsigned int nb = 0;
    struct bqp *q = s->req;
    struct gqp *qp = &q->qp;
    uint64_t start = now_ns(), busy = 0, msgs = 0, hard;
    uint64_t deadline = start + (uint64_t)((warm_secs + rep_secs) * 1e9);
    uint32_t i;
    struct cpu_snap c0, c1;
    bool measuring = s->count;


    CHECK(qp->sq_prod == q->sq_done, "burst started with WQEs in flight");
    CHECK(s->depth <= QUEUE_WR && s->depth > 1, "bad burst parameters");
    cpu_snap(&c0);
    for (;;) {
        uint64_t salt = now_ns() * 0x2545f4914f6cdd1dull;
        uint64_t base = qp->sq_prod, received = 0, t0 = 0, t1, now;
        uint32_t seen = 0;      /* WQEs complete when the guest looked */
        unsigned int spins = 0;

        if (s->opcode == VMMBIB_WR_SEND) {
            fill_rq(s->resp);
            CHECK(!s->resp->rq_unrung, "RQ doorbell not taken");
        }
        for (i = 0; i < s->depth; i++) {
            stream_post(s, i, salt, i == 0 || i == s->depth - 1 ||
                        i % s->sig == s->sig - 1);
        }
        CHECK(sq_doorbell(qp), "doorbell ring full before a burst");
        hard = now_ns() + 30000000000ull;
        while (q->sq_done != qp->sq_prod) {
            struct vmmbib_cqe e;

            if (!cq_poll(&q->scq, &e, 1)) {
                if (spins == 1999 && now_ns() > hard) {
                    stall(s, start, base, 0);
                }
                relax(&spins);
                continue;
            }
            spins = 0;
            cqe_check(&e, "burst send");
            q->sq_done = le32toh(e.wqe_index) + 1;
            if (!t0) {
                const struct vmmbib_cqe *ahead;
                uint32_t j;

                t0 = now_ns();
                CHECK(q->sq_done == base + 1, "the first WQE of a burst "
                      "completed as %u", q->sq_done - (uint32_t)base);
                seen = 1;
                for (j = 0; (ahead = cq_peek(&q->scq, j)); j++) {
                    seen = le32toh(ahead->wqe_index) + 1 - (uint32_t)base;
                }
            }
        }
        t1 = now_ns();
        if (s->opcode == VMMBIB_WR_SEND) {
            while (received < s->depth) {
                if (!stream_recv(s, salt, &received, false)) {
                    CHECK(now_ns() < hard, "SENDs not all received");
                    relax(&spins);
                }
            }
        } else {
            check_writes(s, salt, s->depth);
        }
        now = now_ns();
        if (!measuring && now - start >= warm_secs * 1e9) {
            measuring = true;
            cpu_snap(&c0);
            continue;
        }
        if (measuring && seen <= s->depth / 2) {
            busy += t1 - t0;
            msgs += s->depth - seen;
            if (nb < MAX_BURSTS && t1 > t0) {
                burst_rates[nb++] = (s->depth - seen) / ((t1 - t0) / 1e9);
            }
        }
        if (s->count ? msgs >= s->count : measuring && now >= deadline) {
            break;
        }
    }
    cpu_snap(&c1);
    res->msgs = msgs;
    res->secs = busy / 1e9;
    /*
     * The median burst: a burst during which the host ran something
     * else on our core (a few per second on a shared VM) moves a mean,
     * not the median.
     */
    if (nb) {
        qsort(burst_rates, nb, sizeof(*burst_rates), cmp_double);
        res->rate = burst_rates[nb / 2];
    } else {
        res->rate = 0;
    }
    res->bursts = nb;
    cpu_use(&c0, &c1, &res->cpu);
}

static void stream_run(struct stream *s, struct result *res)
{
    uint64_t db0, db1, w0, w1, posted = s->req->qp.sq_prod;
    double c2c;

    if (!s->count) {
        wait_quiet();
    }
    c2c = c2c_probe();

    engine_counts(&db0, &w0);
    if (s->burst) {
        burst_run(s, res);
    } else {
        pipelined_run(s, res);
    }
    engine_counts(&db1, &w1);
    posted = s->req->qp.sq_prod - posted;
    /* Per message: for SEND, SQ doorbells plus the responder's RQ ones. */
    res->dbs_per_msg = (double)(db1 - db0) / (double)posted;
    /* Each SEND also consumed a receive WQE. */
    CHECK(w1 - w0 == (s->opcode == VMMBIB_WR_SEND ? 2 : 1) * posted,
          "the engine counted %" PRIu64 " WQEs for %"
          PRIu64 " messages", w1 - w0, posted);
    res->c2c_ns = (c2c + c2c_probe()) / 2;
}

/* A figure: @reps runs of a stream, the median goes to @key. */
struct figure {
    struct result r[MAX_REPS];
    double rate[MAX_REPS];
    double med;
};

static void jfigure(const char *key, const struct figure *f, uint32_t size)
{
    double v[MAX_REPS];
    char k[128];
    unsigned int i;

#define JARR(suffix, expr)                                                \
    do {                                                                  \
        for (i = 0; i < reps; i++) {                                      \
            v[i] = (expr);                                                \
        }                                                                 \
        snprintf(k, sizeof(k), "%s_%s", key, suffix);                     \
        jarr(k, v, reps);                                                 \
    } while (0)

    jnum(key, f->med);
    snprintf(k, sizeof(k), "%s_MBps", key);
    jnum(k, f->med * size / 1e6);
    JARR("reps", f->r[i].rate);
    JARR("c2c_ns", f->r[i].c2c_ns);
    JARR("db_per_msg", f->r[i].dbs_per_msg);
    JARR("engine_cpu", f->r[i].cpu.engine);
    JARR("guest_cpu", f->r[i].cpu.guest);
    JARR("others_cpus", f->r[i].cpu.others);
#undef JARR
}

static void run_figure(struct stream *s, const char *label, const char *key,
                       struct figure *f)
{
    unsigned int i;

    for (i = 0; i < reps; i++) {
        stream_run(s, &f->r[i]);
        f->rate[i] = f->r[i].rate;
        progress("  %-22s rep %u: %10.0f msg/s %8.1f MB/s  c2c %3.0f ns  "
                 "%.3f db/msg  CPU: engine %3.0f%% guest %3.0f%% others "
                 "%.2f", label, i + 1, f->r[i].rate,
                 f->r[i].rate * s->size / 1e6, f->r[i].c2c_ns,
                 f->r[i].dbs_per_msg, 100 * f->r[i].cpu.engine,
                 100 * f->r[i].cpu.guest, f->r[i].cpu.others);
    }
    f->med = median(f->rate, reps);
    jfigure(key, f, s->size);
}

/* WRITEs from @va's QP @qa_ to @vb's QP @qb_. */
static void write_stream_on(struct stream *s, uint32_t size, bool burst,
                            struct bench_vm *va, struct bqp *qa_, struct bench_vm *vb,
                            struct bqp *qb_)
{
    bool big = size > SMALL;

    *s = (struct stream) {
        .req = qa_, .resp = qb_,
        .opcode = VMMBIB_WR_RDMA_WRITE,
        .size = size,
        .burst = burst,
        .depth = big ? (burst ? BIG_BURST : BIG_DEPTH) :
                 (burst ? SMALL_BURST : PIPE_DEPTH),
        .sig = big ? BIG_SIG : SIG_EVERY,
        .db_batch = 1,
        .src = big ? va->big.p : va->small.p,
        .dst = big ? vb->big.p : vb->small.p,
        .src_addr = big ? va->big.gpa : va->small.gpa,
        .dst_addr = big ? vb->big.gpa : vb->small.gpa,
        .lkey = big ? va->big_mr.lkey : va->small_mr.lkey,
        .rkey = big ? vb->big_mr.rkey : vb->small_mr.rkey,
        .nslots = big ? BIG_SLOTS : SMALL_BURST,
    };
}

static void write_stream(struct stream *s, uint32_t size, bool burst)
{
    write_stream_on(s, size, burst, &vm_a, &qa, &vm_b, &qb);
}

static void send_stream(struct stream *s, bool burst)
{
    write_stream(s, SMALL, burst);
    s->opcode = VMMBIB_WR_SEND;
    /* More receives posted than sends outstanding: no RNR waits. */
    fill_rq(&qb);
}

/* ---- latency ---- */

static void spin_poll(struct gcq *cq, struct vmmbib_cqe *e, uint64_t hard)
{
    unsigned int spins = 0;

    while (!cq_poll(cq, e, 1)) {
        if (spins == 1999 && now_ns() > hard) {
            die("ping-pong: no completion within the time limit");
        }
        relax(&spins);
    }
}

static void lat_send(struct bqp *q, struct bench_vm *v, uint64_t k)
{
    struct vmmbib_sge sg = sge(&v->small_mr, v->small.gpa, SMALL);
    struct vmmbib_send_wqe w = {
        .wr_id = htole64(k),
        .opcode = VMMBIB_WR_SEND,
        .flags = q->qp.sq_prod % SIG_EVERY == SIG_EVERY - 1 ?
                 VMMBIB_WQE_SIGNALED : 0,
    };

    memcpy(v->small.p, &k, sizeof(k));
    qp_post_send(&q->qp, &w, &sg, 1, NULL, 0, true);
}

/* Receive one ping on @q: check it carries @k. */
static void lat_recv(struct bqp *q, uint64_t k, uint64_t hard)
{
    struct vmmbib_cqe e;
    uint64_t got;

    spin_poll(&q->rcq, &e, hard);
    cqe_check(&e, "ping-pong receive");
    memcpy(&got, q->rbuf.p + (le64toh(e.wr_id) & (QUEUE_WR - 1)) * SMALL,
           8);
    CHECK(got == k, "ping-pong message %" PRIu64 " arrived as %" PRIu64,
          k, got);
    q->rq_done++;
}

/* Between round trips: retire send completions, top up the RQs. */
static void lat_housekeeping(struct bqp *q)
{
    send_cqes(q, "ping-pong send");
    if (q->qp.rq_prod - q->rq_done < QUEUE_WR / 2 || q->rq_unrung) {
        fill_rq(q);
    }
}

static void latency(double secs)
{
    uint64_t start, end, hard, k = 0;
    uint32_t n = 0, *samples;
    struct cpu_snap c0, c1;
    struct cpu_use u;
    double med, p99, p999, c2c;

    wait_quiet();
    c2c = c2c_probe();
    start = now_ns();
    end = start + (uint64_t)(secs * 1e9);
    hard = end + 30000000000ull;

    fill_rq(&qa);
    fill_rq(&qb);
    samples = calloc(LAT_MAX_SAMPLES, sizeof(*samples));
    CHECK(samples, "out of memory");
    /* Warm-up round trips, not recorded. */
    for (k = 0; k < 1000; k++) {
        lat_send(&qa, &vm_a, k);
        lat_recv(&qb, k, hard);
        lat_send(&qb, &vm_b, k);
        lat_recv(&qa, k, hard);
        lat_housekeeping(&qa);
        lat_housekeeping(&qb);
    }
    cpu_snap(&c0);
    while (n < LAT_MAX_SAMPLES) {
        uint64_t t = now_ns(), t2;

        if (t >= end) {
            break;
        }
        lat_send(&qa, &vm_a, k);
        lat_recv(&qb, k, hard);
        lat_send(&qb, &vm_b, k);
        lat_recv(&qa, k, hard);
        t2 = now_ns();
        samples[n++] = (uint32_t)(t2 - t > UINT32_MAX ? UINT32_MAX : t2 - t);
        k++;
        /* Outside the timed part: SQs never fill, RQs never run dry. */
        if (!(n & 63)) {
            lat_housekeeping(&qa);
            lat_housekeeping(&qb);
        }
    }
    cpu_snap(&c1);
    cpu_use(&c0, &c1, &u);
    /* Finish each signaling period with one-way pings, then drain. */
    while (qa.qp.sq_prod % SIG_EVERY) {
        lat_send(&qa, &vm_a, k);
        lat_recv(&qb, k++, hard);
        lat_housekeeping(&qb);
    }
    while (qb.qp.sq_prod % SIG_EVERY) {
        lat_send(&qb, &vm_b, k);
        lat_recv(&qa, k++, hard);
        lat_housekeeping(&qa);
    }
    while (qa.sq_done != qa.qp.sq_prod || qb.sq_done != qb.qp.sq_prod) {
        lat_housekeeping(&qa);
        lat_housekeeping(&qb);
        CHECK(now_ns() < hard, "ping-pong: sends never completed");
    }
    c2c = (c2c + c2c_probe()) / 2;
    qsort(samples, n, sizeof(*samples), cmp_u32);
    med = samples[n / 2] / 1e3;
    p99 = samples[(uint64_t)n * 99 / 100] / 1e3;
    p999 = samples[(uint64_t)n * 999 / 1000] / 1e3;
    progress("  SEND 8 B ping-pong: %u round trips; round trip median "
             "%.2f us, p99 %.2f us, p99.9 %.2f us  c2c %.0f ns  CPU: "
             "engine %.0f%% others %.2f", n, med, p99, p999, c2c,
             100 * u.engine, u.others);
    jnum("lat_send8_rtt_median_us", med);
    jnum("lat_send8_rtt_p99_us", p99);
    jnum("lat_send8_rtt_p999_us", p999);
    jnum("lat_send8_round_trips", n);
    jnum("lat_c2c_ns", c2c);
    jnum("lat_engine_cpu", u.engine);
    jnum("lat_others_cpus", u.others);
    free(samples);
}

/* ---- memcpy baseline, same buffers and slots as the 64 KiB WRITEs ---- */

static void pin_self(int cpu)
{
    cpu_set_t set;

    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof(set), &set);
}

/*
 * Copies of 64 KiB per second, in one memcpy or in 4 KiB pieces, on the
 * engine's CPU (while the engine sleeps) when threads are pinned.
 */
static double memcpy_rate(size_t piece)
{
    uint64_t start, t0 = 0, n = 0, k = 0;
    double rate;

    wait_quiet();
    if (pinned) {
        pin_self(1);
    }
    start = now_ns();
    for (;;) {
        uint64_t off = (k++ % BIG_SLOTS) * BIG, now;
        size_t done;

        for (done = 0; done < BIG; done += piece) {
            memcpy(vm_b.big.p + off + done, vm_a.big.p + off + done, piece);
        }
        __asm__ volatile("" ::: "memory");
        now = now_ns();
        if (!t0) {
            if (now - start >= warm_secs * 1e9) {
                t0 = now;
            }
            continue;
        }
        n++;
        if (now - t0 >= rep_secs * 1e9) {
            rate = n / ((now - t0) / 1e9);
            break;
        }
    }
    if (pinned) {
        pin_self(0);
    }
    return rate;
}

static double memcpy_figure(size_t piece, const char *key)
{
    double r[MAX_REPS], med;
    char k[64];
    unsigned int i;

    for (i = 0; i < reps; i++) {
        r[i] = memcpy_rate(piece);
        progress("  memcpy 64 KiB in %2zu KiB   rep %u: %10.0f copies/s "
                 "%8.1f MB/s", piece >> 10, i + 1, r[i], r[i] * BIG / 1e6);
    }
    med = median(r, reps);
    jnum(key, med);
    snprintf(k, sizeof(k), "%s_MBps", key);
    jnum(k, med * BIG / 1e6);
    snprintf(k, sizeof(k), "%s_reps", key);
    jarr(k, r, reps);
    return med;
}

/* ---- idle QPs for the 1 vs 1024 comparison ---- */

struct idle_set {
    struct bench_vm *va, *vb;
    struct gcq cq_a, cq_b;
    struct gqp *a, *b;
    unsigned int n;
};

/* @n connected RC QP pairs between @va and @vb that stay idle. */
static void idle_create(struct idle_set *s, struct bench_vm *va, struct bench_vm *vb,
                        unsigned int n)
{
    struct rc_opts ro;
    struct qp_opts o;
    unsigned int i;

    rc_opts_bench(&ro);
    small_wqe_opts(&o);         /* 16-entry rings, one page each */
    if (!s->a) {
        /*
         * The CQs are shared and made once; each round's rings are new
         * guest RAM (the harness allocator never frees): 8 MiB a side
         * per round.
         */
        s->va = va;
        s->vb = vb;
        CHECK_OK(cq_create(&va->c, 16, &s->cq_a));
        CHECK_OK(cq_create(&vb->c, 16, &s->cq_b));
        s->a = calloc(n, sizeof(*s->a));
        s->b = calloc(n, sizeof(*s->b));
        CHECK(s->a && s->b, "out of memory");
    }
    for (i = 0; i < n; i++) {
        CHECK_OK(qp_create(&s->va->c, s->va->pd, &s->cq_a, &s->cq_a, NULL,
                           &o, &s->a[i]));
        CHECK_OK(qp_create(&s->vb->c, s->vb->pd, &s->cq_b, &s->cq_b, NULL,
                           &o, &s->b[i]));
        CHECK_OK(rc_connect(&s->a[i], &s->b[i], &ro));
    }
    s->n = n;
}

static void idle_destroy(struct idle_set *s)
{
    unsigned int i;

    for (i = 0; i < s->n; i++) {
        CHECK_OK(destroy(&s->va->c, VMMBIB_CMD_DESTROY_QP, s->a[i].handle));
        CHECK_OK(destroy(&s->vb->c, VMMBIB_CMD_DESTROY_QP, s->b[i].handle));
    }
    s->n = 0;
}

/*
 * 1 QP vs 1024 QPs, burst by burst: a second pair of VMs (C, D) on the
 * same engine holds 1023 idle connected QPs per side and then a busy pair
 * (created last, so its table slots are the far ones).  Bursts alternate
 * between A->B (1 QP per device) and C->D (1024 per device) every
 * millisecond or so, so both see the same state of the host; the engine
 * itself only ever walks contexts and its list of QPs with work.
 */
static struct bench_vm vm_c, vm_d;
static struct bqp qc, qd;

#define PAIR_BURSTS 4096

static void qp_count_interleaved(double secs)
{
    static double r1[PAIR_BURSTS], rn[PAIR_BURSTS], pr[PAIR_BURSTS];
    struct idle_set idle = { 0 };
    struct stream s1, sn;
    struct result r;
    struct rc_opts ro;
    uint64_t t, end;
    unsigned int n = 0;
    double c2c, m1, mn;

    t = now_ns();
    bench_vm_init(&vm_c, 32ull << 20);
    bench_vm_init(&vm_d, 32ull << 20);
    idle_create(&idle, &vm_c, &vm_d, IDLE_QPS);
    bqp_create(&vm_c, &qc);
    bqp_create(&vm_d, &qd);
    rc_opts_bench(&ro);
    CHECK_OK(rc_connect(&qc.qp, &qd.qp, &ro));
    progress("  (two more VMs with %u connected QP pairs made in %.0f ms)",
             IDLE_QPS + 1, (now_ns() - t) / 1e6);
    write_stream_on(&s1, SMALL, true, &vm_a, &qa, &vm_b, &qb);
    write_stream_on(&sn, SMALL, true, &vm_c, &qc, &vm_d, &qd);
    s1.count = sn.count = 1;    /* one measured burst per call */
    wait_quiet();
    c2c = c2c_probe();
    end = now_ns() + (uint64_t)(secs * 1e9);
    while (n < PAIR_BURSTS && (now_ns() < end || n < 16)) {
        /* Alternate which goes first. */
        if (n % 2) {
            burst_run(&sn, &r);
            rn[n] = r.rate;
            burst_run(&s1, &r);
            r1[n] = r.rate;
        } else {
            burst_run(&s1, &r);
            r1[n] = r.rate;
            burst_run(&sn, &r);
            rn[n] = r.rate;
        }
        pr[n] = rn[n] / r1[n];
        n++;
    }
    c2c = (c2c + c2c_probe()) / 2;
    qsort(r1, n, sizeof(*r1), cmp_double);
    qsort(rn, n, sizeof(*rn), cmp_double);
    qsort(pr, n, sizeof(*pr), cmp_double);
    m1 = r1[n / 2];
    mn = rn[n / 2];
    progress("  interleaved: %u burst pairs, 1 QP %.0f msg/s, 1024 QPs %.0f "
             "msg/s (medians): %.3f; paired ratios: median %.3f, middle "
             "half %.3f - %.3f  c2c %.0f ns", n, m1, mn, mn / m1, pr[n / 2],
             pr[n / 4], pr[3 * n / 4], c2c);
    jnum("write8_1qp", m1);
    jnum("write8_1024qp", mn);
    /*
     * The rates are bimodal on this VM (the host changes state every so
     * often), so the two medians may come from different modes: the
     * ratio of bursts run a millisecond apart is the figure.
     */
    jnum("write8_1024qp_vs_1qp", pr[n / 2]);
    jnum("write8_1024qp_ratio_of_medians", mn / m1);
    jnum("write8_1024qp_paired_q1", pr[n / 4]);
    jnum("write8_1024qp_paired_q3", pr[3 * n / 4]);
    jnum("write8_1024qp_pairs", n);
    jnum("write8_1024qp_c2c_ns", c2c);
    jnum("write8_1024qp_interleaved_secs", secs);
    idle_destroy(&idle);
    vmmbib_dev_free(vm_c.dev);
    vmmbib_dev_free(vm_d.dev);
    guest_fini(&vm_c.g);
    guest_fini(&vm_d.g);
}

/* ---- host memory per object ---- */

static size_t heap_used(void)
{
    struct mallinfo2 m = mallinfo2();

    return m.uordblks + m.hblkhd;
}

static void memory_per_object(void)
{
    enum { N = 256, NMR = 64, BIG_MR_PAGES = 1025 };
    struct vmmbib_dev_config cfg;
    struct guest g;
    struct vmmbib_dev *dev;
    struct gctx *ctxs, c;
    struct gcq *cqs;
    struct gqp *qps;
    struct gmr mr;
    struct gbuf buf;
    struct qp_opts o;
    uint32_t pd, nctx;
    size_t h0, h1, h2;
    double dev_bytes, ctx_b, cq_b, qp_b, mr1_b, mrbig_b, page_b;
    unsigned int i;

    guest_init(&g, 16u << 20);
    guest_dev_config(&cfg);
    cfg.uar_slots = cfg.limits.max_ucontext;    /* 64 by default */
    h0 = heap_used();
    dev = guest_dev_new(&g, eng, &cfg);
    dev_bytes = (double)(heap_used() - h0);

    /* Contexts: all slots but one (kept for the objects below). */
    nctx = cfg.uar_slots - 1;
    ctxs = calloc(nctx, sizeof(*ctxs));
    CHECK(ctxs, "out of memory");
    h0 = heap_used();
    for (i = 0; i < nctx; i++) {
        CHECK_OK(ctx_create(&ctxs[i], dev, &g));
    }
    ctx_b = (double)(heap_used() - h0) / nctx;
    for (i = 0; i < nctx; i++) {
        CHECK_OK(ctx_destroy(&ctxs[i]));
    }
    free(ctxs);

    CHECK_OK(ctx_create(&c, dev, &g));
    CHECK_OK(pd_create(&c, &pd));
    cqs = calloc(N, sizeof(*cqs));
    qps = calloc(N, sizeof(*qps));
    CHECK(cqs && qps, "out of memory");
    /* CQs of 16 entries: 64 + 16 * 64 bytes, one page. */
    h0 = heap_used();
    for (i = 0; i < N; i++) {
        CHECK_OK(cq_create(&c, 16, &cqs[i]));
    }
    cq_b = (double)(heap_used() - h0) / N;
    /* QPs with the harness's default rings: 16 WRs, one page each. */
    qp_opts_default(&o, VMMBIB_QPT_RC);
    h0 = heap_used();
    for (i = 0; i < N; i++) {
        CHECK_OK(qp_create(&c, pd, &cqs[0], &cqs[0], NULL, &o, &qps[i]));
    }
    qp_b = (double)(heap_used() - h0) / N;
    /* MRs of 1 page and of BIG_MR_PAGES pages, of the same buffer. */
    gbuf_alloc(&g, (uint64_t)BIG_MR_PAGES * VMMBIB_PAGE_SIZE, &buf);
    h0 = heap_used();
    for (i = 0; i < NMR; i++) {
        CHECK_OK(mr_reg(&c, pd, buf.gpa, VMMBIB_PAGE_SIZE, ACCESS_ALL_RIGHTS,
                        &mr));
    }
    h1 = heap_used();
    for (i = 0; i < NMR; i++) {
        CHECK_OK(mr_reg(&c, pd, buf.gpa, buf.len, ACCESS_ALL_RIGHTS, &mr));
    }
    h2 = heap_used();
    mr1_b = (double)(h1 - h0) / NMR;
    mrbig_b = (double)(h2 - h1) / NMR;
    page_b = (mrbig_b - mr1_b) / (BIG_MR_PAGES - 1);

    progress("  device with default limits (handle tables, %u UAR slots): "
             "%.0f bytes", cfg.uar_slots, dev_bytes);
    progress("  ucontext %.0f B (struct %zu), CQ %.0f B (struct %zu), "
             "QP %.0f B (struct %zu), MR %.0f B (struct %zu) + %.1f B per "
             "page", ctx_b, sizeof(struct vmmbib_ucontext), cq_b,
             sizeof(struct vmmbib_cq), qp_b, sizeof(struct vmmbib_qp),
             mr1_b - page_b, sizeof(struct vmmbib_mr), page_b);
    jnum("mem_device_bytes", dev_bytes);
    jnum("mem_device_uar_slots", cfg.uar_slots);
    jnum("mem_ucontext_bytes", ctx_b);
    jnum("mem_ucontext_struct", sizeof(struct vmmbib_ucontext));
    jnum("mem_cq_bytes", cq_b);
    jnum("mem_cq_struct", sizeof(struct vmmbib_cq));
    jnum("mem_qp_bytes", qp_b);
    jnum("mem_qp_struct", sizeof(struct vmmbib_qp));
    jnum("mem_mr_bytes", mr1_b - page_b);
    jnum("mem_mr_struct", sizeof(struct vmmbib_mr));
    jnum("mem_mr_page_bytes", page_b);
    jnum("mem_db_page_bytes", VMMBIB_PAGE_SIZE);

    CHECK_OK(ctx_destroy(&c));  /* and every object created with it */
    free(cqs);
    free(qps);
    vmmbib_dev_free(dev);
    guest_fini(&g);
}

/* ---- main ---- */

/* Whether to run the step whose figures' keys start with @key. */
static bool want(const char *key)
{
    return !only || strstr(key, only);
}

static void setup(void)
{
    struct vmmbib_engine_config ecfg = { .idle_poll_us = 50 };
    struct rc_opts ro;
    pid_t before[MAX_TIDS], after[MAX_TIDS];
    int nb, na, i, j;
    char err[256] = "";

    nb = list_tids(before, MAX_TIDS);
    eng = vmmbib_engine_new(&ecfg, err, sizeof(err));
    CHECK(eng, "vmmbib_engine_new: %s", err);
    na = list_tids(after, MAX_TIDS);
    for (i = 0; i < na && !have_engine_clock; i++) {
        for (j = 0; j < nb && before[j] != after[i]; j++) {
        }
        if (j == nb) {
            struct timespec ts;

            engine_tid = after[i];
            engine_clock = tid_cpu_clock(after[i]);
            have_engine_clock = !clock_gettime(engine_clock, &ts);
        }
    }
    if (!have_engine_clock) {
        progress("cannot read the engine thread's CPU time; CPU shares "
                 "are reported as -1");
    }
    pin_threads(engine_tid);
    bench_vm_init(&vm_a, GUEST_RAM);
    bench_vm_init(&vm_b, GUEST_RAM);
    bqp_create(&vm_a, &qa);
    bqp_create(&vm_b, &qb);
    rc_opts_bench(&ro);
    CHECK_OK(rc_connect(&qa.qp, &qb.qp, &ro));
    pattern_fill(vm_a.big.p, vm_a.big.len, 1);
}

static void teardown(void)
{
    vmmbib_dev_free(vm_a.dev);
    vmmbib_dev_free(vm_b.dev);
    vmmbib_engine_free(eng);
    guest_fini(&vm_a.g);
    guest_fini(&vm_b.g);
}

static void check_stats(void)
{
    struct vmmbib_dev_stats sa, sb;

    vmmbib_dev_get_stats(vm_a.dev, &sa);
    vmmbib_dev_get_stats(vm_b.dev, &sb);
    CHECK(!sa.error_completions && !sb.error_completions &&
          !sa.bad_doorbells && !sb.bad_doorbells,
          "the devices counted %" PRIu64 " error completions and %" PRIu64
          " bad doorbells", sa.error_completions + sb.error_completions,
          sa.bad_doorbells + sb.bad_doorbells);
    jnum("total_wqes", (double)(sa.wqes + sb.wqes));
    jnum("total_doorbells", (double)(sa.doorbells + sb.doorbells));
}

static int profile(const char *what, uint64_t count)
{
    struct idle_set idle = { 0 };
    struct stream s;
    struct result r;
    uint64_t db0, db1, w0, w1, posted;

    no_probe = true;
    setup();
    if (!strcmp(what, "write")) {
        write_stream(&s, SMALL, true);
    } else if (!strcmp(what, "write1024")) {
        idle_create(&idle, &vm_a, &vm_b, IDLE_QPS);
        write_stream(&s, SMALL, true);
    } else if (!strcmp(what, "write64k")) {
        write_stream(&s, BIG, true);
    } else if (!strcmp(what, "send")) {
        send_stream(&s, true);
    } else {
        die("--profile takes write, write1024, write64k or send, not "
            "'%s'", what);
    }
    s.count = count;
    engine_counts(&db0, &w0);
    posted = s.req->qp.sq_prod;
    stream_run(&s, &r);
    engine_counts(&db1, &w1);
    posted = s.req->qp.sq_prod - posted;
    check_stats();
    progress("profile %s: %" PRIu64 " messages, %.0f msg/s", what, posted,
             r.rate);
    /*
     * What the engine executed, from its own counters (a SEND also takes
     * a receive WQE): bursts the guest saw too late are not measured but
     * were executed, and so are the first WQEs of bursts.
     */
    CHECK(w1 - w0 == (s.opcode == VMMBIB_WR_SEND ? 2 : 1) * posted,
          "the engine counted %" PRIu64 " WQEs for %" PRIu64 " messages",
          w1 - w0, posted);
    printf("{\"profile\": \"%s\", \"wqes\": %" PRIu64 "}\n", what,
           posted);
    if (idle.n) {
        idle_destroy(&idle);
    }
    teardown();
    return 0;
}

int main(int argc, char **argv)
{
    struct figure *f = calloc(16, sizeof(*f));
    struct stream s;
    struct idle_set idle = { 0 };
    struct result one, many;
    double mc, mc4, ratio[MAX_REPS], r1[MAX_REPS], rn[MAX_REPS];
    double c1[MAX_REPS], cn[MAX_REPS], saved_secs;
    unsigned int rounds;
    uint64_t t_start = now_ns();
    unsigned int i;
    int a;

    CHECK(f, "out of memory");
    setvbuf(stderr, NULL, _IOLBF, 0);
    for (a = 1; a < argc; a++) {
        if (!strcmp(argv[a], "--quick")) {
            rep_secs = 0.2;
            warm_secs = 0.05;
        } else if (!strcmp(argv[a], "--only") && a + 1 < argc) {
            only = argv[++a];
        } else if (!strcmp(argv[a], "--profile") && a + 1 < argc) {
            const char *what = argv[++a];
            uint64_t count = 200000;

            if (a + 2 < argc && !strcmp(argv[a + 1], "--count")) {
                count = strtoull(argv[a + 2], NULL, 0);
            }
            return profile(what, count);
        } else {
            fprintf(stderr, "usage: %s [--quick] [--only KEY] [--profile "
                    "write|write1024|write64k|send [--count N]]\n",
                    argv[0]);
            return 2;
        }
    }

    jraw("{");
    jstr("bench", "engine");
    jnum("reps", reps);
    jnum("rep_secs", rep_secs);
    jnum("sig_every", SIG_EVERY);
    jnum("pipe_depth", PIPE_DEPTH);
    jnum("small_burst", SMALL_BURST);
    jnum("big_burst", BIG_BURST);
    jnum("db_batch", DB_BATCH);
    progress("engine benchmark: one engine thread, two synthetic guests, "
             "%u x %.1f s per figure", reps, rep_secs);
    setup();
    jnum("pinned", pinned);

    if (want("write8_burst")) {
        progress("[1/7] 8-byte RDMA WRITE: engine capacity (bursts of %u "
                 "WQEs)", SMALL_BURST);
        write_stream(&s, SMALL, true);
        run_figure(&s, "WRITE 8 B burst", "write8_burst", &f[0]);
    }
    if (want("write8_pipe")) {
        progress("[2/7] 8-byte RDMA WRITE: pipelined, one doorbell per WQE, "
                 "then per %u", DB_BATCH);
        write_stream(&s, SMALL, false);
        run_figure(&s, "WRITE 8 B pipelined", "write8_pipe", &f[1]);
        s.db_batch = DB_BATCH;
        run_figure(&s, "WRITE 8 B pipe batch", "write8_pipe_batched", &f[2]);
    }
    if (want("send8")) {
        progress("[3/7] 8-byte SEND: engine capacity, then pipelined");
        send_stream(&s, true);
        run_figure(&s, "SEND 8 B burst", "send8_burst", &f[3]);
        send_stream(&s, false);
        run_figure(&s, "SEND 8 B pipelined", "send8_pipe", &f[4]);
    }
    if (want("lat_send8")) {
        progress("[4/7] SEND 8 B ping-pong latency, one QP pair");
        latency(reps * rep_secs);
    }
    if (want("write64k")) {
        progress("[5/7] 64 KiB RDMA WRITE bandwidth and memcpy of the same "
                 "buffers");
        mc = memcpy_figure(BIG, "memcpy64k");
        mc4 = memcpy_figure(VMMBIB_PAGE_SIZE, "memcpy64k_4k");
        write_stream(&s, BIG, true);
        run_figure(&s, "WRITE 64 KiB burst", "write64k_burst", &f[5]);
        write_stream(&s, BIG, false);
        run_figure(&s, "WRITE 64 KiB pipelined", "write64k_pipe", &f[6]);
        jnum("write64k_burst_vs_memcpy", f[5].med / mc);
        jnum("write64k_pipe_vs_memcpy", f[6].med / mc);
        jnum("write64k_burst_vs_memcpy_4k", f[5].med / mc4);
        progress("  64 KiB WRITE = %.0f%% (burst) / %.0f%% (pipelined) of "
                 "one 64 KiB memcpy, %.0f%% of memcpy in 4 KiB pieces",
                 100 * f[5].med / mc, 100 * f[6].med / mc,
                 100 * f[5].med / mc4);
    }
    if (want("write8_1024qp")) {
        progress("[6/7] 8-byte WRITE capacity: 1 QP vs 1 busy of %u, "
                 "interleaved burst by burst", IDLE_QPS + 1);
        qp_count_interleaved(2 * rep_secs);
        /*
         * And literally: the same busy pair with and without 1023 idle
         * pairs next to it in its own devices, created and destroyed
         * between the halves of short rounds (odd rounds start with 1024
         * QPs, so there is no order effect).  Host-state changes between
         * the halves spread these much more than the interleaved bursts.
         */
        progress("  and with the idle QPs created and destroyed between "
                 "the halves of %u short rounds", 6);
        rounds = 6;
        saved_secs = rep_secs;
        rep_secs /= 4;
        write_stream(&s, SMALL, true);
        for (i = 0; i < rounds; i++) {
            if (i % 2) {
                idle_create(&idle, &vm_a, &vm_b, IDLE_QPS);
                stream_run(&s, &many);
                idle_destroy(&idle);
                stream_run(&s, &one);
            } else {
                stream_run(&s, &one);
                idle_create(&idle, &vm_a, &vm_b, IDLE_QPS);
                stream_run(&s, &many);
                idle_destroy(&idle);
            }
            r1[i] = one.rate;
            rn[i] = many.rate;
            c1[i] = one.c2c_ns;
            cn[i] = many.c2c_ns;
            ratio[i] = many.rate / one.rate;
            progress("  round %u: 1 QP %10.0f msg/s (c2c %3.0f ns), 1024 "
                     "QPs %10.0f msg/s (c2c %3.0f ns): %.3f", i + 1,
                     one.rate, one.c2c_ns, many.rate, many.c2c_ns, ratio[i]);
        }
        rep_secs = saved_secs;
        jnum("write8_rounds_vs_1qp", median(ratio, rounds));
        jarr("write8_rounds_1qp", r1, rounds);
        jarr("write8_rounds_1024qp", rn, rounds);
        jarr("write8_rounds_1qp_c2c_ns", c1, rounds);
        jarr("write8_rounds_1024qp_c2c_ns", cn, rounds);
        jarr("write8_rounds_ratio", ratio, rounds);
        jnum("write8_rounds_secs", rep_secs / 4);
        jnum("qps_per_side", IDLE_QPS + 1);
    }

    check_stats();
    if (want("mem")) {
        progress("[7/7] host memory per object (mallinfo2 deltas)");
        memory_per_object();
    }
    teardown();

    jnum("quiet_waited_secs", quiet_waited);
    jnum("total_secs", (now_ns() - t_start) / 1e9);
    jraw("}");
    printf("%s\n", json);
    progress("done in %.1f s", (now_ns() - t_start) / 1e9);
    free(f);
    return 0;
}
