/*
 * The device model: configuration, limits, contexts and reset.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "internal.h"
#include "verbs/verbs.h"

void vmmbib_limits_default(struct vmmbib_limits *l)
{
    *l = (struct vmmbib_limits) {
        .max_ucontext = 64,
        .max_pd = 1024,
        .max_mr = 8192,
        .max_cq = 4096,
        .max_cqe = 65536,
        .max_qp = 4096,
        .max_qp_wr = 16384,
        .max_send_sge = 16,
        .max_recv_sge = 16,
        .max_srq = 1024,
        .max_srq_wr = 16384,
        .max_srq_sge = 16,
        .max_ah = 4096,
        .max_inline_data = 256,
        .max_qp_rd_atom = 16,
        .max_mr_pages = 262144,
        /* Room for the largest MR and the rings beside it. */
        .max_pinned_pages = 524288,
    };
}

static void set_err(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;

    if (!err || !err_len) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

/* Each limit must be at least 1 and fit the handle index space. */
static bool check_limits(const struct vmmbib_limits *l, char *err,
                         size_t err_len)
{
    static const struct {
        const char *name;
        size_t offset;
        uint32_t max;
    } rules[] = {
#define LIMIT(field, name, max) \
        { name, offsetof(struct vmmbib_limits, field), max }
        LIMIT(max_ucontext, "max-ucontext", 1u << 16),
        LIMIT(max_pd, "max-pd", VMMBIB_HANDLE_INDEX_MASK),
        LIMIT(max_mr, "max-mr", VMMBIB_HANDLE_INDEX_MASK),
        LIMIT(max_cq, "max-cq", VMMBIB_HANDLE_INDEX_MASK),
        LIMIT(max_cqe, "max-cqe", 1u << 22),
        LIMIT(max_qp, "max-qp", VMMBIB_HANDLE_INDEX_MASK),
        LIMIT(max_qp_wr, "max-qp-wr", 1u << 20),
        LIMIT(max_send_sge, "max-send-sge", 64),
        LIMIT(max_recv_sge, "max-recv-sge", 64),
        LIMIT(max_srq, "max-srq", VMMBIB_HANDLE_INDEX_MASK),
        LIMIT(max_srq_wr, "max-srq-wr", 1u << 20),
        LIMIT(max_srq_sge, "max-srq-sge", 64),
        LIMIT(max_ah, "max-ah", VMMBIB_HANDLE_INDEX_MASK),
        LIMIT(max_inline_data, "max-inline-data", 1024),
        LIMIT(max_qp_rd_atom, "max-qp-rd-atom", 128),
        LIMIT(max_mr_pages, "max-mr-pages", 1u << 27),
        LIMIT(max_pinned_pages, "max-pinned-pages", UINT32_MAX),
#undef LIMIT
    };
    size_t i;

    for (i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
        uint32_t v;

        memcpy(&v, (const char *)l + rules[i].offset, sizeof(v));
        if (v < 1 || v > rules[i].max) {
            set_err(err, err_len, "%s=%u is out of range: use 1 to %u",
                    rules[i].name, v, rules[i].max);
            return false;
        }
    }
    return true;
}

static bool init_tables(struct vmmbib_dev *dev)
{
    const struct vmmbib_limits *l = &dev->cfg.limits;

    return vmmbib_table_init(&dev->ucontexts, dev->cfg.uar_slots) &&
           vmmbib_table_init(&dev->pds, l->max_pd) &&
           vmmbib_table_init(&dev->mrs, l->max_mr) &&
           vmmbib_table_init(&dev->cqs, l->max_cq) &&
           vmmbib_table_init(&dev->qps, l->max_qp) &&
           vmmbib_table_init(&dev->srqs, l->max_srq) &&
           vmmbib_table_init(&dev->ahs, l->max_ah);
}

/* @fn on each of @dev's object tables. */
static void each_table(struct vmmbib_dev *dev,
                       void (*fn)(struct vmmbib_table *t))
{
    struct vmmbib_table *tables[] = {
        &dev->ucontexts, &dev->pds, &dev->mrs, &dev->cqs, &dev->qps,
        &dev->srqs, &dev->ahs,
    };

    for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
        fn(tables[i]);
    }
}

