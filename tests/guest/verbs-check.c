// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * vmmbib-verbs-check: what the pingpong programs do not exercise.
 *
 * The data path, between two RC QPs of one process through loopback: every
 * send opcode with its completion fields and data, inline data, unsignaled
 * WQEs retired by a later signaled one, a full SQ, CQ resize with
 * unconsumed completions, query_qp, an error completion with the flush
 * that follows it, and the key of a deregistered MR refused.
 *
 * The control verbs: every object kind (ucontext, PD, MR, CQ, RC and UD QP,
 * SRQ, AH) created and destroyed; the attributes read back (device, port,
 * GID and P_Key tables consistent with each other; query_qp after every
 * modify_qp of an RC and a UD QP; query_srq after modify_srq; CQ sizes
 * after create and resize; MR keys and ranges), a UD datagram through an
 * AH; and the errno of each kind of bad call: sizes above the device's
 * limits, illegal QP transitions and attributes, access flags IB forbids,
 * objects destroyed while others use them, unroutable address vectors.
 * The expected errnos are those ib_core, the driver (guest-driver/kernel)
 * and the device (host-lib, docs/spec.md) give.
 *
 * Prints one line per check: "ok NAME" or "not ok NAME: WHY"; exits 1 if
 * any failed.  tests/guest/datapath.sh turns the lines into TAP.
 *
 * Built by scripts/build-provider.sh against the rdma-core tree it builds
 * the provider in; runs with the guest's libibverbs.
 */
#include <arpa/inet.h>
#include <endian.h>
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

#define BUF_SIZE 4096
#define SQ_WR 4

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

