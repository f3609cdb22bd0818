// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * vmmbib-integrity: many messages of random sizes through SEND, RDMA WRITE
 * and RDMA READ, with and without inline data, over several pairs of RC QPs
 * of one process connected to each other through loopback.  Every QP
 * completes into one CQ and receives from one SRQ; several messages are in
 * flight at once.  Every message's payload is a pattern keyed by the seed
 * and the message number, checked byte for byte where it lands, with a
 * guard byte after it; receives must arrive in each QP's send order.
 *
 * Usage: vmmbib-integrity [-n MESSAGES] [-s SEED] [-q PAIRS] [-m LOG2_MAX]
 *                         [DEVICE]
 * Prints the seed, then one line per check: "ok NAME" or "not ok NAME: WHY";
 * exits 1 if any failed.  tests/guest/datapath.sh turns the lines into TAP.
 *
 * Built by scripts/build-provider.sh like verbs-check.c.
 */
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

#include "verbs-common.h"

#define MAX_PAIRS 16
#define WINDOW 16		/* messages in flight at once */
#define SRQ_DEPTH 64		/* > WINDOW: the SRQ never runs dry */
#define CQ_DEPTH 128		/* >= WINDOW sends + WINDOW receives */
#define RECV_TAG (1ull << 32)	/* wr_id bit of receives; slot numbers below */
#define GUARD 0xa5		/* byte after every landing zone */
#define SCRIBBLE 0xee		/* inline sources are overwritten with this */

enum { OP_SEND, OP_WRITE, OP_READ, NR_OPS };

static const char *const op_name[NR_OPS] = { "SEND", "RDMA_WRITE", "RDMA_READ" };
static const enum ibv_wr_opcode op_wr[NR_OPS] = {
	IBV_WR_SEND, IBV_WR_RDMA_WRITE, IBV_WR_RDMA_READ };
static const enum ibv_wc_opcode op_wc[NR_OPS] = {
	IBV_WC_SEND, IBV_WC_RDMA_WRITE, IBV_WC_RDMA_READ };

/* One end's memory: a source and a destination area per slot. */
struct side {
	uint8_t *buf;
	struct ibv_mr *mr;
};

struct msg {
	bool busy, sent, received;
	uint64_t id;		/* message number; keys its pattern */
	int op, qp;		/* qp: index of the posting QP */
	uint32_t len;
	bool inl;
};

static struct ibv_context *ctx;
static struct ibv_pd *pd;
static struct ibv_cq *cq;
static struct ibv_srq *srq;
static struct ibv_qp *qps[2 * MAX_PAIRS];
static struct side sides[2];
static uint8_t *rbuf;
static struct ibv_mr *rmr;
static struct msg msgs[WINDOW];
/* Per receiving QP: the slots of the SENDs it must receive, in order. */
static int fifo[2 * MAX_PAIRS][WINDOW];
static unsigned int fifo_head[2 * MAX_PAIRS], fifo_tail[2 * MAX_PAIRS];

static uint16_t lid;
static int nqp;
static int log2_max = 16;
static uint32_t max_size, max_inline;
static uint64_t seed, rnd_state;

/* Per operation: messages, inline ones, bytes; the first failure. */
static unsigned long count[NR_OPS], inlined[NR_OPS];
static unsigned long long bytes[NR_OPS];
static char why[NR_OPS][256];
static bool stop;

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rnd(void)
{
	return splitmix(&rnd_state);
}

static void pattern_fill(uint8_t *p, uint32_t len, uint64_t id)
{
	uint64_t s = seed ^ (id * 0xd1342543de82ef95ull), v = 0;
	uint32_t i;

	for (i = 0; i < len; i++) {
		if (!(i & 7))
			v = splitmix(&s);
		p[i] = v >> (8 * (i & 7));
	}
}

/* Offset of the first byte that differs from message @id's pattern, or -1. */
static long pattern_check(const uint8_t *p, uint32_t len, uint64_t id)
{
	uint64_t s = seed ^ (id * 0xd1342543de82ef95ull), v = 0;
	uint32_t i;

	for (i = 0; i < len; i++) {
		if (!(i & 7))
			v = splitmix(&s);
		if (p[i] != (uint8_t)(v >> (8 * (i & 7))))
			return i;
	}
	return -1;
}

static uint8_t *src_of(int side, int slot)
{
	return sides[side].buf + (size_t)2 * slot * max_size;
}

static uint8_t *dst_of(int side, int slot)
{
	return src_of(side, slot) + max_size;
}

static void fail(int op, const char *fmt, ...)
{
	va_list ap;

	stop = true;
	if (why[op][0])
		return;
	va_start(ap, fmt);
	vsnprintf(why[op], sizeof(why[op]), fmt, ap);
	va_end(ap);
}

