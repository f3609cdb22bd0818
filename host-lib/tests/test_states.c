/*
 * QP states the engine enters on its own and the async events that go
 * with them, with synthetic guests: SQE after a UD send error and back
 * to RTS, the SQ drain of RTS -> SQD -> RTS with SQ_DRAINED, COMM_EST on
 * an RC QP in RTR, and PORT_ACTIVE when a device comes up.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <endian.h>
#include <string.h>

#include "guest.h"
#include "tap.h"

#define QKEY 0x1234

/* Events of @type for anything: the ones a test must not see. */
static unsigned int events_of(struct guest *g, uint16_t type)
{
    unsigned int n = 0;

    pthread_mutex_lock(&g->lock);
    for (unsigned int i = 0; i < g->nevents; i++) {
        n += le16toh(g->events[i].type) == type;
    }
    pthread_mutex_unlock(&g->lock);
    return n;
}

static void test_ud_sqe(void)
{
    struct vm v;
    struct gcq as, ar, bs, br;
    struct gqp a, b;
    struct qp_opts o;
    struct vmmbib_cqe c[2];
    struct vmmbib_sge s, bad;
    struct vmmbib_qp_attr attr;
    uint32_t ah;

    qp_opts_default(&o, VMMBIB_QPT_UD);
    TAP_CHECK(vm_init(&v) &&
              cq_create(&v.c, 16, &as) == OK && cq_create(&v.c, 16, &ar) == OK &&
              cq_create(&v.c, 16, &bs) == OK && cq_create(&v.c, 16, &br) == OK &&
              qp_create(&v.c, v.pd, &as, &ar, NULL, &o, &a) == OK &&
              qp_create(&v.c, v.pd, &bs, &br, NULL, &o, &b) == OK &&
              ud_to_rts(&a, QKEY) == OK && ud_to_rts(&b, QKEY) == OK &&
              ah_create(&v.c, v.pd, port_lid(v.dev), &ah) == OK,
              "sqe: two UD QPs in RTS and an AH to their port");

    /* A bad lkey, then a good WQE behind it, one doorbell for both. */
    s = buf_sge(&v, 0, 64);
    bad = s;
    bad.lkey = htole32(le32toh(s.lkey) ^ 0x100);
    ud_send(&a, 0x1, ah, b.qpn, QKEY, &bad, false);
    ud_send(&a, 0x2, ah, b.qpn, QKEY, &s, true);
    TAP_CHECK(cq_wait(&as, c, 2) == 2 &&
              cqe_is(&c[0], 0x1, VMMBIB_WC_SEND, VMMBIB_WC_LOC_PROT_ERR) &&
              cqe_is(&c[1], 0x2, VMMBIB_WC_SEND, VMMBIB_WC_WR_FLUSH_ERR),
              "sqe: the bad WQE fails with LOC_PROT_ERR, the next is flushed");
    TAP_CHECK(qp_state(&a) == VMMBIB_QPS_SQE,
              "sqe: a UD send error moves the QP to SQE, not ERR");
    TAP_CHECK(events_of(&v.g, VMMBIB_EVENT_QP_FATAL) == 0 &&
              events_of(&v.g, VMMBIB_EVENT_QP_REQ_ERR) == 0 &&
              events_of(&v.g, VMMBIB_EVENT_QP_ACCESS_ERR) == 0,
              "sqe: no QP error event (the error CQE says it all)");

    /* The RQ of a QP in SQE still receives. */
    pattern_fill(v.buf.p + 1024, 200, 1);
    s = buf_sge(&v, 8192, VMMBIB_GRH_SIZE + 256);
    qp_post_recv(&a, 0x3, &s, 1);
    s = buf_sge(&v, 1024, 200);
    ud_send(&b, 0x4, ah, a.qpn, QKEY, &s, true);
    TAP_CHECK(cq_wait(&bs, c, 1) == 1 &&
              cqe_is(&c[0], 0x4, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS) &&
              cq_wait(&ar, c, 1) == 1 &&
              cqe_is(&c[0], 0x3, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(c[0].byte_len) == 200 + VMMBIB_GRH_SIZE &&
              pattern_check(v.buf.p + 8192 + VMMBIB_GRH_SIZE, 200, 1),
              "sqe: the QP in SQE still receives, with the data");

    /* A send posted in SQE is flushed, not executed. */
    s = buf_sge(&v, 20480, VMMBIB_GRH_SIZE + 512);
    qp_post_recv(&b, 0x5, &s, 1);
    s = buf_sge(&v, 1024, 200);
    ud_send(&a, 0x6, ah, b.qpn, QKEY, &s, true);
    TAP_CHECK(cq_wait(&as, c, 1) == 1 &&
              cqe_is(&c[0], 0x6, VMMBIB_WC_SEND, VMMBIB_WC_WR_FLUSH_ERR),
              "sqe: a WQE posted in SQE completes with WR_FLUSH_ERR");
    msleep(10);
    TAP_CHECK(cq_poll(&br, c, 1) == 0, "sqe: ... and nothing was sent");

    /* Back to RTS: RTS -> SQE is no transition, SQE -> RTS is. */
    memset(&attr, 0, sizeof(attr));
    attr.qp_state = VMMBIB_QPS_RTS;
    attr.cur_qp_state = VMMBIB_QPS_RTS;
    TAP_CHECK(qp_modify(&a, VMMBIB_QP_STATE | VMMBIB_QP_CUR_STATE, &attr) ==
              VMMBIB_STATUS_BAD_STATE,
              "sqe: a cur_qp_state of RTS for a QP in SQE: BAD_STATE");
    attr.qp_state = VMMBIB_QPS_SQD;
    TAP_CHECK(qp_modify(&a, VMMBIB_QP_STATE, &attr) ==
              VMMBIB_STATUS_BAD_STATE, "sqe: SQE -> SQD: BAD_STATE");
    attr.qp_state = VMMBIB_QPS_RTS;
    attr.cur_qp_state = VMMBIB_QPS_SQE;
    TAP_CHECK(qp_modify(&a, VMMBIB_QP_STATE | VMMBIB_QP_CUR_STATE, &attr) ==
              OK && qp_state(&a) == VMMBIB_QPS_RTS, "sqe: SQE -> RTS");
    pattern_fill(v.buf.p + 2048, 300, 2);
    s = buf_sge(&v, 2048, 300);
    ud_send(&a, 0x7, ah, b.qpn, QKEY, &s, true);
    TAP_CHECK(cq_wait(&as, c, 1) == 1 &&
              cqe_is(&c[0], 0x7, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS) &&
              cq_wait(&br, c, 1) == 1 &&
              cqe_is(&c[0], 0x5, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(c[0].src_qp) == a.qpn &&
              le32toh(c[0].byte_len) == 300 + VMMBIB_GRH_SIZE &&
              pattern_check(v.buf.p + 20480 + VMMBIB_GRH_SIZE, 300, 2),
              "sqe: after RTS the QP sends again and the data arrives");
    vm_fini(&v);
}

static void test_rc_error_is_not_sqe(void)
{
    struct vm v;
    struct rc_pair p;
    struct vmmbib_cqe c;
    struct vmmbib_sge s;
    struct vmmbib_qp_attr attr;

    TAP_CHECK(vm_init(&v) &&
              rc_pair_create(&p, &v.c, v.pd, &v.c, v.pd, NULL) == OK,
              "rc error: a connected pair");
    s = buf_sge(&v, BUF_SIZE - 8, 64);      /* past the MR's end */
    post_send(&p.a, 0x11, VMMBIB_WR_RDMA_WRITE, &s, 1, v.buf.gpa,
              v.mr.rkey);
    TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x11, VMMBIB_WC_RDMA_WRITE, VMMBIB_WC_LOC_PROT_ERR) &&
              qp_state(&p.a) == VMMBIB_QPS_ERR,
              "rc error: an RC send error moves the QP to ERR");
    memset(&attr, 0, sizeof(attr));
    attr.qp_state = VMMBIB_QPS_RTS;
    TAP_CHECK(qp_modify(&p.a, VMMBIB_QP_STATE, &attr) ==
              VMMBIB_STATUS_BAD_STATE && qp_state(&p.a) == VMMBIB_QPS_ERR,
              "rc error: ERR -> RTS is refused");
    vm_fini(&v);
}

