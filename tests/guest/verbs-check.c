// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * vmmbib-verbs-check: what the pingpong programs do not exercise on the
 * provider's data path, checked between two RC QPs of one process through
 * loopback: every send opcode with its completion fields and data, inline
 * data, unsignaled WQEs retired by a later signaled one, a full SQ, CQ
 * resize with unconsumed completions, query_qp, and an error completion
 * with the flush that follows it.
 *
 * Prints one line per check: "ok NAME" or "not ok NAME: WHY"; exits 1 if
 * any failed.  tests/guest/datapath.sh turns the lines into TAP.
 *
 * Built by scripts/build-provider.sh against the rdma-core tree it builds
 * the provider in; runs with the guest's libibverbs.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <infiniband/verbs.h>

#define BUF_SIZE 4096
#define SQ_WR 4

static int failures;

static void result(bool ok, const char *name, const char *fmt, ...)
{
	va_list ap;

	if (ok) {
		printf("ok %s\n", name);
		return;
	}
	failures++;
	printf("not ok %s: ", name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

struct side {
	struct ibv_cq *scq, *rcq;
	struct ibv_qp *qp;
	struct ibv_mr *mr;
	uint8_t *buf;
};

static struct ibv_context *ctx;
static struct ibv_pd *pd;
static uint16_t lid;

/* Polls one completion from @cq, waiting up to 10 s; 1 if got, 0 if not. */
static int poll_one(struct ibv_cq *cq, struct ibv_wc *wc)
{
	struct timespec start, now;
	int n;

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		n = ibv_poll_cq(cq, 1, wc);
		if (n)
			return n > 0;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - start.tv_sec > 10)
			return 0;
	}
}

static int setup_side(struct side *s, int cqe)
{
	struct ibv_qp_init_attr init = {
		.qp_type = IBV_QPT_RC,
		.cap = { .max_send_wr = SQ_WR, .max_recv_wr = 16,
			 .max_send_sge = 2, .max_recv_sge = 2,
			 .max_inline_data = 64 },
	};

	s->buf = aligned_alloc(4096, BUF_SIZE);
	if (!s->buf)
		return -1;
	memset(s->buf, 0, BUF_SIZE);
	s->mr = ibv_reg_mr(pd, s->buf, BUF_SIZE,
			   IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
			   IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC);
	s->scq = ibv_create_cq(ctx, cqe, NULL, NULL, 0);
	s->rcq = ibv_create_cq(ctx, cqe, NULL, NULL, 0);
	if (!s->mr || !s->scq || !s->rcq)
		return -1;
	init.send_cq = s->scq;
	init.recv_cq = s->rcq;
	s->qp = ibv_create_qp(pd, &init);
	return s->qp ? 0 : -1;
}

static int connect_qp(struct ibv_qp *qp, uint32_t dest_qpn)
{
	struct ibv_qp_attr a = {
		.qp_state = IBV_QPS_INIT, .port_num = 1, .pkey_index = 0,
		.qp_access_flags = IBV_ACCESS_REMOTE_WRITE |
				   IBV_ACCESS_REMOTE_READ |
				   IBV_ACCESS_REMOTE_ATOMIC,
	};

	if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX |
			  IBV_QP_PORT | IBV_QP_ACCESS_FLAGS))
		return -1;
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTR;
	a.path_mtu = IBV_MTU_1024;
	a.dest_qp_num = dest_qpn;
	a.rq_psn = 0;
	a.max_dest_rd_atomic = 1;
	a.min_rnr_timer = 12;
	a.ah_attr.dlid = lid;
	a.ah_attr.port_num = 1;
	if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU |
			  IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
			  IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER))
		return -1;
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTS;
	a.timeout = 14;
	a.retry_cnt = 7;
	a.rnr_retry = 7;
	a.sq_psn = 0;
	a.max_rd_atomic = 1;
	return ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT |
			     IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
			     IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
}

static int post_recv(struct side *s, uint64_t wr_id, uint32_t off,
		     uint32_t len)
{
	struct ibv_sge sge = { (uintptr_t)s->buf + off, len, s->mr->lkey };
	struct ibv_recv_wr wr = { .wr_id = wr_id, .sg_list = &sge,
				  .num_sge = 1 }, *bad;

	return ibv_post_recv(s->qp, &wr, &bad);
}

