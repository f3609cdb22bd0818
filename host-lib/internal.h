/*
 * libvmmbib internals shared between its source files, grouped by file.
 *
 * Locking: one mutex per device (dev->lock) serialises its control
 * commands; the engine (engine.c) takes the engine lock, which every
 * device attached to it shares as dev->lock, so a work request that
 * crosses devices sees both consistent.  With several engine threads the
 * lock is released only around large guest-memory copies
 * (vmmbib_engine_copy); what such a copy uses is protected as engine.c
 * explains ("Copies without the lock").
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef VMMBIB_INTERNAL_H
#define VMMBIB_INTERNAL_H

#include <endian.h>
#include <pthread.h>

#include "vmmbib.h"

/* Little-endian helpers: the ABI is little-endian on every host. */
static inline uint16_t vmmbib_le16(uint16_t v) { return le16toh(v); }
static inline uint32_t vmmbib_le32(uint32_t v) { return le32toh(v); }
static inline uint64_t vmmbib_le64(uint64_t v) { return le64toh(v); }

/* The subnet's GID prefix: link-local, one subnet per engine. */
#define VMMBIB_SUBNET_PREFIX 0xfe80000000000000ull

/*
 * QP numbers are 24 bits; 0 and 1 name the special QPs of IB.  A QP in
 * table index i (from 1) has QPN i + 1, so regular QPs start at 2; the
 * device's GSI QP (QPN 1) sits in the table too but is found by
 * dev->gsi.  There is no QP 0: the engine is the subnet manager.
 */
#define VMMBIB_MAX_QPN 0xffffffu

static inline bool vmmbib_qpt_is_ud(uint8_t type)
{
    return type == VMMBIB_QPT_UD || type == VMMBIB_QPT_GSI;
}

static inline bool vmmbib_is_pow2(uint32_t v)
{
    return v && !(v & (v - 1));
}

/* ---- table.c: handle tables; a handle is (generation << 24) | index ---- */
struct vmmbib_table {
    void **objs;            /* objs[1..size]; index 0 is never used */
    uint8_t *gens;
    uint32_t size;
    uint32_t used;
    uint32_t hint;          /* where the search for a free index starts */
};

bool vmmbib_table_init(struct vmmbib_table *t, uint32_t size);
void vmmbib_table_fini(struct vmmbib_table *t);
uint32_t vmmbib_table_insert(struct vmmbib_table *t, void *obj);
void *vmmbib_table_lookup(const struct vmmbib_table *t, uint32_t handle);
void *vmmbib_table_remove(struct vmmbib_table *t, uint32_t handle);
/* The object at @index whatever its generation, for reset and doorbells. */
void *vmmbib_table_at(const struct vmmbib_table *t, uint32_t index);
uint8_t vmmbib_table_gen(const struct vmmbib_table *t, uint32_t index);
/* An empty table hands out the handles of a new one again (tests only). */
void vmmbib_table_restart(struct vmmbib_table *t);

/* ---- pages.c: guest page lists, translated once at creation ---- */
struct vmmbib_pages {
    uint8_t **hva;          /* host address of each 4 KiB guest page */
    uint32_t npages;
};

int vmmbib_pages_load(struct vmmbib_dev *dev,
                      const struct vmmbib_page_list *list, uint32_t max_pages,
                      struct vmmbib_pages *pages);
void vmmbib_pages_release(struct vmmbib_dev *dev, struct vmmbib_pages *pages);
/* Host address of byte @offset of the pages; the caller checked bounds. */
static inline uint8_t *vmmbib_pages_at(const struct vmmbib_pages *p,
                                       uint64_t offset)
{
    return p->hva[offset >> VMMBIB_PAGE_SHIFT] +
           (offset & (VMMBIB_PAGE_SIZE - 1));
}

/*
 * ---- objects, one file each ----
 * Each starts with its handle and its context: vmmbib_lookup relies on it.
 */
struct vmmbib_ucontext {
    uint32_t handle;
    uint32_t uar_slot;
    void *db_page;          /* VMMBIB_PAGE_SIZE bytes, shared with the guest */
    uint32_t db_consumer;   /* ours; the page's copy is only for the guest */
};