static int to_sqd(struct gqp *qp, bool notify)
{
    struct vmmbib_qp_attr a = {
        .qp_state = VMMBIB_QPS_SQD,
        .en_sqd_async_notify = notify,
    };

    return qp_modify(qp, VMMBIB_QP_STATE |
                     (notify ? VMMBIB_QP_EN_SQD_ASYNC_NOTIFY : 0), &a);
}

static int to_rts(struct gqp *qp)
{
    struct vmmbib_qp_attr a = { .qp_state = VMMBIB_QPS_RTS };

    return qp_modify(qp, VMMBIB_QP_STATE, &a);
}

static bool draining(struct gqp *qp, int want)
{
    struct vmmbib_qp_attr a;

    return qp_query(qp, &a) == OK && a.qp_state == VMMBIB_QPS_SQD &&
           a.sq_draining == want;
}

static void test_sqd(void)
{
    struct vm v;
    struct rc_pair p;
    struct rc_opts ro;
    struct vmmbib_cqe c;
    struct vmmbib_sge s;
    struct vmmbib_qp_attr attr;
    bool drained;

    rc_opts_default(&ro);
    ro.rnr_retry = 7;           /* a send without a receive waits forever */
    TAP_CHECK(vm_init(&v) &&
              rc_pair_create(&p, &v.c, v.pd, &v.c, v.pd, &ro) == OK,
              "sqd: a connected pair, rnr_retry 7");

    /* Nothing in flight: drained at once. */
    TAP_CHECK(to_sqd(&p.a, true) == OK, "sqd: RTS -> SQD with notify");
    TAP_CHECK(guest_wait_event(&v.g, VMMBIB_EVENT_SQ_DRAINED, p.a.handle, 1,
                               wait_timeout_ms()) && draining(&p.a, 0),
              "sqd: an empty SQ drains: SQ_DRAINED, sq_draining 0");
    pattern_fill(v.buf.p, 100, 3);
    s = buf_sge(&v, 0, 100);
    post_send(&p.a, 0x21, VMMBIB_WR_RDMA_WRITE, &s, 1, v.buf.gpa + 4096,
              v.mr.rkey);
    msleep(20);
    TAP_CHECK(cq_poll(&p.a_scq, &c, 1) == 0 && v.buf.p[4096] == 0,
              "sqd: a WQE posted in SQD does not start");
    memset(&attr, 0, sizeof(attr));
    attr.qp_state = VMMBIB_QPS_SQD;
    attr.timeout = 10;
    TAP_CHECK(qp_modify(&p.a, VMMBIB_QP_STATE | VMMBIB_QP_TIMEOUT, &attr) ==
              OK, "sqd: SQD -> SQD with a new timeout once drained");
    TAP_CHECK(to_rts(&p.a) == OK && qp_state(&p.a) == VMMBIB_QPS_RTS,
              "sqd: SQD -> RTS");
    TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x21, VMMBIB_WC_RDMA_WRITE, VMMBIB_WC_SUCCESS) &&
              pattern_check(v.buf.p + 4096, 100, 3),
              "sqd: back in RTS the WQE posted in SQD runs");

    /* Without notify: the drain is silent. */
    TAP_CHECK(to_sqd(&p.a, false) == OK && to_rts(&p.a) == OK,
              "sqd: RTS -> SQD without notify, back to RTS");
    msleep(10);
    TAP_CHECK(guest_event_count(&v.g, VMMBIB_EVENT_SQ_DRAINED,
                                p.a.handle) == 1,
              "sqd: no SQ_DRAINED without en_sqd_async_notify");

    /* A SEND waiting for a receive (RNR) has begun: it must finish. */
    pattern_fill(v.buf.p + 512, 64, 4);
    s = buf_sge(&v, 512, 64);
    post_send(&p.a, 0x22, VMMBIB_WR_SEND, &s, 1, 0, 0);
    pattern_fill(v.buf.p + 1024, 32, 5);
    s = buf_sge(&v, 1024, 32);
    post_send(&p.a, 0x23, VMMBIB_WR_RDMA_WRITE, &s, 1, v.buf.gpa + 12288,
              v.mr.rkey);
    msleep(5);              /* the engine met the RNR */
    TAP_CHECK(to_sqd(&p.a, true) == OK && draining(&p.a, 1),
              "sqd: with a SEND in RNR wait, SQD reports sq_draining 1");
    msleep(10);
    TAP_CHECK(guest_event_count(&v.g, VMMBIB_EVENT_SQ_DRAINED,
                                p.a.handle) == 1,
              "sqd: no SQ_DRAINED while the begun WQE waits");
    attr.timeout = 12;
    TAP_CHECK(qp_modify(&p.a, VMMBIB_QP_STATE | VMMBIB_QP_TIMEOUT, &attr) ==
              VMMBIB_STATUS_BAD_STATE,
              "sqd: SQD -> SQD while draining: BAD_STATE");
    s = buf_sge(&v, 16384, 128);
    qp_post_recv(&p.b, 0x24, &s, 1);
    TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x22, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS) &&
              cq_wait(&p.b_rcq, &c, 1) == 1 &&
              cqe_is(&c, 0x24, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              pattern_check(v.buf.p + 16384, 64, 4),
              "sqd: the begun SEND completes once a receive is there");
    drained = guest_wait_event(&v.g, VMMBIB_EVENT_SQ_DRAINED, p.a.handle, 2,
                               wait_timeout_ms());
    TAP_CHECK(drained && draining(&p.a, 0),
              "sqd: then SQ_DRAINED, and sq_draining 0");
    msleep(10);
    TAP_CHECK(cq_poll(&p.a_scq, &c, 1) == 0 && v.buf.p[12288] == 0,
              "sqd: the WRITE behind it did not start");
    TAP_CHECK(to_rts(&p.a) == OK && cq_wait(&p.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x23, VMMBIB_WC_RDMA_WRITE, VMMBIB_WC_SUCCESS) &&
              pattern_check(v.buf.p + 12288, 32, 5),
              "sqd: SQD -> RTS runs it");
    attr.qp_state = VMMBIB_QPS_SQD;
    attr.en_sqd_async_notify = 2;
    TAP_CHECK(qp_modify(&p.a, VMMBIB_QP_STATE |
                        VMMBIB_QP_EN_SQD_ASYNC_NOTIFY, &attr) ==
              VMMBIB_STATUS_INVALID && qp_state(&p.a) == VMMBIB_QPS_RTS,
              "sqd: en_sqd_async_notify 2: INVALID");
    vm_fini(&v);
}