/* RC to @dest_qpn on this port: remote write, read and atomics. */
static int connect_qp(struct ibv_qp *qp, uint32_t dest_qpn)
{
	return rc_connect(qp, lid, dest_qpn, IBV_ACCESS_REMOTE_WRITE |
			  IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC, 1);
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

/* A WR naming the key of a deregistered MR completes with a protection error. */
static void check_stale_key(struct side *a, struct side *b)
{
	const char *name = "the key of a deregistered MR is refused";
	struct ibv_mr *gone;
	struct ibv_wc wc;
	uint32_t key;
	int ret;

	gone = ibv_reg_mr(pd, a->buf, BUF_SIZE, IBV_ACCESS_LOCAL_WRITE);
	if (!gone) {
		result(false, name, "reg_mr: %s", strerror(errno));
		return;
	}
	key = gone->lkey;
	ret = ibv_dereg_mr(gone);
	if (!ret)
		ret = post_send(a, b, IBV_WR_RDMA_WRITE, 50, 0, 16,
				IBV_SEND_SIGNALED, key);
	if (!ret && poll_one(a->scq, &wc))
		result(wc.wr_id == 50 && wc.status == IBV_WC_LOC_PROT_ERR, name,
		       "wr_id %" PRIu64 " status %s", wc.wr_id,
		       ibv_wc_status_str(wc.status));
	else
		result(false, name, "dereg/post: %s, or no completion",
		       strerror(ret));
}

/* ---- the control verbs ---------------------------------------------------- */

static struct ibv_device_attr dev_attr;

/* @ret, what a verb returned (0 or an errno), must be @want. */
static void expect_errno(const char *name, int ret, int want)
{
	result(ret == want, name, "returned %d (%s), expected %d (%s)", ret,
	       ret ? strerror(ret) : "success", want,
	       want ? strerror(want) : "success");
}

/*
 * A create verb that must fail: @obj is what it returned, @err the errno
 * read right after it.  Returns false if it succeeded (the caller then
 * destroys @obj).
 */
static bool expect_refused(const char *name, const void *obj, int err,
			   int want)
{
	if (obj) {
		result(false, name, "succeeded, expected %s", strerror(want));
		return false;
	}
	result(err == want, name, "errno %d (%s), expected %d (%s)", err,
	       strerror(err), want, strerror(want));
	return true;
}

/* A QP of @type on @pd with @cq for both queues; errno set if NULL. */
static struct ibv_qp *make_qp(struct ibv_pd *p, enum ibv_qp_type type,
			      struct ibv_cq *scq, struct ibv_cq *rcq,
			      struct ibv_srq *srq, struct ibv_qp_cap *cap)
{
	struct ibv_qp_init_attr init = {
		.send_cq = scq, .recv_cq = rcq, .srq = srq, .qp_type = type,
		.cap = { .max_send_wr = 8, .max_recv_wr = srq ? 0 : 8,
			 .max_send_sge = 1, .max_recv_sge = srq ? 0 : 1 },
	};
	struct ibv_qp *qp;

	if (cap)
		init.cap = *cap;
	qp = ibv_create_qp(p, &init);
	if (qp && cap)
		*cap = init.cap;
	return qp;
}

static void check_device(struct ibv_device *device)
{
	struct ibv_port_attr pa;
	union ibv_gid gid;
	uint64_t prefix;
	__be16 pkey;
	int ret;

	result(dev_attr.phys_port_cnt == 1 && dev_attr.max_qp > 0 &&
	       dev_attr.max_qp_wr > 0 && dev_attr.max_cq > 0 &&
	       dev_attr.max_cqe > 0 && dev_attr.max_mr > 0 &&
	       dev_attr.max_pd > 0 && dev_attr.max_ah > 0 &&
	       dev_attr.max_sge > 0 && dev_attr.max_sge_rd <= dev_attr.max_sge &&
	       dev_attr.max_qp_rd_atom > 0 &&
	       dev_attr.max_qp_init_rd_atom > 0 &&
	       dev_attr.max_mr_size >= 4096 &&
	       (dev_attr.page_size_cap & 4096) && dev_attr.max_pkeys > 0,
	       "query_device: one port, non-zero limits",
	       "ports %u max_qp %d max_qp_wr %d max_cq %d max_cqe %d max_mr %d "
	       "max_pd %d max_ah %d max_sge %d max_sge_rd %d rd_atom %d/%d "
	       "max_mr_size %#" PRIx64 " page_size_cap %#" PRIx64 " max_pkeys %u",
	       dev_attr.phys_port_cnt, dev_attr.max_qp, dev_attr.max_qp_wr,
	       dev_attr.max_cq, dev_attr.max_cqe, dev_attr.max_mr,
	       dev_attr.max_pd, dev_attr.max_ah, dev_attr.max_sge,
	       dev_attr.max_sge_rd, dev_attr.max_qp_rd_atom,
	       dev_attr.max_qp_init_rd_atom, (uint64_t)dev_attr.max_mr_size,
	       (uint64_t)dev_attr.page_size_cap, dev_attr.max_pkeys);
	result(dev_attr.node_guid && dev_attr.node_guid == ibv_get_device_guid(device),
	       "query_device: node GUID is the one sysfs shows",
	       "query_device %#" PRIx64 ", sysfs %#" PRIx64,
	       be64toh(dev_attr.node_guid), be64toh(ibv_get_device_guid(device)));

	ret = ibv_query_port(ctx, 1, &pa);
	result(!ret && pa.state == IBV_PORT_ACTIVE && pa.phys_state == 5 &&
	       pa.link_layer == IBV_LINK_LAYER_INFINIBAND &&
	       pa.lid && pa.lid < 0xc000 && pa.lmc == 0 &&
	       pa.active_mtu >= IBV_MTU_256 && pa.active_mtu <= pa.max_mtu &&
	       pa.max_mtu <= IBV_MTU_4096 && pa.gid_tbl_len >= 1 &&
	       pa.pkey_tbl_len >= 1 && pa.pkey_tbl_len == dev_attr.max_pkeys &&
	       pa.max_msg_sz > 0,
	       "query_port: active IB port with a unicast LID, sane MTUs and tables",
	       "%s, state %d phys_state %u link_layer %u lid %#x lmc %u "
	       "mtu %d/%d gid_tbl_len %d pkey_tbl_len %u (max_pkeys %u) "
	       "max_msg_sz %u", strerror(ret), pa.state, pa.phys_state,
	       pa.link_layer, pa.lid, pa.lmc, pa.active_mtu, pa.max_mtu,
	       pa.gid_tbl_len, pa.pkey_tbl_len, dev_attr.max_pkeys,
	       pa.max_msg_sz);
	expect_errno("query_port of port 2 (one port): EINVAL",
		     ibv_query_port(ctx, 2, &pa), EINVAL);

	/* GID 0: the link-local prefix and the port GUID (= node GUID). */
	ret = ibv_query_gid(ctx, 1, 0, &gid);
	memcpy(&prefix, gid.raw, 8);
	result(!ret && be64toh(prefix) == 0xfe80000000000000ull &&
	       !memcmp(gid.raw + 8, &dev_attr.node_guid, 8),
	       "query_gid 0: fe80::/64 and the node GUID",
	       "ret %d, prefix %#" PRIx64 " interface id %02x%02x%02x%02x%02x%02x%02x%02x",
	       ret, be64toh(prefix), gid.raw[8], gid.raw[9], gid.raw[10],
	       gid.raw[11], gid.raw[12], gid.raw[13], gid.raw[14], gid.raw[15]);
	ret = ibv_query_port(ctx, 1, &pa);
	result(!ret && ibv_query_gid(ctx, 1, pa.gid_tbl_len, &gid) != 0,
	       "query_gid past gid_tbl_len fails", "it succeeded");
	ret = ibv_query_pkey(ctx, 1, 0, &pkey);
	result(!ret && be16toh(pkey) == 0xffff,
	       "query_pkey 0: the default P_Key 0xffff", "ret %d pkey %#x",
	       ret, be16toh(pkey));
	result(ibv_query_pkey(ctx, 1, pa.pkey_tbl_len, &pkey) != 0,
	       "query_pkey past pkey_tbl_len fails", "it succeeded");
}

/*
 * Several user contexts at once, each with its own objects; one closed
 * with live objects (the kernel destroys them).
 */
static void check_contexts(struct ibv_device *device)
{
	struct ibv_context *c2, *c3;
	struct ibv_pd *p1, *p2, *p3 = NULL;
	struct ibv_cq *cq3 = NULL;
	struct ibv_mr *mr3 = NULL;
	struct ibv_qp *qp3 = NULL;
	static uint8_t buf3[4096] __attribute__((aligned(4096)));
	int ret;

	c2 = ibv_open_device(device);
	p1 = ibv_alloc_pd(ctx);
	p2 = c2 ? ibv_alloc_pd(c2) : NULL;
	result(c2 && p1 && p2 && c2->cmd_fd != ctx->cmd_fd,
	       "a second ucontext with its own PD", "%s", strerror(errno));
	ret = (p2 ? ibv_dealloc_pd(p2) : 0) || (p1 ? ibv_dealloc_pd(p1) : 0) ||
	      (c2 ? ibv_close_device(c2) : 0);
	result(!ret, "both PDs freed, the second ucontext closed", "%s",
	       strerror(errno));

	c3 = ibv_open_device(device);
	if (c3)
		p3 = ibv_alloc_pd(c3);
	if (p3) {
		mr3 = ibv_reg_mr(p3, buf3, sizeof(buf3), IBV_ACCESS_LOCAL_WRITE);
		cq3 = ibv_create_cq(c3, 4, NULL, NULL, 0);
	}
	if (mr3 && cq3)
		qp3 = make_qp(p3, IBV_QPT_RC, cq3, cq3, NULL, NULL);
	result(qp3, "a third ucontext with a PD, MR, CQ and QP", "%s",
	       strerror(errno));
	/* The provider's structs of the objects leak: a test, not a library. */
	result(!c3 || !ibv_close_device(c3),
	       "close_device with live objects (the kernel destroys them)",
	       "%s", strerror(errno));
}

static void check_mr(void)
{
	static uint8_t buf[4 * 4096] __attribute__((aligned(4096)));
	struct ibv_mr *m1, *m2, *m3;
	uint32_t old_lkey;

	m1 = ibv_reg_mr(pd, buf + 100, 5000,
			IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ);
	m2 = ibv_reg_mr(pd, buf, sizeof(buf), IBV_ACCESS_LOCAL_WRITE |
			IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC);
	if (!m1 || !m2) {
		result(false, "reg_mr", "%s", strerror(errno));
		return;
	}
	result(m1->addr == buf + 100 && m1->length == 5000 && m1->pd == pd &&
	       m2->addr == buf && m2->length == sizeof(buf) &&
	       m1->context == ctx, "reg_mr: address, length and PD of the MR",
	       "addr %p/%p length %zu/%zu", m1->addr, m2->addr, m1->length,
	       m2->length);
	result(m1->lkey != m2->lkey && m1->rkey != m2->rkey,
	       "reg_mr: two live MRs have different keys",
	       "lkeys %#x %#x rkeys %#x %#x", m1->lkey, m2->lkey, m1->rkey,
	       m2->rkey);
	old_lkey = m1->lkey;
	expect_errno("dereg_mr", ibv_dereg_mr(m1), 0);
	m1 = ibv_reg_mr(pd, buf + 100, 5000, IBV_ACCESS_LOCAL_WRITE);
	result(m1 && m1->lkey != old_lkey,
	       "reg_mr again: the deregistered MR's key is not reused",
	       "%s, lkey %#x, old %#x", m1 ? "ok" : strerror(errno),
	       m1 ? m1->lkey : 0, old_lkey);
	if (m1)
		ibv_dereg_mr(m1);

	/* IBA 10.6.3.1: remote write and atomic need local write. */
	m3 = ibv_reg_mr(pd, buf, 4096, IBV_ACCESS_REMOTE_WRITE);
	if (!expect_refused("reg_mr REMOTE_WRITE without LOCAL_WRITE: EINVAL",
			    m3, errno, EINVAL))
		ibv_dereg_mr(m3);
	m3 = ibv_reg_mr(pd, buf, 4096,
			IBV_ACCESS_REMOTE_ATOMIC | IBV_ACCESS_REMOTE_READ);
	if (!expect_refused("reg_mr REMOTE_ATOMIC without LOCAL_WRITE: EINVAL",
			    m3, errno, EINVAL))
		ibv_dereg_mr(m3);
	m3 = ibv_reg_mr(pd, buf, 0, IBV_ACCESS_LOCAL_WRITE);
	if (!expect_refused("reg_mr of length 0: EINVAL", m3, errno, EINVAL))
		ibv_dereg_mr(m3);
	/* Refused before anything is pinned: the range need not exist. */
	m3 = ibv_reg_mr(pd, buf, dev_attr.max_mr_size + 4096,
			IBV_ACCESS_LOCAL_WRITE);
	if (!expect_refused("reg_mr longer than max_mr_size: EINVAL", m3,
			    errno, EINVAL))
		ibv_dereg_mr(m3);
	/* No memory windows (no IBV_DEVICE_MEM_WINDOW): nothing to bind. */
	m3 = ibv_reg_mr(pd, buf, 4096,
			IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_MW_BIND);
	if (!expect_refused("reg_mr with MW_BIND access: EOPNOTSUPP", m3,
			    errno, EOPNOTSUPP))
		ibv_dereg_mr(m3);
	expect_errno("dereg_mr", ibv_dereg_mr(m2), 0);
}

static void check_cq(void)
{
	struct ibv_cq *c1, *c2, *big, *bad;
	int ret, cqe;

	c1 = ibv_create_cq(ctx, 1, NULL, NULL, 0);
	c2 = ibv_create_cq(ctx, 100, NULL, NULL, 0);
	if (!c1 || !c2) {
		result(false, "create_cq", "%s", strerror(errno));
		return;
	}
	result(c1->cqe >= 1 && c2->cqe >= 100 && c2->cqe <= dev_attr.max_cqe,
	       "create_cq: cqe at least what was asked",
	       "cqe %d for 1, %d for 100", c1->cqe, c2->cqe);
	ret = ibv_resize_cq(c2, 300);
	result(!ret && c2->cqe >= 300, "resize_cq up: cqe at least 300",
	       "%s, cqe %d", strerror(ret), c2->cqe);
	ret = ibv_resize_cq(c2, 50);
	result(!ret && c2->cqe >= 50 && c2->cqe < 300,
	       "resize_cq down (empty CQ): cqe at least 50",
	       "%s, cqe %d", strerror(ret), c2->cqe);
	cqe = c2->cqe;
	expect_errno("resize_cq above max_cqe: EINVAL",
		     ibv_resize_cq(c2, dev_attr.max_cqe + 1), EINVAL);
	result(c2->cqe == cqe, "a refused resize_cq leaves the CQ as it was",
	       "cqe %d, was %d", c2->cqe, cqe);
	expect_errno("resize_cq to 0: EINVAL", ibv_resize_cq(c2, 0), EINVAL);

	/* The limit the device reports is one a CQ can have. */
	big = ibv_create_cq(ctx, dev_attr.max_cqe, NULL, NULL, 0);
	result(big && big->cqe >= dev_attr.max_cqe,
	       "create_cq of max_cqe entries", "%s, cqe %d (max_cqe %d)",
	       big ? "created" : strerror(errno), big ? big->cqe : 0,
	       dev_attr.max_cqe);
	if (big)
		expect_errno("destroy_cq of max_cqe entries",
			     ibv_destroy_cq(big), 0);
	bad = ibv_create_cq(ctx, dev_attr.max_cqe + 1, NULL, NULL, 0);
	if (!expect_refused("create_cq above max_cqe: EINVAL", bad, errno,
			    EINVAL))
		ibv_destroy_cq(bad);
	bad = ibv_create_cq(ctx, 0, NULL, NULL, 0);
	if (!expect_refused("create_cq of 0 entries: EINVAL", bad, errno,
			    EINVAL))
		ibv_destroy_cq(bad);
	bad = ibv_create_cq(ctx, 4, NULL, NULL, ctx->num_comp_vectors);
	if (!expect_refused("create_cq on a comp_vector past num_comp_vectors: EINVAL",
			    bad, errno, EINVAL))
		ibv_destroy_cq(bad);
	expect_errno("destroy_cq", ibv_destroy_cq(c1) ?: ibv_destroy_cq(c2), 0);
}

/*
 * Queries @qp and compares what @mask names with @want; the state always,
 * and the capabilities with @cap.
 */
static void check_query_qp(const char *name, struct ibv_qp *qp,
			   const struct ibv_qp_attr *want, int mask,
			   const struct ibv_qp_cap *cap)
{
	struct ibv_qp_init_attr init;
	struct ibv_qp_attr a;
	char why[200] = "";
	int ret;

	memset(&a, 0xa5, sizeof(a));
	ret = ibv_query_qp(qp, &a, IBV_QP_STATE | mask | IBV_QP_CAP, &init);
	if (ret) {
		result(false, name, "query_qp: %s", strerror(ret));
		return;
	}
#define QP_CMP(bit, field)						\
	do {								\
		if (((bit) & (mask | IBV_QP_STATE)) && !*why &&		\
		    a.field != want->field)				\
			snprintf(why, sizeof(why), #field " is %u, expected %u", \
				 (unsigned int)a.field,			\
				 (unsigned int)want->field);		\
	} while (0)
	QP_CMP(IBV_QP_STATE, qp_state);
	QP_CMP(IBV_QP_PKEY_INDEX, pkey_index);
	QP_CMP(IBV_QP_PORT, port_num);
	QP_CMP(IBV_QP_ACCESS_FLAGS, qp_access_flags);
	QP_CMP(IBV_QP_QKEY, qkey);
	QP_CMP(IBV_QP_PATH_MTU, path_mtu);
	QP_CMP(IBV_QP_DEST_QPN, dest_qp_num);
	QP_CMP(IBV_QP_RQ_PSN, rq_psn);
	QP_CMP(IBV_QP_SQ_PSN, sq_psn);
	QP_CMP(IBV_QP_MAX_DEST_RD_ATOMIC, max_dest_rd_atomic);
	QP_CMP(IBV_QP_MAX_QP_RD_ATOMIC, max_rd_atomic);
	QP_CMP(IBV_QP_MIN_RNR_TIMER, min_rnr_timer);
	QP_CMP(IBV_QP_TIMEOUT, timeout);
	QP_CMP(IBV_QP_RETRY_CNT, retry_cnt);
	QP_CMP(IBV_QP_RNR_RETRY, rnr_retry);
	QP_CMP(IBV_QP_AV, ah_attr.dlid);
	QP_CMP(IBV_QP_AV, ah_attr.port_num);
#undef QP_CMP
	if (!*why && (a.cap.max_send_wr != cap->max_send_wr ||
		      a.cap.max_recv_wr != cap->max_recv_wr ||
		      a.cap.max_send_sge != cap->max_send_sge ||
		      a.cap.max_recv_sge != cap->max_recv_sge ||
		      a.cap.max_inline_data != cap->max_inline_data))
		snprintf(why, sizeof(why),
			 "caps %u/%u/%u/%u/%u, created with %u/%u/%u/%u/%u",
			 a.cap.max_send_wr, a.cap.max_recv_wr,
			 a.cap.max_send_sge, a.cap.max_recv_sge,
			 a.cap.max_inline_data, cap->max_send_wr,
			 cap->max_recv_wr, cap->max_send_sge,
			 cap->max_recv_sge, cap->max_inline_data);
	if (!*why && (init.qp_type != qp->qp_type || qp->state != a.qp_state))
		snprintf(why, sizeof(why), "init qp_type %d, qp->state %d",
			 init.qp_type, qp->state);
	result(!*why, name, "%s", why);
}

/* Every mask bit check_query_qp compares. */
#define QP_ALL_ATTRS (IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS | \
		      IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN | \
		      IBV_QP_SQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC |	      \
		      IBV_QP_MAX_QP_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER |	      \
		      IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | \
		      IBV_QP_AV)

