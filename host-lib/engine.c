/*
 * The engine: threads (one by default, up to 64) that serve every device
 * attached to it.  Each drains the doorbell rings of all contexts and runs
 * the SQs of the QPs that have work (lists, so idle QPs cost nothing).
 * When all have found no work for idle_poll_us (its config, or the device
 * config of a device with an engine of its own) the engine marks itself
 * asleep in every doorbell page and blocks until a kick (docs/spec.md
 * section 4).
 *
 * Kicks are eventfds, one per device, which the engine thread itself
 * waits on while it sleeps: a VMM registers it as an ioeventfd on the KICK
 * register, so that waking the engine runs no VMM code (vmmbibd gets it
 * from QEMU with HELLO).  The engine reads them, so it counts the kicks.
 *
 * Scheduling is fair across devices (VMs) first, then across the QPs of
 * a device: every pass gives each device with work the same budget of
 * send WQEs, which its QPs share round-robin.  A VM with many busy QPs
 * therefore gets as much of the engine as a VM with one, not more.
 *
 * Several threads.  A thread takes a whole device turn off the list of
 * devices with work (dev->in_turn keeps the device off the list until
 * the turn ends), so one QP's SQ is only ever run by one thread and RC's
 * order holds per QP.  Everything runs under the engine lock except
 * large guest-memory copies (vmmbib_engine_copy, "Copies without the
 * lock" below).  Idle threads park; only when all are idle does the last
 * one mark the pages ASLEEP and wait on the eventfds, and a thread whose
 * pass leaves devices waiting for a turn wakes one parked thread.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "data.h"

/* Send WQEs one QP runs before the next QP of its device gets a turn. */
#define QP_BUDGET 16
/* Send WQEs one device runs, over its QPs, before the next device's turn. */
#define DEV_BUDGET 32
/* Doorbells taken from one context's ring per pass. */
#define DB_BUDGET 64
/* Copies at least this long run without the lock (several threads). */
#define UNLOCKED_COPY_MIN 1024

struct vmmbib_engine {
    pthread_mutex_t lock;
    int wake_fd;            /* eventfd: vmmbib_engine_wake, a new device... */
    pthread_t *threads;
    unsigned int nthreads;
    unsigned int running;   /* threads started */
    /* Idle threads wait on park_sem while another thread is awake. */
    sem_t park_sem;
    unsigned int parked;    /* threads parked, or woken and not back yet */
    unsigned int unparking; /* of those, woken */
    /* vmmbib_engine_enter_dev waits here for a device's copies to end. */
    pthread_cond_t quiet_cond;
    unsigned int copies;    /* copies without the lock, now */
    struct vmmbib_engine_stats stats;
    bool stop;
    bool kicked;
    uint32_t idle_poll_us;
    struct vmmbib_dev *devs;
    /* Devices with QPs that have work, in the order they get turns. */
    struct vmmbib_dev *active_dev_head;
    struct vmmbib_dev *active_dev_tail;
    /* What the sleeping engine thread polls: wake_fd and the kick fds. */
    struct pollfd *pfds;
    unsigned int pfds_cap;
    uint16_t next_lid;
    uint32_t state;         /* VMMBIB_ENGINE_*, as the pages show it */
    unsigned int waiters;   /* threads other than the engine's, waiting */
    unsigned int entries;   /* times one of them got the lock */
    unsigned int engine_waiters;    /* the same for engine threads */
    unsigned int engine_entries;
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
    unsigned int threads = cfg->threads ? cfg->threads : 1;
    int ret;