static void test_comm_est(void)
{
    struct vm v;
    struct gcq as, ar, bs, br;
    struct gqp a, b;
    struct rc_opts ro;
    struct vmmbib_cqe c;
    struct vmmbib_sge s;

    rc_opts_default(&ro);
    TAP_CHECK(vm_init(&v) &&
              cq_create(&v.c, 16, &as) == OK && cq_create(&v.c, 16, &ar) == OK &&
              cq_create(&v.c, 16, &bs) == OK && cq_create(&v.c, 16, &br) == OK &&
              qp_create(&v.c, v.pd, &as, &ar, NULL, NULL, &a) == OK &&
              qp_create(&v.c, v.pd, &bs, &br, NULL, NULL, &b) == OK &&
              qp_rc_init(&a, ro.access) == OK &&
              qp_rc_init(&b, ro.access) == OK &&
              qp_rc_rtr(&a, port_lid(v.dev), b.qpn, &ro) == OK &&
              qp_rc_rtr(&b, port_lid(v.dev), a.qpn, &ro) == OK &&
              qp_rc_rts(&a, &ro) == OK,
              "comm_est: a in RTS, b left in RTR");
    msleep(5);
    TAP_CHECK(events_of(&v.g, VMMBIB_EVENT_COMM_EST) == 0,
              "comm_est: no event before any packet");
    pattern_fill(v.buf.p, 300, 6);
    s = buf_sge(&v, 4096, 512);
    qp_post_recv(&b, 0x31, &s, 1);
    s = buf_sge(&v, 0, 300);
    post_send(&a, 0x32, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&br, &c, 1) == 1 &&
              cqe_is(&c, 0x31, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              pattern_check(v.buf.p + 4096, 300, 6),
              "comm_est: b in RTR receives the SEND");
    TAP_CHECK(guest_wait_event(&v.g, VMMBIB_EVENT_COMM_EST, b.handle, 1,
                               wait_timeout_ms()),
              "comm_est: COMM_EST for b");
    s = buf_sge(&v, 0, 16);
    post_send(&a, 0x33, VMMBIB_WR_RDMA_WRITE, &s, 1, v.buf.gpa + 8192,
              v.mr.rkey);
    TAP_CHECK(cq_wait(&as, &c, 1) == 1 && cq_wait(&as, &c, 1) == 1 &&
              cqe_is(&c, 0x33, VMMBIB_WC_RDMA_WRITE, VMMBIB_WC_SUCCESS),
              "comm_est: a second packet to b in RTR");
    msleep(5);
    TAP_CHECK(guest_event_count(&v.g, VMMBIB_EVENT_COMM_EST, b.handle) == 1 &&
              guest_event_count(&v.g, VMMBIB_EVENT_COMM_EST, a.handle) == 0,
              "comm_est: once for b, never for a (it was in RTS)");
    vm_fini(&v);
}