/* After a reset (which emptied them): the handles of a new device again. */
static void restart_tables(struct vmmbib_dev *dev)
{
    each_table(dev, vmmbib_table_restart);
}

static void fini_tables(struct vmmbib_dev *dev)
{
    each_table(dev, vmmbib_table_fini);
}

struct vmmbib_dev *vmmbib_dev_new(const struct vmmbib_dev_config *cfg,
                                  struct vmmbib_engine *engine,
                                  const struct vmmbib_host_ops *ops,
                                  void *opaque, char *err, size_t err_len)
{
    struct vmmbib_dev *dev;

    if (!check_limits(&cfg->limits, err, err_len)) {
        return NULL;
    }
    if (cfg->uar_slots < 1 || cfg->uar_slots > cfg->limits.max_ucontext) {
        set_err(err, err_len, "uar-slots=%u is out of range: use 1 to "
                "max-ucontext (%u), one slot per context",
                cfg->uar_slots, cfg->limits.max_ucontext);
        return NULL;
    }
    if (cfg->limits.max_qp > VMMBIB_MAX_QPN - 1) {
        set_err(err, err_len, "max-qp=%u is out of range: QP numbers are "
                "24 bits, use at most %u", cfg->limits.max_qp,
                VMMBIB_MAX_QPN - 1);
        return NULL;
    }
    if (cfg->backend != VMMBIB_BACKEND_SOFT &&
        (cfg->backend != VMMBIB_BACKEND_VERBS || !vmmbib_verbs_built())) {
        set_err(err, err_len, cfg->backend == VMMBIB_BACKEND_VERBS ?
                "backend=verbs: this build has no verbs backend (libibverbs "
                "was not found when it was built): use backend=soft" :
                "backend %u is unknown: use soft or verbs", cfg->backend);
        return NULL;
    }
    if (cfg->doorbell_mode != VMMBIB_DB_MODE_RING &&
        cfg->doorbell_mode != VMMBIB_DB_MODE_MMIO) {
        set_err(err, err_len, "doorbell mode %u is unknown: use ring or mmio",
                cfg->doorbell_mode);
        return NULL;
    }

    dev = calloc(1, sizeof(*dev));
    if (!dev) {
        set_err(err, err_len, "out of memory");
        return NULL;
    }
    dev->cfg = *cfg;
    if (ops) {
        dev->ops = *ops;
    }
    dev->opaque = opaque;
    dev->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (dev->kick_fd < 0) {
        set_err(err, err_len, "cannot create the kick eventfd: %s",
                strerror(errno));
        free(dev);
        return NULL;
    }
    dev->own_kick_fd = true;
    dev->uar_slot_busy = calloc(cfg->uar_slots, sizeof(bool));
    if (cfg->db_pages) {
        dev->db_pages = cfg->db_pages;
    } else if (posix_memalign((void **)&dev->db_pages, VMMBIB_PAGE_SIZE,
                              (size_t)cfg->uar_slots * VMMBIB_PAGE_SIZE)) {
        dev->db_pages = NULL;
    }
    if (!dev->uar_slot_busy || !dev->db_pages || !init_tables(dev)) {
        set_err(err, err_len, "out of memory");
        vmmbib_dev_free(dev);
        return NULL;
    }
    memset(dev->db_pages, 0, (size_t)cfg->uar_slots * VMMBIB_PAGE_SIZE);

    if (!engine) {
        struct vmmbib_engine_config ecfg = {
            .idle_poll_us = cfg->idle_poll_us,
        };

        engine = vmmbib_engine_new(&ecfg, err, err_len);
        if (!engine) {
            vmmbib_dev_free(dev);
            return NULL;
        }
        dev->own_engine = true;
    }
    dev->engine = engine;
    dev->lock = vmmbib_engine_lock(engine);
    vmmbib_engine_enter(dev->engine);
    if (cfg->lid && vmmbib_engine_find_lid(engine, cfg->lid)) {
        vmmbib_engine_leave(dev->engine);
        set_err(err, err_len, "lid=%u is taken by another device of this "
                "engine: choose another or 0 to have one assigned", cfg->lid);
        vmmbib_dev_free(dev);
        return NULL;
    }
    dev->lid = cfg->lid ? cfg->lid : vmmbib_engine_assign_lid(engine);
    /* A locally administered EUI-64 that carries the LID. */
    dev->node_guid = cfg->node_guid ? cfg->node_guid :
                     0x02aabbfffe000000ull | dev->lid;
    /* GIDs route UD and RC traffic: each port GUID names one device. */
    if (vmmbib_engine_find_guid(engine, dev->node_guid)) {
        vmmbib_engine_leave(dev->engine);
        set_err(err, err_len, "node-guid=%#llx is taken by another device "
                "of this engine: choose another or 0 for one derived from "
                "the LID", (unsigned long long)dev->node_guid);
        vmmbib_dev_free(dev);
        return NULL;
    }
    vmmbib_engine_attach(engine, dev);
    vmmbib_engine_leave(dev->engine);
    if (cfg->backend == VMMBIB_BACKEND_VERBS &&
        !vmmbib_verbs_open(dev, err, err_len)) {
        vmmbib_dev_free(dev);
        return NULL;
    }
    return dev;
}