static void check_rc_qp(struct ibv_cq *cq)
{
	struct ibv_qp_cap cap = { .max_send_wr = 5, .max_recv_wr = 9,
				  .max_send_sge = 2, .max_recv_sge = 3,
				  .max_inline_data = 32 };
	struct ibv_qp_attr want = {}, a;
	struct ibv_qp *qp;
	int mask;

	qp = make_qp(pd, IBV_QPT_RC, cq, cq, NULL, &cap);
	if (!qp) {
		result(false, "create RC QP", "%s", strerror(errno));
		return;
	}
	result(cap.max_send_wr >= 5 && cap.max_recv_wr >= 9 &&
	       cap.max_send_sge >= 2 && cap.max_recv_sge >= 3 &&
	       cap.max_inline_data >= 32 && qp->qp_num && qp->pd == pd &&
	       qp->qp_type == IBV_QPT_RC, "create RC QP: caps at least asked",
	       "caps %u/%u/%u/%u/%u qpn %u", cap.max_send_wr, cap.max_recv_wr,
	       cap.max_send_sge, cap.max_recv_sge, cap.max_inline_data,
	       qp->qp_num);
	want.qp_state = IBV_QPS_RESET;
	check_query_qp("RC query_qp after create: RESET", qp, &want, 0, &cap);

	/* Transitions IBA 10.3.1 does not allow, attributes missing or wrong. */
	a = (struct ibv_qp_attr){ .qp_state = IBV_QPS_RTS };
	expect_errno("RC modify_qp RESET->RTS: EINVAL",
		     ibv_modify_qp(qp, &a, IBV_QP_STATE), EINVAL);
	a = (struct ibv_qp_attr){ .qp_state = IBV_QPS_RTR };
	expect_errno("RC modify_qp RESET->RTR: EINVAL",
		     ibv_modify_qp(qp, &a, IBV_QP_STATE), EINVAL);
	a = (struct ibv_qp_attr){ .qp_state = IBV_QPS_INIT, .port_num = 1 };
	expect_errno("RC modify_qp RESET->INIT without access flags: EINVAL",
		     ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX |
				   IBV_QP_PORT), EINVAL);
	a.port_num = 2;
	expect_errno("RC modify_qp RESET->INIT on port 2: EINVAL",
		     ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX |
				   IBV_QP_PORT | IBV_QP_ACCESS_FLAGS), EINVAL);
	a.port_num = 1;
	a.pkey_index = 1;
	expect_errno("RC modify_qp RESET->INIT with a P_Key index past the table: EINVAL",
		     ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX |
				   IBV_QP_PORT | IBV_QP_ACCESS_FLAGS), EINVAL);
	a.pkey_index = 0;
	a.qkey = 0x1234;
	expect_errno("RC modify_qp RESET->INIT with a Q_Key (UD only): EINVAL",
		     ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX |
				   IBV_QP_PORT | IBV_QP_ACCESS_FLAGS |
				   IBV_QP_QKEY), EINVAL);
	check_query_qp("RC query_qp after refused modifies: still RESET", qp,
		       &want, 0, &cap);

	/* RESET -> INIT -> RTR -> RTS, each read back. */
	want.qp_state = IBV_QPS_INIT;
	want.port_num = 1;
	want.qp_access_flags = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
	mask = IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS;
	expect_errno("RC modify_qp RESET->INIT",
		     ibv_modify_qp(qp, &want, IBV_QP_STATE | mask), 0);
	check_query_qp("RC query_qp after INIT", qp, &want, mask, &cap);
	a = (struct ibv_qp_attr){ .qp_state = IBV_QPS_RTS };
	expect_errno("RC modify_qp INIT->RTS: EINVAL",
		     ibv_modify_qp(qp, &a, IBV_QP_STATE), EINVAL);

	want.qp_state = IBV_QPS_RTR;
	want.path_mtu = IBV_MTU_2048;
	want.dest_qp_num = qp->qp_num;
	want.rq_psn = 0x12345;
	want.max_dest_rd_atomic = 1;
	want.min_rnr_timer = 12;
	want.ah_attr.dlid = lid;
	want.ah_attr.port_num = 1;
	want.ah_attr.sl = 0;
	a = want;
	a.ah_attr.dlid = 0;
	expect_errno("RC modify_qp INIT->RTR with DLID 0: EINVAL",
		     ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV |
				   IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
				   IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC |
				   IBV_QP_MIN_RNR_TIMER), EINVAL);
	a = want;
	expect_errno("RC modify_qp INIT->RTR without the RQ PSN: EINVAL",
		     ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV |
				   IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
				   IBV_QP_MAX_DEST_RD_ATOMIC |
				   IBV_QP_MIN_RNR_TIMER), EINVAL);
	a.max_dest_rd_atomic = dev_attr.max_qp_rd_atom + 1;
	expect_errno("RC modify_qp INIT->RTR with max_dest_rd_atomic above the limit: EINVAL",
		     ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV |
				   IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
				   IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC |
				   IBV_QP_MIN_RNR_TIMER), EINVAL);
	mask |= IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
		IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER;
	expect_errno("RC modify_qp INIT->RTR",
		     ibv_modify_qp(qp, &want, IBV_QP_STATE | IBV_QP_AV |
				   IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
				   IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC |
				   IBV_QP_MIN_RNR_TIMER), 0);
	check_query_qp("RC query_qp after RTR", qp, &want, mask, &cap);

	want.qp_state = IBV_QPS_RTS;
	want.sq_psn = 0x54321;
	want.timeout = 14;
	want.retry_cnt = 6;
	want.rnr_retry = 5;
	want.max_rd_atomic = 1;
	mask |= IBV_QP_SQ_PSN | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
		IBV_QP_RNR_RETRY | IBV_QP_MAX_QP_RD_ATOMIC;
	a = want;
	a.retry_cnt = 8;
	expect_errno("RC modify_qp RTR->RTS with retry_cnt 8: EINVAL",
		     ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_SQ_PSN |
				   IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
				   IBV_QP_RNR_RETRY | IBV_QP_MAX_QP_RD_ATOMIC),
		     EINVAL);
	expect_errno("RC modify_qp RTR->RTS",
		     ibv_modify_qp(qp, &want, IBV_QP_STATE | IBV_QP_SQ_PSN |
				   IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
				   IBV_QP_RNR_RETRY | IBV_QP_MAX_QP_RD_ATOMIC), 0);
	check_query_qp("RC query_qp after RTS", qp, &want, mask, &cap);
	want.min_rnr_timer = 20;
	want.qp_access_flags = IBV_ACCESS_REMOTE_READ;
	expect_errno("RC modify_qp RTS->RTS (RNR timer, access flags)",
		     ibv_modify_qp(qp, &want, IBV_QP_STATE | IBV_QP_MIN_RNR_TIMER |
				   IBV_QP_ACCESS_FLAGS), 0);
	check_query_qp("RC query_qp after RTS->RTS", qp, &want, mask, &cap);
	a = (struct ibv_qp_attr){ .qp_state = IBV_QPS_RTS, .dest_qp_num = 1 };
	expect_errno("RC modify_qp RTS->RTS changing the destination QPN: EINVAL",
		     ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_DEST_QPN),
		     EINVAL);

	want.qp_state = IBV_QPS_ERR;
	expect_errno("RC modify_qp RTS->ERR",
		     ibv_modify_qp(qp, &want, IBV_QP_STATE), 0);
	check_query_qp("RC query_qp after ERR", qp, &want, mask, &cap);
	/* Back to RESET: a fresh QP, its attributes cleared. */
	memset(&want, 0, sizeof(want));
	want.qp_state = IBV_QPS_RESET;
	expect_errno("RC modify_qp ERR->RESET",
		     ibv_modify_qp(qp, &want, IBV_QP_STATE), 0);
	check_query_qp("RC query_qp after RESET: attributes cleared", qp, &want,
		       mask, &cap);
	expect_errno("RC destroy_qp", ibv_destroy_qp(qp), 0);
}

