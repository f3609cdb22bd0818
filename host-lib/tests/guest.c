/*
 * The synthetic guest of the host-lib tests (see guest.h): guest RAM,
 * host ops, event log, and a driver written from docs/spec.md.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <endian.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "guest.h"

/* A harness bug, not a device bug: stop with a reason. */
#define HARNESS_ASSERT(cond)                                               \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "Bail out! harness: %s failed at %s:%d\n",    \
                    #cond, __FILE__, __LINE__);                            \
            printf("Bail out! harness: %s failed at %s:%d\n",             \
                   #cond, __FILE__, __LINE__);                             \
            abort();                                                       \
        }                                                                  \
    } while (0)

/* ---- guest memory ---- */

void *guest_ptr(struct guest *g, uint64_t gpa, uint64_t len)
{
    if (gpa < g->base || gpa - g->base > g->size ||
        len > g->size - (gpa - g->base)) {
        return NULL;
    }
    return g->ram + (gpa - g->base);
}

static void *op_guest_ptr(void *opaque, uint64_t gpa, uint64_t len)
{
    return guest_ptr(opaque, gpa, len);
}

static void op_event(void *opaque, const struct vmmbib_event *ev)
{
    struct guest *g = opaque;

    pthread_mutex_lock(&g->lock);
    if (g->nevents < GUEST_MAX_EVENTS) {
        g->events[g->nevents++] = *ev;
    }
    pthread_mutex_unlock(&g->lock);
}

/* One RAM region: all of it. */
static bool op_guest_ram(void *opaque, uint32_t index, uint64_t *gpa,
                         uint64_t *size)
{
    struct guest *g = opaque;

    *gpa = g->base;
    *size = g->size;
    return index == 0;
}

const struct vmmbib_host_ops guest_host_ops = {
    .guest_ptr = op_guest_ptr,
    .event = op_event,
    .guest_ram = op_guest_ram,
};

