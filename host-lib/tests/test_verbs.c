/*
 * The verbs backend (docs/design-verbs.md) against a real host RDMA
 * device: synthetic guests whose devices relay to it.  Runs where a
 * device exists (tests/guest/verbs-backend.sh boots a VM with rdma_rxe);
 * elsewhere only the configuration errors are checked.
 *
 *   test-host-lib-verbs            TAP
 *   test-host-lib-verbs --bench N  round-trip latency of N 64-byte SEND
 *                                  ping-pongs, relayed and on the device
 *                                  directly
 *
 * VMMBIB_VERBS_DEVICE names the host device (default: the first one),
 * VMMBIB_VERBS_GID_INDEX its GID for RoCE (default 0).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <endian.h>
#include <infiniband/verbs.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "guest.h"
#include "tap.h"

static const char *device_name(void)
{
    const char *name = getenv("VMMBIB_VERBS_DEVICE");

    return name ? name : "";
}

/* VMMBIB_VERBS_GID_INDEX: the host GID RoCE traffic uses (default 0). */
static uint32_t gid_index(void)
{
    const char *index = getenv("VMMBIB_VERBS_GID_INDEX");

    return index ? (uint32_t)atoi(index) : 0;
}

static void verbs_config(struct vmmbib_dev_config *cfg)
{
    guest_dev_config(cfg);
    cfg->backend = VMMBIB_BACKEND_VERBS;
    snprintf(cfg->verbs_device, sizeof(cfg->verbs_device), "%s",
             device_name());
    cfg->verbs_gid_index = gid_index();
}

static int host_devices(void)
{
    struct ibv_device **list;
    int n = 0;

    list = ibv_get_device_list(&n);
    if (list) {
        ibv_free_device_list(list);
    }
    return n;
}

static void test_config_errors(void)
{
    struct vmmbib_dev_config cfg;
    struct guest g;
    struct vmmbib_dev *dev;
    char err[256] = "";

    guest_init(&g, 1 << 20);
    verbs_config(&cfg);
    snprintf(cfg.verbs_device, sizeof(cfg.verbs_device), "no-such-hca");
    dev = vmmbib_dev_new(&cfg, NULL, &guest_host_ops, &g, err, sizeof(err));
    TAP_CHECK(!dev && (strstr(err, "no-such-hca") ||
                       strstr(err, "no RDMA device")),
              "verbs-device=no-such-hca is refused, the message says why");
    printf("# %s\n", err);
    verbs_config(&cfg);
    cfg.backend = 7;
    dev = vmmbib_dev_new(&cfg, NULL, &guest_host_ops, &g, err, sizeof(err));
    TAP_CHECK(!dev && strstr(err, "backend 7 is unknown"),
              "an unknown backend is refused");
    if (host_devices()) {
        verbs_config(&cfg);
        cfg.verbs_port = 9;
        dev = vmmbib_dev_new(&cfg, NULL, &guest_host_ops, &g, err,
                             sizeof(err));
        TAP_CHECK(!dev && strstr(err, "verbs-port=9"),
                  "a port the device lacks is refused");
        printf("# %s\n", err);
    }
    guest_fini(&g);
}

/* Two VMs on one engine, both relaying to the host device. */
struct two_vms {
    struct vmmbib_engine *eng;
    struct vm x, y;
};

static bool two_vms_init(struct two_vms *t)
{
    struct vmmbib_dev_config cfg;

    verbs_config(&cfg);
    t->eng = engine_new();
    if (!t->eng) {
        return false;
    }
    return vm_init_on(&t->x, t->eng, &cfg) && vm_init_on(&t->y, t->eng, &cfg);
}

/*
 * RC pairs with generous timers: the HCA (rxe in a TCG guest) retries a
 * lost or unacknowledged packet itself, and a receive may reach the host
 * after the SEND that wants it (the engine serves contexts in turn).
 */
static int pair(struct rc_pair *p, struct vm *a, struct vm *b)
{
    struct rc_opts o;

    rc_opts_default(&o);
    o.timeout = 14;         /* 67 ms */
    o.retry_cnt = 7;
    o.rnr_retry = 7;        /* forever */
    return rc_pair_create(p, &a->c, a->pd, &b->c, b->pd, &o);
}

static void two_vms_fini(struct two_vms *t)
{
    vm_fini(&t->x);
    vm_fini(&t->y);
    vmmbib_engine_free(t->eng);
}

static void test_not_supported(struct two_vms *t)
{
    struct gmr mr;

    TAP_CHECK(mr_dma(&t->x.c, t->x.pd, VMMBIB_ACCESS_LOCAL_WRITE |
                     VMMBIB_ACCESS_REMOTE_READ, &mr) ==
              VMMBIB_STATUS_NOT_SUPPORTED,
              "verbs: a DMA MR with remote rights is NOT_SUPPORTED");
}

