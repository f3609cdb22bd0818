/*
 * The verbs backend's device and control path (docs/design-verbs.md): the
 * host device, one host object per guest PD, MR, CQ and QP, and the
 * completion thread that turns host completions and async events into
 * guest CQEs and events.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backend.h"

static void *completion_thread(void *opaque);

/*
 * A host verb failed: the guest gets a status, which cannot say why.
 * With VMMBIB_VERBS_DEBUG set, stderr gets the host's reason.
 */
static int host_failed(const char *verb, int status)
{
    static int debug = -1;

    if (debug < 0) {
        debug = getenv("VMMBIB_VERBS_DEBUG") != NULL;
    }
    if (debug) {
        fprintf(stderr, "vmmbib verbs: %s failed: %s\n", verb,
                strerror(errno));
    }
    return status;
}

static struct ibv_context *open_named(const char *name, char *err,
                                      size_t err_len)
{
    struct ibv_device **list;
    struct ibv_context *ctx = NULL;
    char names[256] = "";
    int n, i;

    list = ibv_get_device_list(&n);
    if (!list) {
        /* ENOSYS: no RDMA support in this kernel at all. */
        snprintf(err, err_len, "backend=verbs: this host has no RDMA device "
                 "(%s); add one (rdma link add rxe0 type rxe netdev eth0) or "
                 "use backend=soft", strerror(errno));
        return NULL;
    }
    for (i = 0; i < n; i++) {
        const char *dn = ibv_get_device_name(list[i]);

        if (!name[0] || !strcmp(name, dn)) {
            ctx = ibv_open_device(list[i]);
            if (!ctx) {
                snprintf(err, err_len, "verbs-device=%s: cannot open it: %s",
                         dn, strerror(errno));
            }
            break;
        }
        snprintf(names + strlen(names), sizeof(names) - strlen(names),
                 "%s%s", i ? " " : "", dn);
    }
    if (i == n) {
        if (n == 0) {
            snprintf(err, err_len, "backend=verbs: this host has no RDMA "
                     "device; add one (rdma link add rxe0 type rxe netdev "
                     "eth0) or use backend=soft");
        } else {
            snprintf(err, err_len, "verbs-device=%s: no such RDMA device; "
                     "ibv_devices lists: %s", name, names);
        }
    }
    ibv_free_device_list(list);
    return ctx;
}

static bool query_port(struct vmmbib_verbs *v, const char *name, char *err,
                       size_t err_len)
{
    if (ibv_query_device(v->ctx, &v->dev_attr) ||
        v->port < 1 || v->port > v->dev_attr.phys_port_cnt ||
        ibv_query_port(v->ctx, v->port, &v->port_attr)) {
        snprintf(err, err_len, "verbs-port=%u: %s has no such port (it has "
                 "%u)", v->port, name, v->dev_attr.phys_port_cnt);
        return false;
    }
    if (v->port_attr.state != IBV_PORT_ACTIVE) {
        snprintf(err, err_len, "verbs-port=%u of %s is not active (%s): "
                 "bring its link up first", v->port, name,
                 ibv_port_state_str(v->port_attr.state));
        return false;
    }
    if (v->gid_index >= (uint32_t)v->port_attr.gid_tbl_len ||
        ibv_query_gid(v->ctx, v->port, v->gid_index, &v->gid) ||
        (v->port_attr.link_layer == IBV_LINK_LAYER_ETHERNET &&
         !v->gid.global.interface_id && !v->gid.global.subnet_prefix)) {
        snprintf(err, err_len, "verbs-gid-index=%u: port %u of %s has no "
                 "such GID; see /sys/class/infiniband/%s/ports/%u/gids",
                 v->gid_index, v->port, name, name, v->port);
        return false;
    }
    return true;
}

/*
 * The device's limits are the configured ones where the host device has
 * as much, else the host's (ibv_query_device): QUERY_DEVICE reports them
 * and the command handlers enforce them, so what the guest is told is
 * what the host device can do.
 */
static void clamp_limits(struct vmmbib_limits *l,
                         const struct ibv_device_attr *h)
{
#define CLAMP(field, host)                                  \
    do {                                                    \
        int64_t hv = (int64_t)(host);                       \
        if (hv < (int64_t)l->field) {                       \
            l->field = hv < 0 ? 0 : (uint32_t)hv;           \
        }                                                   \
    } while (0)
    CLAMP(max_pd, h->max_pd);
    CLAMP(max_mr, h->max_mr);
    CLAMP(max_cq, h->max_cq);
    CLAMP(max_cqe, h->max_cqe);
    CLAMP(max_qp, h->max_qp);
    CLAMP(max_qp_wr, h->max_qp_wr);
    CLAMP(max_send_sge, h->max_sge);
    CLAMP(max_recv_sge, h->max_sge);
    CLAMP(max_srq, h->max_srq);
    CLAMP(max_srq_wr, h->max_srq_wr);
    CLAMP(max_srq_sge, h->max_srq_sge);
    CLAMP(max_ah, h->max_ah);
    CLAMP(max_qp_rd_atom, h->max_qp_rd_atom);
    CLAMP(max_qp_rd_atom, h->max_qp_init_rd_atom);
    CLAMP(max_mr_pages, h->max_mr_size >> VMMBIB_PAGE_SHIFT);
#undef CLAMP
}

