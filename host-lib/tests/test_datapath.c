/*
 * Data path tests with synthetic guests: RC SEND in one device and
 * between two devices of one engine, RDMA WRITE (with immediate), READ,
 * atomics, scatter/gather, inline data, multi-level page lists,
 * unsignaled WQEs, UD with its GRH area and Q_Keys, UD and RC addressed by
 * LID and by GID (with the GRH written), SEND_WITH_IMM, DMA MRs,
 * DESTROY_AH, RESIZE_CQ with CQEs pending, and SRQs.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <endian.h>
#include <string.h>

#include "guest.h"
#include "tap.h"


static void test_send_loopback(void)
{
    struct vm v;
    struct rc_pair p;
    struct vmmbib_cqe sc, rc;
    struct vmmbib_sge s;
    struct vmmbib_dev_stats st;
    uint16_t lid;

    TAP_CHECK(vm_init(&v), "loopback: context, PD and MR");
    TAP_CHECK(rc_pair_create(&p, &v.c, v.pd, &v.c, v.pd, NULL) == OK,
              "loopback: two RC QPs of one device reach RTS");
    lid = port_lid(v.dev);
    pattern_fill(v.buf.p, 1000, 1);
    s = buf_sge(&v, 8192, 4096);
    qp_post_recv(&p.b, 0xb001, &s, 1);
    s = buf_sge(&v, 0, 1000);
    post_send(&p.a, 0xa001, VMMBIB_WR_SEND, &s, 1, 0, 0);

    TAP_CHECK(cq_wait(&p.a_scq, &sc, 1) == 1 &&
              cqe_is(&sc, 0xa001, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS) &&
              le32toh(sc.qpn) == p.a.qpn && le32toh(sc.wqe_index) == 0,
              "loopback: send CQE is SEND, SUCCESS, its wr_id, QPN, index 0");
    TAP_CHECK(cq_wait(&p.b_rcq, &rc, 1) == 1 &&
              cqe_is(&rc, 0xb001, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(rc.byte_len) == 1000 &&
              le32toh(rc.src_qp) == p.a.qpn && le16toh(rc.slid) == lid &&
              le32toh(rc.qpn) == p.b.qpn,
              "loopback: recv CQE is RECV with byte_len, src_qp and slid");
    TAP_CHECK(pattern_check(v.buf.p + 8192, 1000, 1) &&
              v.buf.p[8192 + 1000] == 0,
              "loopback: the payload arrives, nothing past it");
    TAP_CHECK(cq_poll(&p.a_rcq, &rc, 1) == 0 && cq_poll(&p.b_scq, &rc, 1) == 0,
              "loopback: no stray completions on the other CQs");
    vmmbib_dev_get_stats(v.dev, &st);
    TAP_CHECK(st.wqes == 2 && st.cqes == 2 && st.doorbells == 2 &&
              st.bad_doorbells == 0 && st.error_completions == 0,
              "loopback: counters: 2 WQEs, 2 CQEs, 2 doorbells, no errors");
    vm_fini(&v);
}

static void test_send_two_devices(void)
{
    struct vmmbib_engine *eng = engine_new();
    struct vm x, y;
    struct rc_pair p;
    struct vmmbib_cqe c[2];
    struct vmmbib_sge s;
    uint16_t lx, ly;

    TAP_CHECK(eng != NULL, "two devices: an engine of their own");
    if (!eng) {
        return;
    }
    TAP_CHECK(vm_init_on(&x, eng, NULL) && vm_init_on(&y, eng, NULL),
              "two devices: one VM each, on one engine");
    lx = port_lid(x.dev);
    ly = port_lid(y.dev);
    TAP_CHECK(lx && ly && lx != ly, "two devices: distinct LIDs on one subnet");
    TAP_CHECK(rc_pair_create(&p, &x.c, x.pd, &y.c, y.pd, NULL) == OK,
              "two devices: RC QPs connected by LID and QPN");

    /* x -> y, 3000 bytes that cross a page in both memories. */
    pattern_fill(x.buf.p + 3000, 3000, 2);
    s = buf_sge(&y, 4000, 8000);
    qp_post_recv(&p.b, 0x11, &s, 1);
    s = buf_sge(&x, 3000, 3000);
    post_send(&p.a, 0x12, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&p.a_scq, &c[0], 1) == 1 &&
              cqe_is(&c[0], 0x12, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS),
              "x to y: send completes");
    TAP_CHECK(cq_wait(&p.b_rcq, &c[1], 1) == 1 &&
              cqe_is(&c[1], 0x11, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(c[1].byte_len) == 3000 &&
              le32toh(c[1].src_qp) == p.a.qpn && le16toh(c[1].slid) == lx,
              "x to y: recv CQE names x's QP and LID");
    TAP_CHECK(pattern_check(y.buf.p + 4000, 3000, 2) &&
              y.buf.p[7000] == 0 && y.buf.p[3999] == 0,
              "x to y: the bytes land in y's memory only where posted");

    /* y -> x. */
    pattern_fill(y.buf.p + 20000, 5000, 3);
    s = buf_sge(&x, 30000, 5000);
    qp_post_recv(&p.a, 0x21, &s, 1);
    s = buf_sge(&y, 20000, 5000);
    post_send(&p.b, 0x22, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&p.b_scq, &c[0], 1) == 1 &&
              cqe_is(&c[0], 0x22, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS) &&
              cq_wait(&p.a_rcq, &c[1], 1) == 1 &&
              cqe_is(&c[1], 0x21, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(c[1].byte_len) == 5000 &&
              le32toh(c[1].src_qp) == p.b.qpn && le16toh(c[1].slid) == ly,
              "y to x: both completions");
    TAP_CHECK(pattern_check(x.buf.p + 30000, 5000, 3),
              "y to x: payload verified");
    vm_fini(&x);
    vm_fini(&y);
    vmmbib_engine_free(eng);
}

/* The 2-level MR of test_rdma: 600 guest pages in a scrambled order. */
#define BIG_PAGES 600
#define BIG_OFFSET 0x123u

struct big_mr {
    uint64_t pages[BIG_PAGES];
    struct gmr mr;
};

static uint8_t *big_at(struct vm *v, struct big_mr *b, uint64_t off)
{
    off += BIG_OFFSET;
    return gva(&v->g, b->pages[off / VMMBIB_PAGE_SIZE]) +
           off % VMMBIB_PAGE_SIZE;
}

static void big_copy(struct vm *v, struct big_mr *b, uint64_t off,
                     uint8_t *buf, uint64_t len, bool to_mr)
{
    for (uint64_t i = 0; i < len; i++) {
        uint8_t *p = big_at(v, b, off + i);

        if (to_mr) {
            *p = buf[i];
        } else {
            buf[i] = *p;
        }
    }
}

