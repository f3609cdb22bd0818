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
 * Between VMs: vmmbib-integrity -P IP1,IP2,... -R RANK [-n | -D] [-K RANKS]
 * runs in every VM of the list (RANK: its own index there) and checks the
 * traffic between each pair, all to all; -I -P IP1,IP2 -R RANK runs the
 * isolation probes of rank 1 against rank 0's memory.  See below.
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

/*
 * ---- Between VMs (-P) ---------------------------------------------------
 *
 * Every process of -P's list opens one RC QP to every other (addresses
 * exchanged over TCP: the lower rank listens, the higher connects) and sends
 * each of them messages of random sizes as SENDs and RDMA WRITEs (each WRITE
 * followed by a SEND that names it) and reads random ranges of the peer's
 * read area with RDMA READs.  The receiver checks every SEND and WRITE byte
 * for byte as it arrives, in order (a gap is a lost message), and the
 * reader every READ; an END message closes each direction.  With -K, the
 * ranks named there are expected to die during the run (-D: for SECONDS,
 * not -n messages): their traffic must end in error completions, never
 * hang, and the traffic among the others must be complete and intact.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#define NET_MAX_PEERS 8
#define NET_WINDOW 8		/* messages in flight per peer */
#define NET_RQ 16		/* receives posted per peer */
/*
 * WRITE landing slots per peer.  A sender posts message m only once m -
 * NET_WINDOW has completed, i.e. landed in one of the receiver's NET_RQ
 * buffers, which the receiver reposts only after checking; so message
 * m - NET_RING, whose slot m reuses, has been checked.
 */
#define NET_RING (NET_WINDOW + NET_RQ + 8)
#define NET_MAGIC 0x766d6d62u	/* "vmmb" */
#define NET_STALL_S 30		/* no completion of a peer's for this long: a hang */
#define NET_SETUP_S 150		/* every peer must be reachable within this */

enum { MSG_DATA = 1, MSG_WROTE, MSG_END };

struct net_hdr {
	uint32_t magic;
	uint32_t type;
	uint32_t seq;
	uint32_t len;
};

/* What each side tells the other over TCP. */
struct net_info {
	uint32_t magic, rank, lid, qpn;
	uint32_t ring_rkey, read_rkey;
	uint64_t ring_addr, read_addr, seed;
};

struct net_slot {
	bool busy;
	int op, wqes;		/* wqes: completions still due */
	uint32_t seq, len;
	uint64_t off;		/* READ: offset in the peer's read area */
	bool inl;
};

struct net_peer {
	int rank, fd;
	const char *ip;
	struct ibv_qp *qp;
	uint8_t *mem;
	struct ibv_mr *mr;
	struct net_info remote;
	/* sender */
	struct net_slot slot[NET_WINDOW + 1];	/* the last one: END */
	uint32_t next_seq;
	unsigned long posted, sent[NR_OPS], inl;
	unsigned long long sbytes[NR_OPS];
	bool sending_done, end_posted, end_done;
	/* receiver */
	uint32_t expect_seq;
	unsigned long got[NR_OPS];
	unsigned long long rbytes;
	bool end_seen;
	/* both */
	struct timespec last_wc;
	int outstanding;
	bool lost, may_die;
	int lost_status;
	char why[256];
};

static struct net_peer peers[NET_MAX_PEERS];
static int npeers, my_rank;

static size_t hdr_slot(void)
{
	return sizeof(struct net_hdr) + max_size;
}

/* The regions of a peer's memory. */
static uint8_t *net_src(struct net_peer *p, int s)
{
	return p->mem + (size_t)s * hdr_slot();
}

static uint8_t *net_note(struct net_peer *p, int s)
{
	return net_src(p, NET_WINDOW + 1) + (size_t)s * sizeof(struct net_hdr);
}

static uint8_t *net_land(struct net_peer *p, int s)
{
	return net_note(p, NET_WINDOW + 1) + (size_t)s * max_size;
}

static uint8_t *net_recv(struct net_peer *p, int r)
{
	return net_land(p, NET_WINDOW) + (size_t)r * hdr_slot();
}

static uint8_t *net_ring(struct net_peer *p, int s)
{
	return net_recv(p, NET_RQ) + (size_t)s * max_size;
}

static uint8_t *net_read_area(struct net_peer *p)
{
	return net_ring(p, NET_RING);
}

static size_t net_read_size(void)
{
	return (size_t)4 * max_size;
}

static size_t net_mem_size(void)
{
	return (size_t)(NET_WINDOW + 1 + NET_RQ) * hdr_slot() +
	       (NET_WINDOW + 1) * sizeof(struct net_hdr) +
	       (size_t)(NET_WINDOW + NET_RING) * max_size + net_read_size();
}

static uint64_t mix(uint64_t a, uint64_t b)
{
	uint64_t s = a ^ (b * 0xd1342543de82ef95ull);

	return splitmix(&s);
}

/* The pattern of a message from rank @src to @dst, number @seq. */
static uint64_t msg_key(uint64_t sseed, int src, int dst, uint32_t seq, int op)
{
	return mix(mix(mix(sseed, src + 1), dst + 1), ((uint64_t)op << 32) | seq);
}

/* Byte @i of a position-keyed pattern: any range can be checked alone. */
static void keyed_fill(uint8_t *p, size_t len, uint64_t key, uint64_t off)
{
	uint64_t v = mix(key, off >> 3);
	size_t i;

	for (i = 0; i < len; i++) {
		if (i && !((off + i) & 7))
			v = mix(key, (off + i) >> 3);
		p[i] = v >> (8 * ((off + i) & 7));
	}
}