static bool alloc_tables(struct vmmbib_verbs *v, const struct vmmbib_limits *l)
{
    v->pds = calloc((size_t)l->max_pd + 1, sizeof(*v->pds));
    v->mrs = calloc((size_t)l->max_mr + 1, sizeof(*v->mrs));
    v->cqs = calloc((size_t)l->max_cq + 1, sizeof(*v->cqs));
    v->qps = calloc((size_t)l->max_qp + 1, sizeof(*v->qps));
    v->srqs = calloc((size_t)l->max_srq + 1, sizeof(*v->srqs));
    v->ahs = calloc((size_t)l->max_ah + 1, sizeof(*v->ahs));
    return v->pds && v->mrs && v->cqs && v->qps && v->srqs && v->ahs;
}

static void free_state(struct vmmbib_verbs *v)
{
    if (v->channel) {
        ibv_destroy_comp_channel(v->channel);
    }
    if (v->ctx) {
        ibv_close_device(v->ctx);
    }
    if (v->stop_pipe[0] >= 0) {
        close(v->stop_pipe[0]);
        close(v->stop_pipe[1]);
    }
    free(v->pds);
    free(v->mrs);
    free(v->cqs);
    free(v->qps);
    free(v->srqs);
    free(v->ahs);
    free(v);
}