/* Checks a landing zone: the pattern, then the untouched guard byte. */
static bool check_landed(struct msg *m, const uint8_t *p, const char *where)
{
	long bad = pattern_check(p, m->len, m->id);

	if (bad >= 0) {
		fail(m->op, "message %" PRIu64 " (QP %d, %u bytes%s) into %s: "
		     "byte %ld differs", m->id, m->qp, m->len,
		     m->inl ? ", inline" : "", where, bad);
		return false;
	}
	if (p[m->len] != GUARD) {
		fail(m->op, "message %" PRIu64 " (QP %d, %u bytes%s) into %s: "
		     "wrote past its end", m->id, m->qp, m->len,
		     m->inl ? ", inline" : "", where);
		return false;
	}
	return true;
}

static int post_srq_recv(uint32_t r)
{
	struct ibv_sge sge = { (uintptr_t)rbuf + (size_t)r * max_size,
			       max_size, rmr->lkey };
	struct ibv_recv_wr wr = { .wr_id = RECV_TAG | r, .sg_list = &sge,
				  .num_sge = 1 }, *bad;

	return ibv_post_srq_recv(srq, &wr, &bad);
}

static void post_message(int slot, uint64_t id)
{
	struct msg *m = &msgs[slot];
	int x, y, k = rnd() % (log2_max + 1);
	struct ibv_sge sge;
	struct ibv_send_wr wr = {}, *bad;
	int ret;

	/* Sizes spread over every power of two up to max_size. */
	*m = (struct msg){ .busy = true, .id = id };
	m->op = rnd() % NR_OPS;
	m->qp = rnd() % nqp;
	m->len = rnd() & ((1u << k) - 1);
	m->inl = m->op != OP_READ && m->len <= max_inline && (rnd() & 1);
	x = m->qp & 1;
	y = x ^ 1;

	if (m->op == OP_READ) {
		/* The peer's source comes back into our destination area. */
		pattern_fill(src_of(y, slot), m->len, id);
		sge.addr = (uintptr_t)dst_of(x, slot);
		wr.wr.rdma.remote_addr = (uintptr_t)src_of(y, slot);
		wr.wr.rdma.rkey = sides[y].mr->rkey;
	} else {
		pattern_fill(src_of(x, slot), m->len, id);
		sge.addr = (uintptr_t)src_of(x, slot);
		wr.wr.rdma.remote_addr = (uintptr_t)dst_of(y, slot);
		wr.wr.rdma.rkey = sides[y].mr->rkey;
	}
	sge.length = m->len;
	sge.lkey = sides[x].mr->lkey;
	wr.wr_id = slot;
	wr.sg_list = &sge;
	wr.num_sge = m->len ? 1 : 0;
	wr.opcode = op_wr[m->op];
	wr.send_flags = IBV_SEND_SIGNALED | (m->inl ? IBV_SEND_INLINE : 0);

	if (m->op == OP_SEND) {
		int q = m->qp ^ 1;

		fifo[q][fifo_tail[q]++ % WINDOW] = slot;
	}
	ret = ibv_post_send(qps[m->qp], &wr, &bad);
	if (ret) {
		fail(m->op, "message %" PRIu64 ": post_send on QP %d: %s",
		     id, m->qp, strerror(ret));
		return;
	}
	/* Inline data was copied by the post: the source is free already. */
	if (m->inl)
		memset(src_of(x, slot), SCRIBBLE, m->len);
	count[m->op]++;
	inlined[m->op] += m->inl;
	bytes[m->op] += m->len;
}

static void finish(int slot, unsigned long *done)
{
	msgs[slot].busy = false;
	(*done)++;
}

static int qp_index(uint32_t qp_num)
{
	int i;

	for (i = 0; i < nqp; i++)
		if (qps[i]->qp_num == qp_num)
			return i;
	return -1;
}

static void on_send_wc(struct ibv_wc *wc, unsigned long *done)
{
	int slot = wc->wr_id;
	struct msg *m;
	uint8_t *p;

	if (wc->wr_id >= WINDOW || !msgs[slot].busy || msgs[slot].sent) {
		fail(OP_SEND, "send completion with unknown wr_id %" PRIu64,
		     wc->wr_id);
		return;
	}
	m = &msgs[slot];
	if (wc->status != IBV_WC_SUCCESS || wc->opcode != op_wc[m->op] ||
	    wc->qp_num != qps[m->qp]->qp_num) {
		fail(m->op, "message %" PRIu64 " (QP %d, %u bytes%s): completion "
		     "status %s opcode %d qp_num %u", m->id, m->qp, m->len,
		     m->inl ? ", inline" : "", ibv_wc_status_str(wc->status),
		     wc->opcode, wc->qp_num);
		return;
	}
	m->sent = true;
	if (m->op == OP_SEND) {
		if (m->received)
			finish(slot, done);
		return;
	}
	/* WRITE lands in the peer's destination area, READ in ours. */
	p = dst_of(m->op == OP_WRITE ? (m->qp & 1) ^ 1 : m->qp & 1, slot);
	if (check_landed(m, p, m->op == OP_WRITE ? "the peer" : "the reader")) {
		memset(p, GUARD, m->len + 1);
		finish(slot, done);
	}
}