/* Posts one WR from @a to @b; returns ibv_post_send's result. */
static int post_send(struct side *a, struct side *b, enum ibv_wr_opcode op,
		     uint64_t wr_id, uint32_t off, uint32_t len,
		     unsigned int flags, uint32_t lkey)
{
	struct ibv_sge sge = { (uintptr_t)a->buf + off, len, lkey };
	struct ibv_send_wr wr = {
		.wr_id = wr_id, .sg_list = &sge, .num_sge = 1,
		.opcode = op, .send_flags = flags,
	}, *bad;

	wr.imm_data = htonl(0x12345678);
	if (op == IBV_WR_ATOMIC_FETCH_AND_ADD ||
	    op == IBV_WR_ATOMIC_CMP_AND_SWP) {
		wr.wr.atomic.remote_addr = (uintptr_t)b->buf + 2048;
		wr.wr.atomic.rkey = b->mr->rkey;
		wr.wr.atomic.compare_add = op == IBV_WR_ATOMIC_CMP_AND_SWP ? 8 : 3;
		wr.wr.atomic.swap = 42;
	} else {
		wr.wr.rdma.remote_addr = (uintptr_t)b->buf + off;
		wr.wr.rdma.rkey = b->mr->rkey;
	}
	return ibv_post_send(a->qp, &wr, &bad);
}