static bool set_nonblock(int fd)
{
    int flags = fcntl(fd, F_GETFL);

    return flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

bool vmmbib_verbs_open(struct vmmbib_dev *dev, char *err, size_t err_len)
{
    struct vmmbib_verbs *v = calloc(1, sizeof(*v));
    const char *name;
    int ret;

    if (!v) {
        snprintf(err, err_len, "out of memory");
        return false;
    }
    v->stop_pipe[0] = v->stop_pipe[1] = -1;
    v->port = dev->cfg.verbs_port ? dev->cfg.verbs_port : 1;
    v->gid_index = dev->cfg.verbs_gid_index;
    if (dev->cfg.verbs_port > 255) {
        snprintf(err, err_len, "verbs-port=%u is out of range: use 1 to 255",
                 dev->cfg.verbs_port);
        free_state(v);
        return false;
    }
    v->ctx = open_named(dev->cfg.verbs_device, err, err_len);
    if (!v->ctx) {
        free_state(v);
        return false;
    }
    name = ibv_get_device_name(v->ctx->device);
    if (!query_port(v, name, err, err_len)) {
        free_state(v);
        return false;
    }
    v->channel = ibv_create_comp_channel(v->ctx);
    if (!v->channel || !alloc_tables(v, &dev->cfg.limits) ||
        pipe(v->stop_pipe) || !set_nonblock(v->channel->fd) ||
        !set_nonblock(v->ctx->async_fd)) {
        snprintf(err, err_len, "verbs-device=%s: cannot set up completions: "
                 "%s", name, strerror(errno));
        free_state(v);
        return false;
    }
    /* After the tables: they stay as large as the guest's handle tables. */
    clamp_limits(&dev->cfg.limits, &v->dev_attr);
    dev->verbs = v;
    ret = pthread_create(&v->thread, NULL, completion_thread, dev);
    if (ret) {
        snprintf(err, err_len, "cannot start the verbs completion thread: %s",
                 strerror(ret));
        dev->verbs = NULL;
        free_state(v);
        return false;
    }
    v->thread_running = true;
    return true;
}

void vmmbib_verbs_close(struct vmmbib_dev *dev)
{
    struct vmmbib_verbs *v = dev->verbs;
    char stop = 1;

    if (!v) {
        return;
    }
    if (v->thread_running &&
        write(v->stop_pipe[1], &stop, 1) == 1) {
        pthread_join(v->thread, NULL);
    }
    dev->verbs = NULL;
    free_state(v);
}

/* ---- protection domains and memory regions ---- */

int vmmbib_verbs_pd_create(struct vmmbib_dev *dev, struct vmmbib_pd *pd)
{
    struct vmmbib_verbs *v = dev->verbs;
    uint32_t i = VMMBIB_HANDLE_INDEX(pd->handle);

    v->pds[i] = ibv_alloc_pd(v->ctx);
    return v->pds[i] ? VMMBIB_STATUS_OK :
           host_failed("ibv_alloc_pd", VMMBIB_STATUS_DEVICE_ERROR);
}

void vmmbib_verbs_pd_destroy(struct vmmbib_dev *dev, struct vmmbib_pd *pd)
{
    struct vmmbib_verbs *v = dev->verbs;
    uint32_t i = VMMBIB_HANDLE_INDEX(pd->handle);

    if (v->pds[i]) {
        ibv_dealloc_pd(v->pds[i]);
        v->pds[i] = NULL;
    }
}

/* The end of the run of pages from @i that lie back to back on the host. */
static uint32_t run_end(const struct vmmbib_mr *mr, uint32_t i)
{
    uint32_t j = i + 1;

    while (j < mr->pages.npages &&
           mr->pages.hva[j] == mr->pages.hva[j - 1] + VMMBIB_PAGE_SIZE) {
        j++;
    }
    return j;
}

/*
 * Map [src, src + len) of guest RAM again at @dst.  mremap with an old size
 * of 0 makes a second mapping of the same pages of a shared mapping (a
 * memfd, as QEMU's memory-backend-memfd and vmmbibd have), so no fd is
 * needed; private RAM fails with EINVAL.
 */
static bool map_again(uint8_t *src, size_t len, uint8_t *dst)
{
    return mremap(src, 0, len, MREMAP_MAYMOVE | MREMAP_FIXED, dst) !=
           MAP_FAILED;
}

/*
 * The host HCA registers a range of host virtual memory, and the MR's
 * guest pages are anywhere in guest RAM: map each run of them, in MR
 * order, into one reserved host range (docs/design-verbs.md, "the memfd
 * alias").  Each run costs one host mapping, out of the device's budget.
 */
static int alias_map(struct vmmbib_verbs *v, const struct vmmbib_mr *mr,
                     struct vverbs_mr *m)
{
    uint32_t n = mr->pages.npages, runs = 0, maps = 0, i, j, k;
    size_t len = (size_t)n << VMMBIB_PAGE_SHIFT;
    uint8_t *base;

    for (i = 0; i < n; i = run_end(mr, i)) {
        runs++;
    }
    if (runs > VVERBS_MAX_ALIAS_MAPS - v->alias_maps) {
        return host_failed("the alias (too many page runs for this device)",
                           VMMBIB_STATUS_NO_RESOURCES);
    }
    base = mmap(NULL, len, PROT_NONE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) {
        return host_failed("mmap (the alias's range)",
                           VMMBIB_STATUS_NO_RESOURCES);
    }
    for (i = 0; i < n; i = j) {
        j = run_end(mr, i);
        if (map_again(mr->pages.hva[i], (size_t)(j - i) << VMMBIB_PAGE_SHIFT,
                      base + ((size_t)i << VMMBIB_PAGE_SHIFT))) {
            maps++;
            continue;
        }
        /* Host-contiguous but two host mappings (two RAM regions): by page. */
        for (k = i; k < j; k++) {
            if (!map_again(mr->pages.hva[k], VMMBIB_PAGE_SIZE,
                           base + ((size_t)k << VMMBIB_PAGE_SHIFT))) {
                int status = errno == EINVAL ? VMMBIB_STATUS_NOT_SUPPORTED :
                             VMMBIB_STATUS_NO_RESOURCES;

                host_failed(errno == EINVAL ?
                            "mremap (guest RAM must be shared memory, e.g. "
                            "memory-backend-memfd, for MRs of scattered "
                            "pages)" : "mremap (the alias)", 0);
                munmap(base, len);
                return status;
            }
            maps++;
        }
    }
    m->alias = base;
    m->alias_len = len;
    m->alias_maps = maps;
    v->alias_maps += maps;
    return VMMBIB_STATUS_OK;
}

static void mr_state_free(struct vmmbib_verbs *v, struct vverbs_mr *m)
{
    uint32_t i;

    if (m->mr) {
        ibv_dereg_mr(m->mr);
    }
    for (i = 0; i < m->nregions; i++) {
        ibv_dereg_mr(m->regions[i].mr);
    }
    if (m->alias) {
        munmap(m->alias, m->alias_len);
        v->alias_maps -= m->alias_maps;
    }
    free(m->regions);
    free(m);
}

/*
 * A DMA MR (kernel consumers' local DMA lkey): addresses are guest
 * physical, so every RAM region is registered at its guest physical
 * address on the MR's PD, and the relay picks the region's lkey.  All of
 * RAM is pinned: it counts against max-pinned-mb once for the device,
 * however many DMA MRs (one per guest kernel PD) there are.  Remote
 * rights are refused: the host rkey would open all of guest RAM.
 */
static int dma_mr_reg(struct vmmbib_dev *dev, struct ibv_pd *pd,
                      const struct vmmbib_mr *mr, struct vverbs_mr *m)
{
    struct vmmbib_verbs *v = dev->verbs;
    uint64_t gpa[VVERBS_MAX_DMA_REGIONS], size[VVERBS_MAX_DMA_REGIONS];
    uint64_t pages = 0;
    uint32_t n = 0, i;

    if (mr->access & ~VMMBIB_ACCESS_LOCAL_WRITE) {
        return VMMBIB_STATUS_NOT_SUPPORTED;
    }
    if (!dev->ops.guest_ram) {
        return host_failed("a DMA MR (the VMM does not list guest RAM)",
                           VMMBIB_STATUS_NOT_SUPPORTED);
    }
    while (n < VVERBS_MAX_DMA_REGIONS &&
           dev->ops.guest_ram(dev->opaque, n, &gpa[n], &size[n])) {
        pages += size[n] >> VMMBIB_PAGE_SHIFT;
        n++;
    }
    if (!n) {
        return VMMBIB_STATUS_NO_RESOURCES;
    }
    if (!v->dma_mrs &&
        dev->pinned_pages + pages > dev->cfg.limits.max_pinned_pages) {
        return VMMBIB_STATUS_NO_RESOURCES;
    }
    m->regions = calloc(n, sizeof(*m->regions));
    if (!m->regions) {
        return VMMBIB_STATUS_NO_RESOURCES;
    }
    for (i = 0; i < n; i++) {
        void *hva = dev->ops.guest_ptr(dev->opaque, gpa[i], size[i]);
        struct ibv_mr *hmr = hva ?
            ibv_reg_mr_iova(pd, hva, size[i], gpa[i], mr->access) : NULL;

        if (!hmr) {
            return host_failed("ibv_reg_mr_iova (a RAM region for a DMA MR)",
                               errno == ENOMEM ? VMMBIB_STATUS_NO_RESOURCES :
                               VMMBIB_STATUS_DEVICE_ERROR);
        }
        m->regions[m->nregions++] = (struct vverbs_dma_region) {
            .gpa = gpa[i], .size = size[i], .mr = hmr,
        };
    }
    if (!v->dma_mrs++) {
        v->dma_pinned = pages;
        dev->pinned_pages += pages;
    }
    return VMMBIB_STATUS_OK;
}

int vmmbib_verbs_mr_reg(struct vmmbib_cmd_ctx *c, struct vmmbib_mr *mr)
{
    struct vmmbib_verbs *v = c->dev->verbs;
    struct vmmbib_resp_mr *r = c->resp;
    uint32_t i = VMMBIB_HANDLE_INDEX(mr->handle);
    struct ibv_pd *pd = v->pds[VMMBIB_HANDLE_INDEX(mr->pd->handle)];
    struct vverbs_mr *m = calloc(1, sizeof(*m));
    uint8_t *base;
    int status;

    if (!m) {
        return VMMBIB_STATUS_NO_RESOURCES;
    }
    if (mr->dma) {
        status = dma_mr_reg(c->dev, pd, mr, m);
        if (status != VMMBIB_STATUS_OK) {
            mr_state_free(v, m);
            return status;
        }
        v->mrs[i] = m;
        return VMMBIB_STATUS_OK;
    }
    if (run_end(mr, 0) == mr->pages.npages) {
        base = mr->pages.hva[0];
    } else {
        status = alias_map(v, mr, m);
        if (status != VMMBIB_STATUS_OK) {
            mr_state_free(v, m);
            return status;
        }
        base = m->alias;
    }
    /*
     * At the guest's iova: remote and local addresses are the guest's, and
     * the HCA translates them.  VMMBIB_ACCESS_* are IBV_ACCESS_* bits.
     */
    m->mr = ibv_reg_mr_iova(pd, base + mr->first_page_offset, mr->length,
                            mr->iova, mr->access);
    if (!m->mr) {
        status = host_failed("ibv_reg_mr_iova", errno == ENOMEM ?
                             VMMBIB_STATUS_NO_RESOURCES :
                             VMMBIB_STATUS_DEVICE_ERROR);
        mr_state_free(v, m);
        return status;
    }
    v->mrs[i] = m;
    r->rkey = htole32(m->mr->rkey);
    return VMMBIB_STATUS_OK;
}

void vmmbib_verbs_mr_dereg(struct vmmbib_dev *dev, struct vmmbib_mr *mr)
{
    struct vmmbib_verbs *v = dev->verbs;
    uint32_t i = VMMBIB_HANDLE_INDEX(mr->handle);
    struct vverbs_mr *m = v->mrs[i];

    if (!m) {
        return;
    }
    if (m->regions && !--v->dma_mrs) {
        dev->pinned_pages -= v->dma_pinned;
        v->dma_pinned = 0;
    }
    mr_state_free(v, m);
    v->mrs[i] = NULL;
}

bool vverbs_lkey(struct vmmbib_dev *dev, const struct vmmbib_mr *mr,
                 uint64_t addr, uint64_t len, uint32_t *lkey)
{
    const struct vverbs_mr *m =
        dev->verbs->mrs[VMMBIB_HANDLE_INDEX(mr->handle)];
    uint32_t i;

    if (!m) {
        return false;
    }
    if (m->mr) {
        *lkey = m->mr->lkey;
        return true;
    }
    for (i = 0; i < m->nregions; i++) {
        const struct vverbs_dma_region *r = &m->regions[i];

        if (addr >= r->gpa && addr - r->gpa <= r->size &&
            len <= r->size - (addr - r->gpa)) {
            *lkey = r->mr->lkey;
            return true;
        }
    }
    return false;
}

/* ---- completion queues ---- */

int vmmbib_verbs_cq_create(struct vmmbib_dev *dev, struct vmmbib_cq *cq)
{
    struct vmmbib_verbs *v = dev->verbs;
    uint32_t i = VMMBIB_HANDLE_INDEX(cq->handle);
    struct ibv_cq *hcq;

    /* The context names the guest CQ by handle: a stale event finds none. */
    hcq = ibv_create_cq(v->ctx, cq->cqe, (void *)(uintptr_t)cq->handle,
                        v->channel, 0);
    if (!hcq) {
        return host_failed("ibv_create_cq", VMMBIB_STATUS_DEVICE_ERROR);
    }
    if (ibv_req_notify_cq(hcq, 0)) {
        ibv_destroy_cq(hcq);
        return host_failed("ibv_req_notify_cq", VMMBIB_STATUS_DEVICE_ERROR);
    }
    v->cqs[i] = hcq;
    return VMMBIB_STATUS_OK;
}

int vmmbib_verbs_cq_resize(struct vmmbib_dev *dev, struct vmmbib_cq *cq,
                           uint32_t cqe)
{
    struct ibv_cq *hcq = dev->verbs->cqs[VMMBIB_HANDLE_INDEX(cq->handle)];

    return ibv_resize_cq(hcq, cqe) ?
           host_failed("ibv_resize_cq", VMMBIB_STATUS_DEVICE_ERROR) :
           VMMBIB_STATUS_OK;
}

void vmmbib_verbs_cq_destroy(struct vmmbib_dev *dev, struct vmmbib_cq *cq)
{
    struct vmmbib_verbs *v = dev->verbs;
    uint32_t i = VMMBIB_HANDLE_INDEX(cq->handle);

    if (v->cqs[i]) {
        /* Waits for the completion thread to ack this CQ's events. */
        ibv_destroy_cq(v->cqs[i]);
        v->cqs[i] = NULL;
    }
}

/* ---- queue pairs ---- */

static void qp_state_free(struct vverbs_qp *vq)
{
    free(vq->sq);
    free(vq->rq);
    free(vq);
}

int vmmbib_verbs_qp_create(struct vmmbib_dev *dev, struct vmmbib_qp *qp)
{
    struct vmmbib_verbs *v = dev->verbs;
    uint32_t i = VMMBIB_HANDLE_INDEX(qp->handle);
    struct vverbs_qp *vq;
    struct ibv_qp_init_attr init = {
        .qp_context = (void *)(uintptr_t)qp->handle,
        .send_cq = v->cqs[VMMBIB_HANDLE_INDEX(qp->send_cq->handle)],
        .recv_cq = v->cqs[VMMBIB_HANDLE_INDEX(qp->recv_cq->handle)],
        .cap = {
            .max_send_wr = qp->sq.entries,
            .max_recv_wr = qp->rq.entries,
            .max_send_sge = vmmbib_le32(qp->caps.max_send_sge),
            .max_recv_sge = vmmbib_le32(qp->caps.max_recv_sge),
            .max_inline_data = vmmbib_le32(qp->caps.max_inline_data),
        },
        .qp_type = qp->type == VMMBIB_QPT_UD ? IBV_QPT_UD : IBV_QPT_RC,
    };
    struct vverbs_srq *vs = qp->srq ?
        v->srqs[VMMBIB_HANDLE_INDEX(qp->srq->handle)] : NULL;

    /*
     * The host's QP1 belongs to its kernel: the guest's GSI QP stays with
     * the engine (its SA, and MADs among the engine's devices), no host QP.
     */
    if (qp->type == VMMBIB_QPT_GSI) {
        return VMMBIB_STATUS_OK;
    }
    if (!init.cap.max_send_sge) {
        init.cap.max_send_sge = 1;
    }
    if (vs) {
        init.srq = vs->srq;
    }
    vq = calloc(1, sizeof(*vq));
    if (!vq) {
        return VMMBIB_STATUS_NO_RESOURCES;
    }
    vq->index = i;
    vq->sq = calloc(qp->sq.entries, sizeof(*vq->sq));
    vq->rq = calloc(qp->rq.entries ? qp->rq.entries : 1, sizeof(*vq->rq));
    if (!vq->sq || !vq->rq) {
        qp_state_free(vq);
        return VMMBIB_STATUS_NO_RESOURCES;
    }
    vq->qp = ibv_create_qp(v->pds[VMMBIB_HANDLE_INDEX(qp->pd->handle)],
                           &init);
    if (!vq->qp) {
        qp_state_free(vq);
        return host_failed("ibv_create_qp", errno == ENOMEM ||
                           errno == EINVAL ? VMMBIB_STATUS_NO_RESOURCES :
                           VMMBIB_STATUS_DEVICE_ERROR);
    }
    vq->host_state = IBV_QPS_RESET;
    v->qps[i] = vq;
    if (vs) {
        vq->next_on_srq = vs->qps;
        vs->qps = vq;
    }
    /* Peers on the fabric address the host QP: its number is the QPN. */
    qp->qpn = vq->qp->qp_num;
    return VMMBIB_STATUS_OK;
}

void vmmbib_verbs_qp_destroy(struct vmmbib_dev *dev, struct vmmbib_qp *qp)
{
    struct vmmbib_verbs *v = dev->verbs;
    uint32_t i = VMMBIB_HANDLE_INDEX(qp->handle);
    struct vverbs_qp *vq = v->qps[i];

    if (!vq) {
        return;
    }
    /* Its completions still in the host CQs name this index: drop them. */
    v->qps[i] = NULL;
    if (qp->srq) {
        struct vverbs_srq *vs = v->srqs[VMMBIB_HANDLE_INDEX(qp->srq->handle)];
        struct vverbs_qp **pp = vs ? &vs->qps : NULL;

        while (pp && *pp && *pp != vq) {
            pp = &(*pp)->next_on_srq;
        }
        if (pp && *pp) {
            *pp = vq->next_on_srq;
        }
    }
    ibv_destroy_qp(vq->qp);
    qp_state_free(vq);
}

/*
 * The host address of the port a guest address vector names.  A dlid, or
 * a dgid of a device of this engine, names that device: its host port's
 * LID (InfiniBand) or GID (RoCE).  Any other dgid is a host GID on the
 * fabric and passes through.
 */
static int resolve_av(struct vmmbib_dev *dev, const struct vmmbib_ah_attr *av,
                      struct ibv_ah_attr *out)
{
    struct vmmbib_verbs *v = dev->verbs;
    bool global = av->ah_flags & VMMBIB_AH_GRH;
    struct vmmbib_dev *peer = global ?
        vmmbib_engine_find_gid(dev->engine, av->dgid) :
        vmmbib_engine_find_lid(dev->engine, vmmbib_le16(av->dlid));
    bool ib = v->port_attr.link_layer != IBV_LINK_LAYER_ETHERNET;

    memset(out, 0, sizeof(*out));
    out->port_num = v->port;
    out->sl = av->sl;
    out->grh.sgid_index = v->gid_index;
    out->grh.hop_limit = av->hop_limit ? av->hop_limit : 64;
    out->grh.traffic_class = av->traffic_class;
    out->grh.flow_label = vmmbib_le32(av->flow_label);
    if (peer) {
        if (!peer->verbs) {
            return VMMBIB_STATUS_INVALID;   /* a soft device: no fabric */
        }
        if (ib && peer->verbs->port_attr.link_layer ==
            IBV_LINK_LAYER_INFINIBAND) {
            out->dlid = peer->verbs->port_attr.lid;
            return VMMBIB_STATUS_OK;
        }
        out->is_global = 1;
        out->grh.dgid = peer->verbs->gid;
        return VMMBIB_STATUS_OK;
    }
    if (!global) {
        if (!ib) {
            return VMMBIB_STATUS_INVALID;   /* RoCE routes by GID only */
        }
        out->dlid = vmmbib_le16(av->dlid);
        return VMMBIB_STATUS_OK;
    }
    out->is_global = 1;
    memcpy(out->grh.dgid.raw, av->dgid, sizeof(out->grh.dgid.raw));
    if (ib) {
        out->dlid = vmmbib_le16(av->dlid);
    }
    return VMMBIB_STATUS_OK;
}

/* The modify attributes the host takes; mask bits are IB verbs' own. */
static int host_attrs(struct vmmbib_dev *dev, uint32_t mask,
                      const struct vmmbib_qp_attr *a, struct ibv_qp_attr *h,
                      int *hmask)
{
    struct vmmbib_verbs *v = dev->verbs;
    int status;

    memset(h, 0, sizeof(*h));
    /* Not relayed: the host QP's state is ours to know, SQD is guest-side. */
    *hmask = mask & ~(VMMBIB_QP_CUR_STATE | VMMBIB_QP_EN_SQD_ASYNC_NOTIFY |
                      VMMBIB_QP_ALT_PATH | VMMBIB_QP_PATH_MIG_STATE);
    h->qp_state = a->qp_state;
    h->qkey = vmmbib_le32(a->qkey);
    h->rq_psn = vmmbib_le32(a->rq_psn);
    h->sq_psn = vmmbib_le32(a->sq_psn);
    h->dest_qp_num = vmmbib_le32(a->dest_qp_num);
    h->qp_access_flags = vmmbib_le32(a->qp_access_flags);
    h->pkey_index = vmmbib_le16(a->pkey_index);
    h->port_num = v->port;
    /* A path MTU the host port cannot carry is lowered to what it can. */
    h->path_mtu = a->path_mtu > v->port_attr.active_mtu ?
                  v->port_attr.active_mtu : a->path_mtu;
    h->max_rd_atomic = a->max_rd_atomic;
    h->max_dest_rd_atomic = a->max_dest_rd_atomic;
    if (h->max_rd_atomic > v->dev_attr.max_qp_rd_atom) {
        h->max_rd_atomic = v->dev_attr.max_qp_rd_atom;
    }
    if (h->max_dest_rd_atomic > v->dev_attr.max_qp_init_rd_atom) {
        h->max_dest_rd_atomic = v->dev_attr.max_qp_init_rd_atom;
    }
    h->min_rnr_timer = a->min_rnr_timer;
    h->timeout = a->timeout;
    h->retry_cnt = a->retry_cnt;
    h->rnr_retry = a->rnr_retry;
    if (mask & VMMBIB_QP_AV) {
        status = resolve_av(dev, &a->ah_attr, &h->ah_attr);
        if (status != VMMBIB_STATUS_OK) {
            return status;
        }
    }
    return VMMBIB_STATUS_OK;
}

int vmmbib_verbs_qp_modify(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                           uint32_t mask, const struct vmmbib_qp_attr *a)
{
    struct vverbs_qp *vq = dev->verbs->qps[VMMBIB_HANDLE_INDEX(qp->handle)];
    uint8_t next = mask & VMMBIB_QP_STATE ? a->qp_state : qp->state;
    struct ibv_qp_attr h;
    int hmask, status;

    if (!vq) {
        return VMMBIB_STATUS_OK;    /* GSI: the engine's */
    }
    /*
     * A Q_Key with the high bit set is a controlled one (IBA 10.2.5), which
     * only privileged consumers hold: the relay's process may be one, the
     * guest is not.
     */
    if ((mask & VMMBIB_QP_QKEY) && (vmmbib_le32(a->qkey) & 0x80000000u)) {
        return VMMBIB_STATUS_INVALID;
    }
    /* ERR goes through vmmbib_verbs_qp_to_error; SQD stays guest-side. */
    if (next == VMMBIB_QPS_ERR || next == VMMBIB_QPS_SQD ||
        (qp->state == VMMBIB_QPS_SQD && next != VMMBIB_QPS_RESET)) {
        return VMMBIB_STATUS_OK;
    }
    status = host_attrs(dev, mask, a, &h, &hmask);
    if (status != VMMBIB_STATUS_OK) {
        return status;
    }
    if (next == VMMBIB_QPS_RESET) {
        /* What the host completed before the reset reaches the guest first. */
        vverbs_qp_quiesce(dev, qp, true);
        hmask = IBV_QP_STATE;
    }
    if (ibv_modify_qp(vq->qp, &h, hmask)) {
        return host_failed("ibv_modify_qp", VMMBIB_STATUS_DEVICE_ERROR);
    }
    if (mask & VMMBIB_QP_STATE) {
        vq->host_state = h.qp_state;
    }
    if (next == VMMBIB_QPS_RESET) {
        vq->sq_pending = vq->rq_pending = 0;
        vq->erroring = false;
    } else {
        /* Receives the guest posted in RESET can go now. */
        vmmbib_verbs_post_recvs(dev, qp);
    }
    return VMMBIB_STATUS_OK;
}

void vmmbib_verbs_qp_to_error(struct vmmbib_dev *dev, struct vmmbib_qp *qp)
{
    struct vverbs_qp *vq = dev->verbs->qps[VMMBIB_HANDLE_INDEX(qp->handle)];
    struct ibv_qp_attr h = { .qp_state = IBV_QPS_ERR };

    if (!vq || vq->erroring) {
        return;
    }
    vq->erroring = true;
    if (!ibv_modify_qp(vq->qp, &h, IBV_QP_STATE)) {
        vq->host_state = IBV_QPS_ERR;
    }
    /* The host flushes what it holds; those completions come first. */
    vverbs_qp_quiesce(dev, qp, true);
}

/* ---- shared receive queues and address handles ---- */

int vmmbib_verbs_srq_create(struct vmmbib_dev *dev, struct vmmbib_srq *srq)
{
    struct vmmbib_verbs *v = dev->verbs;
    uint32_t i = VMMBIB_HANDLE_INDEX(srq->handle);
    struct ibv_srq_init_attr init = {
        .srq_context = (void *)(uintptr_t)srq->handle,
        .attr = {
            .max_wr = srq->rq.entries,
            .max_sge = srq->max_sge,
            .srq_limit = srq->limit,
        },
    };
    struct vverbs_srq *vs = calloc(1, sizeof(*vs));

    if (vs) {
        vs->rq = calloc(srq->rq.entries, sizeof(*vs->rq));
    }
    if (!vs || !vs->rq) {
        free(vs);
        return VMMBIB_STATUS_NO_RESOURCES;
    }
    vs->srq = ibv_create_srq(v->pds[VMMBIB_HANDLE_INDEX(srq->pd->handle)],
                             &init);
    if (!vs->srq) {
        free(vs->rq);
        free(vs);
        return host_failed("ibv_create_srq", errno == ENOMEM ||
                           errno == EINVAL ? VMMBIB_STATUS_NO_RESOURCES :
                           VMMBIB_STATUS_DEVICE_ERROR);
    }
    v->srqs[i] = vs;
    return VMMBIB_STATUS_OK;
}

int vmmbib_verbs_srq_modify(struct vmmbib_dev *dev, struct vmmbib_srq *srq,
                            uint32_t limit)
{
    struct vverbs_srq *vs = dev->verbs->srqs[VMMBIB_HANDLE_INDEX(srq->handle)];
    struct ibv_srq_attr a = { .srq_limit = limit };

    return ibv_modify_srq(vs->srq, &a, IBV_SRQ_LIMIT) ?
           host_failed("ibv_modify_srq", VMMBIB_STATUS_DEVICE_ERROR) :
           VMMBIB_STATUS_OK;
}

void vmmbib_verbs_srq_destroy(struct vmmbib_dev *dev, struct vmmbib_srq *srq)
{
    struct vmmbib_verbs *v = dev->verbs;
    uint32_t i = VMMBIB_HANDLE_INDEX(srq->handle);
    struct vverbs_srq *vs = v->srqs[i];

    if (!vs) {
        return;
    }
    v->srqs[i] = NULL;
    ibv_destroy_srq(vs->srq);
    free(vs->rq);
    free(vs);
}

/*
 * The AH names a port the way a QP's path does (resolve_av): a device of
 * this engine by its LID or GID becomes its host port's address.  The host
 * AH is on the guest PD's host PD, so a UD WQE can only use it with QPs of
 * that PD, and the guest names it by its own handle only.
 */
int vmmbib_verbs_ah_create(struct vmmbib_dev *dev, struct vmmbib_ah *ah)
{
    struct vmmbib_verbs *v = dev->verbs;
    struct ibv_ah_attr h;
    struct ibv_ah *hah;
    int status;

    status = resolve_av(dev, &ah->attr, &h);
    if (status != VMMBIB_STATUS_OK) {
        return status;
    }
    hah = ibv_create_ah(v->pds[VMMBIB_HANDLE_INDEX(ah->pd->handle)], &h);
    if (!hah) {
        /* The host cannot route there (no neighbour, no such GID). */
        return host_failed("ibv_create_ah", VMMBIB_STATUS_INVALID);
    }
    v->ahs[VMMBIB_HANDLE_INDEX(ah->handle)] = hah;
    return VMMBIB_STATUS_OK;
}

void vmmbib_verbs_ah_destroy(struct vmmbib_dev *dev, struct vmmbib_ah *ah)
{
    struct vmmbib_verbs *v = dev->verbs;
    uint32_t i = VMMBIB_HANDLE_INDEX(ah->handle);

    if (v->ahs[i]) {
        ibv_destroy_ah(v->ahs[i]);
        v->ahs[i] = NULL;
    }
}

/* ---- the completion thread ---- */

static void cq_event(struct vmmbib_dev *dev)
{
    struct vmmbib_verbs *v = dev->verbs;
    struct ibv_cq *hcq;
    void *cq_ctx;
    uint32_t handle, i;

    if (ibv_get_cq_event(v->channel, &hcq, &cq_ctx)) {
        return;     /* nothing there after all (the fd is non-blocking) */
    }
    /* Acked before the lock: a CQ destroy waits for it, holding the lock. */
    ibv_ack_cq_events(hcq, 1);
    handle = (uint32_t)(uintptr_t)cq_ctx;
    i = VMMBIB_HANDLE_INDEX(handle);
    vmmbib_engine_enter(dev->engine);
    if (vmmbib_table_lookup(&dev->cqs, handle) && v->cqs[i] == hcq) {
        /* Re-arm, then poll: a completion between the two is not lost. */
        ibv_req_notify_cq(hcq, 0);
        vverbs_cq_poll(dev, i);
    }
    vmmbib_engine_leave(dev->engine);
}

static uint16_t guest_event(enum ibv_event_type type)
{
    switch (type) {
    case IBV_EVENT_QP_FATAL:
        return VMMBIB_EVENT_QP_FATAL;
    case IBV_EVENT_QP_REQ_ERR:
        return VMMBIB_EVENT_QP_REQ_ERR;
    case IBV_EVENT_QP_ACCESS_ERR:
        return VMMBIB_EVENT_QP_ACCESS_ERR;
    case IBV_EVENT_COMM_EST:
        return VMMBIB_EVENT_COMM_EST;
    default:
        return 0;
    }
}

static void async_event(struct vmmbib_dev *dev)
{
    struct vmmbib_verbs *v = dev->verbs;
    struct ibv_async_event ev;
    struct ibv_qp *hqp = NULL;
    uint32_t handle = 0;
    uint16_t type;
    struct vmmbib_qp *qp;

    if (ibv_get_async_event(v->ctx, &ev)) {
        return;
    }
    type = guest_event(ev.event_type);
    if (type) {
        hqp = ev.element.qp;
        handle = (uint32_t)(uintptr_t)hqp->qp_context;
    }
    if (ev.event_type == IBV_EVENT_SRQ_LIMIT_REACHED) {
        struct ibv_srq *hsrq = ev.element.srq;
        struct vmmbib_srq *srq;

        handle = (uint32_t)(uintptr_t)hsrq->srq_context;
        ibv_ack_async_event(&ev);
        vmmbib_engine_enter(dev->engine);
        srq = vmmbib_table_lookup(&dev->srqs, handle);
        /* Disarmed by the event, on the host as in the guest. */
        if (srq && v->srqs[VMMBIB_HANDLE_INDEX(handle)] &&
            v->srqs[VMMBIB_HANDLE_INDEX(handle)]->srq == hsrq && srq->limit) {
            srq->limit = 0;
            vmmbib_dev_event(dev, VMMBIB_EVENT_SRQ_LIMIT_REACHED, srq->handle,
                             srq->uctx);
        }
        vmmbib_engine_leave(dev->engine);
        return;
    }
    ibv_ack_async_event(&ev);
    if (ev.event_type == IBV_EVENT_DEVICE_FATAL) {
        vmmbib_engine_enter(dev->engine);
        vmmbib_dev_event(dev, VMMBIB_EVENT_DEVICE_FATAL, 0, NULL);
        vmmbib_engine_leave(dev->engine);
        return;
    }
    if (!type) {
        return;
    }
    vmmbib_engine_enter(dev->engine);
    qp = vmmbib_table_lookup(&dev->qps, handle);
    if (qp && v->qps[VMMBIB_HANDLE_INDEX(handle)] &&
        v->qps[VMMBIB_HANDLE_INDEX(handle)]->qp == hqp) {
        if (type == VMMBIB_EVENT_COMM_EST) {
            if (!qp->comm_est) {
                qp->comm_est = true;
                vmmbib_dev_event(dev, type, qp->handle, qp->uctx);
            }
        } else {
            vmmbib_qp_to_error(dev, qp, type);
        }
    }
    vmmbib_engine_leave(dev->engine);
}

static void *completion_thread(void *opaque)
{
    struct vmmbib_dev *dev = opaque;
    struct vmmbib_verbs *v = dev->verbs;
    struct pollfd fds[3] = {
        { .fd = v->stop_pipe[0], .events = POLLIN },
        { .fd = v->channel->fd, .events = POLLIN },
        { .fd = v->ctx->async_fd, .events = POLLIN },
    };

    for (;;) {
        if (poll(fds, 3, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        if (fds[0].revents) {
            break;
        }
        if (fds[1].revents & POLLIN) {
            cq_event(dev);
        }
        if (fds[2].revents & POLLIN) {
            async_event(dev);
        }
    }
    return NULL;
}