/* Limits of QP creation, and QP types the device does not have. */
static void check_qp_limits(struct ibv_cq *cq)
{
	struct ibv_qp_cap cap = { .max_send_wr = dev_attr.max_qp_wr,
				  .max_recv_wr = dev_attr.max_qp_wr,
				  .max_send_sge = dev_attr.max_sge,
				  .max_recv_sge = dev_attr.max_sge };
	struct ibv_qp *qp;

	qp = make_qp(pd, IBV_QPT_RC, cq, cq, NULL, &cap);
	result(qp && cap.max_send_wr >= (uint32_t)dev_attr.max_qp_wr,
	       "create_qp with max_qp_wr WRs and max_sge SGEs",
	       "%s, max_send_wr %u (max_qp_wr %d)", qp ? "ok" : strerror(errno),
	       cap.max_send_wr, dev_attr.max_qp_wr);
	if (qp)
		expect_errno("destroy that QP", ibv_destroy_qp(qp), 0);

	cap = (struct ibv_qp_cap){ .max_send_wr = dev_attr.max_qp_wr + 1,
				   .max_recv_wr = 8, .max_send_sge = 1,
				   .max_recv_sge = 1 };
	qp = make_qp(pd, IBV_QPT_RC, cq, cq, NULL, &cap);
	if (!expect_refused("create_qp with max_send_wr above max_qp_wr: EINVAL",
			    qp, errno, EINVAL))
		ibv_destroy_qp(qp);
	cap = (struct ibv_qp_cap){ .max_send_wr = 8,
				   .max_recv_wr = dev_attr.max_qp_wr + 1,
				   .max_send_sge = 1, .max_recv_sge = 1 };
	qp = make_qp(pd, IBV_QPT_UD, cq, cq, NULL, &cap);
	if (!expect_refused("create_qp (UD) with max_recv_wr above max_qp_wr: EINVAL",
			    qp, errno, EINVAL))
		ibv_destroy_qp(qp);
	cap = (struct ibv_qp_cap){ .max_send_wr = 8, .max_recv_wr = 8,
				   .max_send_sge = dev_attr.max_sge + 1,
				   .max_recv_sge = 1 };
	qp = make_qp(pd, IBV_QPT_RC, cq, cq, NULL, &cap);
	if (!expect_refused("create_qp with max_send_sge above max_sge: EINVAL",
			    qp, errno, EINVAL))
		ibv_destroy_qp(qp);
	qp = make_qp(pd, IBV_QPT_UC, cq, cq, NULL, NULL);
	if (!expect_refused("create_qp of type UC (not supported): EOPNOTSUPP",
			    qp, errno, EOPNOTSUPP))
		ibv_destroy_qp(qp);
}