    if (cfg->idle_poll_us > VMMBIB_IDLE_POLL_US_MAX) {
        snprintf(err, err_len, "idle-poll-us=%u is out of range: use 0 (the "
                 "default, %u) to %u", cfg->idle_poll_us,
                 VMMBIB_IDLE_POLL_US_DEFAULT, VMMBIB_IDLE_POLL_US_MAX);
        return NULL;
    }
    if (threads > VMMBIB_ENGINE_THREADS_MAX) {
        snprintf(err, err_len, "engine-threads=%u is out of range: use 1 "
                 "(the default) to %u", cfg->threads,
                 VMMBIB_ENGINE_THREADS_MAX);
        return NULL;
    }
    eng = calloc(1, sizeof(*eng));
    if (!eng) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    eng->threads = calloc(threads, sizeof(*eng->threads));
    if (!eng->threads) {
        snprintf(err, err_len, "out of memory");
        free(eng);
        return NULL;
    }
    eng->nthreads = threads;
    eng->stats.threads = threads;
    eng->idle_poll_us = cfg->idle_poll_us ? cfg->idle_poll_us :
                        VMMBIB_IDLE_POLL_US_DEFAULT;
    eng->next_lid = 1;
    eng->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (eng->wake_fd < 0) {
        snprintf(err, err_len, "cannot create the engine's eventfd: %s",
                 strerror(errno));
        free(eng->threads);
        free(eng);
        return NULL;
    }
    pthread_mutex_init(&eng->lock, NULL);
    pthread_cond_init(&eng->quiet_cond, NULL);
    sem_init(&eng->park_sem, 0, 0);
    for (eng->running = 0; eng->running < threads; eng->running++) {
        ret = pthread_create(&eng->threads[eng->running], NULL, engine_thread,
                             eng);
        if (ret) {
            snprintf(err, err_len, "cannot start engine thread %u of %u: %s",
                     eng->running + 1, threads, strerror(ret));
            vmmbib_engine_free(eng);
            return NULL;
        }
    }
    return eng;
}

void vmmbib_engine_free(struct vmmbib_engine *eng)
{
    unsigned int i;

    if (!eng) {
        return;
    }
    pthread_mutex_lock(&eng->lock);
    eng->stop = true;
    vmmbib_engine_wake(eng);
    pthread_mutex_unlock(&eng->lock);
    /* Parked threads see stop once woken; one post each is enough. */
    for (i = 0; i < eng->running; i++) {
        sem_post(&eng->park_sem);
    }
    for (i = 0; i < eng->running; i++) {
        pthread_join(eng->threads[i], NULL);
    }
    sem_destroy(&eng->park_sem);
    pthread_cond_destroy(&eng->quiet_cond);
    pthread_mutex_destroy(&eng->lock);
    close(eng->wake_fd);
    free(eng->pfds);
    free(eng->threads);
    free(eng);
}