static long keyed_check(const uint8_t *p, size_t len, uint64_t key,
			uint64_t off)
{
	uint64_t v = mix(key, off >> 3);
	size_t i;

	for (i = 0; i < len; i++) {
		if (i && !((off + i) & 7))
			v = mix(key, (off + i) >> 3);
		if (p[i] != (uint8_t)(v >> (8 * ((off + i) & 7))))
			return i;
	}
	return -1;
}

static void net_fail(struct net_peer *p, const char *fmt, ...)
{
	va_list ap;

	if (p->why[0])
		return;
	va_start(ap, fmt);
	vsnprintf(p->why, sizeof(p->why), fmt, ap);
	va_end(ap);
	if (!p->why[0])
		snprintf(p->why, sizeof(p->why), "failed");
}

static bool net_stopped(struct net_peer *p)
{
	return p->lost || p->why[0];
}

static int net_post_recv(struct net_peer *p, int r)
{
	struct ibv_sge sge = { (uintptr_t)net_recv(p, r), hdr_slot(),
			       p->mr->lkey };
	struct ibv_recv_wr wr = { .wr_id = RECV_TAG | (p - peers) << 8 | r,
				  .sg_list = &sge, .num_sge = 1 }, *bad;

	return ibv_post_recv(p->qp, &wr, &bad);
}

static int net_post(struct net_peer *p, struct ibv_send_wr *wr)
{
	struct ibv_send_wr *bad;
	int ret = ibv_post_send(p->qp, wr, &bad);

	if (ret)
		net_fail(p, "post_send: %s", strerror(ret));
	return ret;
}

static void net_send_msg(struct net_peer *p, int s)
{
	struct net_slot *m = &p->slot[s];
	int k = rnd() % (log2_max + 1);
	struct net_hdr *h;
	struct ibv_sge sge, nsge;
	struct ibv_send_wr wr = {}, note = {};
	uint8_t *src = net_src(p, s);

	*m = (struct net_slot){ .busy = true, .op = rnd() % NR_OPS };
	m->len = rnd() & ((1u << k) - 1);
	sge.lkey = nsge.lkey = p->mr->lkey;
	wr.wr_id = (p - peers) << 8 | s;
	wr.sg_list = &sge;
	wr.send_flags = IBV_SEND_SIGNALED;
	switch (m->op) {
	case OP_SEND:
		m->seq = p->next_seq++;
		h = (struct net_hdr *)src;
		*h = (struct net_hdr){ NET_MAGIC, MSG_DATA, m->seq, m->len };
		keyed_fill(src + sizeof(*h), m->len,
			   msg_key(seed, my_rank, p->rank, m->seq, OP_SEND), 0);
		sge.addr = (uintptr_t)src;
		sge.length = sizeof(*h) + m->len;
		m->inl = sge.length <= max_inline && (rnd() & 1);
		wr.num_sge = 1;
		wr.opcode = IBV_WR_SEND;
		wr.send_flags |= m->inl ? IBV_SEND_INLINE : 0;
		m->wqes = 1;
		break;
	case OP_WRITE:
		/* The data into the peer's ring, then a SEND that names it. */
		m->seq = p->next_seq++;
		keyed_fill(src, m->len,
			   msg_key(seed, my_rank, p->rank, m->seq, OP_WRITE), 0);
		sge.addr = (uintptr_t)src;
		sge.length = m->len;
		m->inl = m->len <= max_inline && (rnd() & 1);
		wr.num_sge = m->len ? 1 : 0;
		wr.opcode = IBV_WR_RDMA_WRITE;
		wr.send_flags |= m->inl ? IBV_SEND_INLINE : 0;
		wr.wr.rdma.remote_addr = p->remote.ring_addr +
					 (uint64_t)(m->seq % NET_RING) * max_size;
		wr.wr.rdma.rkey = p->remote.ring_rkey;
		h = (struct net_hdr *)net_note(p, s);
		*h = (struct net_hdr){ NET_MAGIC, MSG_WROTE, m->seq, m->len };
		nsge.addr = (uintptr_t)h;
		nsge.length = sizeof(*h);
		note.wr_id = wr.wr_id;
		note.sg_list = &nsge;
		note.num_sge = 1;
		note.opcode = IBV_WR_SEND;
		note.send_flags = IBV_SEND_SIGNALED;
		wr.next = &note;
		m->wqes = 2;
		break;
	default:
		/* A random range of the peer's read area into our landing zone. */
		m->off = rnd() % (net_read_size() - m->len);
		memset(net_land(p, s), GUARD, m->len + 1);
		sge.addr = (uintptr_t)net_land(p, s);
		sge.length = m->len;
		wr.num_sge = m->len ? 1 : 0;
		wr.opcode = IBV_WR_RDMA_READ;
		wr.wr.rdma.remote_addr = p->remote.read_addr + m->off;
		wr.wr.rdma.rkey = p->remote.read_rkey;
		m->wqes = 1;
		break;
	}
	if (net_post(p, &wr)) {
		m->busy = false;
		return;
	}
	if (m->inl)
		memset(src, SCRIBBLE, sge.length);
	p->outstanding += m->wqes;
	p->posted++;
	p->sent[m->op]++;
	p->inl += m->inl;
	p->sbytes[m->op] += m->len;
}