/* Two UD QPs: the transitions read back, and a datagram through an AH. */
static void check_ud(struct ibv_cq *scq, struct ibv_cq *rcq)
{
	static uint8_t buf[4096] __attribute__((aligned(4096)));
	const uint32_t qkey = 0x11223344;
	struct ibv_qp_cap cap1 = { .max_send_wr = 8, .max_recv_wr = 8,
				   .max_send_sge = 1, .max_recv_sge = 1 };
	struct ibv_qp_cap cap2 = cap1;
	struct ibv_ah_attr ah_attr = { .dlid = lid, .port_num = 1 };
	struct ibv_qp_attr want = {}, a;
	struct ibv_qp *u1, *u2;
	struct ibv_mr *mr;
	struct ibv_ah *ah;
	struct ibv_sge sge;
	struct ibv_recv_wr rwr = { .wr_id = 300, .sg_list = &sge,
				   .num_sge = 1 }, *bad_rwr;
	struct ibv_send_wr swr = { .sg_list = &sge, .num_sge = 1,
				   .opcode = IBV_WR_SEND,
				   .send_flags = IBV_SEND_SIGNALED }, *bad_swr;
	struct ibv_wc wc;
	int mask, ret;

	u1 = make_qp(pd, IBV_QPT_UD, scq, rcq, NULL, &cap1);
	u2 = make_qp(pd, IBV_QPT_UD, scq, rcq, NULL, &cap2);
	mr = ibv_reg_mr(pd, buf, sizeof(buf), IBV_ACCESS_LOCAL_WRITE);
	if (!u1 || !u2 || !mr) {
		result(false, "create two UD QPs", "%s", strerror(errno));
		return;
	}
	want.qp_state = IBV_QPS_RESET;
	check_query_qp("UD query_qp after create: RESET", u1, &want, 0, &cap1);

	a = (struct ibv_qp_attr){ .qp_state = IBV_QPS_INIT, .port_num = 1 };
	expect_errno("UD modify_qp RESET->INIT without a Q_Key: EINVAL",
		     ibv_modify_qp(u1, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX |
				   IBV_QP_PORT), EINVAL);
	a.qkey = qkey;
	expect_errno("UD modify_qp RESET->INIT with access flags (RC only): EINVAL",
		     ibv_modify_qp(u1, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX |
				   IBV_QP_PORT | IBV_QP_QKEY |
				   IBV_QP_ACCESS_FLAGS), EINVAL);

	want.qp_state = IBV_QPS_INIT;
	want.port_num = 1;
	want.qkey = qkey;
	mask = IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_QKEY;
	ret = ibv_modify_qp(u1, &want, IBV_QP_STATE | mask) ?:
	      ibv_modify_qp(u2, &want, IBV_QP_STATE | mask);
	expect_errno("UD modify_qp RESET->INIT", ret, 0);
	check_query_qp("UD query_qp after INIT", u1, &want, mask, &cap1);
	a = (struct ibv_qp_attr){ .qp_state = IBV_QPS_RTR, .dest_qp_num = 5 };
	expect_errno("UD modify_qp INIT->RTR with a destination QPN (RC only): EINVAL",
		     ibv_modify_qp(u1, &a, IBV_QP_STATE | IBV_QP_DEST_QPN),
		     EINVAL);
	want.qp_state = IBV_QPS_RTR;
	ret = ibv_modify_qp(u1, &want, IBV_QP_STATE) ?:
	      ibv_modify_qp(u2, &want, IBV_QP_STATE);
	expect_errno("UD modify_qp INIT->RTR", ret, 0);
	check_query_qp("UD query_qp after RTR", u1, &want, mask, &cap1);
	a = (struct ibv_qp_attr){ .qp_state = IBV_QPS_RTS };
	expect_errno("UD modify_qp RTR->RTS without the SQ PSN: EINVAL",
		     ibv_modify_qp(u1, &a, IBV_QP_STATE), EINVAL);
	want.qp_state = IBV_QPS_RTS;
	want.sq_psn = 0x777;
	mask |= IBV_QP_SQ_PSN;
	ret = ibv_modify_qp(u1, &want, IBV_QP_STATE | IBV_QP_SQ_PSN) ?:
	      ibv_modify_qp(u2, &want, IBV_QP_STATE | IBV_QP_SQ_PSN);
	expect_errno("UD modify_qp RTR->RTS", ret, 0);
	check_query_qp("UD query_qp after RTS", u1, &want, mask, &cap1);
	check_query_qp("UD query_qp of the second QP", u2, &want, mask, &cap2);

	ah = ibv_create_ah(pd, &ah_attr);
	result(ah && ah->pd == pd, "create_ah to our own LID", "%s",
	       strerror(errno));
	if (!ah)
		goto out;

	/* The receiver's first 40 bytes are the GRH area. */
	sge = (struct ibv_sge){ (uintptr_t)buf + 1024, 40 + 64, mr->lkey };
	ret = ibv_post_recv(u2, &rwr, &bad_rwr);
	strcpy((char *)buf, "datagram");
	sge = (struct ibv_sge){ (uintptr_t)buf, 9, mr->lkey };
	swr.wr.ud.ah = ah;
	swr.wr.ud.remote_qpn = u2->qp_num;
	/* A wrong Q_Key: dropped by the receiver, a success for the sender. */
	swr.wr_id = 301;
	swr.wr.ud.remote_qkey = qkey ^ 1;
	if (!ret)
		ret = ibv_post_send(u1, &swr, &bad_swr);
	if (!ret && wc_ok("UD send with a wrong Q_Key: dropped", scq, 301,
			  IBV_WC_SEND, &wc)) {
		usleep(300000);
		result(ibv_poll_cq(rcq, 1, &wc) == 0,
		       "UD send with a wrong Q_Key: dropped",
		       "a receive completed, wr_id %" PRIu64, wc.wr_id);
	}
	swr.wr_id = 302;
	swr.wr.ud.remote_qkey = qkey;
	if (!ret)
		ret = ibv_post_send(u1, &swr, &bad_swr);
	if (!ret && wc_ok("UD send through an AH", scq, 302, IBV_WC_SEND, &wc) &&
	    wc_ok("UD send through an AH", rcq, 300, IBV_WC_RECV, &wc))
		result(wc.byte_len == 40 + 9 && wc.src_qp == u1->qp_num &&
		       wc.qp_num == u2->qp_num && wc.slid == lid &&
		       !strcmp((char *)buf + 1024 + 40, "datagram"),
		       "UD send through an AH",
		       "byte_len %u src_qp %u (%u) qp_num %u slid %#x data '%.9s'",
		       wc.byte_len, wc.src_qp, u1->qp_num, wc.qp_num, wc.slid,
		       buf + 1024 + 40);
	else if (ret)
		result(false, "UD send through an AH", "post: %s", strerror(ret));
	expect_errno("destroy_ah", ibv_destroy_ah(ah), 0);
out:
	ret = ibv_destroy_qp(u1) ?: ibv_destroy_qp(u2) ?: ibv_dereg_mr(mr);
	expect_errno("destroy the UD QPs and their MR", ret, 0);
}