static void test_rdma(void)
{
    struct vmmbib_engine *eng = engine_new();
    static struct big_mr big;
    static uint8_t tmp[16384];
    struct vm x, y;
    struct rc_pair p;
    struct vmmbib_cqe c;
    struct vmmbib_sge s[3];
    struct vmmbib_send_wqe w;
    struct vmmbib_page_list pl;
    struct gbuf xb2, yb2, small;
    struct gmr xm2, ym2, small_mr;
    uint64_t v64, region, off;
    uint8_t data[100];
    uint32_t brk;

    if (!eng) {
        TAP_CHECK(0, "rdma: engine");
        return;
    }
    TAP_CHECK(vm_init_on(&x, eng, NULL) && vm_init_on(&y, eng, NULL) &&
              rc_pair_create(&p, &x.c, x.pd, &y.c, y.pd, NULL) == OK,
              "rdma: two VMs with a connected RC pair");

    /* RDMA WRITE: 3000 bytes into y across a page boundary. */
    pattern_fill(x.buf.p, 3000, 4);
    s[0] = buf_sge(&x, 0, 3000);
    post_send(&p.a, 0x31, VMMBIB_WR_RDMA_WRITE, s, 1, y.buf.gpa + 10000,
              y.mr.rkey);
    TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x31, VMMBIB_WC_RDMA_WRITE, VMMBIB_WC_SUCCESS) &&
              le32toh(c.byte_len) == 3000,
              "RDMA WRITE completes with opcode RDMA_WRITE");
    TAP_CHECK(pattern_check(y.buf.p + 10000, 3000, 4) &&
              y.buf.p[9999] == 0 && y.buf.p[13000] == 0,
              "RDMA WRITE: the remote memory holds exactly the data");
    TAP_CHECK(cq_poll(&p.b_rcq, &c, 1) == 0,
              "RDMA WRITE consumes no receive on the responder");

    /* RDMA WRITE with immediate: data lands, the receive gets the imm. */
    s[0] = buf_sge(&y, 40000, 64);
    qp_post_recv(&p.b, 0x3b, s, 1);
    pattern_fill(x.buf.p + 4096, 100, 5);
    memset(&w, 0, sizeof(w));
    w.wr_id = htole64(0x32);
    w.opcode = VMMBIB_WR_RDMA_WRITE_WITH_IMM;
    w.flags = VMMBIB_WQE_SIGNALED;
    w.imm_data = htobe32(0xdeadbeef);
    w.rdma.remote_addr = htole64(y.buf.gpa + 20000);
    w.rdma.rkey = htole32(y.mr.rkey);
    s[0] = buf_sge(&x, 4096, 100);
    qp_post_send(&p.a, &w, s, 1, NULL, 0, true);
    TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x32, VMMBIB_WC_RDMA_WRITE, VMMBIB_WC_SUCCESS),
              "WRITE_WITH_IMM: the requester completes as RDMA_WRITE");
    TAP_CHECK(cq_wait(&p.b_rcq, &c, 1) == 1 &&
              cqe_is(&c, 0x3b, VMMBIB_WC_RECV_RDMA_WITH_IMM,
                     VMMBIB_WC_SUCCESS) &&
              c.imm_data == htobe32(0xdeadbeef) &&
              (c.wc_flags & VMMBIB_WC_F_WITH_IMM) &&
              le32toh(c.byte_len) == 100,
              "WRITE_WITH_IMM: recv CQE RECV_RDMA_WITH_IMM with imm and len");
    TAP_CHECK(pattern_check(y.buf.p + 20000, 100, 5) &&
              y.buf.p[40000] == 0,
              "WRITE_WITH_IMM: data at the RDMA address, not in the receive");

    /* RDMA READ: 5000 bytes from y. */
    pattern_fill(y.buf.p + 30000, 5000, 6);
    s[0] = buf_sge(&x, 8192, 5000);
    post_send(&p.a, 0x33, VMMBIB_WR_RDMA_READ, s, 1, y.buf.gpa + 30000,
              y.mr.rkey);
    TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x33, VMMBIB_WC_RDMA_READ, VMMBIB_WC_SUCCESS) &&
              le32toh(c.byte_len) == 5000,
              "RDMA READ completes with opcode RDMA_READ and byte_len");
    TAP_CHECK(pattern_check(x.buf.p + 8192, 5000, 6) &&
              x.buf.p[8192 + 5000] == 0,
              "RDMA READ: the local buffer holds the remote bytes");

    /* Atomics on an 8-byte word of y. */
    v64 = htole64(0x1111111111111111ull);
    memcpy(y.buf.p + 48000, &v64, 8);
    memset(&w, 0, sizeof(w));
    w.wr_id = htole64(0x34);
    w.opcode = VMMBIB_WR_ATOMIC_CMP_AND_SWP;
    w.flags = VMMBIB_WQE_SIGNALED;
    w.atomic.remote_addr = htole64(y.buf.gpa + 48000);
    w.atomic.rkey = htole32(y.mr.rkey);
    w.atomic.compare_add = htole64(0x1111111111111111ull);
    w.atomic.swap = htole64(0x2222222222222222ull);
    s[0] = buf_sge(&x, 50000, 8);
    qp_post_send(&p.a, &w, s, 1, NULL, 0, true);
    TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x34, VMMBIB_WC_COMP_SWAP, VMMBIB_WC_SUCCESS) &&
              le32toh(c.byte_len) == 8,
              "CMP_AND_SWP completes with opcode COMP_SWAP");
    memcpy(&v64, x.buf.p + 50000, 8);
    TAP_CHECK(le64toh(v64) == 0x1111111111111111ull,
              "CMP_AND_SWP returns the old value");
    memcpy(&v64, y.buf.p + 48000, 8);
    TAP_CHECK(le64toh(v64) == 0x2222222222222222ull,
              "CMP_AND_SWP with a matching compare swaps");

    w.wr_id = htole64(0x35);
    w.atomic.compare_add = htole64(0x5555);
    w.atomic.swap = htole64(0x3333);
    s[0] = buf_sge(&x, 50008, 8);
    qp_post_send(&p.a, &w, s, 1, NULL, 0, true);
    TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x35, VMMBIB_WC_COMP_SWAP, VMMBIB_WC_SUCCESS),
              "CMP_AND_SWP with a different compare completes");
    memcpy(&v64, x.buf.p + 50008, 8);
    TAP_CHECK(le64toh(v64) == 0x2222222222222222ull,
              "CMP_AND_SWP mismatch returns the current value");
    memcpy(&v64, y.buf.p + 48000, 8);
    TAP_CHECK(le64toh(v64) == 0x2222222222222222ull,
              "CMP_AND_SWP mismatch leaves memory unchanged");

    memset(&w, 0, sizeof(w));
    w.wr_id = htole64(0x36);
    w.opcode = VMMBIB_WR_ATOMIC_FETCH_AND_ADD;
    w.flags = VMMBIB_WQE_SIGNALED;
    w.atomic.remote_addr = htole64(y.buf.gpa + 48000);
    w.atomic.rkey = htole32(y.mr.rkey);
    w.atomic.compare_add = htole64(0x10);
    s[0] = buf_sge(&x, 50016, 8);
    qp_post_send(&p.a, &w, s, 1, NULL, 0, true);
    TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x36, VMMBIB_WC_FETCH_ADD, VMMBIB_WC_SUCCESS),
              "FETCH_AND_ADD completes with opcode FETCH_ADD");
    memcpy(&v64, x.buf.p + 50016, 8);
    TAP_CHECK(le64toh(v64) == 0x2222222222222222ull,
              "FETCH_AND_ADD returns the old value");
    memcpy(&v64, y.buf.p + 48000, 8);
    TAP_CHECK(le64toh(v64) == 0x2222222222222232ull,
              "FETCH_AND_ADD adds");

    /* Gather from two MRs into a scatter over two MRs. */
    gbuf_alloc(&x.g, 16384, &xb2);
    gbuf_alloc(&y.g, 16384, &yb2);
    TAP_CHECK(mr_reg(&x.c, x.pd, xb2.gpa, xb2.len, VMMBIB_ACCESS_LOCAL_WRITE,
                     &xm2) == OK &&
              mr_reg(&y.c, y.pd, yb2.gpa, yb2.len, VMMBIB_ACCESS_LOCAL_WRITE,
                     &ym2) == OK, "scatter/gather: second MRs on both sides");
    pattern_fill(tmp, 2137, 7);
    memcpy(x.buf.p + 100, tmp, 100);
    memcpy(xb2.p + 4000, tmp + 100, 2000);
    memcpy(x.buf.p + 60000, tmp + 2100, 37);
    s[0] = buf_sge(&y, 52000, 1000);
    s[1] = sge(&ym2, yb2.gpa + 100, 2000);
    qp_post_recv(&p.b, 0x3c, s, 2);
    s[0] = buf_sge(&x, 100, 100);
    s[1] = sge(&xm2, xb2.gpa + 4000, 2000);
    s[2] = buf_sge(&x, 60000, 37);
    post_send(&p.a, 0x37, VMMBIB_WR_SEND, s, 3, 0, 0);
    TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x37, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS),
              "3-SGE gather send completes");
    TAP_CHECK(cq_wait(&p.b_rcq, &c, 1) == 1 &&
              cqe_is(&c, 0x3c, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(c.byte_len) == 2137,
              "2-SGE scatter receive gets all 2137 bytes");
    TAP_CHECK(!memcmp(y.buf.p + 52000, tmp, 1000) &&
              !memcmp(yb2.p + 100, tmp + 1000, 1137) &&
              yb2.p[100 + 1137] == 0 && y.buf.p[53000] == 0,
              "scatter/gather: bytes in order across SGEs and MRs");

    /* Inline send: the data travels in the WQE, no lkey involved. */
    pattern_fill(data, sizeof(data), 8);
    s[0] = buf_sge(&y, 57000, 4096);
    qp_post_recv(&p.b, 0x3d, s, 1);
    memset(&w, 0, sizeof(w));
    w.wr_id = htole64(0x38);
    w.opcode = VMMBIB_WR_SEND;
    w.flags = VMMBIB_WQE_SIGNALED;
    qp_post_send(&p.a, &w, NULL, 0, data, sizeof(data), true);
    memset(data, 0, sizeof(data));  /* the WQE is already written */
    TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x38, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS),
              "inline send completes");
    TAP_CHECK(cq_wait(&p.b_rcq, &c, 1) == 1 &&
              cqe_is(&c, 0x3d, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(c.byte_len) == 100 &&
              pattern_check(y.buf.p + 57000, 100, 8),
              "inline send: the receiver gets the inline bytes");

    /*
     * An MR over 600 scrambled pages: a 2-level page list (two leaves),
     * iova not page aligned.  Leaf 0 holds pages 0..511, leaf 1 the rest.
     */
    region = guest_alloc(&y.g, (uint64_t)BIG_PAGES * VMMBIB_PAGE_SIZE);
    for (uint32_t i = 0; i < BIG_PAGES; i++) {
        big.pages[i] = region + (uint64_t)((i * 7) % BIG_PAGES) *
                       VMMBIB_PAGE_SIZE;
    }
    guest_page_list(&y.g, big.pages, BIG_PAGES, 2, &pl);
    TAP_CHECK(mr_reg_pages(&y.c, y.pd, 0x7000000000ull + BIG_OFFSET,
                           (uint64_t)BIG_PAGES * VMMBIB_PAGE_SIZE -
                           BIG_OFFSET - 17, &pl, ACCESS_ALL_RIGHTS,
                           &big.mr) == OK,
              "2-level page list of 600 pages registers");
    /* WRITE across the leaf boundary (page 511 -> 512) and 3 more pages. */
    brk = 512 * VMMBIB_PAGE_SIZE - BIG_OFFSET;
    off = brk - 100;
    pattern_fill(x.buf.p, 3 * 4096 + 123, 9);
    s[0] = buf_sge(&x, 0, 3 * 4096 + 123);
    post_send(&p.a, 0x39, VMMBIB_WR_RDMA_WRITE, s, 1, big.mr.iova + off,
              big.mr.rkey);
    TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x39, VMMBIB_WC_RDMA_WRITE, VMMBIB_WC_SUCCESS),
              "WRITE into the 2-level MR completes");
    /* Read it back through the guest's view, one byte either side. */
    memset(tmp, 0xff, sizeof(tmp));
    big_copy(&y, &big, off - 1, tmp, 3 * 4096 + 123 + 2, false);
    TAP_CHECK(tmp[0] == 0 && tmp[1 + 3 * 4096 + 123] == 0 &&
              !memcmp(tmp + 1, x.buf.p, 3 * 4096 + 123),
              "WRITE crossing scrambled pages lands in each right page");
    /* READ back from elsewhere in it. */
    pattern_fill(tmp, 9000, 10);
    big_copy(&y, &big, 100 * 4096 + 4000, tmp, 9000, true);
    s[0] = buf_sge(&x, 16384, 9000);
    post_send(&p.a, 0x3a, VMMBIB_WR_RDMA_READ, s, 1,
              big.mr.iova + 100 * 4096 + 4000, big.mr.rkey);
    TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x3a, VMMBIB_WC_RDMA_READ, VMMBIB_WC_SUCCESS) &&
              pattern_check(x.buf.p + 16384, 9000, 10),
              "READ across scrambled pages returns the bytes in order");
    /* A local SGE in it: SEND its last 5000 bytes, up to the MR's end. */
    off = big.mr.len - 5000;
    pattern_fill(tmp, 5000, 11);
    big_copy(&y, &big, off, tmp, 5000, true);
    s[0] = buf_sge(&x, 32768, 8192);
    qp_post_recv(&p.a, 0x3e, s, 1);
    s[0] = sge(&big.mr, big.mr.iova + off, 5000);
    post_send(&p.b, 0x3f, VMMBIB_WR_SEND, s, 1, 0, 0);
    TAP_CHECK(cq_wait(&p.b_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x3f, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS) &&
              cq_wait(&p.a_rcq, &c, 1) == 1 &&
              cqe_is(&c, 0x3e, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(c.byte_len) == 5000 &&
              pattern_check(x.buf.p + 32768, 5000, 11),
              "SEND gathered from the tail of the 2-level MR");

    /* A level-0 page list: 256 bytes in the middle of one page. */
    gbuf_alloc(&y.g, 4096, &small);
    TAP_CHECK(mr_reg(&y.c, y.pd, small.gpa + 0x300, 256, ACCESS_ALL_RIGHTS,
                     &small_mr) == OK, "1-page MR with a level-0 list");
    pattern_fill(x.buf.p + 100, 256, 12);
    s[0] = buf_sge(&x, 100, 256);
    post_send(&p.a, 0x40, VMMBIB_WR_RDMA_WRITE, s, 1, small.gpa + 0x300,
              small_mr.rkey);
    TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x40, VMMBIB_WC_RDMA_WRITE, VMMBIB_WC_SUCCESS) &&
              pattern_check(small.p + 0x300, 256, 12) &&
              small.p[0x2ff] == 0 && small.p[0x400] == 0,
              "WRITE into the level-0 MR at its page offset");

    vm_fini(&x);
    vm_fini(&y);
    vmmbib_engine_free(eng);
}