static void on_recv_wc(struct ibv_wc *wc, unsigned long *done)
{
	uint32_t r = wc->wr_id & ~RECV_TAG;
	int q = qp_index(wc->qp_num), slot;
	uint8_t *p = rbuf + (size_t)r * max_size;
	struct msg *m;
	int ret;

	if (wc->status != IBV_WC_SUCCESS || wc->opcode != IBV_WC_RECV ||
	    r >= SRQ_DEPTH || q < 0) {
		fail(OP_SEND, "receive completion wr_id %#" PRIx64 " status %s "
		     "opcode %d qp_num %u", wc->wr_id,
		     ibv_wc_status_str(wc->status), wc->opcode, wc->qp_num);
		return;
	}
	/* RC delivers in order: this is the QP's oldest outstanding SEND. */
	if (fifo_head[q] == fifo_tail[q]) {
		fail(OP_SEND, "QP %d received a message nobody sent to it", q);
		return;
	}
	slot = fifo[q][fifo_head[q]++ % WINDOW];
	m = &msgs[slot];
	if (wc->byte_len != m->len) {
		fail(OP_SEND, "message %" PRIu64 " (QP %d, %u bytes%s): received "
		     "byte_len %u (out of order?)", m->id, m->qp, m->len,
		     m->inl ? ", inline" : "", wc->byte_len);
		return;
	}
	if (!check_landed(m, p, "an SRQ buffer"))
		return;
	memset(p, GUARD, m->len + 1);
	ret = post_srq_recv(r);
	if (ret) {
		fail(OP_SEND, "post_srq_recv: %s", strerror(ret));
		return;
	}
	m->received = true;
	if (m->sent)
		finish(slot, done);
}

static struct ibv_mr *alloc_mr(uint8_t **buf, size_t size)
{
	*buf = aligned_alloc(4096, size);
	if (!*buf)
		return NULL;
	memset(*buf, GUARD, size);
	return ibv_reg_mr(pd, *buf, size, IBV_ACCESS_LOCAL_WRITE |
			  IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ);
}

static int setup(int pairs)
{
	struct ibv_srq_init_attr sa = {
		.attr = { .max_wr = SRQ_DEPTH, .max_sge = 1 },
	};
	struct ibv_qp_init_attr qa = {
		.qp_type = IBV_QPT_RC,
		.cap = { .max_send_wr = WINDOW, .max_send_sge = 1,
			 .max_inline_data = 256 },
	};
	struct ibv_device_attr da;
	struct ibv_port_attr port;
	uint8_t rd_atom;
	int i;

	pd = ibv_alloc_pd(ctx);
	if (!pd || ibv_query_port(ctx, 1, &port) || ibv_query_device(ctx, &da))
		return -1;
	lid = port.lid;
	rd_atom = da.max_qp_rd_atom < 4 ? da.max_qp_rd_atom : 4;
	for (i = 0; i < 2; i++) {
		sides[i].mr = alloc_mr(&sides[i].buf,
				       (size_t)2 * WINDOW * max_size);
		if (!sides[i].mr)
			return -1;
	}
	rmr = alloc_mr(&rbuf, (size_t)SRQ_DEPTH * max_size);
	cq = ibv_create_cq(ctx, CQ_DEPTH, NULL, NULL, 0);
	srq = ibv_create_srq(pd, &sa);
	if (!rmr || !cq || !srq)
		return -1;
	qa.send_cq = qa.recv_cq = cq;
	qa.srq = srq;
	nqp = 2 * pairs;
	for (i = 0; i < nqp; i++) {
		qa.cap.max_inline_data = 256;
		qps[i] = ibv_create_qp(pd, &qa);
		if (!qps[i])
			return -1;
		/* The least any QP was granted. */
		if (!i || qa.cap.max_inline_data < max_inline)
			max_inline = qa.cap.max_inline_data;
	}
	if (max_inline >= max_size)
		max_inline = max_size - 1;
	for (i = 0; i < nqp; i++)
		if (rc_connect(qps[i], lid, qps[i ^ 1]->qp_num,
			       IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ,
			       rd_atom))
			return -1;
	for (i = 0; i < SRQ_DEPTH; i++)
		if (post_srq_recv(i))
			return -1;
	return 0;
}