/* UD through host UD QPs and AHs, the GRH as the host HCA writes it. */
static void test_ud(struct two_vms *t)
{
    struct vm *x = &t->x, *y = &t->y;
    const uint32_t qkey = 0x11223344;
    struct gcq xs, xr, ys, yr;
    struct gqp xq, yq, cq;
    struct vmmbib_ah_attr av = { .port_num = 1, .hop_limit = 64,
                                 .ah_flags = VMMBIB_AH_GRH };
    struct vmmbib_qp_attr a = { .qp_state = VMMBIB_QPS_RTS };
    struct qp_opts o;
    struct vmmbib_cqe c;
    struct vmmbib_sge s;
    uint32_t ah, ah_lid, ah_gone, ah_none;

    TAP_CHECK(make_ud(&x->c, x->pd, &xs, &xr, &xq, qkey) == OK &&
              make_ud(&y->c, y->pd, &ys, &yr, &yq, qkey) == OK,
              "UD: a UD QP in RTS in each VM");
    port_gid(y->dev, av.dgid);
    TAP_CHECK(ah_create_attr(&x->c, x->pd, &av, &ah) == OK,
              "UD: an AH with a GRH to y's guest GID");

    /* The receive: the 40-byte GRH area, then the payload. */
    memset(y->buf.p + 20000, 0, 2000);
    s = buf_sge(y, 20000, 40 + 1000);
    qp_post_recv(&yq, 0x81, &s, 1);
    pattern_fill(x->buf.p + 3000, 1000, 41);
    s = buf_sge(x, 3000, 1000);
    ud_send(&xq, 0x82, ah, yq.qpn, qkey, &s, true);
    TAP_CHECK(cq_wait(&xs, &c, 1) == 1 &&
              cqe_is(&c, 0x82, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS),
              "UD: the SEND completes");
    TAP_CHECK(cq_wait(&yr, &c, 1) == 1 &&
              cqe_is(&c, 0x81, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(c.byte_len) == 40 + 1000 &&
              (c.wc_flags & VMMBIB_WC_F_GRH) &&
              le32toh(c.src_qp) == xq.qpn && le32toh(c.qpn) == yq.qpn,
              "UD: y's CQE: 40 + 1000 bytes, a GRH, x's QPN as src_qp");
    if (le32toh(c.byte_len) != 40 + 1000 || le32toh(c.src_qp) != xq.qpn) {
        cqe_dump("ud recv", &c);
    }
    TAP_CHECK(pattern_check(y->buf.p + 20040, 1000, 41) &&
              y->buf.p[21040] == 0,
              "UD: the payload follows the GRH, byte for byte");

    /* By LID only; a wrong Q_Key first, which y's QP drops. */
    s = buf_sge(y, 24000, 40 + 600);
    qp_post_recv(&yq, 0x83, &s, 1);
    TAP_CHECK(ah_create(&x->c, x->pd, port_lid(y->dev), &ah_lid) == OK,
              "UD: an AH by y's LID only (resolved to its host port)");
    pattern_fill(x->buf.p + 5000, 500, 42);
    pattern_fill(x->buf.p + 6000, 600, 43);
    s = buf_sge(x, 5000, 500);
    ud_send(&xq, 0x84, ah_lid, yq.qpn, qkey + 1, &s, true);
    s = buf_sge(x, 6000, 600);
    ud_send(&xq, 0x85, ah_lid, yq.qpn, qkey, &s, true);
    TAP_CHECK(cq_wait(&xs, &c, 1) == 1 &&
              cqe_is(&c, 0x84, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS) &&
              cq_wait(&xs, &c, 1) == 1 &&
              cqe_is(&c, 0x85, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS),
              "UD: both SENDs complete at x");
    TAP_CHECK(cq_wait(&yr, &c, 1) == 1 &&
              cqe_is(&c, 0x83, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(c.byte_len) == 40 + 600 &&
              pattern_check(y->buf.p + 24040, 600, 43),
              "UD: y took only the datagram with its Q_Key");

    /* The guest holds no controlled Q_Key. */
    qp_opts_default(&o, VMMBIB_QPT_UD);
    TAP_CHECK(qp_create(&x->c, x->pd, &xs, &xr, NULL, &o, &cq) == OK &&
              ud_to_rts(&cq, 0x80010000u) == VMMBIB_STATUS_INVALID &&
              destroy(&x->c, VMMBIB_CMD_DESTROY_QP, cq.handle) == OK,
              "UD: a controlled Q_Key (high bit) is INVALID");

    /* AHs that name nothing. */
    TAP_CHECK(ah_create(&x->c, x->pd, 0x7777, &ah_none) ==
              VMMBIB_STATUS_INVALID,
              "UD: an AH to a LID of no device (RoCE routes by GID) is "
              "INVALID");
    TAP_CHECK(ah_create(&x->c, x->pd, port_lid(y->dev), &ah_gone) == OK &&
              destroy(&x->c, VMMBIB_CMD_DESTROY_AH, ah_gone) == OK,
              "UD: an AH created and destroyed");
    s = buf_sge(x, 5000, 100);
    ud_send(&xq, 0x86, ah_gone, yq.qpn, qkey, &s, true);
    TAP_CHECK(cq_wait(&xs, &c, 1) == 1 &&
              cqe_is(&c, 0x86, VMMBIB_WC_SEND, VMMBIB_WC_LOC_QP_OP_ERR) &&
              qp_state(&xq) == VMMBIB_QPS_SQE,
              "UD: a destroyed AH in a WQE: LOC_QP_OP_ERR, the QP in SQE");
    s = buf_sge(y, 28000, 40 + 300);
    qp_post_recv(&yq, 0x87, &s, 1);
    pattern_fill(x->buf.p + 7000, 300, 44);
    s = buf_sge(x, 7000, 300);
    TAP_CHECK(qp_modify(&xq, VMMBIB_QP_STATE, &a) == OK,
              "UD: SQE -> RTS");
    ud_send(&xq, 0x88, ah, yq.qpn, qkey, &s, true);
    TAP_CHECK(cq_wait(&xs, &c, 1) == 1 &&
              cqe_is(&c, 0x88, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS) &&
              cq_wait(&yr, &c, 1) == 1 &&
              cqe_is(&c, 0x87, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              pattern_check(y->buf.p + 28040, 300, 44),
              "UD: back in RTS, the next datagram arrives");
    TAP_CHECK(destroy(&x->c, VMMBIB_CMD_DESTROY_QP, xq.handle) == OK &&
              destroy(&y->c, VMMBIB_CMD_DESTROY_QP, yq.handle) == OK &&
              destroy(&x->c, VMMBIB_CMD_DESTROY_AH, ah) == OK &&
              destroy(&x->c, VMMBIB_CMD_DESTROY_AH, ah_lid) == OK,
              "UD: QPs and AHs destroyed");
}

/* One SRQ behind two RC QPs of y; its limit event; a malformed WQE. */
static void test_srq(struct two_vms *t)
{
    struct vm *x = &t->x, *y = &t->y;
    struct gsrq srq, srq2;
    struct gcq ycq, xcq;
    struct gqp y1, y2, x1, x2;
    struct qp_opts o;
    struct rc_opts ro;
    struct vmmbib_cqe c;
    struct vmmbib_sge s;
    int i;

    qp_opts_default(&o, VMMBIB_QPT_RC);
    o.rq_wr = 0;
    o.recv_sge = 0;
    rc_opts_default(&ro);
    ro.timeout = 14;
    ro.retry_cnt = 7;
    ro.rnr_retry = 7;
    TAP_CHECK(srq_create(&y->c, y->pd, 16, 0, &srq) == OK &&
              cq_create(&y->c, 32, &ycq) == OK &&
              cq_create(&x->c, 32, &xcq) == OK &&
              qp_create(&y->c, y->pd, &ycq, &ycq, &srq, &o, &y1) == OK &&
              qp_create(&y->c, y->pd, &ycq, &ycq, &srq, &o, &y2) == OK &&
              qp_create(&x->c, x->pd, &xcq, &xcq, NULL, NULL, &x1) == OK &&
              qp_create(&x->c, x->pd, &xcq, &xcq, NULL, NULL, &x2) == OK &&
              rc_connect(&x1, &y1, &ro) == OK &&
              rc_connect(&x2, &y2, &ro) == OK,
              "SRQ: two RC QPs of y on one SRQ, connected to x");
    for (i = 0; i < 3; i++) {
        s = buf_sge(y, 36000 + 2000 * i, 1500);
        srq_post_recv(&srq, 0x91 + i, &s, 1);
    }
    TAP_CHECK(srq_set_limit(&srq, 2) == OK, "SRQ: limit 2 armed");
    pattern_fill(x->buf.p + 1000, 1000, 51);
    s = buf_sge(x, 1000, 1000);
    post_send(&x1, 0x94, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&ycq, &c, 1) == 1 &&
              cqe_is(&c, 0x91, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(c.qpn) == y1.qpn && le32toh(c.byte_len) == 1000 &&
              pattern_check(y->buf.p + 36000, 1000, 51),
              "SRQ: x1's SEND takes the first SRQ receive, at y1's QPN");
    pattern_fill(x->buf.p + 3000, 1200, 52);
    s = buf_sge(x, 3000, 1200);
    post_send(&x2, 0x95, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&ycq, &c, 1) == 1 &&
              cqe_is(&c, 0x92, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(c.qpn) == y2.qpn && le32toh(c.byte_len) == 1200 &&
              pattern_check(y->buf.p + 38000, 1200, 52),
              "SRQ: x2's SEND takes the second, at y2's QPN");
    TAP_CHECK(cq_wait(&xcq, &c, 1) == 1 && cq_wait(&xcq, &c, 1) == 1,
              "SRQ: both sends complete at x");
    TAP_CHECK(guest_wait_event(&y->g, VMMBIB_EVENT_SRQ_LIMIT_REACHED,
                               srq.handle, 1, wait_timeout_ms()),
              "SRQ: one receive left, below the limit: SRQ_LIMIT_REACHED");

    /* A receive with a key of nothing: the SRQ stops, SRQ_ERR. */
    TAP_CHECK(srq_create(&y->c, y->pd, 16, 0, &srq2) == OK,
              "SRQ: a second SRQ");
    s = buf_sge(y, 0, 100);
    s.lkey = htole32(le32toh(s.lkey) ^ 0x3300);
    srq_post_recv(&srq2, 0x96, &s, 1);
    TAP_CHECK(guest_wait_event(&y->g, VMMBIB_EVENT_SRQ_ERR, srq2.handle, 1,
                               wait_timeout_ms()),
              "SRQ: a receive with a bad lkey: SRQ_ERR");
    TAP_CHECK(destroy(&y->c, VMMBIB_CMD_DESTROY_QP, y1.handle) == OK &&
              destroy(&y->c, VMMBIB_CMD_DESTROY_QP, y2.handle) == OK &&
              destroy(&y->c, VMMBIB_CMD_DESTROY_SRQ, srq.handle) == OK &&
              destroy(&y->c, VMMBIB_CMD_DESTROY_SRQ, srq2.handle) == OK,
              "SRQ: QPs and SRQs destroyed");
}

/* GSI stays in the engine: a MAD from x's QP1 to y's, a host's in between. */
static void test_gsi(struct two_vms *t)
{
    struct vm *x = &t->x, *y = &t->y;
    struct gcq xc, yc;
    struct gqp xg, yg;
    struct qp_opts o;
    struct vmmbib_qp_attr a = { .qp_state = VMMBIB_QPS_INIT,
                                .qkey = htole32(VMMBIB_GSI_QKEY) };
    struct vmmbib_cqe c;
    struct vmmbib_sge s;
    uint32_t ah;
    bool ok = true;
    struct gqp *g[2] = { &xg, &yg };

    qp_opts_default(&o, VMMBIB_QPT_GSI);
    ok = cq_create(&x->c, 16, &xc) == OK && cq_create(&y->c, 16, &yc) == OK &&
         qp_create(&x->c, x->pd, &xc, &xc, NULL, &o, &xg) == OK &&
         qp_create(&y->c, y->pd, &yc, &yc, NULL, &o, &yg) == OK;
    for (int i = 0; ok && i < 2; i++) {
        a.qp_state = VMMBIB_QPS_INIT;
        ok = qp_modify(g[i], VMMBIB_QP_STATE | VMMBIB_QP_PKEY_INDEX |
                       VMMBIB_QP_QKEY, &a) == OK;
        a.qp_state = VMMBIB_QPS_RTR;
        ok = ok && qp_modify(g[i], VMMBIB_QP_STATE, &a) == OK;
        a.qp_state = VMMBIB_QPS_RTS;
        ok = ok && qp_modify(g[i], VMMBIB_QP_STATE | VMMBIB_QP_SQ_PSN,
                             &a) == OK;
    }
    TAP_CHECK(ok && xg.qpn == VMMBIB_GSI_QPN && yg.qpn == VMMBIB_GSI_QPN,
              "GSI: a GSI QP (QPN 1) on each verbs device, in RTS");
    memset(x->buf.p + 8192, 0, 256);
    x->buf.p[8192] = 1;         /* base version */
    x->buf.p[8193] = 0x07;      /* CM class */
    pattern_fill(x->buf.p + 8192 + 24, 256 - 24, 61);
    s = buf_sge(y, 12288, 40 + 256);
    qp_post_recv(&yg, 0xa1, &s, 1);
    s = buf_sge(x, 8192, 256);
    TAP_CHECK(ah_create(&x->c, x->pd, port_lid(y->dev), &ah) == OK,
              "GSI: an AH to y");
    ud_send(&xg, 0xa2, ah, VMMBIB_GSI_QPN, VMMBIB_GSI_QKEY, &s, true);
    TAP_CHECK(cq_wait(&yc, &c, 1) == 1 &&
              cqe_is(&c, 0xa1, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(c.byte_len) == 40 + 256 &&
              le32toh(c.src_qp) == VMMBIB_GSI_QPN &&
              memcmp(y->buf.p + 12288 + 40, x->buf.p + 8192, 256) == 0,
              "GSI: y's QP1 receives x's MAD, byte for byte");
    TAP_CHECK(destroy(&x->c, VMMBIB_CMD_DESTROY_QP, xg.handle) == OK &&
              destroy(&y->c, VMMBIB_CMD_DESTROY_QP, yg.handle) == OK &&
              destroy(&x->c, VMMBIB_CMD_DESTROY_AH, ah) == OK,
              "GSI: destroyed");
}

static void test_send(struct two_vms *t, struct rc_pair *p)
{
    struct vm *x = &t->x, *y = &t->y;
    struct vmmbib_cqe c[2];
    struct vmmbib_sge s;

    /* x -> y, 3000 bytes that cross a page in both memories. */
    pattern_fill(x->buf.p + 3000, 3000, 2);
    s = buf_sge(y, 4000, 8000);
    qp_post_recv(&p->b, 0x11, &s, 1);
    s = buf_sge(x, 3000, 3000);
    post_send(&p->a, 0x12, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&p->a_scq, &c[0], 1) == 1 &&
              cqe_is(&c[0], 0x12, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS) &&
              le32toh(c[0].qpn) == p->a.qpn &&
              le32toh(c[0].wqe_index) == 0,
              "SEND: the send CQE is SEND, SUCCESS, its wr_id, QPN, index 0");
    TAP_CHECK(cq_wait(&p->b_rcq, &c[1], 1) == 1 &&
              cqe_is(&c[1], 0x11, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(c[1].byte_len) == 3000 &&
              le32toh(c[1].src_qp) == p->a.qpn &&
              le16toh(c[1].slid) == port_lid(x->dev),
              "SEND: the recv CQE has byte_len, the sender's QPN and LID");
    if (le32toh(c[1].src_qp) != p->a.qpn ||
        le16toh(c[1].slid) != port_lid(x->dev)) {
        cqe_dump("recv", &c[1]);
        printf("# expected src_qp %u slid %u\n", p->a.qpn, port_lid(x->dev));
    }
    TAP_CHECK(pattern_check(y->buf.p + 4000, 3000, 2) &&
              y->buf.p[7000] == 0 && y->buf.p[3999] == 0,
              "SEND: the bytes land in y's memory only where posted");

    /* SEND_WITH_IMM, y -> x, inline data. */
    {
        struct vmmbib_send_wqe w = {
            .wr_id = htole64(0x14),
            .opcode = VMMBIB_WR_SEND_WITH_IMM,
            .flags = VMMBIB_WQE_SIGNALED | VMMBIB_WQE_INLINE,
            .imm_data = htobe32(0xcafe0001),
        };
        uint8_t inl[100];

        pattern_fill(inl, sizeof(inl), 4);
        s = buf_sge(x, 20000, 1000);
        qp_post_recv(&p->a, 0x13, &s, 1);
        qp_post_send(&p->b, &w, NULL, 0, inl, sizeof(inl), true);
        TAP_CHECK(cq_wait(&p->b_scq, &c[0], 1) == 1 &&
                  cqe_is(&c[0], 0x14, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS),
                  "SEND_WITH_IMM (inline): the send completes");
        TAP_CHECK(cq_wait(&p->a_rcq, &c[1], 1) == 1 &&
                  cqe_is(&c[1], 0x13, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
                  le32toh(c[1].byte_len) == sizeof(inl) &&
                  (c[1].wc_flags & VMMBIB_WC_F_WITH_IMM) &&
                  be32toh(c[1].imm_data) == 0xcafe0001,
                  "SEND_WITH_IMM: the recv CQE carries the immediate");
        TAP_CHECK(pattern_check(x->buf.p + 20000, sizeof(inl), 4),
                  "SEND_WITH_IMM (inline): the inline bytes arrive");
    }
}

static void test_rdma(struct two_vms *t, struct rc_pair *p)
{
    struct vm *x = &t->x, *y = &t->y;
    struct vmmbib_cqe c;
    struct vmmbib_sge s;
    struct vmmbib_send_wqe w;
    uint64_t v64;

    /* RDMA WRITE: 6000 bytes into y; no receive is consumed. */
    pattern_fill(x->buf.p + 10000, 6000, 5);
    s = buf_sge(x, 10000, 6000);
    post_send(&p->a, 0x21, VMMBIB_WR_RDMA_WRITE, &s, 1,
              y->buf.gpa + 24000, y->mr.rkey);
    TAP_CHECK(cq_wait(&p->a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x21, VMMBIB_WC_RDMA_WRITE, VMMBIB_WC_SUCCESS) &&
              le32toh(c.byte_len) == 6000,
              "RDMA WRITE completes with opcode RDMA_WRITE and byte_len");
    TAP_CHECK(pattern_check(y->buf.p + 24000, 6000, 5) &&
              y->buf.p[30000] == 0 && y->buf.p[23999] == 0,
              "RDMA WRITE: the bytes are in y's memory, nothing around");
    TAP_CHECK(cq_poll(&p->b_rcq, &c, 1) == 0,
              "RDMA WRITE: no receive completion at y");

    /* RDMA WRITE_WITH_IMM: data, then a receive completion at y. */
    pattern_fill(x->buf.p + 16000, 500, 6);
    s = buf_sge(y, 60000, 16);
    qp_post_recv(&p->b, 0x22, &s, 1);
    memset(&w, 0, sizeof(w));
    w.wr_id = htole64(0x23);
    w.opcode = VMMBIB_WR_RDMA_WRITE_WITH_IMM;
    w.flags = VMMBIB_WQE_SIGNALED;
    w.imm_data = htobe32(0x1234);
    w.rdma.remote_addr = htole64(y->buf.gpa + 32000);
    w.rdma.rkey = htole32(y->mr.rkey);
    s = buf_sge(x, 16000, 500);
    qp_post_send(&p->a, &w, &s, 1, NULL, 0, true);
    TAP_CHECK(cq_wait(&p->a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x23, VMMBIB_WC_RDMA_WRITE, VMMBIB_WC_SUCCESS),
              "RDMA WRITE_WITH_IMM: the send completes");
    TAP_CHECK(cq_wait(&p->b_rcq, &c, 1) == 1 &&
              cqe_is(&c, 0x22, VMMBIB_WC_RECV_RDMA_WITH_IMM,
                     VMMBIB_WC_SUCCESS) &&
              le32toh(c.byte_len) == 500 &&
              be32toh(c.imm_data) == 0x1234,
              "RDMA WRITE_WITH_IMM: y's CQE is RECV_RDMA_WITH_IMM, imm, len");
    TAP_CHECK(pattern_check(y->buf.p + 32000, 500, 6),
              "RDMA WRITE_WITH_IMM: the bytes are in y's memory");

    /* RDMA READ: 5000 bytes from y. */
    pattern_fill(y->buf.p + 40000, 5000, 7);
    s = buf_sge(x, 8192, 5000);
    post_send(&p->a, 0x24, VMMBIB_WR_RDMA_READ, &s, 1, y->buf.gpa + 40000,
              y->mr.rkey);
    TAP_CHECK(cq_wait(&p->a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x24, VMMBIB_WC_RDMA_READ, VMMBIB_WC_SUCCESS) &&
              le32toh(c.byte_len) == 5000,
              "RDMA READ completes with opcode RDMA_READ and byte_len");
    TAP_CHECK(pattern_check(x->buf.p + 8192, 5000, 7),
              "RDMA READ: the local buffer holds the remote bytes");

    /* Atomics on an 8-byte word of y. */
    v64 = htole64(0x1111111111111111ull);
    memcpy(y->buf.p + 48000, &v64, 8);
    memset(&w, 0, sizeof(w));
    w.wr_id = htole64(0x25);
    w.opcode = VMMBIB_WR_ATOMIC_CMP_AND_SWP;
    w.flags = VMMBIB_WQE_SIGNALED;
    w.atomic.remote_addr = htole64(y->buf.gpa + 48000);
    w.atomic.rkey = htole32(y->mr.rkey);
    w.atomic.compare_add = htole64(0x1111111111111111ull);
    w.atomic.swap = htole64(0x2222222222222222ull);
    s = buf_sge(x, 50000, 8);
    qp_post_send(&p->a, &w, &s, 1, NULL, 0, true);
    TAP_CHECK(cq_wait(&p->a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x25, VMMBIB_WC_COMP_SWAP, VMMBIB_WC_SUCCESS),
              "CMP_AND_SWP completes with opcode COMP_SWAP");
    if (!cqe_is(&c, 0x25, VMMBIB_WC_COMP_SWAP, VMMBIB_WC_SUCCESS)) {
        cqe_dump("cmp_swp", &c);
    }
    memcpy(&v64, x->buf.p + 50000, 8);
    TAP_CHECK(le64toh(v64) == 0x1111111111111111ull,
              "CMP_AND_SWP returns the old value");
    memcpy(&v64, y->buf.p + 48000, 8);
    TAP_CHECK(le64toh(v64) == 0x2222222222222222ull,
              "CMP_AND_SWP with a matching compare swaps");

    memset(&w, 0, sizeof(w));
    w.wr_id = htole64(0x26);
    w.opcode = VMMBIB_WR_ATOMIC_FETCH_AND_ADD;
    w.flags = VMMBIB_WQE_SIGNALED;
    w.atomic.remote_addr = htole64(y->buf.gpa + 48000);
    w.atomic.rkey = htole32(y->mr.rkey);
    w.atomic.compare_add = htole64(0x10);
    s = buf_sge(x, 50016, 8);
    qp_post_send(&p->a, &w, &s, 1, NULL, 0, true);
    TAP_CHECK(cq_wait(&p->a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x26, VMMBIB_WC_FETCH_ADD, VMMBIB_WC_SUCCESS),
              "FETCH_AND_ADD completes with opcode FETCH_ADD");
    memcpy(&v64, x->buf.p + 50016, 8);
    TAP_CHECK(le64toh(v64) == 0x2222222222222222ull,
              "FETCH_AND_ADD returns the old value");
    memcpy(&v64, y->buf.p + 48000, 8);
    TAP_CHECK(le64toh(v64) == 0x2222222222222232ull, "FETCH_AND_ADD adds");
}

/* A bad lkey: the relay completes it in error, the QP goes to ERR. */
static void test_bad_lkey(struct two_vms *t)
{
    struct rc_pair p;
    struct vmmbib_cqe c[2];
    struct vmmbib_sge s;
    struct vmmbib_dev_stats st0, st1;

    TAP_CHECK(pair(&p, &t->x, &t->y) == OK, "bad lkey: a fresh RC pair");
    vmmbib_dev_get_stats(t->x.dev, &st0);
    s = buf_sge(&t->x, 0, 100);
    s.lkey = htole32(le32toh(s.lkey) ^ 0x5500);
    post_send(&p.a, 0x31, VMMBIB_WR_SEND, &s, 1, 0, 0);
    s = buf_sge(&t->x, 0, 100);
    post_send(&p.a, 0x32, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&p.a_scq, c, 2) == 2 &&
              cqe_is(&c[0], 0x31, VMMBIB_WC_SEND, VMMBIB_WC_LOC_PROT_ERR) &&
              cqe_is(&c[1], 0x32, VMMBIB_WC_SEND, VMMBIB_WC_WR_FLUSH_ERR),
              "bad lkey: LOC_PROT_ERR, then the next WQE is flushed");
    TAP_CHECK(qp_state(&p.a) == VMMBIB_QPS_ERR, "bad lkey: the QP is in ERR");
    vmmbib_dev_get_stats(t->x.dev, &st1);
    TAP_CHECK(st1.error_completions - st0.error_completions == 2,
              "bad lkey: two error completions counted");
}

/* A bad rkey: the host HCA's responder refuses, the requester sees it. */
static void test_bad_rkey(struct two_vms *t)
{
    struct rc_pair p;
    struct vmmbib_cqe c;
    struct vmmbib_sge s;
    struct gmr ro;

    TAP_CHECK(pair(&p, &t->x, &t->y) == OK, "bad rkey: a fresh RC pair");
    /* An MR of y that allows remote reads only. */
    TAP_CHECK(mr_reg(&t->y.c, t->y.pd, t->y.buf.gpa, 4096,
                     VMMBIB_ACCESS_REMOTE_READ, &ro) == OK,
              "bad rkey: y registers a read-only MR");
    memset(t->y.buf.p, 0x5a, 64);
    pattern_fill(t->x.buf.p, 64, 9);
    s = buf_sge(&t->x, 0, 64);
    post_send(&p.a, 0x41, VMMBIB_WR_RDMA_WRITE, &s, 1, t->y.buf.gpa,
              ro.rkey);
    TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x41, VMMBIB_WC_RDMA_WRITE,
                     VMMBIB_WC_REM_ACCESS_ERR),
              "RDMA WRITE to a read-only MR: REM_ACCESS_ERR from the HCA");
    if (!cqe_is(&c, 0x41, VMMBIB_WC_RDMA_WRITE, VMMBIB_WC_REM_ACCESS_ERR)) {
        cqe_dump("bad rkey", &c);
    }
    TAP_CHECK(t->y.buf.p[0] == 0x5a && t->y.buf.p[63] == 0x5a,
              "RDMA WRITE to a read-only MR: y's memory is unchanged");
    TAP_CHECK(qp_state(&p.a) == VMMBIB_QPS_ERR,
              "RDMA WRITE to a read-only MR: the requester QP is in ERR");
    TAP_CHECK(destroy(&t->y.c, VMMBIB_CMD_DEREG_MR, ro.handle) == OK,
              "bad rkey: the MR is deregistered");
}

static void test_loopback(struct two_vms *t)
{
    struct rc_pair p;
    struct vmmbib_cqe c;
    struct vmmbib_sge s;

    TAP_CHECK(pair(&p, &t->x, &t->x) == OK, "loopback: two QPs of one VM");
    pattern_fill(t->x.buf.p + 1000, 777, 11);
    s = buf_sge(&t->x, 40000, 1000);
    qp_post_recv(&p.b, 0x51, &s, 1);
    s = buf_sge(&t->x, 1000, 777);
    post_send(&p.a, 0x52, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&p.b_rcq, &c, 1) == 1 &&
              cqe_is(&c, 0x51, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(c.byte_len) == 777 &&
              pattern_check(t->x.buf.p + 40000, 777, 11),
              "loopback: the SEND arrives in the same VM");
}

/* ---- MRs of scattered guest pages (the alias) and DMA MRs ---- */

/* An MR whose page i is guest page gpa[i]: not host-contiguous. */
struct smr {
    struct vm *v;
    struct gmr mr;
    uint64_t gpa[16];
    uint32_t n;
};

static int smr_reg(struct vm *v, const uint8_t *order, uint32_t n,
                   uint64_t iova, uint64_t len, struct smr *s)
{
    uint64_t block = guest_alloc(&v->g, 16 * VMMBIB_PAGE_SIZE);
    struct vmmbib_page_list pl;
    uint32_t i;

    s->v = v;
    s->n = n;
    for (i = 0; i < n; i++) {
        s->gpa[i] = block + (uint64_t)order[i] * VMMBIB_PAGE_SIZE;
    }
    guest_page_list(&v->g, s->gpa, n, 1, &pl);
    return mr_reg_pages(&v->c, v->pd, iova, len, &pl, ACCESS_ALL_RIGHTS,
                        &s->mr);
}

/* The host byte behind iova @a of the MR. */
static uint8_t *smr_at(struct smr *s, uint64_t a)
{
    uint64_t off = a - (s->mr.iova & ~(uint64_t)(VMMBIB_PAGE_SIZE - 1));

    return gva(&s->v->g, s->gpa[off >> VMMBIB_PAGE_SHIFT] +
               (off & (VMMBIB_PAGE_SIZE - 1)));
}

static uint8_t spat(unsigned int seed, uint64_t i)
{
    return (uint8_t)(i * 13 + (i >> 9) * 5 + seed * 71 + 3);
}

static void smr_fill(struct smr *s, uint64_t a, uint64_t len,
                     unsigned int seed)
{
    for (uint64_t i = 0; i < len; i++) {
        *smr_at(s, a + i) = spat(seed, i);
    }
}

static bool smr_check(struct smr *s, uint64_t a, uint64_t len,
                      unsigned int seed)
{
    for (uint64_t i = 0; i < len; i++) {
        if (*smr_at(s, a + i) != spat(seed, i)) {
            printf("# byte %llu of %llu differs\n", (unsigned long long)i,
                   (unsigned long long)len);
            return false;
        }
    }
    return true;
}

static uint64_t pinned(struct vm *v)
{
    struct vmmbib_dev_stats st;

    vmmbib_dev_get_stats(v->dev, &st);
    return st.pinned_pages;
}

static void test_scattered(struct two_vms *t, struct rc_pair *p)
{
    /* Runs of one page but for 9, 10 (x) and 1, 2 (y): both coalesce. */
    static const uint8_t xo[] = { 5, 2, 9, 10, 0, 7 };
    static const uint8_t yo[] = { 11, 3, 14, 6, 1, 2 };
    struct smr xs, ys;
    struct vmmbib_cqe c[2];
    struct vmmbib_sge s;
    struct vmmbib_send_wqe w;
    uint64_t x0 = 0x7f0000000123ull, y0 = 0x5500000800ull;
    uint64_t before = pinned(&t->y), v64;

    TAP_CHECK(smr_reg(&t->x, xo, 6, x0, 6 * 4096 - 0x123 - 100, &xs) == OK &&
              smr_reg(&t->y, yo, 6, y0, 6 * 4096 - 0x800, &ys) == OK,
              "scattered: MRs of 6 scattered guest pages are registered");
    TAP_CHECK(pinned(&t->y) == before + 6,
              "scattered: the MR's 6 pages count as pinned");

    /* SEND scattered -> scattered, 9000 bytes across 3 page boundaries. */
    smr_fill(&xs, x0 + 100, 9000, 21);
    *smr_at(&ys, y0 + 49) = 0xee;
    *smr_at(&ys, y0 + 50 + 9000) = 0xee;
    s = sge(&ys.mr, y0 + 50, 12000);
    qp_post_recv(&p->b, 0x61, &s, 1);
    s = sge(&xs.mr, x0 + 100, 9000);
    post_send(&p->a, 0x62, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&p->a_scq, &c[0], 1) == 1 &&
              cqe_is(&c[0], 0x62, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS) &&
              cq_wait(&p->b_rcq, &c[1], 1) == 1 &&
              cqe_is(&c[1], 0x61, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(c[1].byte_len) == 9000,
              "scattered: a 9000-byte SEND between scattered MRs completes");
    TAP_CHECK(smr_check(&ys, y0 + 50, 9000, 21) &&
              *smr_at(&ys, y0 + 49) == 0xee &&
              *smr_at(&ys, y0 + 50 + 9000) == 0xee,
              "scattered: SEND: every byte lands in the right guest page, "
              "none around");

    /* RDMA WRITE from x's buffer into y's scattered MR. */
    pattern_fill(t->x.buf.p + 1000, 7000, 22);
    s = buf_sge(&t->x, 1000, 7000);
    post_send(&p->a, 0x63, VMMBIB_WR_RDMA_WRITE, &s, 1, y0 + 4000,
              ys.mr.rkey);
    TAP_CHECK(cq_wait(&p->a_scq, &c[0], 1) == 1 &&
              cqe_is(&c[0], 0x63, VMMBIB_WC_RDMA_WRITE, VMMBIB_WC_SUCCESS),
              "scattered: RDMA WRITE into a scattered MR completes");
    {
        bool same = true;

        for (uint32_t i = 0; i < 7000; i++) {
            same &= *smr_at(&ys, y0 + 4000 + i) == t->x.buf.p[1000 + i];
        }
        TAP_CHECK(same, "scattered: RDMA WRITE: byte for byte in y's pages");
    }

    /* RDMA READ from y's scattered MR into x's. */
    smr_fill(&ys, y0 + 1000, 10000, 23);
    s = sge(&xs.mr, x0 + 2000, 10000);
    post_send(&p->a, 0x64, VMMBIB_WR_RDMA_READ, &s, 1, y0 + 1000,
              ys.mr.rkey);
    TAP_CHECK(cq_wait(&p->a_scq, &c[0], 1) == 1 &&
              cqe_is(&c[0], 0x64, VMMBIB_WC_RDMA_READ, VMMBIB_WC_SUCCESS) &&
              smr_check(&xs, x0 + 2000, 10000, 23),
              "scattered: RDMA READ between scattered MRs, byte for byte");

    /* FETCH_AND_ADD on a word in y's fourth page, result in x's. */
    v64 = htole64(0x100);
    memcpy(smr_at(&ys, y0 + 3 * 4096 + 8), &v64, 8);
    memset(&w, 0, sizeof(w));
    w.wr_id = htole64(0x65);
    w.opcode = VMMBIB_WR_ATOMIC_FETCH_AND_ADD;
    w.flags = VMMBIB_WQE_SIGNALED;
    w.atomic.remote_addr = htole64(y0 + 3 * 4096 + 8);
    w.atomic.rkey = htole32(ys.mr.rkey);
    w.atomic.compare_add = htole64(5);
    s = sge(&xs.mr, x0 + 4096 * 3 - 0x123, 8);
    qp_post_send(&p->a, &w, &s, 1, NULL, 0, true);
    TAP_CHECK(cq_wait(&p->a_scq, &c[0], 1) == 1 &&
              cqe_is(&c[0], 0x65, VMMBIB_WC_FETCH_ADD, VMMBIB_WC_SUCCESS),
              "scattered: FETCH_AND_ADD on a scattered MR completes");
    memcpy(&v64, smr_at(&ys, y0 + 3 * 4096 + 8), 8);
    TAP_CHECK(le64toh(v64) == 0x105, "scattered: FETCH_AND_ADD added");
    memcpy(&v64, smr_at(&xs, x0 + 4096 * 3 - 0x123), 8);
    TAP_CHECK(le64toh(v64) == 0x100,
              "scattered: FETCH_AND_ADD's old value is in x's page");

    /* Past the end of y's MR: the host HCA refuses it. */
    {
        struct rc_pair q;

        TAP_CHECK(pair(&q, &t->x, &t->y) == OK,
                  "scattered: a fresh RC pair for the errors");
        s = buf_sge(&t->x, 0, 200);
        post_send(&q.a, 0x66, VMMBIB_WR_RDMA_WRITE, &s, 1,
                  y0 + ys.mr.len - 100, ys.mr.rkey);
        TAP_CHECK(cq_wait(&q.a_scq, &c[0], 1) == 1 &&
                  cqe_is(&c[0], 0x66, VMMBIB_WC_RDMA_WRITE,
                         VMMBIB_WC_REM_ACCESS_ERR),
                  "scattered: RDMA WRITE past the MR's end: REM_ACCESS_ERR");
        if (!cqe_is(&c[0], 0x66, VMMBIB_WC_RDMA_WRITE,
                    VMMBIB_WC_REM_ACCESS_ERR)) {
            cqe_dump("past end", &c[0]);
        }
    }

    /* A page outside guest RAM: refused, nothing pinned. */
    {
        uint64_t pages[3] = { ys.gpa[0], 0x40000000ull, ys.gpa[2] };
        struct vmmbib_page_list pl;
        struct gmr bad;

        before = pinned(&t->y);
        guest_page_list(&t->y.g, pages, 3, 1, &pl);
        TAP_CHECK(mr_reg_pages(&t->y.c, t->y.pd, 0x9000, 3 * 4096, &pl,
                               VMMBIB_ACCESS_LOCAL_WRITE, &bad) ==
                  VMMBIB_STATUS_BAD_ADDRESS && pinned(&t->y) == before,
                  "scattered: a page outside RAM is BAD_ADDRESS, nothing "
                  "pinned");
    }
    before = pinned(&t->y);
    TAP_CHECK(destroy(&t->x.c, VMMBIB_CMD_DEREG_MR, xs.mr.handle) == OK &&
              destroy(&t->y.c, VMMBIB_CMD_DEREG_MR, ys.mr.handle) == OK &&
              pinned(&t->y) == before - 6,
              "scattered: deregistered, the pages are unpinned");
}

/* DMA MRs: guest physical addresses, through the RAM's registration. */
static void test_dma_mr(struct two_vms *t)
{
    struct vm *x = &t->x, *y = &t->y;
    struct rc_pair p;
    struct gmr xd, yd, yd2;
    struct vmmbib_cqe c[2];
    struct vmmbib_sge s;
    uint64_t before = pinned(y);
    uint64_t ram = GUEST_RAM_SIZE / VMMBIB_PAGE_SIZE;

    TAP_CHECK(mr_dma(&x->c, x->pd, VMMBIB_ACCESS_LOCAL_WRITE, &xd) == OK &&
              mr_dma(&y->c, y->pd, VMMBIB_ACCESS_LOCAL_WRITE, &yd) == OK,
              "DMA MR: CREATE_DMA_MR (local write) on a verbs device");
    TAP_CHECK(pinned(y) == before + ram,
              "DMA MR: all guest RAM counts as pinned");
    TAP_CHECK(mr_dma(&y->c, y->pd, VMMBIB_ACCESS_LOCAL_WRITE, &yd2) == OK &&
              pinned(y) == before + ram,
              "DMA MR: a second one counts RAM no second time");
    TAP_CHECK(pair(&p, x, y) == OK, "DMA MR: an RC pair");
    pattern_fill(x->buf.p + 5000, 6000, 31);
    s = sge(&yd2, y->buf.gpa + 9000, 7000);
    qp_post_recv(&p.b, 0x71, &s, 1);
    s = sge(&xd, x->buf.gpa + 5000, 6000);
    post_send(&p.a, 0x72, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&p.a_scq, &c[0], 1) == 1 &&
              cqe_is(&c[0], 0x72, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS) &&
              cq_wait(&p.b_rcq, &c[1], 1) == 1 &&
              cqe_is(&c[1], 0x71, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(c[1].byte_len) == 6000 &&
              pattern_check(y->buf.p + 9000, 6000, 31),
              "DMA MR: a SEND by guest physical addresses, byte for byte");
    /* A guest physical address outside RAM: the relay refuses it. */
    s = sge(&xd, 0x1000, 64);
    post_send(&p.a, 0x73, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&p.a_scq, &c[0], 1) == 1 &&
              cqe_is(&c[0], 0x73, VMMBIB_WC_SEND, VMMBIB_WC_LOC_PROT_ERR),
              "DMA MR: an address outside RAM is LOC_PROT_ERR");
    /* The pair's rings are pinned too: count from here. */
    before = pinned(y);
    TAP_CHECK(destroy(&y->c, VMMBIB_CMD_DEREG_MR, yd2.handle) == OK &&
              pinned(y) == before &&
              destroy(&y->c, VMMBIB_CMD_DEREG_MR, yd.handle) == OK &&
              pinned(y) == before - ram &&
              destroy(&x->c, VMMBIB_CMD_DEREG_MR, xd.handle) == OK,
              "DMA MR: RAM stays pinned until the last one goes");
}

/* A device whose pinned quota is smaller than its RAM has no DMA MR. */
static void test_dma_quota(struct vmmbib_engine *eng)
{
    struct vmmbib_dev_config cfg;
    struct vm z;
    struct gmr d;

    verbs_config(&cfg);
    cfg.limits.max_pinned_pages = 1024;
    if (!vm_init_on(&z, eng, &cfg)) {
        TAP_CHECK(false, "DMA MR quota: a device with 4 MiB pinnable");
        return;
    }
    TAP_CHECK(mr_dma(&z.c, z.pd, VMMBIB_ACCESS_LOCAL_WRITE, &d) ==
              VMMBIB_STATUS_NO_RESOURCES,
              "DMA MR: RAM beyond the pinned quota is NO_RESOURCES");
    vm_fini(&z);
}

/* The host device the backend uses (the first one unless named), or NULL. */
static struct ibv_context *open_host_device(void)
{
    struct ibv_device **list = ibv_get_device_list(NULL);
    struct ibv_context *ctx = NULL;

    for (int i = 0; list && list[i]; i++) {
        if (!device_name()[0] ||
            !strcmp(device_name(), ibv_get_device_name(list[i]))) {
            ctx = ibv_open_device(list[i]);
            break;
        }
    }
    if (list) {
        ibv_free_device_list(list);
    }
    return ctx;
}

/* The host device's attributes, as the backend queries them. */
static bool host_attr(struct ibv_device_attr *a)
{
    struct ibv_context *ctx = open_host_device();
    bool ok;

    ok = ctx && !ibv_query_device(ctx, a);
    if (ctx) {
        ibv_close_device(ctx);
    }
    return ok;
}

static uint32_t min_u(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* QUERY_DEVICE: each limit is the smaller of the configured and the host's. */
static void test_query_device(struct two_vms *t)
{
    struct vmmbib_dev_config cfg;
    struct vmmbib_resp_query_device r;
    struct ibv_device_attr h;
    const struct vmmbib_limits *l = &cfg.limits;
    bool ok = true;

    verbs_config(&cfg);
    TAP_CHECK(host_attr(&h) &&
              cmd(t->x.dev, VMMBIB_CMD_QUERY_DEVICE, 0, NULL, 0, &r,
                  sizeof(r)) == OK,
              "QUERY_DEVICE on a verbs device, and the host's attributes");
#define SAME(field, want)                                                  \
    do {                                                                   \
        uint32_t w = (want);                                               \
        if (le32toh(r.field) != w) {                                       \
            printf("# %s: %u, expected %u\n", #field, le32toh(r.field), w); \
            ok = false;                                                    \
        }                                                                  \
    } while (0)
    SAME(max_qp, min_u(l->max_qp, h.max_qp));
    SAME(max_qp_wr, min_u(l->max_qp_wr, h.max_qp_wr));
    SAME(max_send_sge, min_u(l->max_send_sge, h.max_sge));
    SAME(max_recv_sge, min_u(l->max_recv_sge, h.max_sge));
    SAME(max_cq, min_u(l->max_cq, h.max_cq));
    SAME(max_cqe, min_u(l->max_cqe, h.max_cqe));
    SAME(max_mr, min_u(l->max_mr, h.max_mr));
    SAME(max_pd, min_u(l->max_pd, h.max_pd));
    SAME(max_srq, min_u(l->max_srq, h.max_srq));
    SAME(max_srq_wr, min_u(l->max_srq_wr, h.max_srq_wr));
    SAME(max_srq_sge, min_u(l->max_srq_sge, h.max_srq_sge));
    SAME(max_ah, min_u(l->max_ah, h.max_ah));
    SAME(max_qp_rd_atom, min_u(min_u(l->max_qp_rd_atom, h.max_qp_rd_atom),
                               h.max_qp_init_rd_atom));
    SAME(max_mr_pages, min_u(l->max_mr_pages,
                             h.max_mr_size >> VMMBIB_PAGE_SHIFT));
    TAP_CHECK(ok, "QUERY_DEVICE: every limit is min(configured, host)");
#undef SAME
    printf("# host max_cqe %d, configured %u, reported %u\n", h.max_cqe,
           l->max_cqe, le32toh(r.max_cqe));
    if (le32toh(r.max_cqe) < l->max_cqe) {
        /* The guest-side check now refuses what the host could not make. */
        struct gcq cq;

        TAP_CHECK(cq_create(&t->x.c, l->max_cqe, &cq) ==
                  VMMBIB_STATUS_INVALID,
                  "QUERY_DEVICE: a CQ above the host's max_cqe is INVALID");
    }
}

/*
 * Private guest RAM (QEMU's memory-backend-ram) cannot be mapped a second
 * time: an MR of scattered pages is NOT_SUPPORTED there, a contiguous one
 * still works.
 */
static void test_private_ram(struct vmmbib_engine *eng)
{
    static const uint8_t order[] = { 3, 1 };
    struct vmmbib_dev_config cfg;
    struct vm z;
    struct smr zs;
    struct gmr m;

    verbs_config(&cfg);
    memset(&z, 0, sizeof(z));
    z.g.ram = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    z.g.base = GUEST_RAM_BASE;
    z.g.size = 1 << 20;
    pthread_mutex_init(&z.g.lock, NULL);
    z.dev = guest_dev_new(&z.g, eng, &cfg);
    if (z.g.ram == MAP_FAILED || !z.dev ||
        ctx_create(&z.c, z.dev, &z.g) != OK || pd_create(&z.c, &z.pd) != OK) {
        TAP_CHECK(false, "private RAM: a device on private guest RAM");
        return;
    }
    TAP_CHECK(smr_reg(&z, order, 2, 0x10000, 8192, &zs) ==
              VMMBIB_STATUS_NOT_SUPPORTED,
              "private RAM: an MR of scattered pages is NOT_SUPPORTED");
    gbuf_alloc(&z.g, 3 * 4096, &z.buf);
    TAP_CHECK(mr_reg(&z.c, z.pd, z.buf.gpa + 100, 10000,
                     VMMBIB_ACCESS_LOCAL_WRITE, &m) == OK,
              "private RAM: an MR of contiguous pages is registered");
    vm_fini(&z);
}

/*
 * A hostile MR of one-page runs (two pages, alternating): more host
 * mappings than a device may hold is NO_RESOURCES, nothing pinned.
 */
static void test_alias_budget(struct two_vms *t)
{
    const uint32_t n = 16385;
    uint64_t *pages = calloc(n, sizeof(*pages));
    uint64_t a = guest_alloc(&t->y.g, 3 * 4096), before = pinned(&t->y);
    struct vmmbib_page_list pl;
    struct gmr m;

    for (uint32_t i = 0; i < n; i++) {
        pages[i] = a + (i & 1 ? 2 * 4096 : 0);
    }
    guest_page_list(&t->y.g, pages, n, 2, &pl);
    TAP_CHECK(mr_reg_pages(&t->y.c, t->y.pd, 0x40000000, (uint64_t)n * 4096,
                           &pl, VMMBIB_ACCESS_LOCAL_WRITE, &m) ==
              VMMBIB_STATUS_NO_RESOURCES && pinned(&t->y) == before,
              "alias: an MR of 16,385 one-page runs is NO_RESOURCES (at "
              "most 16,384 host mappings per device), nothing pinned");
    free(pages);
}

static void run_tests(void)
{
    struct two_vms t;
    struct rc_pair p;
    struct vmmbib_dev_stats st;
    bool vms = two_vms_init(&t);
    bool rts = vms && pair(&p, &t.x, &t.y) == OK;

    TAP_CHECK(rts, "two VMs relay to the host device, an RC pair between "
              "them reaches RTS");
    if (!rts) {
        if (vms) {
            two_vms_fini(&t);
        }
        return;     /* no pair to test with */
    }
    test_send(&t, &p);
    test_rdma(&t, &p);
    vmmbib_dev_get_stats(t.x.dev, &st);
    TAP_CHECK(st.error_completions == 0 && st.bad_doorbells == 0 &&
              st.wqes == 7, "x's counters: 7 WQEs relayed, no errors");
    test_scattered(&t, &p);
    test_dma_mr(&t);
    test_dma_quota(t.eng);
    test_private_ram(t.eng);
    test_alias_budget(&t);
    test_bad_lkey(&t);
    test_bad_rkey(&t);
    test_loopback(&t);
    test_ud(&t);
    test_srq(&t);
    test_gsi(&t);
    test_not_supported(&t);
    test_query_device(&t);
    two_vms_fini(&t);
}

/* ---- bench: round trips, relayed and on the device itself ---- */

static double now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/*
 * Both sides of the bench wait alike: poll, and yield the one vCPU to
 * the threads (engine, completion thread, rxe's kernel work) that make
 * progress.
 */
static bool relay_wait(struct gcq *cq)
{
    struct vmmbib_cqe c;
    double end = now_us() + 2e6;

    while (cq_poll(cq, &c, 1) == 0) {
        if (now_us() > end) {
            return false;
        }
        sched_yield();
    }
    return c.status == VMMBIB_WC_SUCCESS;
}

static double bench_relay(int iters)
{
    struct two_vms t;
    struct rc_pair p;
    struct vmmbib_sge s;
    double t0;
    int i;

    if (!two_vms_init(&t) ||
        pair(&p, &t.x, &t.y) != OK) {
        return -1;
    }
    t0 = now_us();
    for (i = 0; i < iters; i++) {
        s = buf_sge(&t.y, 4096, 64);
        qp_post_recv(&p.b, 1, &s, 1);
        s = buf_sge(&t.x, 8192, 64);
        qp_post_recv(&p.a, 2, &s, 1);
        s = buf_sge(&t.x, 0, 64);
        post_send(&p.a, 3, VMMBIB_WR_SEND, &s, 1, 0, 0);
        /* The peer's receive, then our send completion, as below. */
        if (!relay_wait(&p.b_rcq) || !relay_wait(&p.a_scq)) {
            return -1;
        }
        s = buf_sge(&t.y, 0, 64);
        post_send(&p.b, 4, VMMBIB_WR_SEND, &s, 1, 0, 0);
        if (!relay_wait(&p.a_rcq) || !relay_wait(&p.b_scq)) {
            return -1;
        }
    }
    t0 = (now_us() - t0) / iters;
    two_vms_fini(&t);
    return t0;
}

/* The same ping-pong with two QPs of one process on the device. */
struct direct_end {
    struct ibv_cq *cq;
    struct ibv_qp *qp;
};

static bool direct_connect(struct direct_end *e, struct direct_end *peer,
                           union ibv_gid *gid, enum ibv_mtu mtu)
{
    struct ibv_qp_attr a = {
        .qp_state = IBV_QPS_INIT, .port_num = 1,
        .qp_access_flags = IBV_ACCESS_LOCAL_WRITE,
    };

    if (ibv_modify_qp(e->qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX |
                      IBV_QP_PORT | IBV_QP_ACCESS_FLAGS)) {
        return false;
    }
    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_RTR;
    a.path_mtu = mtu;
    a.dest_qp_num = peer->qp->qp_num;
    a.max_dest_rd_atomic = 1;
    a.min_rnr_timer = 1;
    a.ah_attr.is_global = 1;
    a.ah_attr.grh.dgid = *gid;
    a.ah_attr.grh.hop_limit = 64;
    a.ah_attr.grh.sgid_index = gid_index();
    a.ah_attr.port_num = 1;
    if (ibv_modify_qp(e->qp, &a, IBV_QP_STATE | IBV_QP_AV |
                      IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                      IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER)) {
        return false;
    }
    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_RTS;
    a.timeout = 14;
    a.retry_cnt = 7;
    a.rnr_retry = 7;
    a.max_rd_atomic = 1;
    return !ibv_modify_qp(e->qp, &a, IBV_QP_STATE | IBV_QP_SQ_PSN |
                          IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
                          IBV_QP_RNR_RETRY | IBV_QP_MAX_QP_RD_ATOMIC);
}

static bool direct_wait(struct ibv_cq *cq)
{
    struct ibv_wc wc;
    double end = now_us() + 2e6;
    int n;

    while ((n = ibv_poll_cq(cq, 1, &wc)) == 0 && now_us() < end) {
        sched_yield();
    }
    return n == 1 && wc.status == IBV_WC_SUCCESS;
}

static double bench_direct(int iters)
{
    struct ibv_context *ctx = open_host_device();
    struct ibv_pd *pd;
    struct ibv_mr *mr;
    struct direct_end e[2];
    struct ibv_port_attr pa;
    union ibv_gid gid;
    static uint8_t buf[16384];
    double t0;
    int i, k;

    if (!ctx || ibv_query_port(ctx, 1, &pa) ||
        ibv_query_gid(ctx, 1, gid_index(), &gid)) {
        return -1;
    }
    pd = ibv_alloc_pd(ctx);
    mr = ibv_reg_mr(pd, buf, sizeof(buf), IBV_ACCESS_LOCAL_WRITE);
    for (k = 0; k < 2; k++) {
        struct ibv_qp_init_attr init = {
            .cap = { .max_send_wr = 16, .max_recv_wr = 16,
                     .max_send_sge = 1, .max_recv_sge = 1 },
            .qp_type = IBV_QPT_RC,
        };

        e[k].cq = ibv_create_cq(ctx, 32, NULL, NULL, 0);
        init.send_cq = init.recv_cq = e[k].cq;
        e[k].qp = ibv_create_qp(pd, &init);
    }
    if (!direct_connect(&e[0], &e[1], &gid, pa.active_mtu) ||
        !direct_connect(&e[1], &e[0], &gid, pa.active_mtu)) {
        return -1;
    }
    t0 = now_us();
    for (i = 0; i < iters; i++) {
        for (k = 0; k < 2; k++) {
            struct ibv_sge rs = {
                .addr = (uintptr_t)buf + 4096 * (k + 1), .length = 64,
                .lkey = mr->lkey,
            };
            struct ibv_recv_wr rw = { .sg_list = &rs, .num_sge = 1 }, *bad;

            ibv_post_recv(e[k].qp, &rw, &bad);
        }
        for (k = 0; k < 2; k++) {
            struct ibv_sge ss = {
                .addr = (uintptr_t)buf, .length = 64, .lkey = mr->lkey,
            };
            struct ibv_send_wr sw = {
                .sg_list = &ss, .num_sge = 1, .opcode = IBV_WR_SEND,
                .send_flags = IBV_SEND_SIGNALED,
            }, *bad;

            ibv_post_send(e[k].qp, &sw, &bad);
            /* The peer's receive, then our send completion. */
            if (!direct_wait(e[!k].cq) || !direct_wait(e[k].cq)) {
                return -1;
            }
        }
    }
    t0 = (now_us() - t0) / iters;
    for (k = 0; k < 2; k++) {
        ibv_destroy_qp(e[k].qp);
        ibv_destroy_cq(e[k].cq);
    }
    ibv_dereg_mr(mr);
    ibv_dealloc_pd(pd);
    ibv_close_device(ctx);
    return t0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--bench")) {
        int iters = atoi(argv[2]);
        double direct = bench_direct(iters);
        double relay = bench_relay(iters);

        printf("verbs-relay: %d round trips of a 64-byte SEND each way\n",
               iters);
        printf("direct (libibverbs on %s): %.1f us per round trip\n",
               device_name()[0] ? device_name() : "the first device",
               direct);
        printf("relayed (two synthetic guests, backend=verbs): %.1f us per "
               "round trip\n", relay);
        if (direct > 0 && relay > 0) {
            printf("added by the relay: %.1f us per round trip (%.2fx)\n",
                   relay - direct, relay / direct);
        }
        return direct > 0 && relay > 0 ? 0 : 1;
    }
    test_config_errors();
    if (host_devices()) {
        run_tests();
    } else {
        printf("# no RDMA device on this host: only the configuration "
               "checks ran (tests/guest/verbs-backend.sh runs the rest in "
               "a VM with rdma_rxe)\n");
    }
    return tap_done();
}