void vmmbib_engine_get_stats(struct vmmbib_engine *eng,
                             struct vmmbib_engine_stats *stats)
{
    vmmbib_engine_enter(eng);
    *stats = eng->stats;
    vmmbib_engine_leave(eng);
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
 * An engine thread takes the lock back (after a copy, a park, a sleep):
 * counted apart from the threads outside the engine, which come first.
 */
static void relock(struct vmmbib_engine *eng)
{
    __atomic_add_fetch(&eng->engine_waiters, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&eng->lock);
    __atomic_sub_fetch(&eng->engine_waiters, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&eng->engine_entries, 1, __ATOMIC_RELEASE);
}

/*
 * Called by an engine thread between passes, lock held: if another thread
 * waits for the lock, give it up until one of them has had it.  Unlocking
 * and locking again is not enough: the waiter must first be scheduled,
 * and on a machine whose other CPU runs a vCPU the engine wins the lock
 * back every time, which starved commands and trapped doorbells for
 * seconds.  Threads outside the engine (commands) go first; then engine
 * threads that wait to finish a copy's WQE.
 */
static void let_waiters_in(struct vmmbib_engine *eng)
{
    unsigned int *entries = &eng->entries, *waiters = &eng->waiters;
    unsigned int seen;

    if (!__atomic_load_n(waiters, __ATOMIC_RELAXED)) {
        entries = &eng->engine_entries;
        waiters = &eng->engine_waiters;
        if (!__atomic_load_n(waiters, __ATOMIC_RELAXED)) {
            return;
        }
    }
    seen = __atomic_load_n(entries, __ATOMIC_ACQUIRE);
    pthread_mutex_unlock(&eng->lock);
    /* A waiter counted itself before it locks, so one will get in. */
    while (__atomic_load_n(entries, __ATOMIC_ACQUIRE) == seen &&
           __atomic_load_n(waiters, __ATOMIC_RELAXED)) {
        sched_yield();
    }
    pthread_mutex_lock(&eng->lock);
}

void vmmbib_engine_leave(struct vmmbib_engine *eng)
{
    pthread_mutex_unlock(&eng->lock);
}

/*
 * Copies without the lock.  With several threads, a copy of at least
 * UNLOCKED_COPY_MIN bytes runs with the engine lock released, so that
 * threads serving other devices copy at the same time.  During it:
 *
 * - Nothing it reads may change or go away: its segments are the
 *   thread's own, naming MRs of the two devices, whose pages (and, for a
 *   DMA MR, the VMM's guest_ptr mappings) live until a control path of
 *   their device frees them.  Every control path enters with
 *   vmmbib_engine_enter_dev, which waits for dev->copies to drop to 0 and
 *   meanwhile (dev->quiesce) makes new copies for the device keep the
 *   lock, so it cannot starve.  Commands, RESET and vmmbib_dev_free all
 *   do; the daemon unmaps a VM's RAM only after RESET or free.
 * - Other threads do run, under the lock: they may move the two QPs to
 *   ERR (the only state change that needs no command), and they may run
 *   other devices, deliver to other queues, ring doorbells.  The rings the
 *   copy serves are marked inflight: a flush skips them (the copying thread
 *   flushes after, so a WQE's buffers are never completed while copied
 *   and completions stay in ring order), and another delivery to the same
 *   receive ring returns VMMBIB_BUSY and retries its WQE later.
 * - The device whose turn runs the copy stays in_turn: no other thread
 *   runs its SQs.
 */
int vmmbib_engine_copy(struct vmmbib_dev *dev, struct vmmbib_ring *sq,
                       struct vmmbib_dev *pdev, struct vmmbib_ring *rq,
                       const struct vmmbib_seg *dst, unsigned int ndst,
                       uint64_t dst_skip, const struct vmmbib_seg *src,
                       unsigned int nsrc, uint64_t len)
{
    struct vmmbib_engine *eng = dev->engine;
    int ret;

    if (eng->nthreads < 2 || len < UNLOCKED_COPY_MIN) {
        return vmmbib_sg_copy(dst, ndst, dst_skip, src, nsrc, len);
    }
    if (dev->quiesce || pdev->quiesce || sq->inflight ||
        (rq && rq->inflight)) {
        eng->stats.locked_copies++;
        return vmmbib_sg_copy(dst, ndst, dst_skip, src, nsrc, len);
    }
    dev->copies++;
    pdev->copies++;
    sq->inflight = true;
    if (rq) {
        rq->inflight = true;
    }
    eng->stats.unlocked_copies++;
    if (++eng->copies > eng->stats.max_parallel_copies) {
        eng->stats.max_parallel_copies = eng->copies;
    }
    pthread_mutex_unlock(&eng->lock);
    ret = vmmbib_sg_copy(dst, ndst, dst_skip, src, nsrc, len);
    relock(eng);
    eng->copies--;
    sq->inflight = false;
    if (rq) {
        rq->inflight = false;
    }
    dev->copies--;
    pdev->copies--;
    if ((!dev->copies && dev->quiesce) || (!pdev->copies && pdev->quiesce)) {
        pthread_cond_broadcast(&eng->quiet_cond);
    }
    return ret;
}

void vmmbib_engine_enter_dev(struct vmmbib_dev *dev)
{
    struct vmmbib_engine *eng = dev->engine;

    vmmbib_engine_enter(eng);
    if (!dev->copies) {
        return;
    }
    dev->quiesce++;
    /*
     * Counted as a waiter: an engine thread then hands the lock over
     * between passes once the copies are done, as for vmmbib_engine_enter.
     */
    __atomic_add_fetch(&eng->waiters, 1, __ATOMIC_RELAXED);
    while (dev->copies) {
        pthread_cond_wait(&eng->quiet_cond, &eng->lock);
    }
    __atomic_sub_fetch(&eng->waiters, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&eng->entries, 1, __ATOMIC_RELEASE);
    dev->quiesce--;
}

void vmmbib_engine_attach(struct vmmbib_engine *eng, struct vmmbib_dev *dev)
{
    dev->next_on_engine = eng->devs;
    eng->devs = dev;
    /* A sleeping engine must poll the new device's kick eventfd too. */
    vmmbib_engine_wake(eng);
}

static void active_dev_remove(struct vmmbib_engine *eng,
                              struct vmmbib_dev *dev)
{
    struct vmmbib_dev **p, *prev = NULL;

