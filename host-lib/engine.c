/*
 * The engine: one thread that serves every device attached to it.  It
 * drains the doorbell rings of all contexts, runs the SQs of the QPs that
 * have work (a list, so idle QPs cost nothing), and when it has found no
 * work for idle_poll_us (its config, or the device config of a device
 * with an engine of its own) it marks itself asleep in every doorbell page
 * and blocks until a kick (docs/spec.md section 4).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/* Send WQEs one QP runs before the next QP gets its turn. */
#define QP_BUDGET 16
/* Doorbells taken from one context's ring per pass. */
#define DB_BUDGET 64

struct vmmbib_engine {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
    bool running;
    bool stop;
    bool kicked;
    uint32_t idle_poll_us;
    struct vmmbib_dev *devs;
    struct vmmbib_qp *active_head;
    struct vmmbib_qp *active_tail;
    uint16_t next_lid;
    uint32_t state;         /* VMMBIB_ENGINE_*, as the pages show it */
    unsigned int waiters;   /* threads other than the engine's, waiting */
    unsigned int entries;   /* times one of them got the lock */
};

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void *engine_thread(void *opaque);

struct vmmbib_engine *vmmbib_engine_new(const struct vmmbib_engine_config *cfg,
                                        char *err, size_t err_len)
{
    struct vmmbib_engine *eng;
    pthread_condattr_t attr;
    int ret;

    if (cfg->idle_poll_us > VMMBIB_IDLE_POLL_US_MAX) {
        snprintf(err, err_len, "idle-poll-us=%u is out of range: use 0 (the "
                 "default, %u) to %u", cfg->idle_poll_us,
                 VMMBIB_IDLE_POLL_US_DEFAULT, VMMBIB_IDLE_POLL_US_MAX);
        return NULL;
    }
    eng = calloc(1, sizeof(*eng));
    if (!eng) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    eng->idle_poll_us = cfg->idle_poll_us ? cfg->idle_poll_us :
                        VMMBIB_IDLE_POLL_US_DEFAULT;
    eng->next_lid = 1;
    pthread_mutex_init(&eng->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&eng->wake, &attr);
    pthread_condattr_destroy(&attr);
    ret = pthread_create(&eng->thread, NULL, engine_thread, eng);
    if (ret) {
        snprintf(err, err_len, "cannot start the engine thread: %s",
                 strerror(ret));
        pthread_cond_destroy(&eng->wake);
        pthread_mutex_destroy(&eng->lock);
        free(eng);
        return NULL;
    }
    eng->running = true;
    return eng;
}

void vmmbib_engine_free(struct vmmbib_engine *eng)
{
    if (!eng) {
        return;
    }
    pthread_mutex_lock(&eng->lock);
    eng->stop = true;
    pthread_cond_signal(&eng->wake);
    pthread_mutex_unlock(&eng->lock);
    if (eng->running) {
        pthread_join(eng->thread, NULL);
    }
    pthread_cond_destroy(&eng->wake);
    pthread_mutex_destroy(&eng->lock);
    free(eng);
}

pthread_mutex_t *vmmbib_engine_lock(struct vmmbib_engine *eng)
{
    return &eng->lock;
}

void vmmbib_engine_enter(struct vmmbib_engine *eng)
{
    /*
     * Announce ourselves: a busy engine thread hands the lock over between
     * passes only when someone waits, and a mutex alone is not fair.
     */
    __atomic_add_fetch(&eng->waiters, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&eng->lock);
    __atomic_sub_fetch(&eng->waiters, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&eng->entries, 1, __ATOMIC_RELEASE);
}

/*
 * Called by the engine thread, lock held: if another thread waits for the
 * lock, give it up until one of them has had it.  Unlocking and locking
 * again is not enough: the waiter must first be scheduled, and on a
 * machine whose other CPU runs a vCPU the engine wins the lock back every
 * time, which starved commands and trapped doorbells for seconds.
 */
static void let_waiters_in(struct vmmbib_engine *eng)
{
    unsigned int entries = __atomic_load_n(&eng->entries, __ATOMIC_ACQUIRE);

    if (!__atomic_load_n(&eng->waiters, __ATOMIC_RELAXED)) {
        return;
    }
    pthread_mutex_unlock(&eng->lock);
    /* A waiter counted itself before it locks, so one will get in. */
    while (__atomic_load_n(&eng->entries, __ATOMIC_ACQUIRE) == entries &&
           __atomic_load_n(&eng->waiters, __ATOMIC_RELAXED)) {
        sched_yield();
    }
    pthread_mutex_lock(&eng->lock);
}

void vmmbib_engine_leave(struct vmmbib_engine *eng)
{
    pthread_mutex_unlock(&eng->lock);
}

void vmmbib_engine_attach(struct vmmbib_engine *eng, struct vmmbib_dev *dev)
{
    dev->next_on_engine = eng->devs;
    eng->devs = dev;
}

void vmmbib_engine_detach(struct vmmbib_engine *eng, struct vmmbib_dev *dev)
{
    struct vmmbib_dev **p;

    for (p = &eng->devs; *p; p = &(*p)->next_on_engine) {
        if (*p == dev) {
            *p = dev->next_on_engine;
            return;
        }
    }
}