static void check_ah(void)
{
	struct ibv_ah_attr attr = { .dlid = lid, .port_num = 1 };
	struct ibv_ah *ah;

	ah = ibv_create_ah(pd, &attr);
	result(ah, "create_ah", "%s", strerror(errno));
	if (ah)
		expect_errno("destroy_ah", ibv_destroy_ah(ah), 0);

	attr.dlid = 0;
	ah = ibv_create_ah(pd, &attr);
	if (!expect_refused("create_ah with DLID 0: EINVAL", ah, errno, EINVAL))
		ibv_destroy_ah(ah);
	/* Multicast LIDs need a GRH (IBA 8.4.1). */
	attr.dlid = 0xc001;
	ah = ibv_create_ah(pd, &attr);
	if (!expect_refused("create_ah to a multicast DLID without a GRH: EINVAL",
			    ah, errno, EINVAL))
		ibv_destroy_ah(ah);
	attr.dlid = lid;
	attr.port_num = 2;
	ah = ibv_create_ah(pd, &attr);
	if (!expect_refused("create_ah on port 2 (one port): EINVAL", ah,
			    errno, EINVAL))
		ibv_destroy_ah(ah);
}

static void check_srq(struct ibv_cq *cq)
{
	struct ibv_srq_init_attr init = { .attr = { .max_wr = 50,
						    .max_sge = 2 } };
	struct ibv_srq_attr sa;
	struct ibv_srq *srq, *bad;
	struct ibv_qp *qp;
	int ret;

	if (!dev_attr.max_srq) {
		result(true, "SRQ # SKIP the device has no SRQs", "");
		return;
	}
	srq = ibv_create_srq(pd, &init);
	if (!srq) {
		result(false, "create_srq", "%s", strerror(errno));
		return;
	}
	result(init.attr.max_wr >= 50 && init.attr.max_sge >= 2,
	       "create_srq: max_wr and max_sge at least asked", "%u/%u",
	       init.attr.max_wr, init.attr.max_sge);
	memset(&sa, 0xa5, sizeof(sa));
	ret = ibv_query_srq(srq, &sa);
	result(!ret && sa.max_wr == init.attr.max_wr &&
	       sa.max_sge == init.attr.max_sge && sa.srq_limit == 0,
	       "query_srq after create", "%s, max_wr %u max_sge %u limit %u",
	       strerror(ret), sa.max_wr, sa.max_sge, sa.srq_limit);
	sa = (struct ibv_srq_attr){ .srq_limit = 10 };
	expect_errno("modify_srq srq_limit 10",
		     ibv_modify_srq(srq, &sa, IBV_SRQ_LIMIT), 0);
	ret = ibv_query_srq(srq, &sa);
	result(!ret && sa.srq_limit == 10 && sa.max_wr == init.attr.max_wr,
	       "query_srq after modify_srq: limit 10", "%s, limit %u max_wr %u",
	       strerror(ret), sa.srq_limit, sa.max_wr);
	sa = (struct ibv_srq_attr){ .srq_limit = init.attr.max_wr };
	expect_errno("modify_srq srq_limit = max_wr: EINVAL",
		     ibv_modify_srq(srq, &sa, IBV_SRQ_LIMIT), EINVAL);
	if (!(dev_attr.device_cap_flags & IBV_DEVICE_SRQ_RESIZE)) {
		sa = (struct ibv_srq_attr){ .max_wr = 2 * init.attr.max_wr };
		expect_errno("modify_srq max_wr without SRQ_RESIZE: EOPNOTSUPP",
			     ibv_modify_srq(srq, &sa, IBV_SRQ_MAX_WR),
			     EOPNOTSUPP);
	}
	ret = ibv_query_srq(srq, &sa);
	result(!ret && sa.srq_limit == 10, "refused modify_srq change nothing",
	       "%s, limit %u", strerror(ret), sa.srq_limit);

	/* A QP on the SRQ keeps it. */
	qp = make_qp(pd, IBV_QPT_RC, cq, cq, srq, NULL);
	result(qp && qp->srq == srq, "create_qp on the SRQ", "%s",
	       strerror(errno));
	if (qp) {
		expect_errno("destroy_srq while a QP uses it: EBUSY",
			     ibv_destroy_srq(srq), EBUSY);
		expect_errno("destroy the QP", ibv_destroy_qp(qp), 0);
	}
	expect_errno("destroy_srq", ibv_destroy_srq(srq), 0);

	init = (struct ibv_srq_init_attr){ .attr = {
		.max_wr = dev_attr.max_srq_wr, .max_sge = 1 } };
	srq = ibv_create_srq(pd, &init);
	result(srq, "create_srq of max_srq_wr WRs", "%s", strerror(errno));
	if (srq)
		ibv_destroy_srq(srq);
	init = (struct ibv_srq_init_attr){ .attr = {
		.max_wr = dev_attr.max_srq_wr + 1, .max_sge = 1 } };
	bad = ibv_create_srq(pd, &init);
	if (!expect_refused("create_srq above max_srq_wr: EINVAL", bad, errno,
			    EINVAL))
		ibv_destroy_srq(bad);
	init = (struct ibv_srq_init_attr){ .attr = {
		.max_wr = 16, .max_sge = dev_attr.max_srq_sge + 1 } };
	bad = ibv_create_srq(pd, &init);
	if (!expect_refused("create_srq above max_srq_sge: EINVAL", bad, errno,
			    EINVAL))
		ibv_destroy_srq(bad);
	init = (struct ibv_srq_init_attr){ .attr = {
		.max_wr = 16, .max_sge = 1, .srq_limit = 16 } };
	bad = ibv_create_srq(pd, &init);
	if (!expect_refused("create_srq with srq_limit = max_wr: EINVAL", bad,
			    errno, EINVAL))
		ibv_destroy_srq(bad);
}