static void test_unsignaled(void)
{
    struct vm v;
    struct rc_pair p;
    struct vmmbib_cqe c[4];
    struct vmmbib_send_wqe w;
    struct vmmbib_sge s;
    struct qp_opts o;
    struct gcq cq;
    struct gqp all, peer;
    uint32_t last = 0;
    bool landed = true;

    TAP_CHECK(vm_init(&v) &&
              rc_pair_create(&p, &v.c, v.pd, &v.c, v.pd, NULL) == OK,
              "unsignaled: a connected pair");
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 4; i++) {
            pattern_fill(v.buf.p + i * 256, 100, 20 + i + round * 4);
            memset(&w, 0, sizeof(w));
            w.wr_id = htole64(0x50 + i + round * 4);
            w.opcode = VMMBIB_WR_RDMA_WRITE;
            w.flags = i == 3 ? VMMBIB_WQE_SIGNALED : 0;
            w.rdma.remote_addr = htole64(v.buf.gpa + 16384 + i * 256);
            w.rdma.rkey = htole32(v.mr.rkey);
            s = buf_sge(&v, i * 256, 100);
            /* One doorbell for the four. */
            last = qp_post_send(&p.a, &w, &s, 1, NULL, 0, i == 3);
        }
        TAP_CHECK(cq_wait(&p.a_scq, c, 1) == 1 &&
                  cqe_is(&c[0], 0x53 + round * 4, VMMBIB_WC_RDMA_WRITE,
                         VMMBIB_WC_SUCCESS) &&
                  le32toh(c[0].wqe_index) == last && last == 3u + round * 4,
                  "3 unsignaled + 1 signaled: one CQE, wqe_index of the last");
        msleep(20);
        TAP_CHECK(cq_poll(&p.a_scq, c, 4) == 0,
                  "no CQE for the unsignaled WQEs");
        for (int i = 0; i < 4; i++) {
            landed &= pattern_check(v.buf.p + 16384 + i * 256, 100,
                                    20 + i + round * 4);
        }
        TAP_CHECK(landed, "the unsignaled WRITEs were executed too");
    }

    /* sq_sig_all: every WQE completes, signaled or not. */
    qp_opts_default(&o, VMMBIB_QPT_RC);
    o.sig_all = true;
    TAP_CHECK(cq_create(&v.c, 16, &cq) == OK &&
              qp_create(&v.c, v.pd, &cq, &cq, NULL, &o, &all) == OK &&
              qp_create(&v.c, v.pd, &cq, &cq, NULL, NULL, &peer) == OK &&
              rc_connect(&all, &peer, NULL) == OK,
              "a QP with sq_sig_all");
    memset(&w, 0, sizeof(w));
    w.opcode = VMMBIB_WR_RDMA_WRITE;
    w.rdma.remote_addr = htole64(v.buf.gpa + 20000);
    w.rdma.rkey = htole32(v.mr.rkey);
    s = buf_sge(&v, 0, 10);
    w.wr_id = htole64(0x61);
    qp_post_send(&all, &w, &s, 1, NULL, 0, false);
    w.wr_id = htole64(0x62);
    qp_post_send(&all, &w, &s, 1, NULL, 0, true);
    TAP_CHECK(cq_wait(&cq, c, 2) == 2 &&
              le64toh(c[0].wr_id) == 0x61 && le64toh(c[1].wr_id) == 0x62 &&
              le32toh(c[0].wqe_index) == 0 && le32toh(c[1].wqe_index) == 1,
              "sq_sig_all: both unsignaled WQEs complete, in order");
    vm_fini(&v);
}