struct vmmbib_dev *vmmbib_engine_find_lid(struct vmmbib_engine *eng,
                                          uint16_t lid)
{
    struct vmmbib_dev *dev;

    for (dev = eng->devs; dev; dev = dev->next_on_engine) {
        if (dev->lid == lid) {
            return dev;
        }
    }
    return NULL;
}

struct vmmbib_dev *vmmbib_engine_find_gid(struct vmmbib_engine *eng,
                                          const uint8_t *gid)
{
    struct vmmbib_dev *dev;

    for (dev = eng->devs; dev; dev = dev->next_on_engine) {
        uint8_t port_gid[16];

        vmmbib_port_gid(dev, port_gid);
        if (!memcmp(port_gid, gid, sizeof(port_gid))) {
            return dev;
        }
    }
    return NULL;
}

struct vmmbib_dev *vmmbib_engine_find_guid(struct vmmbib_engine *eng,
                                           uint64_t guid)
{
    struct vmmbib_dev *dev;

    for (dev = eng->devs; dev; dev = dev->next_on_engine) {
        if (dev->node_guid == guid) {
            return dev;
        }
    }
    return NULL;
}

uint16_t vmmbib_engine_assign_lid(struct vmmbib_engine *eng)
{
    /* Unicast LIDs are 1..0xbfff; skip any taken by an explicit lid=. */
    while (vmmbib_engine_find_lid(eng, eng->next_lid) ||
           eng->next_lid == 0 || eng->next_lid >= 0xc000) {
        eng->next_lid = eng->next_lid >= 0xbfff ? 1 : eng->next_lid + 1;
    }
    return eng->next_lid++;
}

void vmmbib_engine_qp_activate(struct vmmbib_engine *eng,
                               struct vmmbib_qp *qp)
{
    if (qp->active) {
        return;
    }
    qp->active = true;
    qp->next_active = NULL;
    if (eng->active_tail) {
        eng->active_tail->next_active = qp;
    } else {
        eng->active_head = qp;
    }
    eng->active_tail = qp;
}

void vmmbib_engine_qp_forget(struct vmmbib_engine *eng, struct vmmbib_qp *qp)
{
    struct vmmbib_qp **p, *prev = NULL;

    if (!qp->active) {
        return;
    }
    for (p = &eng->active_head; *p; prev = *p, p = &(*p)->next_active) {
        if (*p == qp) {
            *p = qp->next_active;
            if (eng->active_tail == qp) {
                eng->active_tail = prev;
            }
            break;
        }
    }
    qp->active = false;
}

static uint32_t *db_word(struct vmmbib_ucontext *uctx, unsigned int offset)
{
    return (uint32_t *)((uint8_t *)uctx->db_page + offset);
}

/* Take up to DB_BUDGET doorbells from a context's ring. */
static unsigned int drain_ring(struct vmmbib_dev *dev,
                               struct vmmbib_ucontext *uctx)
{
    uint64_t *ring = (uint64_t *)((uint8_t *)uctx->db_page + VMMBIB_DB_RING);
    unsigned int n;

    for (n = 0; n < DB_BUDGET; n++) {
        uint64_t *slot = &ring[uctx->db_consumer % VMMBIB_DB_RING_ENTRIES];
        /* The guest stores the entry last: once VALID, it is whole. */
        uint64_t db = le64toh(__atomic_load_n(slot, __ATOMIC_ACQUIRE));

        if (!(db & VMMBIB_DB_VALID)) {
            break;
        }
        __atomic_store_n(slot, 0, __ATOMIC_RELAXED);
        uctx->db_consumer++;
        __atomic_store_n(db_word(uctx, VMMBIB_DB_CONSUMER),
                         htole32(uctx->db_consumer), __ATOMIC_RELEASE);
        vmmbib_doorbell_execute(dev, uctx, db);
    }
    return n;
}

/* Call @fn on every context of every device; returns the sum of results. */
static unsigned int each_context(struct vmmbib_engine *eng,
                                 unsigned int (*fn)(struct vmmbib_dev *dev,
                                                    struct vmmbib_ucontext *uctx,
                                                    uint32_t arg),
                                 uint32_t arg)
{
    struct vmmbib_dev *dev;
    unsigned int sum = 0;

    for (dev = eng->devs; dev; dev = dev->next_on_engine) {
        uint32_t i;

        for (i = 1; i <= dev->ucontexts.size; i++) {
            struct vmmbib_ucontext *uctx = vmmbib_table_at(&dev->ucontexts,
                                                           i);

            if (uctx) {
                sum += fn(dev, uctx, arg);
            }
        }
    }
    return sum;
}

/*
 * Lock held: execute the doorbells a context's ring holds now.  Commands
 * call this first, so that a doorbell rung before, say, DESTROY_QP takes
 * effect before it, as the guest ordered them, instead of later naming a
 * queue that is gone.  At most one ring's worth: the guest cannot keep
 * the command here.
 */
void vmmbib_engine_drain_context(struct vmmbib_dev *dev,
                                 struct vmmbib_ucontext *uctx)
{
    unsigned int taken = 0, n;