/* Destroy every object; the engine lock is held. */
static void reset_locked(struct vmmbib_dev *dev)
{
    uint32_t i;

    for (i = 1; i <= dev->ucontexts.size; i++) {
        struct vmmbib_ucontext *uctx = vmmbib_table_at(&dev->ucontexts, i);

        if (uctx) {
            vmmbib_ucontext_destroy(dev, uctx);
        }
    }
}

void vmmbib_dev_reset(struct vmmbib_dev *dev)
{
    vmmbib_engine_enter_dev(dev);
    reset_locked(dev);
    if (dev->cfg.restart_handles) {
        restart_tables(dev);
    }
    /* The driver that comes next is told the port is up again. */
    dev->port_active_raised = false;
    vmmbib_engine_leave(dev->engine);
}

void vmmbib_dev_free(struct vmmbib_dev *dev)
{
    if (!dev) {
        return;
    }
    if (dev->engine) {
        /* Copies of other devices' turns may still use its memory. */
        vmmbib_engine_enter_dev(dev);
        reset_locked(dev);
        vmmbib_engine_detach(dev->engine, dev);
        vmmbib_engine_leave(dev->engine);
        /* Its host objects went with the guest's: now the device. */
        if (dev->verbs) {
            vmmbib_verbs_close(dev);
        }
        if (dev->own_engine) {
            vmmbib_engine_free(dev->engine);
        }
    }
    if (dev->own_kick_fd) {
        close(dev->kick_fd);
    }
    fini_tables(dev);
    free(dev->uar_slot_busy);
    if (dev->db_pages != dev->cfg.db_pages) {
        free(dev->db_pages);
    }
    free(dev);
}

void *vmmbib_dev_db_pages(struct vmmbib_dev *dev)
{
    return dev->db_pages;
}

uint16_t vmmbib_dev_lid(struct vmmbib_dev *dev)
{
    return dev->lid;
}

uint64_t vmmbib_dev_node_guid(struct vmmbib_dev *dev)
{
    return dev->node_guid;
}

void vmmbib_dev_get_stats(struct vmmbib_dev *dev,
                          struct vmmbib_dev_stats *stats)
{
    vmmbib_engine_enter(dev->engine);
    /*
     * Read-only: kicks the engine has not read yet count too, but they
     * stay in the eventfd for the engine, which they wake.
     */
    *stats = dev->stats;
    stats->kicks += vmmbib_engine_pending_kicks(dev);
    stats->ucontexts = dev->ucontexts.used;
    stats->pds = dev->pds.used;
    stats->mrs = dev->mrs.used;
    stats->cqs = dev->cqs.used;
    stats->qps = dev->qps.used;
    stats->srqs = dev->srqs.used;
    stats->ahs = dev->ahs.used;
    stats->pinned_pages = dev->pinned_pages;
    vmmbib_engine_leave(dev->engine);
}