static void net_send_end(struct net_peer *p)
{
	struct net_hdr *h = (struct net_hdr *)net_src(p, NET_WINDOW);
	struct ibv_sge sge = { (uintptr_t)h, sizeof(*h), p->mr->lkey };
	struct ibv_send_wr wr = { .wr_id = (p - peers) << 8 | NET_WINDOW,
				  .sg_list = &sge, .num_sge = 1,
				  .opcode = IBV_WR_SEND,
				  .send_flags = IBV_SEND_SIGNALED };

	/* seq: how many SENDs and WRITEs came before. */
	*h = (struct net_hdr){ NET_MAGIC, MSG_END, p->next_seq, 0 };
	p->slot[NET_WINDOW] = (struct net_slot){ .busy = true, .op = OP_SEND,
						 .wqes = 1 };
	if (net_post(p, &wr))
		return;
	p->end_posted = true;
	p->outstanding++;
}

/* An error completion: expected of a peer that may die, else a failure. */
static void net_error(struct net_peer *p, struct ibv_wc *wc, const char *what)
{
	if (p->lost)
		return;
	if (p->may_die) {
		p->lost = true;
		p->lost_status = wc->status;
		return;
	}
	net_fail(p, "%s completion status %s (%d), vendor_err %#x", what,
		 ibv_wc_status_str(wc->status), wc->status, wc->vendor_err);
}

static void net_on_send_wc(struct net_peer *p, struct ibv_wc *wc)
{
	int s = wc->wr_id & 0xff;
	struct net_slot *m = &p->slot[s];
	enum ibv_wc_opcode want;
	long bad;

	p->outstanding--;
	if (wc->status != IBV_WC_SUCCESS) {
		net_error(p, wc, "a send queue");
		return;
	}
	if (net_stopped(p))
		return;
	if (s > NET_WINDOW || !m->busy || m->wqes <= 0) {
		net_fail(p, "send completion with unknown wr_id %#" PRIx64,
			 wc->wr_id);
		return;
	}
	want = m->op == OP_WRITE && m->wqes == 2 ? IBV_WC_RDMA_WRITE :
	       m->op == OP_WRITE ? IBV_WC_SEND : op_wc[m->op];
	if (wc->opcode != want || wc->qp_num != p->qp->qp_num) {
		net_fail(p, "message %u: completion opcode %d (want %d) qp_num %u",
			 m->seq, wc->opcode, want, wc->qp_num);
		return;
	}
	if (--m->wqes)
		return;
	m->busy = false;
	if (s == NET_WINDOW) {
		p->end_done = true;
		return;
	}
	if (m->op != OP_READ)
		return;
	bad = keyed_check(net_land(p, s), m->len,
			  mix(p->remote.seed, p->rank + 1), m->off);
	if (bad >= 0)
		net_fail(p, "RDMA READ of %u bytes at offset %" PRIu64
			 " of rank %d's read area: byte %ld differs",
			 m->len, m->off, p->rank, bad);
	else if (net_land(p, s)[m->len] != GUARD)
		net_fail(p, "RDMA READ of %u bytes at offset %" PRIu64
			 ": wrote past its end", m->len, m->off);
}

static void net_on_recv_wc(struct net_peer *p, struct ibv_wc *wc)
{
	int r = wc->wr_id & 0xff, op;
	struct net_hdr h;
	uint8_t *data;
	uint32_t want_len;
	long bad;

	p->outstanding--;
	if (wc->status != IBV_WC_SUCCESS) {
		net_error(p, wc, "a receive");
		return;
	}
	if (net_stopped(p))
		return;
	if (r >= NET_RQ || wc->opcode != IBV_WC_RECV ||
	    wc->byte_len < sizeof(h)) {
		net_fail(p, "receive wr_id %#" PRIx64 " opcode %d byte_len %u",
			 wc->wr_id, wc->opcode, wc->byte_len);
		return;
	}
	memcpy(&h, net_recv(p, r), sizeof(h));
	if (h.magic != NET_MAGIC || h.type < MSG_DATA || h.type > MSG_END) {
		net_fail(p, "receive %#" PRIx64 ": no message header "
			 "(magic %#x type %u)", wc->wr_id, h.magic, h.type);
		return;
	}
	if (h.seq != p->expect_seq) {
		net_fail(p, "message %u arrived where %u was due: %s",
			 h.seq, p->expect_seq, h.seq > p->expect_seq ?
			 "messages were lost" : "out of order or repeated");
		return;
	}
	want_len = sizeof(h) + (h.type == MSG_DATA ? h.len : 0);
	if (wc->byte_len != want_len || h.len >= max_size) {
		net_fail(p, "message %u: byte_len %u, its header says %u",
			 h.seq, wc->byte_len, want_len);
		return;
	}
	if (h.type == MSG_END) {
		p->end_seen = true;
	} else {
		op = h.type == MSG_DATA ? OP_SEND : OP_WRITE;
		data = op == OP_SEND ? net_recv(p, r) + sizeof(h) :
		       net_ring(p, h.seq % NET_RING);
		bad = keyed_check(data, h.len,
				  msg_key(p->remote.seed, p->rank, my_rank,
					  h.seq, op), 0);
		if (bad >= 0) {
			net_fail(p, "%s message %u of %u bytes: byte %ld differs",
				 op_name[op], h.seq, h.len, bad);
			return;
		}
		if (op == OP_WRITE) {
			if (data[h.len] != GUARD) {
				net_fail(p, "RDMA WRITE message %u of %u bytes "
					 "wrote past its end", h.seq, h.len);
				return;
			}
			memset(data, GUARD, h.len + 1);
		}
		p->expect_seq++;
		p->got[op]++;
		p->rbytes += h.len;
	}
	if (net_post_recv(p, r))
		net_fail(p, "post_recv: %s", strerror(errno));
	else
		p->outstanding++;
}