static void test_ud(void)
{
    struct vmmbib_engine *eng = engine_new();
    struct vm x, y;
    struct gcq xs, xr, ys, yr;
    struct gqp qx, qy;
    struct vmmbib_cqe c;
    struct vmmbib_sge s;
    uint32_t ah;

    if (!eng) {
        TAP_CHECK(0, "ud: engine");
        return;
    }
    TAP_CHECK(vm_init_on(&x, eng, NULL) && vm_init_on(&y, eng, NULL) &&
              make_ud(&x.c, x.pd, &xs, &xr, &qx, 0x11111111) == OK &&
              make_ud(&y.c, y.pd, &ys, &yr, &qy, 0x11111111) == OK,
              "ud: a UD QP in RTS on each of two devices");
    TAP_CHECK(ah_create(&x.c, x.pd, port_lid(y.dev), &ah) == OK,
              "ud: an AH to the other device's LID");

    pattern_fill(x.buf.p, 300, 30);
    s = buf_sge(&y, 0, VMMBIB_GRH_SIZE + 512);
    qp_post_recv(&qy, 0x71, &s, 1);
    s = buf_sge(&x, 0, 300);
    ud_send(&qx, 0x72, ah, qy.qpn, 0x11111111, &s, true);
    TAP_CHECK(cq_wait(&xs, &c, 1) == 1 &&
              cqe_is(&c, 0x72, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS),
              "UD send completes");
    TAP_CHECK(cq_wait(&yr, &c, 1) == 1 &&
              cqe_is(&c, 0x71, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(c.byte_len) == 300 + VMMBIB_GRH_SIZE &&
              le32toh(c.src_qp) == qx.qpn &&
              le16toh(c.slid) == port_lid(x.dev) &&
              le32toh(c.qpn) == qy.qpn,
              "UD recv: byte_len = len + 40, src_qp and slid of the sender");
    TAP_CHECK(pattern_check(y.buf.p + VMMBIB_GRH_SIZE, 300, 30) &&
              y.buf.p[VMMBIB_GRH_SIZE + 300] == 0,
              "UD recv: the payload follows the 40-byte GRH area");

    /* A wrong Q_Key: dropped at the receiver, success at the sender. */
    s = buf_sge(&y, 4096, VMMBIB_GRH_SIZE + 512);
    qp_post_recv(&qy, 0x73, &s, 1);
    pattern_fill(x.buf.p, 300, 31);
    s = buf_sge(&x, 0, 300);
    ud_send(&qx, 0x74, ah, qy.qpn, 0x22222222, &s, true);
    TAP_CHECK(cq_wait(&xs, &c, 1) == 1 &&
              cqe_is(&c, 0x74, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS),
              "wrong Q_Key: the sender still completes with SUCCESS");
    msleep(20);
    TAP_CHECK(cq_poll(&yr, &c, 1) == 0 && y.buf.p[4096 + VMMBIB_GRH_SIZE] == 0,
              "wrong Q_Key: nothing received");
    /* The high bit: the sender's own Q_Key (0x11111111) is used. */
    ud_send(&qx, 0x75, ah, qy.qpn, 0x80000000u, &s, true);
    TAP_CHECK(cq_wait(&xs, &c, 1) == 1 &&
              cqe_is(&c, 0x75, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS) &&
              cq_wait(&yr, &c, 1) == 1 &&
              cqe_is(&c, 0x73, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              pattern_check(y.buf.p + 4096 + VMMBIB_GRH_SIZE, 300, 31),
              "Q_Key with the high bit uses the QP's; the kept receive "
              "gets it");
    vm_fini(&x);
    vm_fini(&y);
    vmmbib_engine_free(eng);
}

/* A UD send with an immediate through @ah: the GRH tests use both. */
static void ud_send_imm(struct gqp *qp, uint64_t wr_id, uint32_t ah,
                        uint32_t qpn, uint32_t qkey, uint32_t imm,
                        const struct vmmbib_sge *s)
{
    struct vmmbib_send_wqe w = {
        .wr_id = htole64(wr_id),
        .opcode = VMMBIB_WR_SEND_WITH_IMM,
        .flags = VMMBIB_WQE_SIGNALED,
        .imm_data = htobe32(imm),
    };

    w.ud.ah_handle = htole32(ah);
    w.ud.remote_qpn = htole32(qpn);
    w.ud.remote_qkey = htole32(qkey);
    qp_post_send(qp, &w, s, 1, NULL, 0, true);
}

static void test_ud_addressing(void)
{
    struct vmmbib_engine *eng = engine_new();
    struct vm x, y;
    struct gcq xs, xr, ys, yr;
    struct gqp qx, qy;
    struct vmmbib_cqe c;
    struct vmmbib_sge s;
    struct vmmbib_ah_attr av;
    uint8_t xgid[16], ygid[16], grh[VMMBIB_GRH_SIZE];
    uint32_t ah_lid, ah_gid, ah_gid_wrong_lid, ah_nowhere, ah;
    uint32_t word0;
    uint16_t paylen;

    if (!eng) {
        TAP_CHECK(0, "ud addressing: engine");
        return;
    }
    TAP_CHECK(vm_init_on(&x, eng, NULL) && vm_init_on(&y, eng, NULL) &&
              make_ud(&x.c, x.pd, &xs, &xr, &qx, 0x11111111) == OK &&
              make_ud(&y.c, y.pd, &ys, &yr, &qy, 0x11111111) == OK,
              "ud addressing: a UD QP on each of two devices");
    port_gid(x.dev, xgid);
    port_gid(y.dev, ygid);
    TAP_CHECK(memcmp(xgid, ygid, 16) && xgid[0] == 0xfe && xgid[1] == 0x80,
              "ud addressing: two distinct link-local port GIDs");

    /* By LID: no GRH travels, the area is left alone, no GRH flag. */
    TAP_CHECK(ah_create(&x.c, x.pd, port_lid(y.dev), &ah_lid) == OK,
              "LID AH");
    memset(y.buf.p, 0xcc, VMMBIB_GRH_SIZE);
    pattern_fill(x.buf.p, 200, 50);
    s = buf_sge(&y, 0, VMMBIB_GRH_SIZE + 256);
    qp_post_recv(&qy, 0x81, &s, 1);
    s = buf_sge(&x, 0, 200);
    ud_send_imm(&qx, 0x82, ah_lid, qy.qpn, 0x11111111, 0x01020304, &s);
    TAP_CHECK(cq_wait(&xs, &c, 1) == 1 &&
              cqe_is(&c, 0x82, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS) &&
              cq_wait(&yr, &c, 1) == 1 &&
              cqe_is(&c, 0x81, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS),
              "LID AH: the datagram arrives");
    TAP_CHECK(!(c.wc_flags & VMMBIB_WC_F_GRH) &&
              (c.wc_flags & VMMBIB_WC_F_WITH_IMM) &&
              c.imm_data == htobe32(0x01020304) &&
              le32toh(c.byte_len) == 200 + VMMBIB_GRH_SIZE,
              "LID AH: WITH_IMM and its immediate, no GRH flag");
    memset(grh, 0xcc, sizeof(grh));
    TAP_CHECK(!memcmp(y.buf.p, grh, VMMBIB_GRH_SIZE) &&
              pattern_check(y.buf.p + VMMBIB_GRH_SIZE, 200, 50),
              "LID AH: the GRH area untouched, the payload after it");

    /* By GID, with dlid 0: routed by the GID alone, a GRH written. */
    memset(&av, 0, sizeof(av));
    memcpy(av.dgid, ygid, 16);
    av.flow_label = htole32(0x12345);
    av.hop_limit = 64;
    av.traffic_class = 0x5a;
    av.port_num = 1;
    av.ah_flags = VMMBIB_AH_GRH;
    TAP_CHECK(ah_create_attr(&x.c, x.pd, &av, &ah_gid) == OK,
              "GID AH with dlid 0");
    pattern_fill(x.buf.p + 4096, 301, 51);
    s = buf_sge(&y, 4096, VMMBIB_GRH_SIZE + 512);
    qp_post_recv(&qy, 0x83, &s, 1);
    s = buf_sge(&x, 4096, 301);
    ud_send_imm(&qx, 0x84, ah_gid, qy.qpn, 0x11111111, 0xa0b0c0d0, &s);
    TAP_CHECK(cq_wait(&xs, &c, 1) == 1 &&
              cqe_is(&c, 0x84, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS) &&
              cq_wait(&yr, &c, 1) == 1 &&
              cqe_is(&c, 0x83, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS),
              "GID AH: the datagram arrives at the GID's device");
    TAP_CHECK((c.wc_flags & VMMBIB_WC_F_GRH) &&
              (c.wc_flags & VMMBIB_WC_F_WITH_IMM) &&
              c.imm_data == htobe32(0xa0b0c0d0) &&
              le32toh(c.byte_len) == 301 + VMMBIB_GRH_SIZE &&
              le32toh(c.src_qp) == qx.qpn &&
              le16toh(c.slid) == port_lid(x.dev),
              "GID AH: GRH and WITH_IMM flags, imm, byte_len, source");
    memcpy(grh, y.buf.p + 4096, sizeof(grh));
    memcpy(&word0, grh, 4);
    memcpy(&paylen, grh + 4, 2);
    TAP_CHECK(be32toh(word0) == (6u << 28 | 0x5au << 20 | 0x12345),
              "GRH: version 6, traffic class, flow label");
    /* BTH 12 + DETH 8 + ImmDt 4 + 301 padded to 304 + ICRC 4 */
    TAP_CHECK(be16toh(paylen) == 332 && grh[6] == 0x1b && grh[7] == 64,
              "GRH: PayLen 332, next header 0x1B, hop limit");
    TAP_CHECK(!memcmp(grh + 8, xgid, 16) && !memcmp(grh + 24, ygid, 16),
              "GRH: SGID is the sender's port GID, DGID the AH's");
    TAP_CHECK(pattern_check(y.buf.p + 4096 + VMMBIB_GRH_SIZE, 301, 51) &&
              y.buf.p[4096 + VMMBIB_GRH_SIZE + 301] == 0,
              "GID AH: the payload follows the GRH");

    /* The GID decides, not a dlid that names another port. */
    av.dlid = htole16(port_lid(x.dev));
    av.flow_label = 0;
    av.traffic_class = 0;
    TAP_CHECK(ah_create_attr(&x.c, x.pd, &av, &ah_gid_wrong_lid) == OK,
              "GID AH whose dlid names the sender's own port");
    s = buf_sge(&y, 8192, VMMBIB_GRH_SIZE + 64);
    qp_post_recv(&qy, 0x85, &s, 1);
    s = buf_sge(&x, 4096, 64);
    ud_send_imm(&qx, 0x86, ah_gid_wrong_lid, qy.qpn, 0x11111111, 7, &s);
    TAP_CHECK(cq_wait(&yr, &c, 1) == 1 &&
              cqe_is(&c, 0x85, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              (c.wc_flags & VMMBIB_WC_F_GRH) &&
              pattern_check(y.buf.p + 8192 + VMMBIB_GRH_SIZE, 64, 51) &&
              cq_wait(&xs, &c, 1) == 1,
              "GID AH: delivered by its dgid, whatever the dlid");
    TAP_CHECK(cq_poll(&xr, &c, 1) == 0, "... nothing on the sender's port");

    /* A GID nobody has: dropped, the sender still succeeds. */
    av.dgid[15] ^= 0x5a;
    av.dlid = 0;
    TAP_CHECK(ah_create_attr(&x.c, x.pd, &av, &ah_nowhere) == OK,
              "GID AH to an unknown GID");
    s = buf_sge(&y, 12288, VMMBIB_GRH_SIZE + 64);
    qp_post_recv(&qy, 0x87, &s, 1);
    s = buf_sge(&x, 4096, 64);
    ud_send_imm(&qx, 0x88, ah_nowhere, qy.qpn, 0x11111111, 8, &s);
    TAP_CHECK(cq_wait(&xs, &c, 1) == 1 &&
              cqe_is(&c, 0x88, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS),
              "unknown GID: the sender completes with SUCCESS");
    msleep(10);
    TAP_CHECK(cq_poll(&yr, &c, 1) == 0 && y.buf.p[12288] == 0,
              "unknown GID: nothing received");

    /* dlid 0 is a route only with a GRH. */
    memset(&av, 0, sizeof(av));
    av.port_num = 1;
    TAP_CHECK(ah_create_attr(&x.c, x.pd, &av, &ah) ==
              VMMBIB_STATUS_INVALID, "a local AH with dlid 0: INVALID");
    vm_fini(&x);
    vm_fini(&y);
    vmmbib_engine_free(eng);
}

/* An RC path given as a global address with dlid 0 connects by GID. */
static void test_rc_by_gid(void)
{
    struct vmmbib_engine *eng = engine_new();
    struct vm x, y;
    struct gcq xs, xr, ys, yr;
    struct gqp a, b;
    struct rc_opts ro;
    struct vmmbib_qp_attr attr;
    struct vmmbib_cqe c;
    struct vmmbib_sge s;
    const uint32_t rtr_mask = VMMBIB_QP_STATE | VMMBIB_QP_AV |
                              VMMBIB_QP_PATH_MTU | VMMBIB_QP_DEST_QPN |
                              VMMBIB_QP_RQ_PSN |
                              VMMBIB_QP_MAX_DEST_RD_ATOMIC |
                              VMMBIB_QP_MIN_RNR_TIMER;

    if (!eng) {
        TAP_CHECK(0, "rc by gid: engine");
        return;
    }
    rc_opts_default(&ro);
    TAP_CHECK(vm_init_on(&x, eng, NULL) && vm_init_on(&y, eng, NULL) &&
              cq_create(&x.c, 16, &xs) == OK && cq_create(&x.c, 16, &xr) == OK &&
              cq_create(&y.c, 16, &ys) == OK && cq_create(&y.c, 16, &yr) == OK &&
              qp_create(&x.c, x.pd, &xs, &xr, NULL, NULL, &a) == OK &&
              qp_create(&y.c, y.pd, &ys, &yr, NULL, NULL, &b) == OK &&
              qp_rc_init(&a, ro.access) == OK &&
              qp_rc_init(&b, ro.access) == OK,
              "rc by gid: an RC QP on each of two devices");
    memset(&attr, 0, sizeof(attr));
    attr.qp_state = VMMBIB_QPS_RTR;
    attr.path_mtu = VMMBIB_MTU_4096;
    attr.max_dest_rd_atomic = 4;
    attr.min_rnr_timer = 1;
    attr.ah_attr.port_num = 1;
    attr.ah_attr.ah_flags = VMMBIB_AH_GRH;
    attr.dest_qp_num = htole32(b.qpn);
    port_gid(y.dev, attr.ah_attr.dgid);
    TAP_CHECK(qp_modify(&a, rtr_mask, &attr) == OK, "a: RTR by y's GID");
    attr.dest_qp_num = htole32(a.qpn);
    port_gid(x.dev, attr.ah_attr.dgid);
    TAP_CHECK(qp_modify(&b, rtr_mask, &attr) == OK &&
              qp_rc_rts(&a, &ro) == OK && qp_rc_rts(&b, &ro) == OK,
              "b: RTR by x's GID; both in RTS");
    pattern_fill(x.buf.p, 1500, 52);
    s = buf_sge(&y, 4096, 2048);
    qp_post_recv(&b, 0x91, &s, 1);
    s = buf_sge(&x, 0, 1500);
    post_send(&a, 0x92, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&xs, &c, 1) == 1 &&
              cqe_is(&c, 0x92, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS) &&
              cq_wait(&yr, &c, 1) == 1 &&
              cqe_is(&c, 0x91, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              !(c.wc_flags & VMMBIB_WC_F_GRH) &&
              pattern_check(y.buf.p + 4096, 1500, 52),
              "rc by gid: the SEND arrives, RC receives carry no GRH");
    vm_fini(&x);
    vm_fini(&y);
    vmmbib_engine_free(eng);
}

static void test_send_with_imm(void)
{
    struct vm v;
    struct rc_pair p;
    struct vmmbib_cqe c;
    struct vmmbib_send_wqe w;
    struct vmmbib_sge s;

    TAP_CHECK(vm_init(&v) &&
              rc_pair_create(&p, &v.c, v.pd, &v.c, v.pd, NULL) == OK,
              "send_with_imm: a connected pair");
    pattern_fill(v.buf.p, 777, 53);
    s = buf_sge(&v, 8192, 1024);
    qp_post_recv(&p.b, 0xa1, &s, 1);
    memset(&w, 0, sizeof(w));
    w.wr_id = htole64(0xa2);
    w.opcode = VMMBIB_WR_SEND_WITH_IMM;
    w.flags = VMMBIB_WQE_SIGNALED;
    w.imm_data = htobe32(0xcafef00d);
    s = buf_sge(&v, 0, 777);
    qp_post_send(&p.a, &w, &s, 1, NULL, 0, true);
    TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0xa2, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS) &&
              le32toh(c.byte_len) == 777,
              "send_with_imm: the requester completes as SEND");
    TAP_CHECK(cq_wait(&p.b_rcq, &c, 1) == 1 &&
              cqe_is(&c, 0xa1, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              (c.wc_flags & VMMBIB_WC_F_WITH_IMM) &&
              !(c.wc_flags & VMMBIB_WC_F_GRH) &&
              c.imm_data == htobe32(0xcafef00d) &&
              le32toh(c.byte_len) == 777 && le32toh(c.src_qp) == p.a.qpn,
              "send_with_imm: RECV with WITH_IMM, the immediate, byte_len");
    TAP_CHECK(pattern_check(v.buf.p + 8192, 777, 53) &&
              v.buf.p[8192 + 777] == 0,
              "send_with_imm: the payload lands in the receive buffer");
    /* Plain SEND right after: no immediate flag left over. */
    s = buf_sge(&v, 12288, 64);
    qp_post_recv(&p.b, 0xa3, &s, 1);
    s = buf_sge(&v, 0, 10);
    post_send(&p.a, 0xa4, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&p.b_rcq, &c, 1) == 1 &&
              cqe_is(&c, 0xa3, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              !(c.wc_flags & VMMBIB_WC_F_WITH_IMM) &&
              cq_wait(&p.a_scq, &c, 1) == 1,
              "send_with_imm: a plain SEND after it has no WITH_IMM");
    vm_fini(&v);
}

static void test_dma_mr(void)
{
    struct vm v;
    struct rc_pair p;
    struct gmr dma;
    struct gbuf src, dst;
    struct vmmbib_cqe c;
    struct vmmbib_sge s;

    TAP_CHECK(vm_init(&v) &&
              rc_pair_create(&p, &v.c, v.pd, &v.c, v.pd, NULL) == OK &&
              mr_dma(&v.c, v.pd, VMMBIB_ACCESS_LOCAL_WRITE, &dma) == OK,
              "dma mr: a pair and a DMA MR");
    /* Unregistered guest memory, named by guest physical address. */
    gbuf_alloc(&v.g, 3 * 4096, &src);
    gbuf_alloc(&v.g, 3 * 4096, &dst);
    pattern_fill(src.p + 100, 6000, 54);
    s = sge(&dma, dst.gpa + 50, 8000);
    qp_post_recv(&p.b, 0xb1, &s, 1);
    s = sge(&dma, src.gpa + 100, 6000);
    post_send(&p.a, 0xb2, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0xb2, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS) &&
              cq_wait(&p.b_rcq, &c, 1) == 1 &&
              cqe_is(&c, 0xb1, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(c.byte_len) == 6000,
              "dma mr: a SEND gathered and scattered through the DMA lkey");
    TAP_CHECK(pattern_check(dst.p + 50, 6000, 54) && dst.p[49] == 0 &&
              dst.p[50 + 6000] == 0,
              "dma mr: the bytes cross pages by guest physical address");
    /* An address outside guest RAM fails the lkey check. */
    s = sge(&dma, GUEST_RAM_BASE + GUEST_RAM_SIZE, 64);
    post_send(&p.a, 0xb3, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0xb3, VMMBIB_WC_SEND, VMMBIB_WC_LOC_PROT_ERR),
              "dma mr: past the end of guest RAM: LOC_PROT_ERR");
    vm_fini(&v);
}

static void test_destroy_ah(void)
{
    struct vm v;
    struct gcq xs, xr;
    struct gqp q;
    struct vmmbib_cqe c;
    struct vmmbib_sge s;
    struct vmmbib_dev_stats st;
    uint32_t pd2, ah, ah2;

    TAP_CHECK(vm_init(&v) &&
              make_ud(&v.c, v.pd, &xs, &xr, &q, 5) == OK &&
              pd_create(&v.c, &pd2) == OK &&
              ah_create(&v.c, pd2, port_lid(v.dev), &ah2) == OK &&
              ah_create(&v.c, v.pd, port_lid(v.dev), &ah) == OK,
              "destroy_ah: a UD QP, AHs on two PDs");
    vmmbib_dev_get_stats(v.dev, &st);
    TAP_CHECK(st.ahs == 2, "destroy_ah: 2 AHs counted");
    TAP_CHECK(destroy(&v.c, VMMBIB_CMD_DESTROY_PD, pd2) == VMMBIB_STATUS_BUSY,
              "destroy_ah: a PD with an AH is BUSY");
    TAP_CHECK(destroy(&v.c, VMMBIB_CMD_DESTROY_AH, ah2) == OK &&
              destroy(&v.c, VMMBIB_CMD_DESTROY_PD, pd2) == OK,
              "destroy_ah: DESTROY_AH, then its PD goes too");
    TAP_CHECK(destroy(&v.c, VMMBIB_CMD_DESTROY_AH, ah2) ==
              VMMBIB_STATUS_BAD_HANDLE,
              "destroy_ah: the same handle again: BAD_HANDLE");
    TAP_CHECK(destroy(&v.c, VMMBIB_CMD_DESTROY_AH, ah) == OK, "DESTROY_AH");
    vmmbib_dev_get_stats(v.dev, &st);
    TAP_CHECK(st.ahs == 0, "destroy_ah: no AH left in the counters");
    s = buf_sge(&v, 0, 16);
    ud_send(&q, 0xc1, ah, q.qpn, 5, &s, true);
    TAP_CHECK(cq_wait(&xs, &c, 1) == 1 &&
              cqe_is(&c, 0xc1, VMMBIB_WC_SEND, VMMBIB_WC_LOC_QP_OP_ERR) &&
              qp_state(&q) == VMMBIB_QPS_SQE,
              "destroy_ah: a send through the destroyed AH fails, QP in SQE");
    vm_fini(&v);
}

static void test_resize_cq(void)
{
    struct vm v;
    struct gcq cq, peer_cq;
    struct gqp a, b;
    struct vmmbib_cqe c[16];
    struct vmmbib_sge s;
    uint32_t moved = 0;
    bool in_order = true;

    TAP_CHECK(vm_init(&v) && cq_create(&v.c, 8, &cq) == OK &&
              cq_create(&v.c, 16, &peer_cq) == OK &&
              qp_create(&v.c, v.pd, &cq, &cq, NULL, NULL, &a) == OK &&
              qp_create(&v.c, v.pd, &peer_cq, &peer_cq, NULL, NULL, &b) ==
              OK && rc_connect(&a, &b, NULL) == OK,
              "resize: a QP on an 8-entry CQ");
    s = buf_sge(&v, 0, 8);
    for (int i = 0; i < 5; i++) {
        post_send(&a, 0xd0 + i, VMMBIB_WR_RDMA_WRITE, &s, 1,
                  v.buf.gpa + 4096 + i * 8, v.mr.rkey);
    }
    TAP_CHECK(ctx_doorbells_drained(&v.c) && cq_poll(&cq, c, 2) == 2 &&
              le64toh(c[0].wr_id) == 0xd0 && le64toh(c[1].wr_id) == 0xd1,
              "resize: 5 completions, 2 consumed");
    msleep(5);      /* the other 3 are written too */
    TAP_CHECK(cq_resize(&cq, 2, &moved) == VMMBIB_STATUS_BUSY,
              "resize: to 2 entries with 3 pending: BUSY");
    TAP_CHECK(cq_resize(&cq, 32, &moved) == OK && moved == 3,
              "resize: to 32 entries, 3 CQEs moved");
    TAP_CHECK(cq_poll(&cq, c, 16) == 3 &&
              cqe_is(&c[0], 0xd2, VMMBIB_WC_RDMA_WRITE, VMMBIB_WC_SUCCESS) &&
              cqe_is(&c[1], 0xd3, VMMBIB_WC_RDMA_WRITE, VMMBIB_WC_SUCCESS) &&
              cqe_is(&c[2], 0xd4, VMMBIB_WC_RDMA_WRITE, VMMBIB_WC_SUCCESS) &&
              le32toh(c[2].wqe_index) == 4,
              "resize: the pending CQEs at the start of the new ring, in order");
    /* More than the old ring held, with data, into the new ring. */
    for (int i = 0; i < 12; i++) {
        pattern_fill(v.buf.p + 256 * i, 100, 60 + i);
        s = buf_sge(&v, 256 * i, 100);
        post_send(&a, 0xe0 + i, VMMBIB_WR_RDMA_WRITE, &s, 1,
                  v.buf.gpa + 16384 + 256 * i, v.mr.rkey);
    }
    TAP_CHECK(cq_wait(&cq, c, 12) == 12, "resize: 12 more completions");
    for (int i = 0; i < 12; i++) {
        in_order &= le64toh(c[i].wr_id) == 0xe0u + i &&
                    c[i].status == VMMBIB_WC_SUCCESS &&
                    pattern_check(v.buf.p + 16384 + 256 * i, 100, 60 + i);
    }
    TAP_CHECK(in_order, "resize: in order, successful, and the data landed");
    TAP_CHECK(cq_poll(&cq, c, 1) == 0, "resize: nothing more");
    vm_fini(&v);
}

static void test_srq(void)
{
    struct vm v;
    struct gsrq srq;
    struct gcq scq, rcq, sndcq;
    struct gqp r1, r2, s1, s2;
    struct vmmbib_cqe c;
    struct vmmbib_sge s;
    struct vmmbib_cmd_query_srq q;
    struct vmmbib_resp_query_srq qr;

    TAP_CHECK(vm_init(&v) &&
              srq_create(&v.c, v.pd, 16, 0, &srq) == OK &&
              cq_create(&v.c, 16, &scq) == OK &&
              cq_create(&v.c, 16, &rcq) == OK &&
              cq_create(&v.c, 16, &sndcq) == OK &&
              qp_create(&v.c, v.pd, &scq, &rcq, &srq, NULL, &r1) == OK &&
              qp_create(&v.c, v.pd, &scq, &rcq, &srq, NULL, &r2) == OK &&
              qp_create(&v.c, v.pd, &sndcq, &sndcq, NULL, NULL, &s1) == OK &&
              qp_create(&v.c, v.pd, &sndcq, &sndcq, NULL, NULL, &s2) == OK &&
              rc_connect(&s1, &r1, NULL) == OK &&
              rc_connect(&s2, &r2, NULL) == OK,
              "srq: two RC QPs share one SRQ");
    for (int i = 0; i < 4; i++) {
        s = buf_sge(&v, 32768 + i * 1024, 1024);
        srq_post_recv(&srq, 0x100 + i, &s, 1);
    }
    TAP_CHECK(srq_set_limit(&srq, 3) == OK, "srq: arm the limit at 3");

    pattern_fill(v.buf.p, 10, 40);
    s = buf_sge(&v, 0, 10);
    post_send(&s1, 0x81, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&rcq, &c, 1) == 1 &&
              cqe_is(&c, 0x100, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(c.qpn) == r1.qpn && le32toh(c.byte_len) == 10 &&
              pattern_check(v.buf.p + 32768, 10, 40),
              "srq: QP 1 takes the first SRQ receive");
    TAP_CHECK(guest_event_count(&v.g, VMMBIB_EVENT_SRQ_LIMIT_REACHED,
                                srq.handle) == 0,
              "srq: 3 left is not below the limit: no event");
    pattern_fill(v.buf.p + 100, 20, 41);
    s = buf_sge(&v, 100, 20);
    post_send(&s2, 0x82, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&rcq, &c, 1) == 1 &&
              cqe_is(&c, 0x101, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(c.qpn) == r2.qpn && le32toh(c.src_qp) == s2.qpn &&
              pattern_check(v.buf.p + 32768 + 1024, 20, 41),
              "srq: QP 2 takes the next SRQ receive");
    TAP_CHECK(guest_wait_event(&v.g, VMMBIB_EVENT_SRQ_LIMIT_REACHED,
                               srq.handle, 1, wait_timeout_ms()),
              "srq: SRQ_LIMIT_REACHED when 2 are left");
    s = buf_sge(&v, 0, 10);
    post_send(&s1, 0x83, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&rcq, &c, 1) == 1 &&
              cqe_is(&c, 0x102, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(c.qpn) == r1.qpn, "srq: a third receive");
    msleep(5);
    TAP_CHECK(guest_event_count(&v.g, VMMBIB_EVENT_SRQ_LIMIT_REACHED,
                                srq.handle) == 1,
              "srq: the limit event fired once only");
    q = (struct vmmbib_cmd_query_srq) { .srq_handle = htole32(srq.handle) };
    TAP_CHECK(cmd(v.dev, VMMBIB_CMD_QUERY_SRQ, v.c.handle, &q, sizeof(q), &qr,
                  sizeof(qr)) == OK && le32toh(qr.srq_limit) == 0 &&
              le32toh(qr.max_wr) == 16,
              "srq: the limit disarmed itself (QUERY_SRQ limit 0)");
    TAP_CHECK(cq_wait(&sndcq, &c, 1) == 1 && cq_wait(&sndcq, &c, 1) == 1 &&
              cq_wait(&sndcq, &c, 1) == 1 && c.status == VMMBIB_WC_SUCCESS,
              "srq: the three sends completed");
    TAP_CHECK(destroy(&v.c, VMMBIB_CMD_DESTROY_SRQ, srq.handle) ==
              VMMBIB_STATUS_BUSY, "srq: DESTROY_SRQ with QPs on it: BUSY");
    vm_fini(&v);
}

int main(void)
{
    test_send_loopback();
    test_send_two_devices();
    test_rdma();
    test_unsignaled();
    test_ud();
    test_ud_addressing();
    test_rc_by_gid();
    test_send_with_imm();
    test_dma_mr();
    test_destroy_ah();
    test_resize_cq();
    test_srq();
    return tap_done();
}