static bool wc_ok(const char *name, struct ibv_cq *cq, uint64_t wr_id,
		  enum ibv_wc_opcode op, struct ibv_wc *wc)
{
	if (!poll_one(cq, wc)) {
		result(false, name, "no completion within 10 s");
		return false;
	}
	if (wc->status != IBV_WC_SUCCESS || wc->opcode != op ||
	    wc->wr_id != wr_id) {
		result(false, name,
		       "completion status %s opcode %d wr_id %" PRIu64
		       ", expected success, opcode %d, wr_id %" PRIu64,
		       ibv_wc_status_str(wc->status), wc->opcode, wc->wr_id,
		       op, wr_id);
		return false;
	}
	return true;
}

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : "vmmbib0";
	struct ibv_device **list;
	struct ibv_port_attr port;
	struct side A = {}, B = {};
	struct ibv_wc wc, wcs[16];
	struct ibv_qp_attr qa;
	struct ibv_qp_init_attr qi;
	uint64_t v;
	int i, n, ret;

	list = ibv_get_device_list(NULL);
	for (i = 0; list && list[i]; i++)
		if (!strcmp(ibv_get_device_name(list[i]), name))
			ctx = ibv_open_device(list[i]);
	if (!ctx) {
		result(false, "open device", "%s not found or not opened", name);
		return 1;
	}
	pd = ibv_alloc_pd(ctx);
	if (!pd || ibv_query_port(ctx, 1, &port)) {
		result(false, "alloc_pd, query_port", "%s", strerror(errno));
		return 1;
	}
	lid = port.lid;
	if (setup_side(&A, 8) || setup_side(&B, 8) ||
	    connect_qp(A.qp, B.qp->qp_num) || connect_qp(B.qp, A.qp->qp_num)) {
		result(false, "two connected RC QPs", "%s", strerror(errno));
		return 1;
	}
	result(true, "two connected RC QPs", "");

	/* SEND with inline data. */
	strcpy((char *)A.buf, "inline hello");
	post_recv(&B, 100, 512, 64);
	ret = post_send(&A, &B, IBV_WR_SEND, 1, 0, 13,
			IBV_SEND_SIGNALED | IBV_SEND_INLINE, 0 /* unused */);
	if (!ret && wc_ok("SEND inline", A.scq, 1, IBV_WC_SEND, &wc) &&
	    wc_ok("SEND inline", B.rcq, 100, IBV_WC_RECV, &wc))
		result(wc.byte_len == 13 && !strcmp((char *)B.buf + 512, "inline hello") &&
		       wc.qp_num == B.qp->qp_num && !(wc.wc_flags & IBV_WC_WITH_IMM),
		       "SEND inline", "byte_len %u data '%.13s' qp_num %u flags %#x",
		       wc.byte_len, B.buf + 512, wc.qp_num, wc.wc_flags);
	else if (ret)
		result(false, "SEND inline", "post: %s", strerror(ret));

	/* SEND_WITH_IMM from a registered buffer. */
	post_recv(&B, 101, 512, 64);
	ret = post_send(&A, &B, IBV_WR_SEND_WITH_IMM, 2, 0, 5,
			IBV_SEND_SIGNALED, A.mr->lkey);
	if (!ret && wc_ok("SEND_WITH_IMM", A.scq, 2, IBV_WC_SEND, &wc) &&
	    wc_ok("SEND_WITH_IMM", B.rcq, 101, IBV_WC_RECV, &wc))
		result(wc.byte_len == 5 && (wc.wc_flags & IBV_WC_WITH_IMM) &&
		       ntohl(wc.imm_data) == 0x12345678, "SEND_WITH_IMM",
		       "byte_len %u flags %#x imm %#x", wc.byte_len, wc.wc_flags,
		       ntohl(wc.imm_data));
	else if (ret)
		result(false, "SEND_WITH_IMM", "post: %s", strerror(ret));

	/* RDMA_WRITE: data lands, no receive consumed. */
	for (i = 0; i < 64; i++)
		A.buf[1024 + i] = i;
	ret = post_send(&A, &B, IBV_WR_RDMA_WRITE, 3, 1024, 64,
			IBV_SEND_SIGNALED, A.mr->lkey);
	if (!ret && wc_ok("RDMA_WRITE", A.scq, 3, IBV_WC_RDMA_WRITE, &wc))
		result(!memcmp(A.buf + 1024, B.buf + 1024, 64) &&
		       ibv_poll_cq(B.rcq, 1, &wc) == 0, "RDMA_WRITE",
		       "data differs or a receive completed");
	else if (ret)
		result(false, "RDMA_WRITE", "post: %s", strerror(ret));

	/* RDMA_WRITE_WITH_IMM consumes a receive. */
	post_recv(&B, 102, 512, 64);
	ret = post_send(&A, &B, IBV_WR_RDMA_WRITE_WITH_IMM, 4, 1024, 32,
			IBV_SEND_SIGNALED, A.mr->lkey);
	if (!ret && wc_ok("RDMA_WRITE_WITH_IMM", A.scq, 4, IBV_WC_RDMA_WRITE, &wc) &&
	    wc_ok("RDMA_WRITE_WITH_IMM", B.rcq, 102, IBV_WC_RECV_RDMA_WITH_IMM, &wc))
		result((wc.wc_flags & IBV_WC_WITH_IMM) &&
		       ntohl(wc.imm_data) == 0x12345678, "RDMA_WRITE_WITH_IMM",
		       "flags %#x imm %#x", wc.wc_flags, ntohl(wc.imm_data));
	else if (ret)
		result(false, "RDMA_WRITE_WITH_IMM", "post: %s", strerror(ret));

	/* RDMA_READ back into another part of A's buffer. */
	memset(B.buf + 3072, 0xab, 100);
	ret = post_send(&A, &B, IBV_WR_RDMA_READ, 5, 3072, 100,
			IBV_SEND_SIGNALED, A.mr->lkey);
	if (!ret && wc_ok("RDMA_READ", A.scq, 5, IBV_WC_RDMA_READ, &wc))
		result(A.buf[3072] == 0xab && A.buf[3171] == 0xab &&
		       wc.byte_len == 100, "RDMA_READ", "byte_len %u data %#x",
		       wc.byte_len, A.buf[3072]);
	else if (ret)
		result(false, "RDMA_READ", "post: %s", strerror(ret));

	/* Atomics on B's word at 2048: 5 + 3 = 8, then 8 -> 42. */
	v = 5;
	memcpy(B.buf + 2048, &v, 8);
	ret = post_send(&A, &B, IBV_WR_ATOMIC_FETCH_AND_ADD, 6, 2560, 8,
			IBV_SEND_SIGNALED, A.mr->lkey);
	if (!ret && wc_ok("ATOMIC_FETCH_AND_ADD", A.scq, 6, IBV_WC_FETCH_ADD, &wc)) {
		memcpy(&v, A.buf + 2560, 8);
		result(v == 5 && !memcmp(B.buf + 2048, &(uint64_t){8}, 8),
		       "ATOMIC_FETCH_AND_ADD", "returned %" PRIu64, v);
	} else if (ret)
		result(false, "ATOMIC_FETCH_AND_ADD", "post: %s", strerror(ret));
	ret = post_send(&A, &B, IBV_WR_ATOMIC_CMP_AND_SWP, 7, 2568, 8,
			IBV_SEND_SIGNALED, A.mr->lkey);
	if (!ret && wc_ok("ATOMIC_CMP_AND_SWP", A.scq, 7, IBV_WC_COMP_SWAP, &wc)) {
		memcpy(&v, A.buf + 2568, 8);
		result(v == 8 && !memcmp(B.buf + 2048, &(uint64_t){42}, 8),
		       "ATOMIC_CMP_AND_SWP", "returned %" PRIu64, v);
	} else if (ret)
		result(false, "ATOMIC_CMP_AND_SWP", "post: %s", strerror(ret));

	/*
	 * Unsignaled WQEs: rounds of SQ_WR - 1 unsignaled writes and one
	 * signaled one, more WQEs in all than the SQ holds; each round's one
	 * completion must free the whole SQ for the next round.
	 */
	ret = 0;
	for (n = 0; n < 4 && !ret; n++) {
		for (i = 0; i < SQ_WR && !ret; i++)
			ret = post_send(&A, &B, IBV_WR_RDMA_WRITE, 10 + i,
					1024, 16,
					i == SQ_WR - 1 ? IBV_SEND_SIGNALED : 0,
					A.mr->lkey);
		if (!ret && !wc_ok("unsignaled WQEs retired by a signaled one",
				   A.scq, 10 + SQ_WR - 1, IBV_WC_RDMA_WRITE, &wc))
			ret = -1;
	}
	if (ret >= 0)
		result(!ret && ibv_poll_cq(A.scq, 1, &wc) == 0,
		       "unsignaled WQEs retired by a signaled one",
		       "post: %s, or an extra completion", strerror(ret));

	/* A full SQ refuses the next WR until a completion is polled. */
	for (i = 0; i < SQ_WR; i++)
		post_send(&A, &B, IBV_WR_RDMA_WRITE, 20 + i, 1024, 16,
			  IBV_SEND_SIGNALED, A.mr->lkey);
	ret = post_send(&A, &B, IBV_WR_RDMA_WRITE, 29, 1024, 16,
			IBV_SEND_SIGNALED, A.mr->lkey);
	result(ret == ENOMEM, "full SQ: post_send returns ENOMEM",
	       "returned %d", ret);

	/*
	 * resize_cq with those SQ_WR completions unconsumed: they move to the
	 * new ring in order.
	 */
	usleep(200000);
	ret = ibv_resize_cq(A.scq, 64);
	n = 0;
	if (!ret) {
		struct timespec t0, t1;

		clock_gettime(CLOCK_MONOTONIC, &t0);
		do {
			int got = ibv_poll_cq(A.scq, 16 - n, wcs + n);

			n += got > 0 ? got : 0;
			clock_gettime(CLOCK_MONOTONIC, &t1);
		} while (n < SQ_WR && t1.tv_sec - t0.tv_sec < 10);
	}
	for (i = 0; i < n && i < SQ_WR; i++)
		if (wcs[i].wr_id != (uint64_t)(20 + i) ||
		    wcs[i].status != IBV_WC_SUCCESS)
			break;
	result(!ret && n == SQ_WR && i == SQ_WR && A.scq->cqe >= 64,
	       "resize_cq keeps unconsumed completions in order",
	       "resize: %s, %d completions, first bad %d, cqe %d",
	       strerror(ret), n, i, A.scq->cqe);
	ret = post_send(&A, &B, IBV_WR_RDMA_WRITE, 30, 1024, 16,
			IBV_SEND_SIGNALED, A.mr->lkey);
	if (!ret && wc_ok("traffic after resize_cq", A.scq, 30, IBV_WC_RDMA_WRITE, &wc))
		result(true, "traffic after resize_cq", "");
	else if (ret)
		result(false, "traffic after resize_cq", "post: %s", strerror(ret));

	ret = ibv_query_qp(A.qp, &qa, IBV_QP_STATE | IBV_QP_DEST_QPN | IBV_QP_CAP,
			   &qi);
	result(!ret && qa.qp_state == IBV_QPS_RTS &&
	       qa.dest_qp_num == B.qp->qp_num, "query_qp",
	       "%s, state %d dest_qp_num %u", strerror(ret), qa.qp_state,
	       qa.dest_qp_num);

	/* A bad lkey: an error completion, then the QP's receives flush. */
	post_recv(&A, 200, 0, 16);
	ret = post_send(&A, &B, IBV_WR_RDMA_WRITE, 40, 1024, 16,
			IBV_SEND_SIGNALED, A.mr->lkey ^ 0x5a5a00);
	if (!ret && poll_one(A.scq, &wc))
		result(wc.wr_id == 40 && wc.status != IBV_WC_SUCCESS,
		       "bad lkey: error completion", "wr_id %" PRIu64 " status %s",
		       wc.wr_id, ibv_wc_status_str(wc.status));
	else
		result(false, "bad lkey: error completion", "post %d or no completion", ret);
	if (poll_one(A.rcq, &wc))
		result(wc.wr_id == 200 && wc.status == IBV_WC_WR_FLUSH_ERR,
		       "receives flushed after the error",
		       "wr_id %" PRIu64 " status %s", wc.wr_id,
		       ibv_wc_status_str(wc.status));
	else
		result(false, "receives flushed after the error", "no completion");

	ret = ibv_destroy_qp(A.qp) || ibv_destroy_qp(B.qp) ||
	      ibv_destroy_cq(A.scq) || ibv_destroy_cq(A.rcq) ||
	      ibv_destroy_cq(B.scq) || ibv_destroy_cq(B.rcq) ||
	      ibv_dereg_mr(A.mr) || ibv_dereg_mr(B.mr) || ibv_dealloc_pd(pd);
	result(!ret, "destroy everything", "%s", strerror(errno));
	ibv_close_device(ctx);
	ibv_free_device_list(list);
	return failures ? 1 : 0;
}