static double since(const struct timespec *a, const struct timespec *b)
{
	return (b->tv_sec - a->tv_sec) + (b->tv_nsec - a->tv_nsec) / 1e9;
}

/* Reads or writes all of @len, waiting at most until @deadline. */
static int net_io(int fd, void *buf, size_t len, bool out, time_t deadline)
{
	uint8_t *b = buf;

	while (len) {
		struct pollfd pfd = { fd, out ? POLLOUT : POLLIN, 0 };
		ssize_t k;
		int left = deadline - time(NULL);

		if (left <= 0 || poll(&pfd, 1, left * 1000) <= 0)
			return -1;
		k = out ? write(fd, b, len) : read(fd, b, len);
		if (k <= 0)
			return -1;
		b += k;
		len -= k;
	}
	return 0;
}

/* One TCP connection per peer: lower ranks accept, higher ones connect. */
static int net_connect_all(char **ips, int nips, int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	time_t deadline = time(NULL) + NET_SETUP_S;
	int lfd, one = 1, i, left = 0;

	for (i = 0; i < npeers; i++)
		left += peers[i].rank > my_rank;
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(lfd, (struct sockaddr *)&a, sizeof(a)) || listen(lfd, 8)) {
		printf("listening on TCP port %d: %s\n", port, strerror(errno));
		return -1;
	}
	for (i = 0; i < npeers; i++) {
		struct net_peer *p = &peers[i];
		uint32_t hello = my_rank;

		if (p->rank > my_rank)
			continue;
		inet_pton(AF_INET, ips[p->rank], &a.sin_addr);
		for (;;) {
			p->fd = socket(AF_INET, SOCK_STREAM, 0);
			if (!connect(p->fd, (struct sockaddr *)&a, sizeof(a)))
				break;
			close(p->fd);
			p->fd = -1;
			if (time(NULL) > deadline) {
				printf("connecting to %s:%d: %s\n", ips[p->rank],
				       port, strerror(errno));
				return -1;
			}
			usleep(300000);
		}
		if (net_io(p->fd, &hello, sizeof(hello), true, deadline))
			return -1;
	}
	while (left) {
		struct pollfd pfd = { lfd, POLLIN, 0 };
		uint32_t hello;
		int fd;

		if (poll(&pfd, 1, (deadline - time(NULL)) * 1000) <= 0) {
			printf("%d higher rank(s) did not connect within %d s\n",
			       left, NET_SETUP_S);
			return -1;
		}
		fd = accept(lfd, NULL, NULL);
		if (fd < 0 || net_io(fd, &hello, sizeof(hello), false, deadline))
			return -1;
		for (i = 0; i < npeers; i++)
			if (peers[i].rank == (int)hello && peers[i].fd < 0 &&
			    peers[i].rank > my_rank)
				break;
		if (i == npeers) {
			printf("a connection said it was rank %u: not expected\n",
			       hello);
			close(fd);
			continue;
		}
		peers[i].fd = fd;
		left--;
	}
	close(lfd);
	(void)nips;
	return 0;
}

/* Every live peer says it is at the same point: one byte each way. */
static int net_barrier(char what)
{
	time_t deadline = time(NULL) + NET_SETUP_S;
	int i, ret = 0;
	char c;

	for (i = 0; i < npeers; i++)
		if (!peers[i].lost && net_io(peers[i].fd, &what, 1, true, deadline))
			ret = -1;
	for (i = 0; i < npeers; i++)
		if (!peers[i].lost &&
		    (net_io(peers[i].fd, &c, 1, false, deadline) || c != what))
			ret = -1;
	return ret;
}

static int net_setup(char **ips, int nips, int port)
{
	struct ibv_qp_init_attr qa = {
		.qp_type = IBV_QPT_RC,
		.cap = { .max_send_wr = 2 * NET_WINDOW + 2, .max_send_sge = 1,
			 .max_recv_wr = NET_RQ, .max_recv_sge = 1,
			 .max_inline_data = 128 },
	};
	struct ibv_device_attr da;
	struct ibv_port_attr port_attr;
	time_t deadline;
	uint8_t rd_atom;
	int i, r;

	pd = ibv_alloc_pd(ctx);
	if (!pd || ibv_query_port(ctx, 1, &port_attr) || ibv_query_device(ctx, &da))
		return -1;
	lid = port_attr.lid;
	rd_atom = da.max_qp_rd_atom < 4 ? da.max_qp_rd_atom : 4;
	cq = ibv_create_cq(ctx, npeers * (2 * NET_WINDOW + 2 + NET_RQ) + 8,
			   NULL, NULL, 0);
	if (!cq)
		return -1;
	qa.send_cq = qa.recv_cq = cq;
	for (i = 0; i < npeers; i++) {
		struct net_peer *p = &peers[i];

		p->mem = aligned_alloc(4096, (net_mem_size() + 4095) & ~4095ul);
		if (!p->mem)
			return -1;
		memset(p->mem, GUARD, net_mem_size());
		keyed_fill(net_read_area(p), net_read_size(), mix(seed, my_rank + 1), 0);
		p->mr = ibv_reg_mr(pd, p->mem, net_mem_size(),
				   IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
				   IBV_ACCESS_REMOTE_READ);
		qa.cap.max_inline_data = 128;
		p->qp = p->mr ? ibv_create_qp(pd, &qa) : NULL;
		if (!p->qp)
			return -1;
		if (!i || qa.cap.max_inline_data < max_inline)
			max_inline = qa.cap.max_inline_data;
	}
	if (net_connect_all(ips, nips, port))
		return -1;
	deadline = time(NULL) + NET_SETUP_S;
	for (i = 0; i < npeers; i++) {
		struct net_peer *p = &peers[i];
		struct net_info mine = {
			NET_MAGIC, my_rank, lid, p->qp->qp_num,
			p->mr->rkey, p->mr->rkey,
			(uintptr_t)net_ring(p, 0), (uintptr_t)net_read_area(p), seed,
		};

		if (net_io(p->fd, &mine, sizeof(mine), true, deadline) ||
		    net_io(p->fd, &p->remote, sizeof(p->remote), false, deadline) ||
		    p->remote.magic != NET_MAGIC || (int)p->remote.rank != p->rank) {
			printf("exchanging addresses with rank %d failed\n", p->rank);
			return -1;
		}
		if (rc_connect(p->qp, p->remote.lid, p->remote.qpn,
			       IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ,
			       rd_atom))
			return -1;
		for (r = 0; r < NET_RQ; r++)
			if (net_post_recv(p, r))
				return -1;
		p->outstanding = NET_RQ;
	}
	/* Nobody sends before every QP of every peer is ready to receive. */
	return net_barrier('R');
}