struct vmmbib_pd {
    uint32_t handle;
    struct vmmbib_ucontext *uctx;
    uint32_t users;         /* MRs, QPs, SRQs and AHs on this PD */
};

struct vmmbib_mr {
    uint32_t handle;
    struct vmmbib_ucontext *uctx;
    struct vmmbib_pd *pd;
    uint32_t key;           /* lkey == rkey: (index << 8) | generation */
    uint32_t access;
    bool dma;               /* addresses are guest physical addresses */
    uint64_t iova;
    uint64_t length;
    uint32_t first_page_offset;
    struct vmmbib_pages pages;
};

struct vmmbib_cq {
    uint32_t handle;
    struct vmmbib_ucontext *uctx;
    uint32_t cqe;           /* entries, a power of two */
    struct vmmbib_pages ring;
    uint32_t producer;      /* free-running */
    uint8_t armed;          /* 0, or 1 + VMMBIB_DB_ARM_* */
    bool error;             /* overflowed or its ring became unusable */
    uint32_t users;         /* QPs */
};

struct vmmbib_ring {
    struct vmmbib_pages pages;
    uint32_t entries;       /* a power of two */
    uint32_t stride_shift;
    uint32_t producer;      /* from doorbells, free-running */
    uint32_t consumer;      /* the engine's, free-running */
    /*
     * A copy for the WQE at (SQ) or just before (RQ, SRQ) the consumer
     * runs without the engine lock: the ring is not flushed meanwhile,
     * and no other delivery takes from it (completions stay in order).
     */
    bool inflight;
};

struct vmmbib_srq {
    uint32_t handle;
    struct vmmbib_ucontext *uctx;
    struct vmmbib_pd *pd;
    struct vmmbib_ring rq;
    uint32_t max_sge;
    uint32_t limit;         /* 0: disarmed */
    uint32_t users;         /* QPs */
};

struct vmmbib_ah {
    uint32_t handle;
    struct vmmbib_ucontext *uctx;
    struct vmmbib_pd *pd;
    struct vmmbib_ah_attr attr;
};

struct vmmbib_qp {
    uint32_t handle;
    struct vmmbib_ucontext *uctx;
    struct vmmbib_dev *dev;
    uint32_t qpn;
    struct vmmbib_pd *pd;
    struct vmmbib_cq *send_cq;
    struct vmmbib_cq *recv_cq;
    struct vmmbib_srq *srq;
    uint8_t type;           /* VMMBIB_QPT_* */
    uint8_t state;          /* enum vmmbib_qp_state */
    bool sq_sig_all;
    struct vmmbib_qp_caps caps;
    struct vmmbib_qp_attr attr; /* as last modified, host byte order */
    struct vmmbib_ring sq;
    struct vmmbib_ring rq;
    bool active;            /* on its device's list of QPs with work */
    bool sq_draining;       /* in SQD, the WQE begun before still runs */
    bool comm_est;          /* COMM_EST was raised since RESET */
    bool recv_busy;         /* the SQ head waits for a busy receive ring */
    bool recv_inflight;     /* a delivery to it copies without the lock */
    bool last_wqe_pending;  /* LAST_WQE_REACHED waits for a copy */
    struct vmmbib_qp *next_active;
    uint32_t rnr_retries;   /* left for the WQE at the SQ head */
    uint64_t rnr_deadline_ns;
};

/* ---- device.c ---- */
struct vmmbib_engine;

