/*
 * A synthetic guest for the host-lib tests: guest RAM in one host buffer,
 * the host ops libvmmbib needs, an event log, and a small "driver" that
 * issues control commands and posts work requests, rings doorbells and
 * polls CQs exactly as docs/spec.md (sections 4 to 6) tells a guest to.
 * No QEMU: the device is driven through vmmbib_dev_execute() and the
 * doorbell page the library hands out.
 *
 * Everything here aborts on misuse of the harness itself (a test bug);
 * what the device answers is returned so that tests can assert it.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef VMMBIB_TEST_GUEST_H
#define VMMBIB_TEST_GUEST_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmmbib.h"

/* Guest RAM: [GUEST_RAM_BASE, GUEST_RAM_BASE + size). */
#define GUEST_RAM_BASE      0x100000ull
#define GUEST_RAM_SIZE      (32u << 20)
#define GUEST_MAX_EVENTS    1024
/* How long a wait may take before the test calls it a failure. */
#define GUEST_TIMEOUT_MS    2000

struct guest {
    uint8_t *ram;
    uint64_t base;
    uint64_t size;
    uint64_t next;                  /* bump allocator: next free offset */
    pthread_mutex_t lock;           /* the event log; engine threads write it */
    struct vmmbib_event events[GUEST_MAX_EVENTS];
    unsigned int nevents;
};

/* ---- guest memory ---- */
void guest_init(struct guest *g, uint64_t size);
void guest_fini(struct guest *g);
/* The ops to give vmmbib_dev_new with the guest as opaque. */
extern const struct vmmbib_host_ops guest_host_ops;
/* Host address of [gpa, gpa + len) if all of it is guest RAM, else NULL. */
void *guest_ptr(struct guest *g, uint64_t gpa, uint64_t len);
/* Host address of a gpa the test knows is inside (aborts otherwise). */
void *gva(struct guest *g, uint64_t gpa);
/* Zeroed, 4 KiB aligned guest pages holding @bytes; returns their gpa. */
uint64_t guest_alloc(struct guest *g, uint64_t bytes);

/*
 * A page list of @levels (0, 1 or 2) naming @pages[0..npages); the
 * directory pages are allocated in guest RAM.
 */
void guest_page_list(struct guest *g, const uint64_t *pages, uint32_t npages,
                     unsigned int levels, struct vmmbib_page_list *pl);
/* The pages of [gpa, gpa + bytes) (gpa may be unaligned), fewest levels. */
void guest_page_list_range(struct guest *g, uint64_t gpa, uint64_t bytes,
                           struct vmmbib_page_list *pl);

/* ---- events ---- */
unsigned int guest_event_count(struct guest *g, uint16_t type,
                               uint32_t handle);
/* Wait until at least @n events of @type for @handle arrived. */
bool guest_wait_event(struct guest *g, uint16_t type, uint32_t handle,
                      unsigned int n, int timeout_ms);

/* Sleep @ms milliseconds. */
void msleep(unsigned int ms);
/* CLOCK_MONOTONIC in milliseconds. */
uint64_t mono_ms(void);
/*
 * Timeout for the next wait: GUEST_TIMEOUT_MS until one wait has timed
 * out, then much less, so a broken engine fails a file in seconds instead
 * of running into meson's timeout.
 */
int wait_timeout_ms(void);
void wait_timed_out(void);

/* ---- devices and commands ---- */
/* Default limits, 8 UAR slots, ring doorbells. */
void guest_dev_config(struct vmmbib_dev_config *cfg);
/* A device with @cfg (NULL: the default) on @eng (NULL: its own). */
struct vmmbib_dev *guest_dev_new(struct guest *g, struct vmmbib_engine *eng,
                                 const struct vmmbib_dev_config *cfg);
/*
 * Execute one command; returns its status.  On OK the reply body must be
 * exactly @reply_len bytes (checked), and is copied to @reply_body.
 */