static int net_main(char **ips, int nips, int port, unsigned long n,
		    int duration, const char *may_die)
{
	struct timespec t0, now;
	struct ibv_wc wcs[32];
	char what[256];
	int i, got, next = 0;
	bool all_done = false;

	for (i = 0; i < nips; i++) {
		char item[16];

		if (i == my_rank)
			continue;
		peers[npeers] = (struct net_peer){ .rank = i, .fd = -1, .ip = ips[i] };
		snprintf(item, sizeof(item), ",%d,", i);
		peers[npeers].may_die = may_die && strstr(may_die, item);
		npeers++;
	}
	snprintf(what, sizeof(what), "%d RC QPs, one to each other VM, connected",
		 npeers);
	if (net_setup(ips, nips, port)) {
		result(false, what, "%s", errno ? strerror(errno) : "see above");
		return 1;
	}
	result(true, what, "");
	printf("traffic started: messages of 0 to %u bytes, inline up to %u, "
	       "%d in flight per peer, %s %lu\n", max_size - 1, max_inline,
	       NET_WINDOW, duration ? "seconds" : "messages per peer",
	       duration ? (unsigned long)duration : n);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 0; i < npeers; i++)
		peers[i].last_wc = t0;

	while (!all_done) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		/* Round robin: one message per peer per turn. */
		for (i = 0; i < npeers; i++) {
			struct net_peer *p = &peers[(next + i) % npeers];
			int s;

			if (net_stopped(p) || p->end_posted)
				continue;
			if (!p->sending_done)
				p->sending_done = duration ? since(&t0, &now) >= duration :
							     p->posted >= n;
			for (s = 0; s < NET_WINDOW; s++)
				if (p->slot[s].busy)
					break;
			if (p->sending_done && s == NET_WINDOW) {
				net_send_end(p);
				continue;
			}
			for (s = 0; !p->sending_done && s < NET_WINDOW; s++)
				if (!p->slot[s].busy) {
					net_send_msg(p, s);
					break;
				}
		}
		next++;
		got = ibv_poll_cq(cq, 32, wcs);
		if (got < 0) {
			printf("poll_cq: %d\n", got);
			break;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		for (i = 0; i < got; i++) {
			int k = (wcs[i].wr_id >> 8) & 0xff;
			struct net_peer *p = &peers[k];

			if (k >= npeers || wcs[i].qp_num != p->qp->qp_num) {
				printf("completion of an unknown QP %u wr_id %#"
				       PRIx64 "\n", wcs[i].qp_num, wcs[i].wr_id);
				continue;
			}
			p->last_wc = now;
			if (wcs[i].wr_id & RECV_TAG)
				net_on_recv_wc(p, &wcs[i]);
			else
				net_on_send_wc(p, &wcs[i]);
		}
		all_done = true;
		for (i = 0; i < npeers; i++) {
			struct net_peer *p = &peers[i];

			if (net_stopped(p) || (p->end_done && p->end_seen))
				continue;
			/* Something due from this peer for too long: a hang. */
			if (since(&p->last_wc, &now) > NET_STALL_S) {
				net_fail(p, "no completion for %d s (%d WQEs "
					 "outstanding, END %s, END %s)", NET_STALL_S,
					 p->outstanding, p->end_done ? "sent" :
					 "not sent", p->end_seen ? "received" :
					 "not received");
				continue;
			}
			all_done = false;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &now);

	for (i = 0; i < npeers; i++) {
		struct net_peer *p = &peers[i];

		if (p->may_die) {
			snprintf(what, sizeof(what), "rank %d (%s), expected to die: "
				 "its traffic ended in error completions, no hang "
				 "(%lu messages sent before)", p->rank, p->ip,
				 p->posted);
			result(p->lost && !p->why[0], what, "%s", p->why[0] ? p->why :
			       "it did not die: all its traffic completed");
			if (p->lost)
				printf("rank %d: first error completion %s (%d)\n",
				       p->rank, ibv_wc_status_str(p->lost_status),
				       p->lost_status);
			continue;
		}
		snprintf(what, sizeof(what), "to rank %d (%s): %lu SENDs, %lu "
			 "RDMA WRITEs (%lu of them inline), %lu RDMA READs (%llu "
			 "bytes), all completed, READs checked", p->rank, p->ip,
			 p->sent[OP_SEND], p->sent[OP_WRITE], p->inl,
			 p->sent[OP_READ], p->sbytes[OP_SEND] + p->sbytes[OP_WRITE] +
			 p->sbytes[OP_READ]);
		result(!net_stopped(p) && p->end_done && p->sent[OP_SEND] &&
		       p->sent[OP_WRITE] && p->sent[OP_READ], what, "%s",
		       p->lost ? "the peer was lost" : p->why[0] ? p->why :
		       "a kind of message was never sent");
		snprintf(what, sizeof(what), "from rank %d (%s): %lu SENDs and "
			 "%lu RDMA WRITEs (%llu bytes) received in order, 0 lost, "
			 "0 corrupted", p->rank, p->ip, p->got[OP_SEND],
			 p->got[OP_WRITE], p->rbytes);
		result(!net_stopped(p) && p->end_seen &&
		       p->got[OP_SEND] + p->got[OP_WRITE] == p->expect_seq, what,
		       "%s", p->why[0] ? p->why : "no END message");
	}
	printf("%.2f s of traffic\n", since(&t0, &now));
	/* Nobody tears down before everybody is done with everybody. */
	result(!net_barrier('D'), "every live peer finished", "%s",
	       "a peer did not answer the final barrier");

	got = 0;
	for (i = 0; i < npeers; i++) {
		got |= ibv_destroy_qp(peers[i].qp);
		got |= ibv_dereg_mr(peers[i].mr);
		close(peers[i].fd);
	}
	got = got || ibv_destroy_cq(cq) || ibv_dealloc_pd(pd);
	result(!got, "destroy everything", "%s", strerror(errno));
	return failures ? 1 : 0;
}