    if (!dev->on_active_list) {
        return;
    }
    for (p = &eng->active_dev_head; *p; prev = *p, p = &(*p)->next_active_dev) {
        if (*p == dev) {
            *p = dev->next_active_dev;
            if (eng->active_dev_tail == dev) {
                eng->active_dev_tail = prev;
            }
            break;
        }
    }
    dev->on_active_list = false;
}

static void active_dev_append(struct vmmbib_engine *eng,
                              struct vmmbib_dev *dev)
{
    /* A device in a turn goes back on the list when the turn ends. */
    if (dev->on_active_list || dev->in_turn) {
        return;
    }
    dev->on_active_list = true;
    dev->next_active_dev = NULL;
    if (eng->active_dev_tail) {
        eng->active_dev_tail->next_active_dev = dev;
    } else {
        eng->active_dev_head = dev;
    }
    eng->active_dev_tail = dev;
}

void vmmbib_engine_detach(struct vmmbib_engine *eng, struct vmmbib_dev *dev)
{
    struct vmmbib_dev **p;

    active_dev_remove(eng, dev);
    for (p = &eng->devs; *p; p = &(*p)->next_on_engine) {
        if (*p == dev) {
            *p = dev->next_on_engine;
            break;
        }
    }
    /* A sleeping engine polls its kick eventfd, which may close now. */
    vmmbib_engine_wake(eng);
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
    struct vmmbib_dev *dev = qp->dev;

    if (qp->active) {
        return;
    }
    qp->active = true;
    qp->next_active = NULL;
    if (dev->active_tail) {
        dev->active_tail->next_active = qp;
    } else {
        dev->active_head = qp;
    }
    dev->active_tail = qp;
    dev->nactive++;
    active_dev_append(eng, dev);
}

void vmmbib_engine_qp_forget(struct vmmbib_engine *eng, struct vmmbib_qp *qp)
{
    struct vmmbib_dev *dev = qp->dev;
    struct vmmbib_qp **p, *prev = NULL;

    if (!qp->active) {
        return;
    }
    for (p = &dev->active_head; *p; prev = *p, p = &(*p)->next_active) {
        if (*p == qp) {
            *p = qp->next_active;
            if (dev->active_tail == qp) {
                dev->active_tail = prev;
            }
            break;
        }
    }
    qp->active = false;
    dev->nactive--;
    if (!dev->active_head) {
        active_dev_remove(eng, dev);
    }
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

/*
 * One device's turn: up to DEV_BUDGET send WQEs, QP_BUDGET at a time from
 * the QP at the head of its list, which then goes to the back if it has
 * work left.  A device with one busy QP gets the same budget as a device
 * with many.  The turn also ends once every QP on the list in a row ran
 * nothing and stayed (all wait for an RNR timer).
 */
static unsigned int run_device(struct vmmbib_engine *eng,
                               struct vmmbib_dev *dev, uint64_t now,
                               uint64_t *next_deadline, bool *retry)
{
    unsigned int budget = DEV_BUDGET, work = 0, idle_turns = 0;
    struct vmmbib_qp *qp;

    /* A control path waits for the device: end the turn early. */
    while (budget && !dev->quiesce && (qp = dev->active_head) &&
           idle_turns < dev->nactive) {
        unsigned int n = vmmbib_qp_run_sq(dev, qp, budget < QP_BUDGET ?
                                          budget : QP_BUDGET, now);

        work += n;
        budget -= n < budget ? n : budget;
        if (n) {
            idle_turns = 0;
        }
        if (qp->recv_busy) {
            /* Its destination's receive ring was busy: soon again. */
            eng->stats.busy_retries++;
            *retry = true;
        }
        if (qp->active) {
            vmmbib_engine_qp_forget(eng, qp);
            if (vmmbib_qp_has_sq_work(qp)) {
                /* Still has work (budget or RNR wait): to the back. */
                vmmbib_engine_qp_activate(eng, qp);
                if (qp->rnr_deadline_ns &&
                    (!*next_deadline || qp->rnr_deadline_ns < *next_deadline)) {
                    *next_deadline = qp->rnr_deadline_ns;
                }
                /* Only a QP that stays counts as one that waits. */
                idle_turns += !n;
            }
        }
    }
    if (dev->quiesce && dev->active_head) {
        /* Its work waits for the command: not idle, come back soon. */
        *retry = true;
    }
    return work;
}

/*
 * One turn for each device with work, in the order they have waited.  A
 * device whose QPs are done leaves the list (vmmbib_engine_qp_forget);
 * one with work left goes to the back.  Turns may make other devices'
 * QPs active or not (a send to a QP in error): the list is re-read for
 * every turn, never held across one.  Other threads take turns from the
 * same list meanwhile; a device in a turn is on no list, so no two
 * threads run one device.  *retry: a WQE waits for another thread.
 */
static void recruit(struct vmmbib_engine *eng);

static unsigned int run_active(struct vmmbib_engine *eng, uint64_t now,
                               uint64_t *next_deadline, bool *retry)
{
    unsigned int turns = 0, work = 0;
    struct vmmbib_dev *dev;

    for (dev = eng->active_dev_head; dev; dev = dev->next_active_dev) {
        turns++;
    }
    while (turns-- && (dev = eng->active_dev_head)) {
        active_dev_remove(eng, dev);
        dev->in_turn = true;
        eng->stats.turns++;
        /* Others wait for a turn: a parked thread can take the next. */
        recruit(eng);
        work += run_device(eng, dev, now, next_deadline, retry);
        dev->in_turn = false;
        if (dev->active_head) {
            active_dev_append(eng, dev);
        }
    }
    return work;
}

void vmmbib_engine_wake(struct vmmbib_engine *eng)
{
    eng->kicked = true;
    /* EAGAIN: the counter is full, the engine has a wake pending anyway. */
    eventfd_write(eng->wake_fd, 1);
}

/*
 * Read an eventfd's counter without ever blocking, whatever its flags: a
 * kick eventfd may be the client's, which could clear O_NONBLOCK on it
 * (a flag of the open file both share).  Returns 0 if nothing was there.
 */
static uint64_t eventfd_take(int fd)
{
    uint64_t count = 0;
    struct iovec iov = { .iov_base = &count, .iov_len = sizeof(count) };
    ssize_t n;

    do {
        n = preadv2(fd, &iov, 1, -1, RWF_NOWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EOPNOTSUPP) {
        /* Kernels before 5.10: the flag is all there is. */
        fcntl(fd, F_SETFL, O_NONBLOCK);
        n = read(fd, &count, sizeof(count));
    }
    return n == sizeof(count) ? count : 0;
}

uint64_t vmmbib_engine_take_kicks(struct vmmbib_dev *dev)
{
    uint64_t kicks = dev->kick_fd >= 0 ? eventfd_take(dev->kick_fd) : 0;

    dev->stats.kicks += kicks;
    return kicks;
}

/*
 * An eventfd's counter, read without consuming it: the kernel shows it in
 * the fd's fdinfo ("eventfd-count:", hexadecimal, since Linux 3.8).  0 if
 * it cannot be read.
 */
uint64_t vmmbib_engine_pending_kicks(struct vmmbib_dev *dev)
{
    char path[64], line[128];
    unsigned long long count = 0;
    FILE *f;

    if (dev->kick_fd < 0) {
        return 0;
    }
    snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", dev->kick_fd);
    f = fopen(path, "re");
    if (!f) {
        return 0;
    }
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "eventfd-count: %llx", &count) == 1) {
            break;
        }
    }
    fclose(f);
    return count;
}