int cmd(struct vmmbib_dev *dev, uint16_t op, uint32_t ctx, const void *body,
        size_t len, void *reply_body, size_t reply_len);
uint16_t port_lid(struct vmmbib_dev *dev);

/* A context: its handle, UAR slot and doorbell page. */
struct gctx {
    struct guest *g;
    struct vmmbib_dev *dev;
    uint32_t handle;
    uint32_t slot;
    uint8_t *db;                    /* this slot's doorbell page */
};

int ctx_create(struct gctx *c, struct vmmbib_dev *dev, struct guest *g);
int ctx_destroy(struct gctx *c);
int pd_create(struct gctx *c, uint32_t *pd);
int destroy(struct gctx *c, uint16_t op, uint32_t handle);

/* A guest buffer: contiguous guest memory. */
struct gbuf {
    uint64_t gpa;
    uint8_t *p;
    uint64_t len;
};
void gbuf_alloc(struct guest *g, uint64_t len, struct gbuf *b);

struct gmr {
    uint32_t handle;
    uint32_t lkey;
    uint32_t rkey;
    uint64_t iova;
    uint64_t len;
};
/* Register [gpa, gpa + len) with iova = gpa. */
int mr_reg(struct gctx *c, uint32_t pd, uint64_t gpa, uint64_t len,
           uint32_t access, struct gmr *mr);
/* Register @pl as [iova, iova + len), iova at byte iova % 4096 of page 0. */
int mr_reg_pages(struct gctx *c, uint32_t pd, uint64_t iova, uint64_t len,
                 const struct vmmbib_page_list *pl, uint32_t access,
                 struct gmr *mr);
int mr_dma(struct gctx *c, uint32_t pd, uint32_t access, struct gmr *mr);
struct vmmbib_sge sge(const struct gmr *mr, uint64_t addr, uint32_t len);

/* A CQ: the ring in guest memory and the guest's consumer index. */
struct gcq {
    struct gctx *c;
    uint32_t handle;
    uint32_t cqe;
    uint64_t gpa;
    uint8_t *ring;
    uint32_t cons;
};
int cq_create(struct gctx *c, uint32_t cqe, struct gcq *cq);
/* Take up to @max new CQEs by owner bit; updates consumer_index. */
int cq_poll(struct gcq *cq, struct vmmbib_cqe *out, int max);
/* Poll until @n CQEs arrived or the timeout; returns how many. */
int cq_wait(struct gcq *cq, struct vmmbib_cqe *out, int n);
/*
 * RESIZE_CQ to a fresh ring of @cqe entries; on OK the guest continues at
 * index 0 of it and *moved says how many CQEs the device carried over.
 */
int cq_resize(struct gcq *cq, uint32_t cqe, uint32_t *moved);
/* A CQ_ARM doorbell (VMMBIB_DB_ARM_*). */
void cq_arm(struct gcq *cq, uint32_t how);

/* An SRQ and its ring. */
struct gsrq {
    struct gctx *c;
    uint32_t handle;
    uint32_t max_wr;
    uint32_t shift;
    uint8_t *ring;
    uint32_t prod;
};
int srq_create(struct gctx *c, uint32_t pd, uint32_t max_wr, uint32_t limit,
               struct gsrq *srq);
int srq_set_limit(struct gsrq *srq, uint32_t limit);

/* QP creation parameters; qp_opts_default() fills what tests usually want. */
struct qp_opts {
    uint8_t type;                   /* VMMBIB_QPT_* */
    bool sig_all;
    uint32_t sq_wr, rq_wr;
    uint32_t send_sge, recv_sge, inline_data;
    uint8_t sq_shift, rq_shift;
};
void qp_opts_default(struct qp_opts *o, uint8_t type);