/*
 * ---- Isolation (-I) --------------------------------------------------------
 *
 * Rank 0 (the target) registers three MRs in pages with unregistered pages
 * around them; rank 1 (the prober) tries RDMA WRITE and READ on them with
 * keys rank 0 never issued, with a real key of an MR that lacks the right,
 * a key of an MR deregistered since, and addresses outside the MRs' bounds.
 * Each must fail with a remote access error (each on a fresh QP pair: the
 * error moves both QPs to ERROR) while rank 0's memory stays as it was;
 * control probes within the rights succeed.
 */
#define ISO_PAGE 4096
#define ISO_PAGES 6		/* guard, rw, guard, ro, guard, ok */
#define ISO_PROBE_LEN 64
#define ISO_MAX_PROBES 16

struct iso_info {
	uint32_t magic, lid, nqp;
	uint32_t rw_rkey, ro_rkey, ok_rkey, gone_rkey;
	uint64_t rw_addr, ro_addr, ok_addr, gone_addr;
	uint32_t qpn[ISO_MAX_PROBES];
};

struct iso_probe {
	const char *name;
	bool write;
	int mr;			/* 0 rw, 1 ro, 2 ok, 3 gone */
	int64_t off;		/* from the MR's start */
	uint32_t rkey_xor;	/* nonzero: the MR's key changed so */
	uint32_t rkey;		/* nonzero: this key instead */
	enum ibv_wc_status want;
};

static const struct iso_probe iso_probes[] = {
	{ "RDMA WRITE with a forged rkey (the MR's index, another generation)",
	  true, 0, 0, 0x80, 0, IBV_WC_REM_ACCESS_ERR },
	{ "RDMA READ with a forged rkey (the MR's index, another generation)",
	  false, 0, 0, 0x80, 0, IBV_WC_REM_ACCESS_ERR },
	{ "RDMA WRITE with a forged rkey (an index never used)",
	  true, 0, 0, 0, 0xfffffe5a, IBV_WC_REM_ACCESS_ERR },
	{ "RDMA READ with a forged rkey (an index never used)",
	  false, 0, 0, 0, 0xfffffe5a, IBV_WC_REM_ACCESS_ERR },
	{ "RDMA WRITE with the rkey of an MR deregistered since",
	  true, 3, 0, 0, 0, IBV_WC_REM_ACCESS_ERR },
	{ "RDMA WRITE with the real rkey of an MR without REMOTE_WRITE",
	  true, 1, 0, 0, 0, IBV_WC_REM_ACCESS_ERR },
	{ "RDMA READ with that rkey (REMOTE_READ given) succeeds: the key is real",
	  false, 1, 0, 0, 0, IBV_WC_SUCCESS },
	{ "RDMA WRITE across the MR's end (32 bytes past it)",
	  true, 0, ISO_PAGE - 32, 0, 0, IBV_WC_REM_ACCESS_ERR },
	{ "RDMA WRITE before the MR's start",
	  true, 0, -ISO_PROBE_LEN, 0, 0, IBV_WC_REM_ACCESS_ERR },
	{ "RDMA WRITE into the MR of the next page (ro) with rw's rkey",
	  true, 0, 2 * ISO_PAGE, 0, 0, IBV_WC_REM_ACCESS_ERR },
	{ "RDMA READ past the MR's end",
	  false, 0, ISO_PAGE, 0, 0, IBV_WC_REM_ACCESS_ERR },
	{ "RDMA READ within the MR succeeds (control)",
	  false, 0, 128, 0, 0, IBV_WC_SUCCESS },
	{ "RDMA WRITE within an MR with REMOTE_WRITE succeeds (control)",
	  true, 2, 0, 0, 0, IBV_WC_SUCCESS },
};

#define ISO_NPROBES (int)(sizeof(iso_probes) / sizeof(iso_probes[0]))
#define ISO_KEY 0x15014710ull