struct vmmbib_dev {
    struct vmmbib_dev_config cfg;
    struct vmmbib_host_ops ops;
    void *opaque;
    uint64_t node_guid;
    uint16_t lid;
    pthread_mutex_t *lock;  /* the engine's lock */
    struct vmmbib_engine *engine;
    bool own_engine;
    struct vmmbib_dev *next_on_engine;
    /*
     * The engine schedules devices first, then QPs: the QPs of this
     * device with work, and whether it is on the engine's list of devices
     * with such QPs.
     */
    struct vmmbib_qp *active_head;
    struct vmmbib_qp *active_tail;
    unsigned int nactive;
    bool on_active_list;
    bool in_turn;           /* a thread runs its QPs: not on the list */
    /*
     * Copies without the engine lock that use this device's memory, and
     * control paths waiting for them to end (vmmbib_engine_enter_dev):
     * while one waits, new copies for the device keep the lock.
     */
    unsigned int copies;
    unsigned int quiesce;
    struct vmmbib_dev *next_active_dev;
    /* The eventfd the guest's KICK writes (the engine reads it). */
    int kick_fd;
    bool own_kick_fd;
    struct vmmbib_table ucontexts;
    struct vmmbib_table pds;
    struct vmmbib_table mrs;
    struct vmmbib_table cqs;
    struct vmmbib_table qps;
    struct vmmbib_table srqs;
    struct vmmbib_table ahs;
    struct vmmbib_qp *gsi;  /* the GSI QP (QPN 1), or NULL */
    uint64_t pinned_pages;
    bool port_active_raised;    /* PORT_ACTIVE since creation or reset */
    bool *uar_slot_busy;    /* [cfg.uar_slots] */
    uint8_t *db_pages;      /* [cfg.uar_slots] pages */
    struct vmmbib_dev_stats stats;
    struct vmmbib_verbs *verbs; /* the verbs backend's state, or NULL */
};

struct vmmbib_ucontext *vmmbib_ucontext_create(struct vmmbib_dev *dev,
                                               int *status);
void vmmbib_ucontext_destroy(struct vmmbib_dev *dev,
                             struct vmmbib_ucontext *uctx);
void vmmbib_dev_event(struct vmmbib_dev *dev, uint16_t type, uint32_t handle,
                      struct vmmbib_ucontext *uctx);

/* ---- cmd_*.c: one handler per command ---- */
struct vmmbib_cmd_ctx {
    struct vmmbib_dev *dev;
    struct vmmbib_ucontext *uctx;   /* NULL for commands without one */
    const void *req;                /* body, copied and aligned */
    void *resp;                     /* body, zeroed */
};