/* Objects that others use cannot go (ib_core's use counts: EBUSY). */
static void check_busy(void)
{
	static uint8_t buf[4096] __attribute__((aligned(4096)));
	struct ibv_ah_attr ah_attr = { .dlid = lid, .port_num = 1 };
	struct ibv_pd *p;
	struct ibv_cq *cq;
	struct ibv_mr *mr;
	struct ibv_qp *qp;
	struct ibv_ah *ah;

	p = ibv_alloc_pd(ctx);
	cq = ibv_create_cq(ctx, 8, NULL, NULL, 0);
	mr = p ? ibv_reg_mr(p, buf, sizeof(buf), IBV_ACCESS_LOCAL_WRITE) : NULL;
	qp = p && cq ? make_qp(p, IBV_QPT_RC, cq, cq, NULL, NULL) : NULL;
	ah = p ? ibv_create_ah(p, &ah_attr) : NULL;
	if (!p || !cq || !mr || !qp || !ah) {
		result(false, "a PD with an MR, a QP and an AH", "%s",
		       strerror(errno));
		return;
	}
	expect_errno("dealloc_pd with a live QP, MR and AH: EBUSY",
		     ibv_dealloc_pd(p), EBUSY);
	expect_errno("destroy_cq with a live QP: EBUSY", ibv_destroy_cq(cq),
		     EBUSY);
	expect_errno("destroy_qp", ibv_destroy_qp(qp), 0);
	expect_errno("dealloc_pd with a live MR and AH: EBUSY",
		     ibv_dealloc_pd(p), EBUSY);
	expect_errno("dereg_mr", ibv_dereg_mr(mr), 0);
	expect_errno("dealloc_pd with a live AH: EBUSY", ibv_dealloc_pd(p),
		     EBUSY);
	expect_errno("destroy_ah", ibv_destroy_ah(ah), 0);
	expect_errno("dealloc_pd once nothing uses it", ibv_dealloc_pd(p), 0);
	expect_errno("destroy_cq once nothing uses it", ibv_destroy_cq(cq), 0);
}