    do {
        n = drain_ring(dev, uctx);
        taken += n;
    } while (n == DB_BUDGET && taken < VMMBIB_DB_RING_ENTRIES);
}

static unsigned int drain_context(struct vmmbib_dev *dev,
                                  struct vmmbib_ucontext *uctx,
                                  uint32_t unused)
{
    (void)unused;
    return drain_ring(dev, uctx);
}

static unsigned int poll_doorbells(struct vmmbib_engine *eng)
{
    return each_context(eng, drain_context, 0);
}

/* One turn for each QP with work; a QP with nothing left leaves the list. */
static unsigned int run_active(struct vmmbib_engine *eng, uint64_t now,
                               uint64_t *next_deadline)
{
    struct vmmbib_qp *qp = eng->active_head, *last = eng->active_tail;
    unsigned int work = 0;

    while (qp) {
        struct vmmbib_qp *next = qp == last ? NULL : qp->next_active;

        work += vmmbib_qp_run_sq(qp->dev, qp, QP_BUDGET, now);
        if (qp->active) {
            vmmbib_engine_qp_forget(eng, qp);
            if (vmmbib_qp_has_sq_work(qp)) {
                /* Still has work (budget or RNR wait): to the back. */
                vmmbib_engine_qp_activate(eng, qp);
                if (qp->rnr_deadline_ns &&
                    (!*next_deadline || qp->rnr_deadline_ns < *next_deadline)) {
                    *next_deadline = qp->rnr_deadline_ns;
                }
            }
        }
        qp = next;
    }
    return work;
}

void vmmbib_engine_wake(struct vmmbib_engine *eng)
{
    eng->kicked = true;
    pthread_cond_signal(&eng->wake);
}

uint32_t vmmbib_engine_state(struct vmmbib_engine *eng)
{
    return eng->state;
}

static unsigned int store_state(struct vmmbib_dev *dev,
                                struct vmmbib_ucontext *uctx, uint32_t state)
{
    (void)dev;
    __atomic_store_n(db_word(uctx, VMMBIB_DB_ENGINE_STATE), htole32(state),
                     __ATOMIC_RELAXED);
    return 0;
}

static void set_engine_state(struct vmmbib_engine *eng, uint32_t state)
{
    eng->state = state;
    each_context(eng, store_state, state);
    /* Pairs with the producer's barrier between its entry and this read. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

static void *engine_thread(void *opaque)
{
    struct vmmbib_engine *eng = opaque;
    uint64_t idle_since = now_ns();

    pthread_mutex_lock(&eng->lock);
    while (!eng->stop) {
        uint64_t now = now_ns(), deadline = 0;
        unsigned int work;

        work = poll_doorbells(eng) + run_active(eng, now, &deadline);
        if (work) {
            idle_since = now;
            /* A command or a trapped doorbell waits: let it in. */
            let_waiters_in(eng);
        } else if (now - idle_since < (uint64_t)eng->idle_poll_us * 1000) {
            /* Polling without work: others may use the CPU meanwhile. */
            let_waiters_in(eng);
            sched_yield();
        } else {
            set_engine_state(eng, VMMBIB_ENGINE_ASLEEP);
            /* A doorbell stored before the mark was seen is found here. */
            if (!poll_doorbells(eng) && !eng->kicked && !eng->stop) {
                if (deadline) {
                    struct timespec ts = {
                        .tv_sec = deadline / 1000000000ull,
                        .tv_nsec = deadline % 1000000000ull,
                    };

                    pthread_cond_timedwait(&eng->wake, &eng->lock, &ts);
                } else {
                    pthread_cond_wait(&eng->wake, &eng->lock);
                }
            }
            eng->kicked = false;
            set_engine_state(eng, VMMBIB_ENGINE_AWAKE);
            idle_since = now_ns();
        }
    }
    pthread_mutex_unlock(&eng->lock);
    return NULL;
}

void vmmbib_dev_kick(struct vmmbib_dev *dev)
{
    struct vmmbib_engine *eng = dev->engine;

    vmmbib_engine_enter(eng);
    vmmbib_engine_wake(eng);
    vmmbib_engine_leave(eng);
}

void vmmbib_dev_doorbell(struct vmmbib_dev *dev, uint32_t slot,
                         uint64_t doorbell)
{
    struct vmmbib_engine *eng = dev->engine;
    uint32_t i;

    vmmbib_engine_enter(eng);
    for (i = 1; i <= dev->ucontexts.size; i++) {
        struct vmmbib_ucontext *uctx = vmmbib_table_at(&dev->ucontexts, i);

        if (uctx && uctx->uar_slot == slot) {
            vmmbib_doorbell_execute(dev, uctx, doorbell);
            /* Trapped doorbells run at once, in the trapping thread. */
            if (eng->active_head) {
                uint64_t deadline = 0;

                run_active(eng, now_ns(), &deadline);
            }
            if (eng->active_head) {
                vmmbib_engine_wake(eng);
            }
            vmmbib_engine_leave(eng);
            return;
        }
    }
    dev->stats.bad_doorbells++;
    vmmbib_engine_leave(eng);
}