int vmmbib_cmd_query_device(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_query_port(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_query_gid(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_query_pkey(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_create_ucontext(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_destroy_ucontext(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_create_pd(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_destroy_pd(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_create_dma_mr(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_reg_mr(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_dereg_mr(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_create_cq(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_resize_cq(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_destroy_cq(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_create_qp(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_modify_qp(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_query_qp(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_destroy_qp(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_create_srq(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_modify_srq(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_query_srq(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_destroy_srq(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_create_ah(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_destroy_ah(struct vmmbib_cmd_ctx *c);

/* Object lookups that check the owner; status in *status on failure. */
void *vmmbib_lookup(struct vmmbib_cmd_ctx *c, struct vmmbib_table *t,
                    uint32_t handle, int *status);

/* Destruction used by commands and by context teardown. */
void vmmbib_pd_free(struct vmmbib_dev *dev, struct vmmbib_pd *pd);
void vmmbib_mr_free(struct vmmbib_dev *dev, struct vmmbib_mr *mr);
void vmmbib_cq_free(struct vmmbib_dev *dev, struct vmmbib_cq *cq);
void vmmbib_qp_free(struct vmmbib_dev *dev, struct vmmbib_qp *qp);
void vmmbib_srq_free(struct vmmbib_dev *dev, struct vmmbib_srq *srq);
void vmmbib_ah_free(struct vmmbib_dev *dev, struct vmmbib_ah *ah);

/* cmd_qp.c: a WQE ring in guest pages (QP SQ/RQ, SRQ). */
int vmmbib_ring_load(struct vmmbib_dev *dev, struct vmmbib_ring *ring,
                     uint32_t entries, uint32_t max_entries, uint8_t shift,
                     uint32_t min_stride, const struct vmmbib_page_list *list);

/* cmd_pd.c: an address vector's checks, also for a QP's path. */
int vmmbib_check_ah_attr(const struct vmmbib_ah_attr *attr);

/* cmd_query.c: the GID of the device's port: subnet prefix, port GUID. */
void vmmbib_port_gid(const struct vmmbib_dev *dev, uint8_t *gid);
/* cmd_ucontext.c: the port comes up when the first context is created. */
void vmmbib_port_activate(struct vmmbib_dev *dev);

/* qp_state.c: the IB QP state machine. */
int vmmbib_qp_check_modify(const struct vmmbib_qp *qp, uint32_t mask,
                           const struct vmmbib_qp_attr *attr);

/* ---- engine.c, wqe.c: the data path ---- */
void vmmbib_engine_attach(struct vmmbib_engine *eng, struct vmmbib_dev *dev);
void vmmbib_engine_detach(struct vmmbib_engine *eng, struct vmmbib_dev *dev);
struct vmmbib_dev *vmmbib_engine_find_lid(struct vmmbib_engine *eng,
                                          uint16_t lid);
/* The device whose port GID is the 16 bytes at @gid, or NULL. */
struct vmmbib_dev *vmmbib_engine_find_gid(struct vmmbib_engine *eng,
                                          const uint8_t *gid);
struct vmmbib_dev *vmmbib_engine_find_guid(struct vmmbib_engine *eng,
                                           uint64_t guid);
/* Wake a sleeping engine thread; engine lock held. */
void vmmbib_engine_wake(struct vmmbib_engine *eng);
/* Count the kicks @dev's eventfd holds; engine lock held. */
uint64_t vmmbib_engine_take_kicks(struct vmmbib_dev *dev);
/* The kicks @dev's eventfd holds, left there; engine lock held. */
uint64_t vmmbib_engine_pending_kicks(struct vmmbib_dev *dev);
uint16_t vmmbib_engine_assign_lid(struct vmmbib_engine *eng);
pthread_mutex_t *vmmbib_engine_lock(struct vmmbib_engine *eng);
/* Take and release the engine lock from outside the engine thread. */
void vmmbib_engine_enter(struct vmmbib_engine *eng);
/*
 * Take the engine lock for a control path of @dev (a command, a reset,
 * the device's end): also waits until no copy without the lock uses the
 * device's memory, so nothing it frees or changes is in use.
 */
void vmmbib_engine_enter_dev(struct vmmbib_dev *dev);
void vmmbib_engine_leave(struct vmmbib_engine *eng);
/* What a new doorbell page must show: the engine may already sleep. */
uint32_t vmmbib_engine_state(struct vmmbib_engine *eng);
void vmmbib_engine_qp_activate(struct vmmbib_engine *eng,
                               struct vmmbib_qp *qp);
void vmmbib_engine_qp_forget(struct vmmbib_engine *eng, struct vmmbib_qp *qp);
/* Execute what @uctx's doorbell ring holds now; engine lock held. */
void vmmbib_engine_drain_context(struct vmmbib_dev *dev,
                                 struct vmmbib_ucontext *uctx);

/* Execute one doorbell of context @uctx; engine lock held. */
void vmmbib_doorbell_execute(struct vmmbib_dev *dev,
                             struct vmmbib_ucontext *uctx, uint64_t db);
/* Whether the engine must come back to @qp's SQ. */
bool vmmbib_qp_has_sq_work(const struct vmmbib_qp *qp);
/* Run up to @budget send WQEs of @qp; returns how many ran. */
unsigned int vmmbib_qp_run_sq(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                              unsigned int budget, uint64_t now_ns);
/* Move @qp to ERR and flush its queues; raises @event if not 0. */
void vmmbib_qp_to_error(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                        uint16_t event);
void vmmbib_qp_flush(struct vmmbib_dev *dev, struct vmmbib_qp *qp);
/* A UD send WQE failed: @qp goes to SQE, its SQ is flushed, RQ kept. */
void vmmbib_qp_to_sqe(struct vmmbib_dev *dev, struct vmmbib_qp *qp);

/* cmd_mr.c: the MR a key names, or NULL. */
struct vmmbib_mr *vmmbib_mr_from_key(struct vmmbib_dev *dev, uint32_t key);

/* cmd_cq.c: write one completion; false if the CQ is in error. */
bool vmmbib_cq_post(struct vmmbib_dev *dev, struct vmmbib_cq *cq,
                    struct vmmbib_cqe *cqe, bool solicited);

#endif /* VMMBIB_INTERNAL_H */