void vmmbib_dev_event(struct vmmbib_dev *dev, uint16_t type, uint32_t handle,
                      struct vmmbib_ucontext *uctx)
{
    struct vmmbib_event ev = {
        .type = htole16(type),
        .handle = htole32(handle),
        .ctx_handle = htole32(uctx ? uctx->handle : 0),
    };

    dev->stats.events++;
    if (dev->ops.event) {
        dev->ops.event(dev->opaque, &ev);
    }
}

struct vmmbib_ucontext *vmmbib_ucontext_create(struct vmmbib_dev *dev,
                                               int *status)
{
    struct vmmbib_ucontext *uctx;
    uint32_t slot;
    uint32_t *words;

    for (slot = 0; slot < dev->cfg.uar_slots; slot++) {
        if (!dev->uar_slot_busy[slot]) {
            break;
        }
    }
    if (slot == dev->cfg.uar_slots) {
        *status = VMMBIB_STATUS_NO_RESOURCES;
        return NULL;
    }

    uctx = calloc(1, sizeof(*uctx));
    if (!uctx) {
        *status = VMMBIB_STATUS_NO_RESOURCES;
        return NULL;
    }
    /* A fresh page: nothing of the slot's previous context shows through. */
    uctx->db_page = dev->db_pages + (size_t)slot * VMMBIB_PAGE_SIZE;
    memset(uctx->db_page, 0, VMMBIB_PAGE_SIZE);
    words = uctx->db_page;
    words[VMMBIB_DB_ENGINE_STATE / 4] =
        htole32(vmmbib_engine_state(dev->engine));
    words[VMMBIB_DB_MODE / 4] = htole32(dev->cfg.doorbell_mode);
    words[VMMBIB_DB_RING_SIZE / 4] = htole32(VMMBIB_DB_RING_ENTRIES);

    uctx->handle = vmmbib_table_insert(&dev->ucontexts, uctx);
    if (uctx->handle == VMMBIB_HANDLE_NONE) {
        free(uctx);
        *status = VMMBIB_STATUS_NO_RESOURCES;
        return NULL;
    }
    uctx->uar_slot = slot;
    dev->uar_slot_busy[slot] = true;
    if (dev->ops.uar_map) {
        dev->ops.uar_map(dev->opaque, slot, uctx->db_page);
    }
    *status = VMMBIB_STATUS_OK;
    return uctx;
}

/* Free every object of @t owned by @uctx with @fn. */
#define FREE_OWNED(dev, t, type, fn, uctx)                          \
    for (uint32_t i_ = 1; i_ <= (t)->size; i_++) {                  \
        type *o_ = vmmbib_table_at((t), i_);                        \
        if (o_ && o_->uctx == (uctx)) {                             \
            fn((dev), o_);                                          \
        }                                                           \
    }

void vmmbib_ucontext_destroy(struct vmmbib_dev *dev,
                             struct vmmbib_ucontext *uctx)
{
    /* Users before what they use: QPs, then SRQs, CQs, AHs, MRs, PDs. */
    FREE_OWNED(dev, &dev->qps, struct vmmbib_qp, vmmbib_qp_free, uctx);
    FREE_OWNED(dev, &dev->srqs, struct vmmbib_srq, vmmbib_srq_free, uctx);
    FREE_OWNED(dev, &dev->cqs, struct vmmbib_cq, vmmbib_cq_free, uctx);
    FREE_OWNED(dev, &dev->ahs, struct vmmbib_ah, vmmbib_ah_free, uctx);
    FREE_OWNED(dev, &dev->mrs, struct vmmbib_mr, vmmbib_mr_free, uctx);
    FREE_OWNED(dev, &dev->pds, struct vmmbib_pd, vmmbib_pd_free, uctx);

    /*
     * A VMM may keep the page mapped (QEMU does): the slot's next context
     * gets it cleared (vmmbib_ucontext_create).
     */
    if (dev->ops.uar_unmap) {
        dev->ops.uar_unmap(dev->opaque, uctx->uar_slot);
    }
    dev->uar_slot_busy[uctx->uar_slot] = false;
    vmmbib_table_remove(&dev->ucontexts, uctx->handle);
    free(uctx);
}
