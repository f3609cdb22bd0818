/*
 * The GSI QP and the engine's subnet administrator, with synthetic
 * guests: GSI creation (QPN 1, one per device), its fixed Q_Key and port,
 * UD datagrams to QPN 1 of a port, and SubnAdm MADs to the SM (a port's
 * own LID, QPN 1): PathRecord Get and GetTable with their fields,
 * ClassPortInfo, error statuses, and malformed MADs that are dropped.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <endian.h>
#include <string.h>

#include "guest.h"
#include "tap.h"

#define MAD 256
#define RECV_LEN (VMMBIB_GRH_SIZE + MAD)
#define GSI_QKEY VMMBIB_GSI_QKEY

/* A VM (its buffer registered local-write only), its CQs and GSI QP. */
struct gsi_vm {
    struct vm vm;
    struct gcq scq, rcq;
    struct gqp gsi;
};

static int gsi_create(struct gsi_vm *v, struct gqp *qp)
{
    struct qp_opts o;

    qp_opts_default(&o, VMMBIB_QPT_GSI);
    return qp_create(&v->vm.c, v->vm.pd, &v->scq, &v->rcq, NULL, &o, qp);
}

/* RESET to RTS as ib_mad does it: no port, the QP1 Q_Key. */
static int gsi_to_rts(struct gqp *qp)
{
    struct vmmbib_qp_attr a = {
        .qp_state = VMMBIB_QPS_INIT,
        .qkey = htole32(GSI_QKEY),
    };
    int s;

    if ((s = qp_modify(qp, VMMBIB_QP_STATE | VMMBIB_QP_PKEY_INDEX |
                       VMMBIB_QP_QKEY, &a))) {
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

static bool gsi_vm_init(struct gsi_vm *v, struct vmmbib_engine *eng)
{
    vm_dev(&v->vm, eng, NULL);
    return vm_ctx(&v->vm, BUF_SIZE, VMMBIB_ACCESS_LOCAL_WRITE) &&
           cq_create(&v->vm.c, 64, &v->scq) == OK &&
           cq_create(&v->vm.c, 64, &v->rcq) == OK;
}

static void test_gsi_create(void)
{
    struct vmmbib_engine *eng = engine_new();
    struct gsi_vm x, y;
    struct gqp rc, second, y_gsi;
    struct qp_opts o;
    struct vmmbib_qp_attr a;

    if (!eng) {
        TAP_CHECK(0, "gsi create: engine");
        return;
    }
    TAP_CHECK(gsi_vm_init(&x, eng) && gsi_vm_init(&y, eng), "gsi: two devices");
    qp_opts_default(&o, VMMBIB_QPT_RC);
    TAP_CHECK(qp_create(&x.vm.c, x.vm.pd, &x.scq, &x.rcq, NULL, &o,
                        &rc) == OK && rc.qpn >= 2,
              "a regular QP never gets QPN 0 or 1");
    TAP_CHECK(gsi_create(&x, &x.gsi) == OK && x.gsi.qpn == VMMBIB_GSI_QPN,
              "CREATE_QP of type GSI: QPN 1");
    TAP_CHECK(gsi_create(&x, &second) == VMMBIB_STATUS_BUSY,
              "a second GSI QP on the device: BUSY");
    TAP_CHECK(gsi_create(&y, &y_gsi) == OK && y_gsi.qpn == VMMBIB_GSI_QPN,
              "another device of the engine has its own QPN 1");
    TAP_CHECK(qp_query(&x.gsi, &a) == OK &&
              le32toh(a.qkey) == GSI_QKEY && a.port_num == 1,
              "a new GSI QP has Q_Key 0x80010000 and port 1");

    memset(&a, 0, sizeof(a));
    a.qp_state = VMMBIB_QPS_INIT;
    a.qkey = htole32(0x11111111);
    TAP_CHECK(qp_modify(&x.gsi, VMMBIB_QP_STATE | VMMBIB_QP_PKEY_INDEX |
                        VMMBIB_QP_QKEY, &a) == VMMBIB_STATUS_INVALID,
              "GSI RESET->INIT with another Q_Key: INVALID");
    TAP_CHECK(gsi_to_rts(&x.gsi) == OK && qp_state(&x.gsi) == VMMBIB_QPS_RTS,
              "GSI RESET->INIT->RTR->RTS without a port attribute, as "
              "ib_mad does");
    memset(&a, 0, sizeof(a));
    a.qp_state = VMMBIB_QPS_RESET;
    TAP_CHECK(qp_modify(&x.gsi, VMMBIB_QP_STATE, &a) == OK &&
              qp_query(&x.gsi, &a) == OK && le32toh(a.qkey) == GSI_QKEY,
              "back in RESET the GSI QP keeps its Q_Key");
    TAP_CHECK(destroy(&x.vm.c, VMMBIB_CMD_DESTROY_QP, x.gsi.handle) == OK &&
              gsi_create(&x, &second) == OK &&
              second.qpn == VMMBIB_GSI_QPN,
              "after DESTROY_QP a new GSI QP gets QPN 1 again");
    vm_fini(&x.vm);
    vm_fini(&y.vm);
    vmmbib_engine_free(eng);
}

static void test_ud_to_qp1(void)
{
    struct vmmbib_engine *eng = engine_new();
    struct gsi_vm x, y;
    struct gqp ud;
    struct qp_opts o;
    struct vmmbib_cqe c;
    struct vmmbib_sge s;
    uint32_t ah;
    int i;

    if (!eng) {
        TAP_CHECK(0, "ud to qp1: engine");
        return;
    }
    qp_opts_default(&o, VMMBIB_QPT_UD);
    TAP_CHECK(gsi_vm_init(&x, eng) && gsi_vm_init(&y, eng) &&
              gsi_create(&y, &y.gsi) == OK && gsi_to_rts(&y.gsi) == OK &&
              gsi_create(&x, &x.gsi) == OK && gsi_to_rts(&x.gsi) == OK &&
              qp_create(&x.vm.c, x.vm.pd, &x.scq, &x.rcq, NULL, &o,
                        &ud) == OK &&
              ud_to_rts(&ud, GSI_QKEY) == OK &&
              ah_create(&x.vm.c, x.vm.pd, port_lid(y.vm.dev), &ah) == OK,
              "ud to qp1: GSI QPs in RTS, a UD QP, an AH to the other port");
    for (i = 0; i < 3; i++) {
        s = buf_sge(&y.vm, 4096 * i, RECV_LEN);
        qp_post_recv(&y.gsi, 0x100 + i, &s, 1);
    }

    memset(x.vm.buf.p, 0x5a, MAD);
    x.vm.buf.p[1] = 0x07;      /* a CM MAD: not for the SA */
    s = buf_sge(&x.vm, 0, MAD);
    ud_send(&ud, 1, ah, VMMBIB_GSI_QPN, GSI_QKEY, &s, true);
    TAP_CHECK(cq_wait(&x.scq, &c, 1) == 1 &&
              cqe_is(&c, 1, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS),
              "UD send to QPN 1 completes");
    TAP_CHECK(cq_wait(&y.rcq, &c, 1) == 1 &&
              cqe_is(&c, 0x100, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(c.qpn) == VMMBIB_GSI_QPN &&
              le32toh(c.src_qp) == ud.qpn &&
              le16toh(c.slid) == port_lid(x.vm.dev) &&
              le32toh(c.byte_len) == RECV_LEN && c.pkey_index == 0 &&
              !(c.wc_flags & VMMBIB_WC_F_GRH),
              "the destination port's GSI QP receives it: src_qp, slid, "
              "byte_len with the GRH area");
    TAP_CHECK(y.vm.buf.p[VMMBIB_GRH_SIZE + 1] == 0x07 &&
              y.vm.buf.p[VMMBIB_GRH_SIZE + MAD - 1] == 0x5a,
              "the MAD follows the 40-byte GRH area");

    /* A Q_Key without the high bit that is not QP1's: dropped. */
    ud_send(&ud, 2, ah, VMMBIB_GSI_QPN, 0x11111111, &s, true);
    TAP_CHECK(cq_wait(&x.scq, &c, 1) == 1 &&
              cqe_is(&c, 2, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS),
              "a wrong Q_Key: the sender completes");
    msleep(20);
    TAP_CHECK(cq_poll(&y.rcq, &c, 1) == 0,
              "a wrong Q_Key: QP1 drops the datagram");

    /* GSI to GSI: QP1 to QP1, Q_Key 0x80010000 from the WQE. */
    ud_send(&x.gsi, 3, ah, VMMBIB_GSI_QPN, GSI_QKEY, &s, true);
    TAP_CHECK(cq_wait(&x.scq, &c, 1) == 1 &&
              cqe_is(&c, 3, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS) &&
              le32toh(c.qpn) == VMMBIB_GSI_QPN &&
              cq_wait(&y.rcq, &c, 1) == 1 &&
              cqe_is(&c, 0x101, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(c.src_qp) == VMMBIB_GSI_QPN,
              "GSI to GSI: src_qp 1");
    vm_fini(&x.vm);
    vm_fini(&y.vm);
    vmmbib_engine_free(eng);
}

/* ---- SA ---- */

static void put16(uint8_t *p, uint16_t v)
{
    v = htobe16(v);
    memcpy(p, &v, 2);
}

static uint16_t get16(const uint8_t *p)
{
    uint16_t v;

    memcpy(&v, p, 2);
    return be16toh(v);
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;

    memcpy(&v, p, 4);
    return be32toh(v);
}

static void put64(uint8_t *p, uint64_t v)
{
    v = htobe64(v);
    memcpy(p, &v, 8);
}

/* A SubnAdm request for @attr with component mask @mask. */
static void sa_mad(uint8_t *m, uint8_t method, uint16_t attr, uint64_t mask,
                   uint64_t tid)
{
    memset(m, 0, MAD);
    m[0] = 1;               /* BaseVersion */
    m[1] = 0x03;            /* SubnAdm */
    m[2] = 2;               /* ClassVersion */
    m[3] = method;
    put64(m + 8, tid);
    put16(m + 16, attr);
    put64(m + 48, mask);
}

#define PR_DGID 8
#define PR_SGID 24
#define CM_DGID (1u << 2)
#define CM_SGID (1u << 3)
#define CM_DLID (1u << 4)
#define CM_TCLASS (1u << 10)
#define CM_PKEY (1u << 13)
#define CM_MTU_SEL (1u << 16)
#define CM_MTU (1u << 17)
#define CM_RATE (1u << 19)

struct sa_env {
    struct gsi_vm x, y;
    uint32_t ah_sm;             /* x's AH to its SM: its own LID */
    uint32_t ah_sm_gid;         /* the same by GID */
    uint8_t xgid[16], ygid[16];
    unsigned int nrecv;
    bool pending;               /* the last receive is still posted */
};

/* Post a receive, send the MAD at x.vm.buf[0] to the SM, take the answer. */
static int sa_ask(struct sa_env *e, uint32_t ah, uint32_t len, uint32_t qkey,
                  struct vmmbib_cqe *c, const uint8_t **resp)
{
    struct vmmbib_cqe sc;
    struct vmmbib_sge s;
    uint64_t off = 16384 + (uint64_t)(e->nrecv % 8) * 1024;

    memset(e->x.vm.buf.p + off, 0, RECV_LEN);
    if (!e->pending) {
        s = buf_sge(&e->x.vm, off, RECV_LEN);
        qp_post_recv(&e->x.gsi, 0x500 + e->nrecv, &s, 1);
    }
    e->pending = false;
    e->nrecv++;
    s = buf_sge(&e->x.vm, 0, len);
    ud_send(&e->x.gsi, 0x600, ah, VMMBIB_GSI_QPN, qkey, &s, true);
    if (cq_wait(&e->x.scq, &sc, 1) != 1 ||
        !cqe_is(&sc, 0x600, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS)) {
        return -1;
    }
    *resp = e->x.vm.buf.p + off + VMMBIB_GRH_SIZE;
    /* The SA answers before the engine completes the send. */
    if (cq_poll(&e->x.rcq, c, 1) != 1) {
        /* Dropped: the receive stays posted for the next question. */
        e->nrecv--;
        e->pending = true;
        return 0;
    }
    return 1;
}

static bool path_fields(const uint8_t *pr, const struct sa_env *e)
{
    return !memcmp(pr + PR_DGID, e->ygid, 16) &&
           !memcmp(pr + PR_SGID, e->xgid, 16) &&
           get16(pr + 40) == port_lid(e->y.vm.dev) &&
           get16(pr + 42) == port_lid(e->x.vm.dev) &&
           pr[49] == 0x80 &&                /* reversible */
           get16(pr + 50) == 0xffff &&      /* P_Key */
           (pr[53] & 0xf) == 0 &&           /* SL */
           pr[54] == (2 << 6 | VMMBIB_MTU_4096) &&
           pr[55] == (2 << 6 | 16) &&       /* exactly 100 Gb/s */
           (pr[56] >> 6) == 2;
}

static void test_sa(void)
{
    struct vmmbib_engine *eng = engine_new();
    struct sa_env e = { 0 };
    struct vmmbib_ah_attr av;
    struct vmmbib_dev_stats st0, st1;
    struct vmmbib_cqe c;
    const uint8_t *r;
    uint8_t *m;

    if (!eng) {
        TAP_CHECK(0, "sa: engine");
        return;
    }
    TAP_CHECK(gsi_vm_init(&e.x, eng) && gsi_vm_init(&e.y, eng) &&
              gsi_create(&e.x, &e.x.gsi) == OK &&
              gsi_to_rts(&e.x.gsi) == OK &&
              ah_create(&e.x.vm.c, e.x.vm.pd, port_lid(e.x.vm.dev),
                        &e.ah_sm) == OK,
              "sa: a GSI QP in RTS, an AH to the SM LID");
    port_gid(e.x.vm.dev, e.xgid);
    port_gid(e.y.vm.dev, e.ygid);
    memset(&av, 0, sizeof(av));
    av.ah_flags = VMMBIB_AH_GRH;
    av.port_num = 1;
    av.hop_limit = 1;
    memcpy(av.dgid, e.xgid, 16);
    TAP_CHECK(ah_create_attr(&e.x.vm.c, e.x.vm.pd, &av, &e.ah_sm_gid) == OK,
              "sa: an AH to the SM by GID");
    m = e.x.vm.buf.p;
    vmmbib_dev_get_stats(e.x.vm.dev, &st0);

    /* PathRecord Get by SGID and DGID, as ib_sa asks. */
    sa_mad(m, 0x01, 0x0035, CM_DGID | CM_SGID | CM_PKEY | CM_TCLASS |
           (1u << 11) | (1u << 12), 0x1234567800000001ull);
    memcpy(m + 56 + PR_DGID, e.ygid, 16);
    memcpy(m + 56 + PR_SGID, e.xgid, 16);
    put16(m + 56 + 50, 0xffff);
    m[56 + 48] = 0x20;      /* TClass */
    m[56 + 49] = 0x81;      /* Reversible, NumbPath 1 */
    TAP_CHECK(sa_ask(&e, e.ah_sm, MAD, GSI_QKEY, &c, &r) == 1 &&
              cqe_is(&c, 0x500, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(c.src_qp) == VMMBIB_GSI_QPN &&
              le16toh(c.slid) == port_lid(e.x.vm.dev) &&
              le32toh(c.byte_len) == RECV_LEN && c.pkey_index == 0 &&
              !(c.wc_flags & VMMBIB_WC_F_GRH),
              "PathRecord Get: a response from QP1 at the SM LID, 256 "
              "bytes after the GRH area");
    TAP_CHECK(r[0] == 1 && r[1] == 3 && r[2] == 2 && r[3] == 0x81 &&
              get16(r + 4) == 0 && get32(r + 8) == 0x12345678 &&
              get32(r + 12) == 1 && get16(r + 16) == 0x0035 &&
              get16(r + 44) == 8,
              "PathRecord GetResp: method 0x81, status 0, the TID, "
              "attribute offset 8");
    TAP_CHECK(path_fields(r + 56, &e) && r[56 + 48] == 0x20,
              "PathRecord: GIDs, LIDs, P_Key 0xffff, SL 0, MTU 4096, "
              "rate 100 Gb/s, reversible, the asked traffic class");

    /* By DLID only: the source is the asking port. */
    sa_mad(m, 0x01, 0x0035, CM_DLID, 2);
    put16(m + 56 + 40, port_lid(e.y.vm.dev));
    TAP_CHECK(sa_ask(&e, e.ah_sm, MAD, GSI_QKEY, &c, &r) == 1 &&
              get16(r + 4) == 0 && path_fields(r + 56, &e),
              "PathRecord by DLID alone: from the asking port");

    /* By GID routing to the SM: the response has a GRH. */
    sa_mad(m, 0x01, 0x0035, CM_DGID, 3);
    memcpy(m + 56 + PR_DGID, e.ygid, 16);
    TAP_CHECK(sa_ask(&e, e.ah_sm_gid, MAD, GSI_QKEY, &c, &r) == 1 &&
              (c.wc_flags & VMMBIB_WC_F_GRH) && get16(r + 4) == 0 &&
              path_fields(r + 56, &e) &&
              !memcmp(r - VMMBIB_GRH_SIZE + 8, e.xgid, 16),
              "a request with a GRH gets a response with one");

    /* MTU selector "less than 4096": 2048. */
    sa_mad(m, 0x01, 0x0035, CM_DGID | CM_MTU | CM_MTU_SEL, 4);
    memcpy(m + 56 + PR_DGID, e.ygid, 16);
    m[56 + 54] = 1 << 6 | VMMBIB_MTU_4096;
    TAP_CHECK(sa_ask(&e, e.ah_sm, MAD, GSI_QKEY, &c, &r) == 1 &&
              get16(r + 4) == 0 && r[56 + 54] == (2 << 6 | VMMBIB_MTU_2048),
              "MTU less than 4096: a path of MTU 2048");
    sa_mad(m, 0x01, 0x0035, CM_DGID | CM_MTU | CM_MTU_SEL, 5);
    memcpy(m + 56 + PR_DGID, e.ygid, 16);
    m[56 + 54] = 0 << 6 | VMMBIB_MTU_4096;
    TAP_CHECK(sa_ask(&e, e.ah_sm, MAD, GSI_QKEY, &c, &r) == 1 &&
              get16(r + 4) == 0x0300,
              "MTU greater than 4096: ERR_NO_RECORDS");
    sa_mad(m, 0x01, 0x0035, CM_DGID | CM_RATE, 6);
    memcpy(m + 56 + PR_DGID, e.ygid, 16);
    m[56 + 55] = 3;         /* exactly 10 Gb/s */
    TAP_CHECK(sa_ask(&e, e.ah_sm, MAD, GSI_QKEY, &c, &r) == 1 &&
              get16(r + 4) == 0 && r[56 + 55] == (2 << 6 | 3),
              "rate exactly 10 Gb/s: granted");

    /* An unknown DGID: Get says no records, GetTable an empty table. */
    sa_mad(m, 0x01, 0x0035, CM_DGID, 7);
    memset(m + 56 + PR_DGID, 0xee, 16);
    TAP_CHECK(sa_ask(&e, e.ah_sm, MAD, GSI_QKEY, &c, &r) == 1 &&
              r[3] == 0x81 && get16(r + 4) == 0x0300,
              "PathRecord Get to an unknown GID: ERR_NO_RECORDS");
    sa_mad(m, 0x12, 0x0035, CM_DGID, 8);
    memset(m + 56 + PR_DGID, 0xee, 16);
    TAP_CHECK(sa_ask(&e, e.ah_sm, MAD, GSI_QKEY, &c, &r) == 1 &&
              r[3] == 0x92 && get16(r + 4) == 0 &&
              r[24] == 1 && r[25] == 1 && (r[26] & 7) == 7 &&
              get32(r + 28) == 1 && get32(r + 32) == 20,
              "GetTable to an unknown GID: an empty RMPP table");
    sa_mad(m, 0x12, 0x0035, CM_DGID | CM_SGID, 9);
    memcpy(m + 56 + PR_DGID, e.ygid, 16);
    memcpy(m + 56 + PR_SGID, e.xgid, 16);
    TAP_CHECK(sa_ask(&e, e.ah_sm, MAD, GSI_QKEY, &c, &r) == 1 &&
              r[3] == 0x92 && get16(r + 4) == 0 && get16(r + 44) == 8 &&
              get32(r + 32) == 20 + 64 && path_fields(r + 56, &e),
              "PathRecord GetTable: one record, RMPP payload length 84");
    sa_mad(m, 0x01, 0x0035, 0, 10);
    TAP_CHECK(sa_ask(&e, e.ah_sm, MAD, GSI_QKEY, &c, &r) == 1 &&
              get16(r + 4) == 0x0600,
              "PathRecord without DGID or DLID: "
              "ERR_REQ_INSUFFICIENT_COMPONENTS");

    sa_mad(m, 0x01, 0x0001, 0, 11);
    TAP_CHECK(sa_ask(&e, e.ah_sm, MAD, GSI_QKEY, &c, &r) == 1 &&
              r[3] == 0x81 && get16(r + 4) == 0 && r[56] == 1 &&
              r[57] == 2 && (get32(r + 60) & 0x1f) == 18,
              "ClassPortInfo Get: base 1, class version 2, RespTimeValue");
    sa_mad(m, 0x01, 0x0038, 0, 12);
    TAP_CHECK(sa_ask(&e, e.ah_sm, MAD, GSI_QKEY, &c, &r) == 1 &&
              r[3] == 0x81 && get16(r + 4) == 0x000c,
              "an unsupported attribute: status 0x000c");
    sa_mad(m, 0x02, 0x0035, 0, 13);
    TAP_CHECK(sa_ask(&e, e.ah_sm, MAD, GSI_QKEY, &c, &r) == 1 &&
              r[3] == 0x82 && get16(r + 4) == 0x0008,
              "Set: status 0x0008, method not supported");
    sa_mad(m, 0x01, 0x0035, CM_DGID, 14);
    m[2] = 1;
    TAP_CHECK(sa_ask(&e, e.ah_sm, MAD, GSI_QKEY, &c, &r) == 1 &&
              get16(r + 4) == 0x0004,
              "class version 1: status 0x0004, bad version");

    /* Malformed or not requests: dropped, no answer. */
    sa_mad(m, 0x01, 0x0035, CM_DGID, 15);
    memcpy(m + 56 + PR_DGID, e.ygid, 16);
    TAP_CHECK(sa_ask(&e, e.ah_sm, 100, GSI_QKEY, &c, &r) == 0,
              "a 100-byte SA MAD: dropped");
    TAP_CHECK(sa_ask(&e, e.ah_sm, MAD + 8, GSI_QKEY, &c, &r) == 0,
              "a 264-byte SA MAD: dropped");
    TAP_CHECK(sa_ask(&e, e.ah_sm, MAD, 0x1234, &c, &r) == 0,
              "an SA MAD with a Q_Key that is not QP1's: dropped");
    m[3] = 0x81;
    TAP_CHECK(sa_ask(&e, e.ah_sm, MAD, GSI_QKEY, &c, &r) == 0,
              "a response MAD sent to the SA: dropped");
    m[3] = 0x01;
    m[0] = 2;
    TAP_CHECK(sa_ask(&e, e.ah_sm, MAD, GSI_QKEY, &c, &r) == 0,
              "base version 2: dropped");
    m[0] = 1;
    m[3] = 0x06;
    TAP_CHECK(sa_ask(&e, e.ah_sm, MAD, GSI_QKEY, &c, &r) == 0,
              "Report (the SA's own method): dropped");
    vmmbib_dev_get_stats(e.x.vm.dev, &st1);
    TAP_CHECK(st1.sa_requests - st0.sa_requests == 20 &&
              st1.sa_dropped - st0.sa_dropped == 6,
              "stats: 20 SA requests, 6 dropped");

    /* After all that the SA still answers, and QP1 itself receives. */
    sa_mad(m, 0x01, 0x0035, CM_DGID, 16);
    memcpy(m + 56 + PR_DGID, e.ygid, 16);
    TAP_CHECK(sa_ask(&e, e.ah_sm, MAD, GSI_QKEY, &c, &r) == 1 &&
              get16(r + 4) == 0 && get32(r + 12) == 16 &&
              path_fields(r + 56, &e),
              "a valid query after the bad ones is answered");
    sa_mad(m, 0x01, 0x0010, 0, 17);
    m[1] = 0x07;            /* CM class to the own LID: the own QP1 */
    TAP_CHECK(sa_ask(&e, e.ah_sm, MAD, GSI_QKEY, &c, &r) == 1 &&
              le32toh(c.src_qp) == VMMBIB_GSI_QPN && r[1] == 0x07 &&
              r[3] == 0x01,
              "another class to the own LID loops back to the own QP1");
    vm_fini(&e.x.vm);
    vm_fini(&e.y.vm);
    vmmbib_engine_free(eng);
}

int main(void)
{
    test_gsi_create();
    test_ud_to_qp1();
    test_sa();
    return tap_done();
}