static void usage(const char *prog)
{
	fprintf(stderr, "usage: %s [-n MESSAGES] [-s SEED] [-q PAIRS (1-%d)] "
		"[-m LOG2_MAX_SIZE (1-16)] [DEVICE]\n", prog, MAX_PAIRS);
	exit(2);
}

int main(int argc, char **argv)
{
	unsigned long n = 20000, posted = 0, done = 0;
	int pairs = 4, opt, i, got;
	struct timespec t0, last, now;
	struct ibv_device **list;
	struct ibv_wc wcs[16];
	const char *name;
	char what[128];
	int op;

	/* A run killed by a timeout still shows how far it got. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	while ((opt = getopt(argc, argv, "n:s:q:m:")) != -1) {
		switch (opt) {
		case 'n':
			n = strtoul(optarg, NULL, 0);
			break;
		case 's':
			seed = strtoull(optarg, NULL, 0);
			break;
		case 'q':
			pairs = atoi(optarg);
			break;
		case 'm':
			log2_max = atoi(optarg);
			break;
		default:
			usage(argv[0]);
		}
	}
	if (pairs < 1 || pairs > MAX_PAIRS || log2_max < 1 || log2_max > 16 ||
	    optind < argc - 1)
		usage(argv[0]);
	name = optind < argc ? argv[optind] : "vmmbib0";
	max_size = 1u << log2_max;
	rnd_state = seed;
	printf("seed %" PRIu64 " (rerun with -s %" PRIu64 " -n %lu -q %d -m %d)\n",
	       seed, seed, n, pairs, log2_max);

	list = ibv_get_device_list(NULL);
	for (i = 0; list && list[i]; i++)
		if (!strcmp(ibv_get_device_name(list[i]), name))
			ctx = ibv_open_device(list[i]);
	if (!ctx) {
		result(false, "open device", "%s not found or not opened", name);
		return 1;
	}
	snprintf(what, sizeof(what), "%d RC QPs on one CQ and one SRQ", 2 * pairs);
	if (setup(pairs)) {
		result(false, what, "%s", strerror(errno));
		return 1;
	}
	result(true, what, "");
	printf("messages of 0 to %u bytes, inline up to %u, %d in flight\n",
	       max_size - 1, max_inline, WINDOW);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	last = t0;
	while (done < n && !stop) {
		for (i = 0; i < WINDOW && posted < n && !stop; i++)
			if (!msgs[i].busy)
				post_message(i, posted++);
		got = ibv_poll_cq(cq, 16, wcs);
		if (got < 0) {
			fail(OP_SEND, "poll_cq: %d", got);
			break;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (got)
			last = now;
		else if (now.tv_sec - last.tv_sec > 10)
			break;
		for (i = 0; i < got && !stop; i++) {
			if (wcs[i].wr_id & RECV_TAG)
				on_recv_wc(&wcs[i], &done);
			else
				on_send_wc(&wcs[i], &done);
		}
	}

	for (op = 0; op < NR_OPS; op++) {
		char inl[32] = "";

		if (op != OP_READ)	/* a READ has no inline form */
			snprintf(inl, sizeof(inl), " (%lu inline)", inlined[op]);
		snprintf(what, sizeof(what), "%s: %lu messages%s, %llu bytes, "
			 "every byte checked", op_name[op], count[op], inl,
			 bytes[op]);
		result(!why[op][0] && count[op] && (op == OP_READ || inlined[op]),
		       what, "%s", why[op][0] ? why[op] : "too few messages");
	}
	clock_gettime(CLOCK_MONOTONIC, &now);
	snprintf(what, sizeof(what), "all %lu messages completed", n);
	result(done == n, what, "%lu completed, %lu posted, %s", done, posted,
	       stop ? "stopped at the first failure" :
		      "no completion for 10 s");
	printf("%lu messages in %.2f s\n", done,
	       (now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9);

	got = 0;
	for (i = 0; i < nqp; i++)
		got |= ibv_destroy_qp(qps[i]);
	got = got || ibv_destroy_srq(srq) || ibv_destroy_cq(cq) ||
	      ibv_dereg_mr(sides[0].mr) || ibv_dereg_mr(sides[1].mr) ||
	      ibv_dereg_mr(rmr) || ibv_dealloc_pd(pd);
	result(!got, "destroy everything", "%s", strerror(errno));
	ibv_close_device(ctx);
	ibv_free_device_list(list);
	return failures ? 1 : 0;
}