static void take_all_kicks(struct vmmbib_engine *eng)
{
    struct vmmbib_dev *dev;

    for (dev = eng->devs; dev; dev = dev->next_on_engine) {
        vmmbib_engine_take_kicks(dev);
    }
}

/*
 * Lock held, released while blocked: sleep until the wake eventfd or a
 * device's kick eventfd is written, or until @deadline (ns, 0: none).
 */
static void engine_sleep(struct vmmbib_engine *eng, uint64_t deadline)
{
    unsigned int n = 0, count = 1;
    struct vmmbib_dev *dev;
    struct timespec ts, *timeout = NULL;

    for (dev = eng->devs; dev; dev = dev->next_on_engine) {
        count++;
    }
    if (count > eng->pfds_cap) {
        struct pollfd *p = realloc(eng->pfds, count * sizeof(*p));

        if (!p) {
            /* Poll again after a millisecond instead of sleeping. */
            deadline = now_ns() + 1000000;
            count = 0;
        } else {
            eng->pfds = p;
            eng->pfds_cap = count;
        }
    }
    if (count) {
        eng->pfds[n++] = (struct pollfd) { .fd = eng->wake_fd,
                                           .events = POLLIN };
        for (dev = eng->devs; dev; dev = dev->next_on_engine) {
            if (dev->kick_fd >= 0) {
                eng->pfds[n++] = (struct pollfd) { .fd = dev->kick_fd,
                                                   .events = POLLIN };
            }
        }
    }
    if (deadline) {
        uint64_t now = now_ns(), left = deadline > now ? deadline - now : 0;

        ts.tv_sec = left / 1000000000ull;
        ts.tv_nsec = left % 1000000000ull;
        timeout = &ts;
    }
    pthread_mutex_unlock(&eng->lock);
    /* Level-triggered: a write since the checks under the lock shows. */
    ppoll(n ? eng->pfds : NULL, n, timeout, NULL);
    relock(eng);
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

/*
 * Lock held: devices wait for a turn that a parked thread could take.
 * Wake one; it wakes another if there is still more, and so on.
 */
static void recruit(struct vmmbib_engine *eng)
{
    if (eng->active_dev_head && eng->parked > eng->unparking) {
        eng->unparking++;
        eng->stats.unparks++;
        sem_post(&eng->park_sem);
    }
}

/* Lock held, released while parked: wait until recruited or stopped. */
static void park(struct vmmbib_engine *eng)
{
    eng->parked++;
    eng->stats.parks++;
    pthread_mutex_unlock(&eng->lock);
    while (sem_wait(&eng->park_sem) && errno == EINTR) {
        continue;
    }
    relock(eng);
    /* Woken by recruit (counted) or by vmmbib_engine_free. */
    if (eng->unparking) {
        eng->unparking--;
    }
    eng->parked--;
}

static void *engine_thread(void *opaque)
{
    struct vmmbib_engine *eng = opaque;
    uint64_t idle_since = now_ns();

    relock(eng);
    while (!eng->stop) {
        uint64_t now = now_ns(), deadline = 0;
        unsigned int work;
        bool retry = false;

        work = poll_doorbells(eng) + run_active(eng, now, &deadline, &retry);
        if (work || retry) {
            idle_since = now;
            recruit(eng);
            /* A command or a trapped doorbell waits: let it in. */
            let_waiters_in(eng);
            if (!work) {
                /* Only waiting for another thread's copy: give it the CPU. */
                pthread_mutex_unlock(&eng->lock);
                sched_yield();
                relock(eng);
            }
        } else if (now - idle_since < (uint64_t)eng->idle_poll_us * 1000) {
            /* Polling without work: others may use the CPU meanwhile. */
            let_waiters_in(eng);
            pthread_mutex_unlock(&eng->lock);
            sched_yield();
            relock(eng);
        } else if (eng->nthreads - eng->parked > 1) {
            /*
             * Another thread is awake (or sleeps on the eventfds): this
             * one parks.  Only the last idle thread sleeps below.
             */
            park(eng);
            idle_since = now_ns();
        } else {
            eng->stats.sleeps++;
            set_engine_state(eng, VMMBIB_ENGINE_ASLEEP);
            /*
             * Count the kicks so far and clear the wake eventfd: every
             * wake comes with eng->kicked, set under the lock.  A kick
             * read here came after its doorbell, which the check below
             * finds; a later one makes the sleep return at once.
             */
            take_all_kicks(eng);
            eventfd_take(eng->wake_fd);
            /* A doorbell stored before the mark was seen is found here. */
            if (!poll_doorbells(eng) && !eng->kicked && !eng->stop) {
                engine_sleep(eng, deadline);
                take_all_kicks(eng);
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
    /* As an ioeventfd would: the engine reads and counts it. */
    if (eventfd_write(dev->kick_fd, 1) < 0 && errno != EAGAIN) {
        fprintf(stderr, "libvmmbib: cannot kick the engine: %s\n",
                strerror(errno));
    }
}

int vmmbib_dev_kick_fd(struct vmmbib_dev *dev)
{
    return dev->kick_fd;
}

void vmmbib_dev_set_kick_fd(struct vmmbib_dev *dev, int fd)
{
    struct vmmbib_engine *eng = dev->engine;

    vmmbib_engine_enter(eng);
    /* Kicks on the old eventfd still count, and still wake the engine. */
    vmmbib_engine_take_kicks(dev);
    if (dev->own_kick_fd) {
        close(dev->kick_fd);
    }
    dev->kick_fd = fd;
    dev->own_kick_fd = false;
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
            if (eng->active_dev_head) {
                uint64_t deadline = 0;
                bool retry = false;

                run_active(eng, now_ns(), &deadline, &retry);
            }
            if (eng->active_dev_head) {
                vmmbib_engine_wake(eng);
            }
            vmmbib_engine_leave(eng);
            return;
        }
    }
    dev->stats.bad_doorbells++;
    vmmbib_engine_leave(eng);
}