/* Every object kind, its attributes and its errors, on a fresh PD. */
static void check_objects(struct ibv_device *device)
{
	struct ibv_cq *cq, *rcq;

	check_device(device);
	check_contexts(device);
	pd = ibv_alloc_pd(ctx);
	cq = ibv_create_cq(ctx, 32, NULL, NULL, 0);
	rcq = ibv_create_cq(ctx, 32, NULL, NULL, 0);
	if (!pd || !cq || !rcq) {
		result(false, "a PD and CQs for the object checks", "%s",
		       strerror(errno));
		return;
	}
	check_mr();
	check_cq();
	check_rc_qp(cq);
	check_qp_limits(cq);
	check_ud(cq, rcq);
	check_ah();
	check_srq(cq);
	check_busy();
	expect_errno("destroy the object checks' PD and CQs",
		     ibv_destroy_cq(cq) ?: ibv_destroy_cq(rcq) ?:
		     ibv_dealloc_pd(pd), 0);
}

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : "vmmbib0";
	struct ibv_device **list, *device = NULL;
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
			device = list[i];
	if (device)
		ctx = ibv_open_device(device);
	if (!ctx) {
		result(false, "open device", "%s not found or not opened", name);
		return 1;
	}
	ret = ibv_query_device(ctx, &dev_attr);
	if (ret) {
		result(false, "query_device", "%s", strerror(ret));
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
	check_stale_key(&B, &A);

	ret = ibv_destroy_qp(A.qp) || ibv_destroy_qp(B.qp) ||
	      ibv_destroy_cq(A.scq) || ibv_destroy_cq(A.rcq) ||
	      ibv_destroy_cq(B.scq) || ibv_destroy_cq(B.rcq) ||
	      ibv_dereg_mr(A.mr) || ibv_dereg_mr(B.mr) || ibv_dealloc_pd(pd);
	result(!ret, "destroy everything", "%s", strerror(errno));

	check_objects(device);
	ibv_close_device(ctx);
	ibv_free_device_list(list);
	return failures ? 1 : 0;
}