static int iso_main(char **ips, int port)
{
	struct ibv_qp_init_attr qa = {
		.qp_type = IBV_QPT_RC,
		.cap = { .max_send_wr = 4, .max_send_sge = 1, .max_recv_wr = 1,
			 .max_recv_sge = 1 },
	};
	struct ibv_qp *iqp[ISO_MAX_PROBES];
	struct iso_info mine = { .magic = NET_MAGIC, .nqp = ISO_NPROBES }, theirs;
	struct ibv_port_attr port_attr;
	struct ibv_mr *mrs[4] = {};
	struct net_peer *p = &peers[0];
	uint8_t *mem, *buf;
	time_t deadline;
	char what[256], c = 'D';
	int i;

	npeers = 1;
	*p = (struct net_peer){ .rank = !my_rank, .fd = -1, .ip = ips[!my_rank] };
	pd = ibv_alloc_pd(ctx);
	cq = ibv_create_cq(ctx, 64, NULL, NULL, 0);
	mem = aligned_alloc(ISO_PAGE, ISO_PAGES * ISO_PAGE);
	if (!pd || !cq || !mem || ibv_query_port(ctx, 1, &port_attr)) {
		result(false, "set up", "%s", strerror(errno));
		return 1;
	}
	qa.send_cq = qa.recv_cq = cq;
	for (i = 0; i < ISO_NPROBES; i++) {
		iqp[i] = ibv_create_qp(pd, &qa);
		if (!iqp[i]) {
			result(false, "create QPs", "%s", strerror(errno));
			return 1;
		}
		mine.qpn[i] = iqp[i]->qp_num;
	}
	mine.lid = port_attr.lid;
	/* Pages 0-4 carry a pattern; page 5 (the control WRITE's) zeros. */
	keyed_fill(mem, 5 * ISO_PAGE, ISO_KEY, 0);
	memset(mem + 5 * ISO_PAGE, 0, ISO_PAGE);
	buf = mem;
	if (my_rank == 0) {
		mrs[0] = ibv_reg_mr(pd, mem + ISO_PAGE, ISO_PAGE,
				    IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
				    IBV_ACCESS_REMOTE_READ);
		mrs[1] = ibv_reg_mr(pd, mem + 3 * ISO_PAGE, ISO_PAGE,
				    IBV_ACCESS_REMOTE_READ);
		mrs[2] = ibv_reg_mr(pd, mem + 5 * ISO_PAGE, ISO_PAGE,
				    IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
		mrs[3] = ibv_reg_mr(pd, mem + ISO_PAGE, ISO_PAGE,
				    IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
		if (!mrs[0] || !mrs[1] || !mrs[2] || !mrs[3]) {
			result(false, "register MRs", "%s", strerror(errno));
			return 1;
		}
		mine.rw_rkey = mrs[0]->rkey;
		mine.rw_addr = (uintptr_t)mem + ISO_PAGE;
		mine.ro_rkey = mrs[1]->rkey;
		mine.ro_addr = (uintptr_t)mem + 3 * ISO_PAGE;
		mine.ok_rkey = mrs[2]->rkey;
		mine.ok_addr = (uintptr_t)mem + 5 * ISO_PAGE;
		mine.gone_rkey = mrs[3]->rkey;
		mine.gone_addr = (uintptr_t)mem + ISO_PAGE;
		if (ibv_dereg_mr(mrs[3])) {
			result(false, "deregister an MR", "%s",
			       strerror(errno));
			return 1;
		}
		mrs[3] = NULL;
	} else {
		/* The prober's source and landing buffer. */
		mrs[0] = ibv_reg_mr(pd, mem, ISO_PAGES * ISO_PAGE,
				    IBV_ACCESS_LOCAL_WRITE);
		if (!mrs[0]) {
			result(false, "register MR", "%s", strerror(errno));
			return 1;
		}
	}
	if (net_connect_all(ips, 2, port)) {
		result(false, "TCP connection to the other VM", "see above");
		return 1;
	}
	deadline = time(NULL) + NET_SETUP_S;
	if (net_io(p->fd, &mine, sizeof(mine), true, deadline) ||
	    net_io(p->fd, &theirs, sizeof(theirs), false, deadline) ||
	    theirs.magic != NET_MAGIC || theirs.nqp != ISO_NPROBES) {
		result(false, "exchange addresses", "short read or "
		       "another program version on the other side");
		return 1;
	}
	for (i = 0; i < ISO_NPROBES; i++)
		if (rc_connect(iqp[i], theirs.lid, theirs.qpn[i],
			       IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ, 1)) {
			result(false, "connect QPs", "%s", strerror(errno));
			return 1;
		}
	if (net_barrier('R')) {
		result(false, "both sides ready", "no answer");
		return 1;
	}
	result(true, "QPs to the other VM connected", "");

	if (my_rank == 1) {
		for (i = 0; i < ISO_NPROBES; i++) {
			const struct iso_probe *pr = &iso_probes[i];
			uint64_t addr[4] = { theirs.rw_addr, theirs.ro_addr,
					     theirs.ok_addr, theirs.gone_addr };
			uint32_t key[4] = { theirs.rw_rkey, theirs.ro_rkey,
					    theirs.ok_rkey, theirs.gone_rkey };
			struct ibv_sge sge = { (uintptr_t)buf + ISO_PAGE,
					       ISO_PROBE_LEN, mrs[0]->lkey };
			struct ibv_send_wr wr = {
				.wr_id = i, .sg_list = &sge, .num_sge = 1,
				.opcode = pr->write ? IBV_WR_RDMA_WRITE :
						      IBV_WR_RDMA_READ,
				.send_flags = IBV_SEND_SIGNALED,
			}, *bad;
			struct ibv_wc wc = {};
			time_t until = time(NULL) + 20;
			int k = 0, ret;

			/* A WRITE's source: the control's pattern; a READ's
			 * landing zone: zeros. */
			if (pr->write)
				keyed_fill(buf + ISO_PAGE, ISO_PROBE_LEN,
					   ISO_KEY ^ 1, 0);
			else
				memset(buf + ISO_PAGE, 0, ISO_PROBE_LEN);
			wr.wr.rdma.remote_addr = addr[pr->mr] + pr->off;
			wr.wr.rdma.rkey = pr->rkey ? pr->rkey :
					  key[pr->mr] ^ pr->rkey_xor;
			ret = ibv_post_send(iqp[i], &wr, &bad);
			while (!ret && k == 0 && time(NULL) < until)
				k = ibv_poll_cq(cq, 1, &wc);
			snprintf(what, sizeof(what), "%s: %s", pr->name,
				 ibv_wc_status_str(pr->want));
			if (ret || k != 1 || wc.wr_id != (uint64_t)i ||
			    wc.status != pr->want) {
				result(false, what, "%s", ret ? strerror(ret) :
				       k < 0 ? "poll_cq failed" :
				       k == 0 ? "no completion within 20 s" :
				       ibv_wc_status_str(wc.status));
				continue;
			}
			if (pr->want == IBV_WC_SUCCESS && !pr->write) {
				/* Page 1 or 3 of the target, at the offset. */
				long bad_at = keyed_check(buf + ISO_PAGE, ISO_PROBE_LEN,
							  ISO_KEY, (pr->mr ? 3 : 1) *
							  ISO_PAGE + pr->off);

				if (bad_at >= 0) {
					result(false, what, "the data read differs "
					       "at byte %ld", bad_at);
					continue;
				}
			}
			result(true, what, "");
		}
		net_io(p->fd, &c, 1, true, time(NULL) + 30);
	} else {
		long bad_at;

		/* The prober says when it is done. */
		if (net_io(p->fd, &c, 1, false, time(NULL) + NET_SETUP_S) || c != 'D')
			result(false, "the prober finished", "no word "
			       "from it within %d s", NET_SETUP_S);
		bad_at = keyed_check(mem, 5 * ISO_PAGE, ISO_KEY, 0);
		snprintf(what, sizeof(what), "this VM's memory is "
			 "unchanged (3 MRs' pages and the unregistered pages "
			 "around them)");
		result(bad_at < 0, what, "page %ld, byte %ld changed",
		       bad_at / ISO_PAGE, bad_at % ISO_PAGE);
		bad_at = keyed_check(mem + 5 * ISO_PAGE, ISO_PROBE_LEN, ISO_KEY ^ 1, 0);
		result(bad_at < 0 && !mem[5 * ISO_PAGE + ISO_PROBE_LEN],
		       "the control RDMA WRITE landed, and only it",
		       "byte %ld differs", bad_at);
	}
	for (i = 0; i < ISO_NPROBES; i++)
		ibv_destroy_qp(iqp[i]);
	for (i = 0; i < 4; i++)
		if (mrs[i])
			ibv_dereg_mr(mrs[i]);
	ibv_destroy_cq(cq);
	ibv_dealloc_pd(pd);
	close(p->fd);
	return failures ? 1 : 0;
}

static void usage(const char *prog)
{
	fprintf(stderr, "usage: %s [-n MESSAGES] [-s SEED] [-q PAIRS (1-%d)] "
		"[-m LOG2_MAX_SIZE (1-16)] [DEVICE]\n"
		"       %s -P IP,IP,... -R RANK [-p PORT] [-n MESSAGES | -D SECONDS] "
		"[-K RANK,...] [-s SEED] [-m LOG2_MAX_SIZE] [DEVICE]\n"
		"       %s -I -P IP,IP -R RANK [-p PORT] [DEVICE]\n",
		prog, MAX_PAIRS, prog, prog);
	exit(2);
}

int main(int argc, char **argv)
{
	unsigned long n = 20000, posted = 0, done = 0;
	int pairs = 4, opt, i, got, nips = 0, port = 18700, duration = 0;
	bool isolation = false;
	char *ips[NET_MAX_PEERS + 1], *tok, *save = NULL;
	char may_die[64] = "";
	struct timespec t0, last, now;
	struct ibv_device **list;
	struct ibv_wc wcs[16];
	const char *name;
	char what[128];
	int op;

	/* A run killed by a timeout still shows how far it got. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	my_rank = -1;
	while ((opt = getopt(argc, argv, "n:s:q:m:P:R:p:D:K:I")) != -1) {
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
		case 'P':
			for (tok = strtok_r(optarg, ", ", &save); tok;
			     tok = strtok_r(NULL, ", ", &save))
				if (nips <= NET_MAX_PEERS)
					ips[nips++] = tok;
			break;
		case 'R':
			my_rank = atoi(optarg);
			break;
		case 'p':
			port = atoi(optarg);
			break;
		case 'D':
			duration = atoi(optarg);
			break;
		case 'K':
			snprintf(may_die, sizeof(may_die), ",%s,", optarg);
			break;
		case 'I':
			isolation = true;
			break;
		default:
			usage(argv[0]);
		}
	}
	if (pairs < 1 || pairs > MAX_PAIRS || log2_max < 1 || log2_max > 16 ||
	    optind < argc - 1 || nips > NET_MAX_PEERS ||
	    (nips && (my_rank < 0 || my_rank >= nips || nips < 2)) ||
	    (isolation && nips != 2) || port <= 0 || port > 65535)
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
	if (isolation)
		return iso_main(ips, port);
	if (nips)
		return net_main(ips, nips, port, n, duration,
				may_die[0] ? may_die : NULL);
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