struct gqp {
    struct gctx *c;
    uint32_t handle;
    uint32_t qpn;
    uint8_t type;
    struct gcq *scq, *rcq;
    struct gsrq *srq;
    uint8_t *sq;
    uint32_t sq_wr, sq_shift, sq_prod;
    uint8_t *rq;
    uint32_t rq_wr, rq_shift, rq_prod;
    struct vmmbib_qp_caps caps;     /* granted */
};
int qp_create(struct gctx *c, uint32_t pd, struct gcq *scq, struct gcq *rcq,
              struct gsrq *srq, const struct qp_opts *o, struct gqp *qp);
int qp_modify(struct gqp *qp, uint32_t mask, const struct vmmbib_qp_attr *a);
/* The QP's state from QUERY_QP, or -1 if the query failed. */
int qp_state(struct gqp *qp);

/* How an RC QP is connected. */
struct rc_opts {
    uint32_t access;                /* QP access flags */
    uint8_t rnr_retry, retry_cnt, timeout, min_rnr_timer;
};
void rc_opts_default(struct rc_opts *o);
int qp_rc_init(struct gqp *qp, uint32_t access);
int qp_rc_rtr(struct gqp *qp, uint16_t dlid, uint32_t dest_qpn,
              const struct rc_opts *o);
int qp_rc_rts(struct gqp *qp, const struct rc_opts *o);
/* a and b to RTS, connected to each other (o NULL: defaults). */
int rc_connect(struct gqp *a, struct gqp *b, const struct rc_opts *o);
int ud_to_rts(struct gqp *qp, uint32_t qkey);
int ah_create(struct gctx *c, uint32_t pd, uint16_t dlid, uint32_t *ah);
/* An AH with any address vector (a GRH, a dgid, ...). */
int ah_create_attr(struct gctx *c, uint32_t pd,
                   const struct vmmbib_ah_attr *attr, uint32_t *ah);
/* The GID of @dev's port (QUERY_GID index 0). */
void port_gid(struct vmmbib_dev *dev, uint8_t gid[16]);
/* QUERY_QP: the attributes, or a status other than OK. */
int qp_query(struct gqp *qp, struct vmmbib_qp_attr *attr);

/* ---- data path ---- */
/* Ring one doorbell of @c as docs/spec.md section 4 says. */
void ctx_doorbell(struct gctx *c, uint64_t db);
/* Wait until the engine took every doorbell of @c's ring. */
bool ctx_doorbells_drained(struct gctx *c);
uint32_t db_word(struct gctx *c, unsigned int offset);

/*
 * Write a send WQE (header @w, then @n SGEs or @inl_len inline bytes) at
 * the SQ producer, advance it, and ring the SQ doorbell if @ring.
 * Returns the WQE's free-running index.
 */
uint32_t qp_post_send(struct gqp *qp, const struct vmmbib_send_wqe *w,
                      const struct vmmbib_sge *sges, unsigned int n,
                      const void *inl, uint32_t inl_len, bool ring);
void qp_sq_doorbell(struct gqp *qp);
/* The common case: one opcode, signaled, SGEs, an RDMA target. */
uint32_t post_send(struct gqp *qp, uint64_t wr_id, uint8_t opcode,
                   const struct vmmbib_sge *sges, unsigned int n,
                   uint64_t raddr, uint32_t rkey);
uint32_t qp_post_recv(struct gqp *qp, uint64_t wr_id,
                      const struct vmmbib_sge *sges, unsigned int n);
/*
 * Like qp_post_recv, but rings the RQ doorbell only if @ring, so that a
 * batch of receives costs one doorbell (qp_rq_doorbell rings it later).
 */
uint32_t qp_write_recv(struct gqp *qp, uint64_t wr_id,
                       const struct vmmbib_sge *sges, unsigned int n,
                       bool ring);
void qp_rq_doorbell(struct gqp *qp);
uint32_t srq_post_recv(struct gsrq *srq, uint64_t wr_id,
                       const struct vmmbib_sge *sges, unsigned int n);