static void test_port_active(void)
{
    struct guest g;
    struct vmmbib_dev *dev;
    struct gctx c1, c2, c3;
    struct vmmbib_resp_query_device qd;
    bool ctx0 = false;

    guest_init(&g, GUEST_RAM_SIZE);
    dev = guest_dev_new(&g, NULL, NULL);
    TAP_CHECK(cmd(dev, VMMBIB_CMD_QUERY_DEVICE, 0, NULL, 0, &qd,
                  sizeof(qd)) == OK &&
              (le32toh(qd.device_cap_flags) &
               VMMBIB_DEV_CAP_PORT_ACTIVE_EVENT),
              "port: QUERY_DEVICE offers PORT_ACTIVE_EVENT");
    TAP_CHECK(events_of(&g, VMMBIB_EVENT_PORT_ACTIVE) == 0,
              "port: no event before a driver uses the device");
    TAP_CHECK(ctx_create(&c1, dev, &g) == OK &&
              guest_event_count(&g, VMMBIB_EVENT_PORT_ACTIVE, 1) == 1,
              "port: the first context brings PORT_ACTIVE for port 1");
    pthread_mutex_lock(&g.lock);
    for (unsigned int i = 0; i < g.nevents; i++) {
        if (le16toh(g.events[i].type) == VMMBIB_EVENT_PORT_ACTIVE) {
            ctx0 = g.events[i].ctx_handle == 0;
        }
    }
    pthread_mutex_unlock(&g.lock);
    TAP_CHECK(ctx0, "port: a port event names no context");
    TAP_CHECK(ctx_create(&c2, dev, &g) == OK &&
              events_of(&g, VMMBIB_EVENT_PORT_ACTIVE) == 1,
              "port: a second context does not repeat it");
    vmmbib_dev_reset(dev);
    TAP_CHECK(events_of(&g, VMMBIB_EVENT_PORT_ACTIVE) == 1,
              "port: the reset itself raises nothing");
    TAP_CHECK(ctx_create(&c3, dev, &g) == OK &&
              guest_event_count(&g, VMMBIB_EVENT_PORT_ACTIVE, 1) == 2,
              "port: after a reset the first context brings it again");
    vmmbib_dev_free(dev);
    guest_fini(&g);
}

int main(void)
{
    test_ud_sqe();
    test_rc_error_is_not_sqe();
    test_sqd();
    test_comm_est();
    test_port_active();
    return tap_done();
}