void guest_init(struct guest *g, uint64_t size)
{
    memset(g, 0, sizeof(*g));
    /*
     * Page aligned and shared, as a VMM's RAM is (memory-backend-memfd):
     * a host HCA registers its pages, and the verbs backend maps them a
     * second time for an MR of scattered pages.
     */
    g->ram = mmap(NULL, size, PROT_READ | PROT_WRITE,
                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    HARNESS_ASSERT(g->ram != MAP_FAILED);
    g->base = GUEST_RAM_BASE;
    g->size = size;
    pthread_mutex_init(&g->lock, NULL);
}

void guest_fini(struct guest *g)
{
    pthread_mutex_destroy(&g->lock);
    munmap(g->ram, g->size);
    g->ram = NULL;
}

void *gva(struct guest *g, uint64_t gpa)
{
    void *p = guest_ptr(g, gpa, 1);

    HARNESS_ASSERT(p);
    return p;
}

uint64_t guest_alloc(struct guest *g, uint64_t bytes)
{
    uint64_t pages = (bytes + VMMBIB_PAGE_SIZE - 1) / VMMBIB_PAGE_SIZE;
    uint64_t off = g->next;

    if (!pages) {
        pages = 1;
    }
    HARNESS_ASSERT(pages * VMMBIB_PAGE_SIZE <= g->size - off);
    g->next += pages * VMMBIB_PAGE_SIZE;
    /* Zeroed even if a test scribbled here before a reset reused it. */
    memset(g->ram + off, 0, pages * VMMBIB_PAGE_SIZE);
    return g->base + off;
}

void guest_page_list(struct guest *g, const uint64_t *pages, uint32_t npages,
                     unsigned int levels, struct vmmbib_page_list *pl)
{
    const uint32_t fanout = VMMBIB_PAGE_LIST_FANOUT;

    memset(pl, 0, sizeof(*pl));
    pl->npages = htole32(npages);
    pl->levels = levels;
    pl->page_shift = VMMBIB_PAGE_SHIFT;
    if (levels == 0) {
        pl->addr = htole64(pages[0]);
    } else if (levels == 1) {
        uint64_t dir = guest_alloc(g, VMMBIB_PAGE_SIZE);
        uint64_t *d = gva(g, dir);

        HARNESS_ASSERT(npages <= fanout);
        for (uint32_t i = 0; i < npages; i++) {
            d[i] = htole64(pages[i]);
        }
        pl->addr = htole64(dir);
    } else {
        uint64_t top = guest_alloc(g, VMMBIB_PAGE_SIZE);
        uint64_t *t = gva(g, top);
        uint32_t nleaf = (npages + fanout - 1) / fanout;

        HARNESS_ASSERT(levels == 2 && nleaf <= fanout);
        for (uint32_t l = 0; l < nleaf; l++) {
            uint64_t leaf = guest_alloc(g, VMMBIB_PAGE_SIZE);
            uint64_t *d = gva(g, leaf);

            for (uint32_t i = 0; i < fanout && l * fanout + i < npages; i++) {
                d[i] = htole64(pages[l * fanout + i]);
            }
            t[l] = htole64(leaf);
        }
        pl->addr = htole64(top);
    }
}

void guest_page_list_range(struct guest *g, uint64_t gpa, uint64_t bytes,
                           struct vmmbib_page_list *pl)
{
    uint64_t first = gpa & ~(uint64_t)(VMMBIB_PAGE_SIZE - 1);
    uint32_t n = ((gpa - first) + bytes + VMMBIB_PAGE_SIZE - 1) /
                 VMMBIB_PAGE_SIZE;
    uint64_t *pages = calloc(n, sizeof(*pages));

    HARNESS_ASSERT(pages);
    for (uint32_t i = 0; i < n; i++) {
        pages[i] = first + (uint64_t)i * VMMBIB_PAGE_SIZE;
    }
    guest_page_list(g, pages, n,
                    n == 1 ? 0 : n <= VMMBIB_PAGE_LIST_FANOUT ? 1 : 2, pl);
    free(pages);
}

/* ---- events and waiting ---- */

unsigned int guest_event_count(struct guest *g, uint16_t type,
                               uint32_t handle)
{
    unsigned int i, n = 0;

    pthread_mutex_lock(&g->lock);
    for (i = 0; i < g->nevents; i++) {
        n += le16toh(g->events[i].type) == type &&
             le32toh(g->events[i].handle) == handle;
    }
    pthread_mutex_unlock(&g->lock);
    return n;
}

static int timeouts;

int wait_timeout_ms(void)
{
    return timeouts ? 200 : GUEST_TIMEOUT_MS;
}

void wait_timed_out(void)
{
    if (!timeouts++) {
        printf("# a wait timed out; later waits give up after 200 ms\n");
    }
}

uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool guest_wait_event(struct guest *g, uint16_t type, uint32_t handle,
                      unsigned int n, int timeout_ms)
{
    uint64_t end = mono_ms() + timeout_ms;

    while (guest_event_count(g, type, handle) < n) {
        if (mono_ms() >= end) {
            wait_timed_out();
            return false;
        }
        usleep(100);
    }
    return true;
}

void msleep(unsigned int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

    while (nanosleep(&ts, &ts)) {
    }
}

/* ---- devices and commands ---- */

void guest_dev_config(struct vmmbib_dev_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    vmmbib_limits_default(&cfg->limits);
    cfg->uar_slots = 8;
    cfg->doorbell_mode = VMMBIB_DB_MODE_RING;
}

struct vmmbib_dev *guest_dev_new(struct guest *g, struct vmmbib_engine *eng,
                                 const struct vmmbib_dev_config *cfg)
{
    struct vmmbib_dev_config def;
    struct vmmbib_dev *dev;
    char err[256] = "";

    if (!cfg) {
        guest_dev_config(&def);
        cfg = &def;
    }
    dev = vmmbib_dev_new(cfg, eng, &guest_host_ops, g, err, sizeof(err));
    if (!dev) {
        printf("# vmmbib_dev_new: %s\n", err);
    }
    HARNESS_ASSERT(dev);
    return dev;
}

int cmd(struct vmmbib_dev *dev, uint16_t op, uint32_t ctx, const void *body,
        size_t len, void *reply_body, size_t reply_len)
{
    uint8_t req[sizeof(struct vmmbib_cmd_hdr) + 256];
    uint8_t reply[sizeof(struct vmmbib_resp_hdr) + 256];
    struct vmmbib_cmd_hdr hdr = {
        .opcode = htole16(op),
        .ctx_handle = htole32(ctx),
    };
    struct vmmbib_resp_hdr rh;
    size_t n;
    int status;

    HARNESS_ASSERT(len <= 256 && reply_len <= 256);
    memcpy(req, &hdr, sizeof(hdr));
    if (len) {
        memcpy(req + sizeof(hdr), body, len);
    }
    memset(reply, 0xa5, sizeof(reply));
    n = vmmbib_dev_execute(dev, req, sizeof(hdr) + len, reply,
                           sizeof(rh) + reply_len);
    if (n < sizeof(rh)) {
        return -1;
    }
    memcpy(&rh, reply, sizeof(rh));
    status = le16toh(rh.status);
    if (n != sizeof(rh) + le32toh(rh.length)) {
        return -1;
    }
    if (status == VMMBIB_STATUS_OK) {
        if (le32toh(rh.length) != reply_len) {
            return -1;
        }
        if (reply_len) {
            memcpy(reply_body, reply + sizeof(rh), reply_len);
        }
    } else if (rh.length) {
        return -1;      /* an error reply carries no body */
    }
    return status;
}

uint16_t port_lid(struct vmmbib_dev *dev)
{
    struct vmmbib_cmd_query_port q = { .port_num = 1 };
    struct vmmbib_resp_query_port r;

    HARNESS_ASSERT(cmd(dev, VMMBIB_CMD_QUERY_PORT, 0, &q, sizeof(q), &r,
                       sizeof(r)) == VMMBIB_STATUS_OK);
    return le16toh(r.lid);
}

int ctx_create(struct gctx *c, struct vmmbib_dev *dev, struct guest *g)
{
    struct vmmbib_resp_create_ucontext r;
    int status;

    memset(c, 0, sizeof(*c));
    c->g = g;
    c->dev = dev;
    status = cmd(dev, VMMBIB_CMD_CREATE_UCONTEXT, 0, NULL, 0, &r, sizeof(r));
    if (status == VMMBIB_STATUS_OK) {
        c->handle = le32toh(r.ctx_handle);
        c->slot = le32toh(r.uar_slot);
        c->db = (uint8_t *)vmmbib_dev_db_pages(dev) +
                (size_t)c->slot * VMMBIB_PAGE_SIZE;
    }
    return status;
}

int ctx_destroy(struct gctx *c)
{
    return cmd(c->dev, VMMBIB_CMD_DESTROY_UCONTEXT, c->handle, NULL, 0,
               NULL, 0);
}

int pd_create(struct gctx *c, uint32_t *pd)
{
    struct vmmbib_resp_create_pd r;
    int status = cmd(c->dev, VMMBIB_CMD_CREATE_PD, c->handle, NULL, 0, &r,
                     sizeof(r));

    *pd = status == VMMBIB_STATUS_OK ? le32toh(r.pd_handle) : 0;
    return status;
}

int destroy(struct gctx *c, uint16_t op, uint32_t handle)
{
    struct vmmbib_cmd_destroy q = { .handle = htole32(handle) };

    return cmd(c->dev, op, c->handle, &q, sizeof(q), NULL, 0);
}

void gbuf_alloc(struct guest *g, uint64_t len, struct gbuf *b)
{
    b->gpa = guest_alloc(g, len);
    b->p = gva(g, b->gpa);
    b->len = len;
}

static int mr_reply(int status, const struct vmmbib_resp_mr *r,
                    struct gmr *mr)
{
    if (status == VMMBIB_STATUS_OK) {
        mr->handle = le32toh(r->mr_handle);
        mr->lkey = le32toh(r->lkey);
        mr->rkey = le32toh(r->rkey);
    }
    return status;
}

int mr_reg_pages(struct gctx *c, uint32_t pd, uint64_t iova, uint64_t len,
                 const struct vmmbib_page_list *pl, uint32_t access,
                 struct gmr *mr)
{
    struct vmmbib_cmd_reg_mr q = {
        .pd_handle = htole32(pd),
        .access = htole32(access),
        .iova = htole64(iova),
        .length = htole64(len),
        .first_page_offset = htole32(iova & (VMMBIB_PAGE_SIZE - 1)),
        .pages = *pl,
    };
    struct vmmbib_resp_mr r;

    memset(mr, 0, sizeof(*mr));
    mr->iova = iova;
    mr->len = len;
    return mr_reply(cmd(c->dev, VMMBIB_CMD_REG_MR, c->handle, &q, sizeof(q),
                        &r, sizeof(r)), &r, mr);
}

int mr_reg(struct gctx *c, uint32_t pd, uint64_t gpa, uint64_t len,
           uint32_t access, struct gmr *mr)
{
    struct vmmbib_page_list pl;

    guest_page_list_range(c->g, gpa, len, &pl);
    return mr_reg_pages(c, pd, gpa, len, &pl, access, mr);
}

int mr_dma(struct gctx *c, uint32_t pd, uint32_t access, struct gmr *mr)
{
    struct vmmbib_cmd_create_dma_mr q = {
        .pd_handle = htole32(pd),
        .access = htole32(access),
    };
    struct vmmbib_resp_mr r;

    memset(mr, 0, sizeof(*mr));
    mr->len = UINT64_MAX;
    return mr_reply(cmd(c->dev, VMMBIB_CMD_CREATE_DMA_MR, c->handle, &q,
                        sizeof(q), &r, sizeof(r)), &r, mr);
}

struct vmmbib_sge sge(const struct gmr *mr, uint64_t addr, uint32_t len)
{
    struct vmmbib_sge s = {
        .addr = htole64(addr),
        .length = htole32(len),
        .lkey = htole32(mr->lkey),
    };

    return s;
}

/* ---- CQs ---- */

int cq_create(struct gctx *c, uint32_t cqe, struct gcq *cq)
{
    uint64_t bytes = sizeof(struct vmmbib_cq_header) +
                     (uint64_t)cqe * sizeof(struct vmmbib_cqe);
    struct vmmbib_cmd_create_cq q = { .cqe = htole32(cqe) };
    struct vmmbib_resp_create_cq r;
    int status;

    memset(cq, 0, sizeof(*cq));
    cq->c = c;
    cq->cqe = cqe;
    /* The driver zeroes the ring before CREATE_CQ (guest_alloc does). */
    cq->gpa = guest_alloc(c->g, bytes);
    cq->ring = gva(c->g, cq->gpa);
    guest_page_list_range(c->g, cq->gpa, bytes, &q.pages);
    status = cmd(c->dev, VMMBIB_CMD_CREATE_CQ, c->handle, &q, sizeof(q), &r,
                 sizeof(r));
    if (status == VMMBIB_STATUS_OK) {
        cq->handle = le32toh(r.cq_handle);
        HARNESS_ASSERT(le32toh(r.cqe) == cqe);
    }
    return status;
}

int cq_poll(struct gcq *cq, struct vmmbib_cqe *out, int max)
{
    struct vmmbib_cq_header *h = (void *)cq->ring;
    int n = 0;

    while (n < max) {
        struct vmmbib_cqe *e = (void *)(cq->ring + sizeof(*h) +
                                        (uint64_t)(cq->cons & (cq->cqe - 1)) *
                                        sizeof(*e));
        /* New on even laps when the owner bit is set, on odd when clear. */
        uint8_t want = (cq->cons / cq->cqe) & 1 ? 0 : VMMBIB_CQE_OWNER;
        uint8_t owner = __atomic_load_n(&e->owner, __ATOMIC_ACQUIRE);

        if ((owner & VMMBIB_CQE_OWNER) != want) {
            break;
        }
        memcpy(&out[n], e, sizeof(*e));
        n++;
        cq->cons++;
    }
    if (n) {
        __atomic_store_n(&h->consumer_index, htole32(cq->cons),
                         __ATOMIC_RELEASE);
    }
    return n;
}

int cq_wait(struct gcq *cq, struct vmmbib_cqe *out, int n)
{
    uint64_t end = mono_ms() + wait_timeout_ms();
    int got = 0;

    for (;;) {
        got += cq_poll(cq, out + got, n - got);
        if (got >= n) {
            return got;
        }
        if (mono_ms() >= end) {
            wait_timed_out();
            return got;
        }
        usleep(100);
    }
}

int cq_resize(struct gcq *cq, uint32_t cqe, uint32_t *moved)
{
    uint64_t bytes = sizeof(struct vmmbib_cq_header) +
                     (uint64_t)cqe * sizeof(struct vmmbib_cqe);
    uint64_t gpa = guest_alloc(cq->c->g, bytes);
    struct vmmbib_cmd_resize_cq q = {
        .cq_handle = htole32(cq->handle),
        .cqe = htole32(cqe),
    };
    struct vmmbib_resp_resize_cq r;
    int status;

    guest_page_list_range(cq->c->g, gpa, bytes, &q.pages);
    status = cmd(cq->c->dev, VMMBIB_CMD_RESIZE_CQ, cq->c->handle, &q,
                 sizeof(q), &r, sizeof(r));
    if (status == VMMBIB_STATUS_OK) {
        HARNESS_ASSERT(le32toh(r.cqe) == cqe);
        cq->gpa = gpa;
        cq->ring = gva(cq->c->g, gpa);
        cq->cqe = cqe;
        cq->cons = 0;
        *moved = le32toh(r.moved);
    }
    return status;
}

void cq_arm(struct gcq *cq, uint32_t how)
{
    ctx_doorbell(cq->c, VMMBIB_DB(VMMBIB_DB_KIND_CQ_ARM,
                                  VMMBIB_HANDLE_INDEX(cq->handle), how));
}

/* ---- SRQs ---- */

int srq_create(struct gctx *c, uint32_t pd, uint32_t max_wr, uint32_t limit,
               struct gsrq *srq)
{
    struct vmmbib_cmd_create_srq q = {
        .pd_handle = htole32(pd),
        .max_wr = htole32(max_wr),
        .max_sge = htole32(4),
        .srq_limit = htole32(limit),
        .wqe_shift = 7,         /* 16 + 4 * 16 = 80 bytes fit 128 */
    };
    struct vmmbib_resp_create_srq r;
    uint64_t gpa;
    int status;

    memset(srq, 0, sizeof(*srq));
    srq->c = c;
    srq->max_wr = max_wr;
    srq->shift = 7;
    gpa = guest_alloc(c->g, (uint64_t)max_wr << srq->shift);
    srq->ring = gva(c->g, gpa);
    guest_page_list_range(c->g, gpa, (uint64_t)max_wr << srq->shift,
                          &q.pages);
    status = cmd(c->dev, VMMBIB_CMD_CREATE_SRQ, c->handle, &q, sizeof(q), &r,
                 sizeof(r));
    if (status == VMMBIB_STATUS_OK) {
        srq->handle = le32toh(r.srq_handle);
    }
    return status;
}

int srq_set_limit(struct gsrq *srq, uint32_t limit)
{
    struct vmmbib_cmd_modify_srq q = {
        .srq_handle = htole32(srq->handle),
        .attr_mask = htole32(VMMBIB_SRQ_LIMIT),
        .srq_limit = htole32(limit),
    };

    return cmd(srq->c->dev, VMMBIB_CMD_MODIFY_SRQ, srq->c->handle, &q,
               sizeof(q), NULL, 0);
}

/* ---- QPs ---- */

void qp_opts_default(struct qp_opts *o, uint8_t type)
{
    *o = (struct qp_opts) {
        .type = type,
        .sq_wr = 16,
        .rq_wr = 16,
        .send_sge = 4,
        .recv_sge = 4,
        .inline_data = 128,
        .sq_shift = 8,          /* 64 + max(4 * 16, 128) = 192 fit 256 */
        .rq_shift = 7,          /* 16 + 4 * 16 = 80 fit 128 */
    };
}

int qp_create(struct gctx *c, uint32_t pd, struct gcq *scq, struct gcq *rcq,
              struct gsrq *srq, const struct qp_opts *opts, struct gqp *qp)
{
    struct qp_opts def;
    struct vmmbib_cmd_create_qp q;
    struct vmmbib_resp_create_qp r;
    uint64_t gpa;
    int status;

    if (!opts) {
        qp_opts_default(&def, VMMBIB_QPT_RC);
        opts = &def;
    }
    memset(qp, 0, sizeof(*qp));
    memset(&q, 0, sizeof(q));
    qp->c = c;
    qp->type = opts->type;
    qp->scq = scq;
    qp->rcq = rcq;
    qp->srq = srq;
    qp->sq_wr = opts->sq_wr;
    qp->sq_shift = opts->sq_shift;
    gpa = guest_alloc(c->g, (uint64_t)qp->sq_wr << qp->sq_shift);
    qp->sq = gva(c->g, gpa);
    guest_page_list_range(c->g, gpa, (uint64_t)qp->sq_wr << qp->sq_shift,
                          &q.sq_pages);
    if (!srq) {
        qp->rq_wr = opts->rq_wr;
        qp->rq_shift = opts->rq_shift;
        gpa = guest_alloc(c->g, (uint64_t)qp->rq_wr << qp->rq_shift);
        qp->rq = gva(c->g, gpa);
        guest_page_list_range(c->g, gpa, (uint64_t)qp->rq_wr << qp->rq_shift,
                              &q.rq_pages);
    }
    q.pd_handle = htole32(pd);
    q.send_cq_handle = htole32(scq->handle);
    q.recv_cq_handle = htole32(rcq->handle);
    q.srq_handle = htole32(srq ? srq->handle : 0);
    q.qp_type = opts->type;
    q.sq_sig_all = opts->sig_all;
    q.caps.max_send_wr = htole32(opts->sq_wr);
    q.caps.max_recv_wr = htole32(srq ? 0 : opts->rq_wr);
    q.caps.max_send_sge = htole32(opts->send_sge);
    q.caps.max_recv_sge = htole32(srq ? 0 : opts->recv_sge);
    q.caps.max_inline_data = htole32(opts->inline_data);
    q.caps.sq_wqe_shift = opts->sq_shift;
    q.caps.rq_wqe_shift = srq ? 0 : opts->rq_shift;
    status = cmd(c->dev, VMMBIB_CMD_CREATE_QP, c->handle, &q, sizeof(q), &r,
                 sizeof(r));
    if (status == VMMBIB_STATUS_OK) {
        qp->handle = le32toh(r.qp_handle);
        qp->qpn = le32toh(r.qpn);
        qp->caps = r.caps;
    }
    return status;
}

int qp_modify(struct gqp *qp, uint32_t mask, const struct vmmbib_qp_attr *a)
{
    struct vmmbib_cmd_modify_qp q = {
        .qp_handle = htole32(qp->handle),
        .attr_mask = htole32(mask),
        .attr = *a,
    };

    return cmd(qp->c->dev, VMMBIB_CMD_MODIFY_QP, qp->c->handle, &q,
               sizeof(q), NULL, 0);
}

int qp_state(struct gqp *qp)
{
    struct vmmbib_cmd_query_qp q = { .qp_handle = htole32(qp->handle) };
    struct vmmbib_resp_query_qp r;

    if (cmd(qp->c->dev, VMMBIB_CMD_QUERY_QP, qp->c->handle, &q, sizeof(q),
            &r, sizeof(r)) != VMMBIB_STATUS_OK) {
        return -1;
    }
    return r.attr.qp_state;
}

void rc_opts_default(struct rc_opts *o)
{
    *o = (struct rc_opts) {
        .access = VMMBIB_ACCESS_LOCAL_WRITE | VMMBIB_ACCESS_REMOTE_WRITE |
                  VMMBIB_ACCESS_REMOTE_READ | VMMBIB_ACCESS_REMOTE_ATOMIC,
        .rnr_retry = 3,
        .retry_cnt = 3,
        .timeout = 8,
        .min_rnr_timer = 1,     /* 10 us */
    };
}

int qp_rc_init(struct gqp *qp, uint32_t access)
{
    struct vmmbib_qp_attr a = {
        .qp_state = VMMBIB_QPS_INIT,
        .port_num = 1,
        .qp_access_flags = htole32(access),
    };

    return qp_modify(qp, VMMBIB_QP_STATE | VMMBIB_QP_PKEY_INDEX |
                     VMMBIB_QP_PORT | VMMBIB_QP_ACCESS_FLAGS, &a);
}

int qp_rc_rtr(struct gqp *qp, uint16_t dlid, uint32_t dest_qpn,
              const struct rc_opts *o)
{
    struct vmmbib_qp_attr a = {
        .qp_state = VMMBIB_QPS_RTR,
        .path_mtu = VMMBIB_MTU_4096,
        .dest_qp_num = htole32(dest_qpn),
        .rq_psn = 0,
        .max_dest_rd_atomic = 4,
        .min_rnr_timer = o->min_rnr_timer,
        .ah_attr = { .dlid = htole16(dlid), .port_num = 1 },
    };

    return qp_modify(qp, VMMBIB_QP_STATE | VMMBIB_QP_AV |
                     VMMBIB_QP_PATH_MTU | VMMBIB_QP_DEST_QPN |
                     VMMBIB_QP_RQ_PSN | VMMBIB_QP_MAX_DEST_RD_ATOMIC |
                     VMMBIB_QP_MIN_RNR_TIMER, &a);
}

int qp_rc_rts(struct gqp *qp, const struct rc_opts *o)
{
    struct vmmbib_qp_attr a = {
        .qp_state = VMMBIB_QPS_RTS,
        .sq_psn = 0,
        .timeout = o->timeout,
        .retry_cnt = o->retry_cnt,
        .rnr_retry = o->rnr_retry,
        .max_rd_atomic = 4,
    };

    return qp_modify(qp, VMMBIB_QP_STATE | VMMBIB_QP_SQ_PSN |
                     VMMBIB_QP_TIMEOUT | VMMBIB_QP_RETRY_CNT |
                     VMMBIB_QP_RNR_RETRY | VMMBIB_QP_MAX_QP_RD_ATOMIC, &a);
}

int rc_connect(struct gqp *a, struct gqp *b, const struct rc_opts *o)
{
    struct rc_opts def;
    int s;

    if (!o) {
        rc_opts_default(&def);
        o = &def;
    }
    if ((s = qp_rc_init(a, o->access)) ||
        (s = qp_rc_init(b, o->access)) ||
        (s = qp_rc_rtr(a, port_lid(b->c->dev), b->qpn, o)) ||
        (s = qp_rc_rtr(b, port_lid(a->c->dev), a->qpn, o)) ||
        (s = qp_rc_rts(a, o)) ||
        (s = qp_rc_rts(b, o))) {
        return s;
    }
    return VMMBIB_STATUS_OK;
}

int ud_to_rts(struct gqp *qp, uint32_t qkey)
{
    struct vmmbib_qp_attr a = {
        .qp_state = VMMBIB_QPS_INIT,
        .port_num = 1,
        .qkey = htole32(qkey),
    };
    int s;

    if ((s = qp_modify(qp, VMMBIB_QP_STATE | VMMBIB_QP_PKEY_INDEX |
                       VMMBIB_QP_PORT | VMMBIB_QP_QKEY, &a))) {
        return s;
    }
    memset(&a, 0, sizeof(a));
    a.qp_state = VMMBIB_QPS_RTR;
    if ((s = qp_modify(qp, VMMBIB_QP_STATE, &a))) {
        return s;
    }
    a.qp_state = VMMBIB_QPS_RTS;
    return qp_modify(qp, VMMBIB_QP_STATE | VMMBIB_QP_SQ_PSN, &a);
}

int ah_create(struct gctx *c, uint32_t pd, uint16_t dlid, uint32_t *ah)
{
    struct vmmbib_cmd_create_ah q = {
        .pd_handle = htole32(pd),
        .attr = { .dlid = htole16(dlid), .port_num = 1 },
    };
    struct vmmbib_resp_create_ah r;
    int status = cmd(c->dev, VMMBIB_CMD_CREATE_AH, c->handle, &q, sizeof(q),
                     &r, sizeof(r));

    *ah = status == VMMBIB_STATUS_OK ? le32toh(r.ah_handle) : 0;
    return status;
}

int ah_create_attr(struct gctx *c, uint32_t pd,
                   const struct vmmbib_ah_attr *attr, uint32_t *ah)
{
    struct vmmbib_cmd_create_ah q = {
        .pd_handle = htole32(pd),
        .attr = *attr,
    };
    struct vmmbib_resp_create_ah r;
    int status = cmd(c->dev, VMMBIB_CMD_CREATE_AH, c->handle, &q, sizeof(q),
                     &r, sizeof(r));

    *ah = status == VMMBIB_STATUS_OK ? le32toh(r.ah_handle) : 0;
    return status;
}

void port_gid(struct vmmbib_dev *dev, uint8_t gid[16])
{
    struct vmmbib_cmd_query_gid q = { .port_num = 1 };
    struct vmmbib_resp_query_gid r;

    HARNESS_ASSERT(cmd(dev, VMMBIB_CMD_QUERY_GID, 0, &q, sizeof(q), &r,
                       sizeof(r)) == VMMBIB_STATUS_OK);
    memcpy(gid, r.gid, 16);
}

int qp_query(struct gqp *qp, struct vmmbib_qp_attr *attr)
{
    struct vmmbib_cmd_query_qp q = { .qp_handle = htole32(qp->handle) };
    struct vmmbib_resp_query_qp r;
    int status = cmd(qp->c->dev, VMMBIB_CMD_QUERY_QP, qp->c->handle, &q,
                     sizeof(q), &r, sizeof(r));

    if (status == VMMBIB_STATUS_OK) {
        *attr = r.attr;
    }
    return status;
}

/* ---- data path ---- */

uint32_t db_word(struct gctx *c, unsigned int offset)
{
    return le32toh(__atomic_load_n((uint32_t *)(c->db + offset),
                                   __ATOMIC_ACQUIRE));
}

void ctx_doorbell(struct gctx *c, uint64_t db)
{
    uint32_t *producer = (uint32_t *)(c->db + VMMBIB_DB_PRODUCER);
    uint64_t *ring = (uint64_t *)(c->db + VMMBIB_DB_RING);
    uint32_t size = db_word(c, VMMBIB_DB_RING_SIZE);

    /* Step 1: the WQEs (already written) before the doorbell. */
    __atomic_thread_fence(__ATOMIC_RELEASE);
    if (db_word(c, VMMBIB_DB_MODE) == VMMBIB_DB_MODE_MMIO) {
        /* The trapped DOORBELL register: executed before the write returns. */
        vmmbib_dev_doorbell(c->dev, c->slot, db);
        return;
    }
    HARNESS_ASSERT(size == VMMBIB_DB_RING_ENTRIES);
    for (;;) {
        /* Step 2: a full ring goes through the DOORBELL register. */
        uint32_t p = db_word(c, VMMBIB_DB_PRODUCER);
        uint32_t k = db_word(c, VMMBIB_DB_CONSUMER);
        uint32_t expect = htole32(p);

        if (p - k >= size) {
            vmmbib_dev_doorbell(c->dev, c->slot, db);
            return;
        }
        /* Step 3: claim entry p, then store the doorbell in one go. */
        if (__atomic_compare_exchange_n(producer, &expect, htole32(p + 1),
                                        false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            __atomic_store_n(&ring[p % size], htole64(db), __ATOMIC_RELEASE);
            break;
        }
    }
    /* Step 4: full barrier, then kick an engine that went to sleep. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (db_word(c, VMMBIB_DB_ENGINE_STATE) == VMMBIB_ENGINE_ASLEEP) {
        vmmbib_dev_kick(c->dev);
    }
}

bool ctx_doorbells_drained(struct gctx *c)
{
    uint64_t end = mono_ms() + wait_timeout_ms();

    while (db_word(c, VMMBIB_DB_CONSUMER) != db_word(c, VMMBIB_DB_PRODUCER)) {
        if (mono_ms() >= end) {
            wait_timed_out();
            return false;
        }
        usleep(100);
    }
    return true;
}

uint32_t qp_post_send(struct gqp *qp, const struct vmmbib_send_wqe *w,
                      const struct vmmbib_sge *sges, unsigned int n,
                      const void *inl, uint32_t inl_len, bool ring)
{
    uint32_t stride = 1u << qp->sq_shift;
    uint32_t index = qp->sq_prod;
    uint8_t *slot = qp->sq + ((uint64_t)(index & (qp->sq_wr - 1)) <<
                              qp->sq_shift);
    struct vmmbib_send_wqe h = *w;

    memset(slot, 0, stride);
    if (inl) {
        HARNESS_ASSERT(sizeof(h) + inl_len <= stride);
        h.flags |= VMMBIB_WQE_INLINE;
        h.inline_len = htole32(inl_len);
        h.num_sge = 0;
        memcpy(slot + sizeof(h), inl, inl_len);
    } else {
        HARNESS_ASSERT(sizeof(h) + n * sizeof(*sges) <= stride);
        h.num_sge = n;
        if (n) {
            memcpy(slot + sizeof(h), sges, n * sizeof(*sges));
        }
    }
    memcpy(slot, &h, sizeof(h));
    qp->sq_prod++;
    if (ring) {
        qp_sq_doorbell(qp);
    }
    return index;
}

void qp_sq_doorbell(struct gqp *qp)
{
    ctx_doorbell(qp->c, VMMBIB_DB(VMMBIB_DB_KIND_SQ,
                                  VMMBIB_HANDLE_INDEX(qp->handle),
                                  qp->sq_prod));
}

uint32_t post_send(struct gqp *qp, uint64_t wr_id, uint8_t opcode,
                   const struct vmmbib_sge *sges, unsigned int n,
                   uint64_t raddr, uint32_t rkey)
{
    struct vmmbib_send_wqe w = {
        .wr_id = htole64(wr_id),
        .opcode = opcode,
        .flags = VMMBIB_WQE_SIGNALED,
    };

    w.rdma.remote_addr = htole64(raddr);
    w.rdma.rkey = htole32(rkey);
    return qp_post_send(qp, &w, sges, n, NULL, 0, true);
}

static void write_recv(uint8_t *slot, uint32_t stride, uint64_t wr_id,
                       const struct vmmbib_sge *sges, unsigned int n)
{
    struct vmmbib_recv_wqe h = {
        .wr_id = htole64(wr_id),
        .num_sge = htole32(n),
    };

    HARNESS_ASSERT(sizeof(h) + n * sizeof(*sges) <= stride);
    memset(slot, 0, stride);
    memcpy(slot, &h, sizeof(h));
    if (n) {
        memcpy(slot + sizeof(h), sges, n * sizeof(*sges));
    }
}

uint32_t qp_write_recv(struct gqp *qp, uint64_t wr_id,
                       const struct vmmbib_sge *sges, unsigned int n,
                       bool ring)
{
    uint32_t index = qp->rq_prod;

    HARNESS_ASSERT(!qp->srq);
    write_recv(qp->rq + ((uint64_t)(index & (qp->rq_wr - 1)) << qp->rq_shift),
               1u << qp->rq_shift, wr_id, sges, n);
    qp->rq_prod++;
    if (ring) {
        qp_rq_doorbell(qp);
    }
    return index;
}

void qp_rq_doorbell(struct gqp *qp)
{
    ctx_doorbell(qp->c, VMMBIB_DB(VMMBIB_DB_KIND_RQ,
                                  VMMBIB_HANDLE_INDEX(qp->handle),
                                  qp->rq_prod));
}

uint32_t qp_post_recv(struct gqp *qp, uint64_t wr_id,
                      const struct vmmbib_sge *sges, unsigned int n)
{
    return qp_write_recv(qp, wr_id, sges, n, true);
}

uint32_t srq_post_recv(struct gsrq *srq, uint64_t wr_id,
                       const struct vmmbib_sge *sges, unsigned int n)
{
    uint32_t index = srq->prod;

    write_recv(srq->ring + ((uint64_t)(index & (srq->max_wr - 1)) <<
                            srq->shift),
               1u << srq->shift, wr_id, sges, n);
    srq->prod++;
    ctx_doorbell(srq->c, VMMBIB_DB(VMMBIB_DB_KIND_SRQ,
                                   VMMBIB_HANDLE_INDEX(srq->handle),
                                   srq->prod));
    return index;
}

int rc_pair_create(struct rc_pair *p, struct gctx *ca, uint32_t pda,
                   struct gctx *cb, uint32_t pdb, const struct rc_opts *o)
{
    int s;

    memset(p, 0, sizeof(*p));
    if ((s = cq_create(ca, 16, &p->a_scq)) ||
        (s = cq_create(ca, 16, &p->a_rcq)) ||
        (s = cq_create(cb, 16, &p->b_scq)) ||
        (s = cq_create(cb, 16, &p->b_rcq)) ||
        (s = qp_create(ca, pda, &p->a_scq, &p->a_rcq, NULL, NULL, &p->a)) ||
        (s = qp_create(cb, pdb, &p->b_scq, &p->b_rcq, NULL, NULL, &p->b))) {
        return s;
    }
    return rc_connect(&p->a, &p->b, o);
}

bool cqe_is(const struct vmmbib_cqe *e, uint64_t wr_id, uint8_t opcode,
            uint8_t status)
{
    bool ok = le64toh(e->wr_id) == wr_id && e->opcode == opcode &&
              e->status == status;

    if (!ok) {
        cqe_dump("unexpected", e);
    }
    return ok;
}

void cqe_dump(const char *what, const struct vmmbib_cqe *e)
{
    printf("# %s CQE: wr_id %#llx opcode %u status %u byte_len %u qpn %u "
           "src_qp %u slid %u wqe_index %u flags %#x\n", what,
           (unsigned long long)le64toh(e->wr_id), e->opcode, e->status,
           le32toh(e->byte_len), le32toh(e->qpn), le32toh(e->src_qp),
           le16toh(e->slid), le32toh(e->wqe_index), e->wc_flags);
}

void pattern_fill(uint8_t *p, size_t len, unsigned int seed)
{
    for (size_t i = 0; i < len; i++) {
        p[i] = (uint8_t)(i * 31 + (i >> 8) * 7 + seed * 101 + 1);
    }
}

bool pattern_check(const uint8_t *p, size_t len, unsigned int seed)
{
    for (size_t i = 0; i < len; i++) {
        if (p[i] != (uint8_t)(i * 31 + (i >> 8) * 7 + seed * 101 + 1)) {
            return false;
        }
    }
    return true;
}

/* ---- one VM ---- */

unsigned int test_engine_threads(void)
{
    const char *s = getenv("VMMBIB_TEST_ENGINE_THREADS");

    return s ? strtoul(s, NULL, 10) : 0;
}

void vm_dev(struct vm *v, struct vmmbib_engine *eng,
            const struct vmmbib_dev_config *cfg)
{
    guest_init(&v->g, GUEST_RAM_SIZE);
    v->own_eng = NULL;
    if (!eng && test_engine_threads() > 1) {
        /* The device's engine of its own, with the threads asked for. */
        struct vmmbib_engine_config ecfg = {
            .idle_poll_us = cfg ? cfg->idle_poll_us : 0,
            .threads = test_engine_threads(),
        };
        char err[128] = "";

        eng = v->own_eng = vmmbib_engine_new(&ecfg, err, sizeof(err));
        HARNESS_ASSERT(eng);
    }
    v->dev = guest_dev_new(&v->g, eng, cfg);
}

bool vm_ctx(struct vm *v, uint64_t len, uint32_t access)
{
    if (ctx_create(&v->c, v->dev, &v->g) != OK ||
        pd_create(&v->c, &v->pd) != OK) {
        return false;
    }
    gbuf_alloc(&v->g, len, &v->buf);
    return mr_reg(&v->c, v->pd, v->buf.gpa, len, access, &v->mr) == OK;
}

bool vm_init_on(struct vm *v, struct vmmbib_engine *eng,
                const struct vmmbib_dev_config *cfg)
{
    vm_dev(v, eng, cfg);
    return vm_ctx(v, BUF_SIZE, ACCESS_ALL_RIGHTS);
}

bool vm_init_cfg(struct vm *v, const struct vmmbib_dev_config *cfg)
{
    return vm_init_on(v, NULL, cfg);
}

bool vm_init(struct vm *v)
{
    return vm_init_on(v, NULL, NULL);
}

void vm_fini(struct vm *v)
{
    vmmbib_dev_free(v->dev);
    vmmbib_engine_free(v->own_eng);
    guest_fini(&v->g);
}

struct vmmbib_sge buf_sge(struct vm *v, uint64_t off, uint32_t len)
{
    return sge(&v->mr, v->buf.gpa + off, len);
}

struct vmmbib_engine *engine_new(void)
{
    struct vmmbib_engine_config cfg = {
        .idle_poll_us = 50, .threads = test_engine_threads(),
    };
    char err[128] = "";
    struct vmmbib_engine *eng = vmmbib_engine_new(&cfg, err, sizeof(err));

    if (!eng) {
        printf("# vmmbib_engine_new: %s\n", err);
    }
    return eng;
}

int make_ud(struct gctx *c, uint32_t pd, struct gcq *scq, struct gcq *rcq,
            struct gqp *qp, uint32_t qkey)
{
    struct qp_opts o;
    int s;

    qp_opts_default(&o, VMMBIB_QPT_UD);
    if ((s = cq_create(c, 16, scq)) || (s = cq_create(c, 16, rcq)) ||
        (s = qp_create(c, pd, scq, rcq, NULL, &o, qp))) {
        return s;
    }
    return ud_to_rts(qp, qkey);
}

uint32_t ud_send(struct gqp *qp, uint64_t wr_id, uint32_t ah, uint32_t qpn,
                 uint32_t qkey, const struct vmmbib_sge *s, bool ring)
{
    struct vmmbib_send_wqe w = {
        .wr_id = htole64(wr_id),
        .opcode = VMMBIB_WR_SEND,
        .flags = VMMBIB_WQE_SIGNALED,
    };

    w.ud.ah_handle = htole32(ah);
    w.ud.remote_qpn = htole32(qpn);
    w.ud.remote_qkey = htole32(qkey);
    return qp_post_send(qp, &w, s, 1, NULL, 0, ring);
}