/* Two RC QPs, each with its own send and receive CQ (16 entries). */
struct rc_pair {
    struct gcq a_scq, a_rcq, b_scq, b_rcq;
    struct gqp a, b;
};
/* a in @ca with @pda, b in @cb with @pdb; connected (o NULL: defaults). */
int rc_pair_create(struct rc_pair *p, struct gctx *ca, uint32_t pda,
                   struct gctx *cb, uint32_t pdb, const struct rc_opts *o);

/* A CQE with these fields. */
bool cqe_is(const struct vmmbib_cqe *e, uint64_t wr_id, uint8_t opcode,
            uint8_t status);
/* Print a CQE as a TAP comment (for failures). */
void cqe_dump(const char *what, const struct vmmbib_cqe *e);

/* A byte pattern: fill and check. */
void pattern_fill(uint8_t *p, size_t len, unsigned int seed);
bool pattern_check(const uint8_t *p, size_t len, unsigned int seed);

/* ---- one VM: what most tests start from ---- */
#define OK VMMBIB_STATUS_OK
#define ACCESS_ALL_RIGHTS (VMMBIB_ACCESS_LOCAL_WRITE |                   \
                           VMMBIB_ACCESS_REMOTE_WRITE |                  \
                           VMMBIB_ACCESS_REMOTE_READ |                   \
                           VMMBIB_ACCESS_REMOTE_ATOMIC)
/* The size of the buffer vm_init registers. */
#define BUF_SIZE (64u << 10)

/* One VM: its RAM, a device, a context, a PD and a registered buffer. */
struct vm {
    struct guest g;
    struct vmmbib_dev *dev;
    struct vmmbib_engine *own_eng;  /* NULL, or the device's (threads) */
    struct gctx c;
    uint32_t pd;
    struct gbuf buf;
    struct gmr mr;
};
/* RAM and a device with @cfg (NULL: the default) on @eng (NULL: its own). */
void vm_dev(struct vm *v, struct vmmbib_engine *eng,
            const struct vmmbib_dev_config *cfg);
/* A context on v->dev, a PD, and a @len byte buffer registered with @access. */
bool vm_ctx(struct vm *v, uint64_t len, uint32_t access);
/* vm_dev, then vm_ctx with BUF_SIZE bytes and all rights. */
bool vm_init_on(struct vm *v, struct vmmbib_engine *eng,
                const struct vmmbib_dev_config *cfg);
/* vm_init_on its own engine, with @cfg (NULL: the default). */
bool vm_init_cfg(struct vm *v, const struct vmmbib_dev_config *cfg);
/* vm_init_on its own engine with the default device. */
bool vm_init(struct vm *v);
void vm_fini(struct vm *v);
/* An SGE of v->mr for [off, off + len) of v->buf. */
struct vmmbib_sge buf_sge(struct vm *v, uint64_t off, uint32_t len);

/* An engine for several devices (idle_poll_us 50); NULL, said why, on error. */
struct vmmbib_engine *engine_new(void);
/*
 * The environment's VMMBIB_TEST_ENGINE_THREADS, or 0: engine_new's engines
 * and those vm_dev makes for a device alone run that many threads.
 */
unsigned int test_engine_threads(void);
/* Two 16-entry CQs and a UD QP using them, in RTS with @qkey. */
int make_ud(struct gctx *c, uint32_t pd, struct gcq *scq, struct gcq *rcq,
            struct gqp *qp, uint32_t qkey);
/*
 * A signaled UD SEND of @s to @qpn through @ah with @qkey; rings the SQ
 * doorbell if @ring.  Returns the WQE's index.
 */
uint32_t ud_send(struct gqp *qp, uint64_t wr_id, uint32_t ah, uint32_t qpn,
                 uint32_t qkey, const struct vmmbib_sge *s, bool ring);

#endif /* VMMBIB_TEST_GUEST_H */
