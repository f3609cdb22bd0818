// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * vmmbib_ktest: a test of vmmbypass_ib's kernel verbs, as a kernel
 * consumer (ib_mad, NVMe-oF, RDS) uses them.  Loaded only by the guest
 * tests (tests/guest/kverbs.sh), never installed.
 *
 * On load it finds the first vmmbib device and runs, in loopback through
 * the device's engine: a PD (with its DMA MR), a CQ with a completion
 * handler, two RC QPs connected to each other by LID and QPN, a SEND, an
 * RDMA WRITE and an armed completion event; then it destroys everything.
 * Each check is one "vmmbib_ktest: ok N - NAME" or "not ok" line in the
 * kernel log, and the module parameters "passed" and "failed" count them.
 */

#include <linux/completion.h>
#include <linux/delay.h>
#include <linux/dma-mapping.h>
#include <linux/jiffies.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <rdma/ib_verbs.h>

#define KT_BUF_SIZE	4096
#define KT_MSG_SIZE	256
#define KT_TIMEOUT_MS	10000

static int passed;
module_param(passed, int, 0444);
MODULE_PARM_DESC(passed, "checks that passed");
static int failed;
module_param(failed, int, 0444);
MODULE_PARM_DESC(failed, "checks that failed");

struct kt_ctx {
	struct ib_device *ibdev;
	struct ib_pd *pd;
	struct ib_cq *cq;
	struct ib_qp *qp[2];
	void *buf[2];
	u64 dma[2];
	struct completion comp;
	unsigned int ncheck;
	u16 lid;
};

static bool kt_check(struct kt_ctx *t, bool ok, const char *name)
{
	t->ncheck++;
	if (ok)
		passed++;
	else
		failed++;
	pr_info("vmmbib_ktest: %s %u - %s\n", ok ? "ok" : "not ok", t->ncheck,
		name);
	return ok;
}

static void kt_comp_handler(struct ib_cq *cq, void *ctx)
{
	struct kt_ctx *t = ctx;

	complete(&t->comp);
}

/* Polls until @n completions arrived or the time is up. */
static int kt_poll(struct kt_ctx *t, struct ib_wc *wc, int n)
{
	unsigned long end = jiffies + msecs_to_jiffies(KT_TIMEOUT_MS);
	int got = 0, ret;

	while (got < n && time_before(jiffies, end)) {
		ret = ib_poll_cq(t->cq, n - got, wc + got);
		if (ret < 0)
			return ret;
		got += ret;
		if (got < n)
			usleep_range(100, 1000);
	}
	return got;
}

static int kt_connect(struct kt_ctx *t, struct ib_qp *qp, u32 dest_qpn)
{
	struct ib_qp_attr attr = {};
	int err;

	attr.qp_state = IB_QPS_INIT;
	attr.pkey_index = 0;
	attr.port_num = 1;
	attr.qp_access_flags = IB_ACCESS_LOCAL_WRITE | IB_ACCESS_REMOTE_WRITE |
			       IB_ACCESS_REMOTE_READ;
	err = ib_modify_qp(qp, &attr, IB_QP_STATE | IB_QP_PKEY_INDEX |
			   IB_QP_PORT | IB_QP_ACCESS_FLAGS);
	if (err)
		return err;

	memset(&attr, 0, sizeof(attr));
	attr.qp_state = IB_QPS_RTR;
	attr.path_mtu = IB_MTU_1024;
	attr.dest_qp_num = dest_qpn;
	attr.rq_psn = 0;
	attr.max_dest_rd_atomic = 1;
	attr.min_rnr_timer = 12;
	attr.ah_attr.type = RDMA_AH_ATTR_TYPE_IB;
	rdma_ah_set_dlid(&attr.ah_attr, t->lid);
	rdma_ah_set_port_num(&attr.ah_attr, 1);
	err = ib_modify_qp(qp, &attr, IB_QP_STATE | IB_QP_AV | IB_QP_PATH_MTU |
			   IB_QP_DEST_QPN | IB_QP_RQ_PSN |
			   IB_QP_MAX_DEST_RD_ATOMIC | IB_QP_MIN_RNR_TIMER);
	if (err)
		return err;

	memset(&attr, 0, sizeof(attr));
	attr.qp_state = IB_QPS_RTS;
	attr.sq_psn = 0;
	attr.timeout = 14;
	attr.retry_cnt = 7;
	attr.rnr_retry = 7;
	attr.max_rd_atomic = 1;
	return ib_modify_qp(qp, &attr, IB_QP_STATE | IB_QP_TIMEOUT |
			    IB_QP_RETRY_CNT | IB_QP_RNR_RETRY | IB_QP_SQ_PSN |
			    IB_QP_MAX_QP_RD_ATOMIC);
}

static int kt_setup(struct kt_ctx *t)
{
	struct ib_cq_init_attr cq_attr = { .cqe = 16 };
	struct ib_qp_init_attr qp_attr = {};
	struct ib_port_attr port;
	int i, err;

	/* The global rkey makes the PD's DMA MR a target of RDMA WRITEs. */
	t->pd = ib_alloc_pd(t->ibdev, IB_PD_UNSAFE_GLOBAL_RKEY);
	if (!kt_check(t, !IS_ERR(t->pd), "alloc PD with a DMA MR"))
		return PTR_ERR(t->pd);

	t->cq = ib_create_cq(t->ibdev, kt_comp_handler, NULL, t, &cq_attr);
	if (!kt_check(t, !IS_ERR(t->cq), "create CQ"))
		return PTR_ERR(t->cq);

	qp_attr.send_cq = t->cq;
	qp_attr.recv_cq = t->cq;
	qp_attr.qp_type = IB_QPT_RC;
	qp_attr.sq_sig_type = IB_SIGNAL_REQ_WR;
	qp_attr.cap.max_send_wr = 4;
	qp_attr.cap.max_recv_wr = 4;
	qp_attr.cap.max_send_sge = 1;
	qp_attr.cap.max_recv_sge = 1;
	for (i = 0; i < 2; i++) {
		t->qp[i] = ib_create_qp(t->pd, &qp_attr);
		if (!kt_check(t, !IS_ERR(t->qp[i]), "create RC QP"))
			return PTR_ERR(t->qp[i]);
	}

	err = ib_query_port(t->ibdev, 1, &port);
	if (!kt_check(t, !err && port.lid, "query port: LID assigned"))
		return err ?: -EINVAL;
	t->lid = port.lid;

	err = kt_connect(t, t->qp[0], t->qp[1]->qp_num);
	if (!err)
		err = kt_connect(t, t->qp[1], t->qp[0]->qp_num);
	if (!kt_check(t, !err, "connect the QPs (INIT, RTR, RTS)"))
		return err;

	for (i = 0; i < 2; i++) {
		t->buf[i] = kzalloc(KT_BUF_SIZE, GFP_KERNEL);
		if (!t->buf[i])
			return -ENOMEM;
		t->dma[i] = ib_dma_map_single(t->ibdev, t->buf[i], KT_BUF_SIZE,
					      DMA_BIDIRECTIONAL);
		if (ib_dma_mapping_error(t->ibdev, t->dma[i])) {
			kfree(t->buf[i]);
			t->buf[i] = NULL;
			return -ENOMEM;
		}
	}
	return 0;
}

static int kt_post_recv(struct kt_ctx *t, u64 wr_id)
{
	struct ib_sge sge = {
		.addr = t->dma[1],
		.length = KT_BUF_SIZE,
		.lkey = t->pd->local_dma_lkey,
	};
	struct ib_recv_wr wr = { .wr_id = wr_id, .sg_list = &sge,
				 .num_sge = 1 };

	return ib_post_recv(t->qp[1], &wr, NULL);
}

static int kt_post_send(struct kt_ctx *t, u64 wr_id, enum ib_wr_opcode op,
			u32 len)
{
	struct ib_sge sge = {
		.addr = t->dma[0],
		.length = len,
		.lkey = t->pd->local_dma_lkey,
	};
	struct ib_rdma_wr wr = {
		.wr = {
			.wr_id = wr_id,
			.sg_list = &sge,
			.num_sge = 1,
			.opcode = op,
			.send_flags = IB_SEND_SIGNALED,
		},
		.remote_addr = t->dma[1] + KT_BUF_SIZE / 2,
		.rkey = t->pd->unsafe_global_rkey,
	};

	return ib_post_send(t->qp[0], &wr.wr, NULL);
}

/* The send and receive completions of one SEND, in either order. */
static void kt_check_send(struct kt_ctx *t, const char *what, u64 id)
{
	struct ib_wc wc[2];
	int n, i, sends = 0, recvs = 0;
	char name[96];

	n = kt_poll(t, wc, 2);
	for (i = 0; i < n; i++) {
		if (wc[i].status != IB_WC_SUCCESS)
			pr_info("vmmbib_ktest: # %s: wr_id %llu status %s\n",
				what, wc[i].wr_id,
				ib_wc_status_msg(wc[i].status));
		if (wc[i].status == IB_WC_SUCCESS && wc[i].opcode == IB_WC_SEND &&
		    wc[i].wr_id == id && wc[i].qp == t->qp[0])
			sends++;
		if (wc[i].status == IB_WC_SUCCESS && wc[i].opcode == IB_WC_RECV &&
		    wc[i].wr_id == id + 1 && wc[i].qp == t->qp[1] &&
		    wc[i].byte_len == KT_MSG_SIZE)
			recvs++;
	}
	snprintf(name, sizeof(name), "%s: send and receive completions", what);
	kt_check(t, n == 2 && sends == 1 && recvs == 1, name);
	ib_dma_sync_single_for_cpu(t->ibdev, t->dma[1], KT_BUF_SIZE,
				   DMA_BIDIRECTIONAL);
	snprintf(name, sizeof(name), "%s: data arrived", what);
	kt_check(t, !memcmp(t->buf[0], t->buf[1], KT_MSG_SIZE), name);
}

static void kt_run(struct kt_ctx *t)
{
	struct ib_wc wc;
	int err, i, n;

	if (kt_setup(t))
		return;

	/* SEND, polled. */
	for (i = 0; i < KT_MSG_SIZE; i++)
		((u8 *)t->buf[0])[i] = i * 7 + 1;
	ib_dma_sync_single_for_device(t->ibdev, t->dma[0], KT_BUF_SIZE,
				      DMA_BIDIRECTIONAL);
	err = kt_post_recv(t, 2);
	if (!kt_check(t, !err, "post_recv"))
		return;
	err = kt_post_send(t, 1, IB_WR_SEND, KT_MSG_SIZE);
	if (!kt_check(t, !err, "post_send SEND"))
		return;
	kt_check_send(t, "SEND", 1);

	/* RDMA WRITE into the second half of the peer's buffer. */
	for (i = 0; i < KT_MSG_SIZE; i++)
		((u8 *)t->buf[0])[i] = 0xa5 ^ i;
	ib_dma_sync_single_for_device(t->ibdev, t->dma[0], KT_BUF_SIZE,
				      DMA_BIDIRECTIONAL);
	err = kt_post_send(t, 3, IB_WR_RDMA_WRITE, KT_MSG_SIZE);
	if (!kt_check(t, !err, "post_send RDMA WRITE"))
		return;
	n = kt_poll(t, &wc, 1);
	kt_check(t, n == 1 && wc.status == IB_WC_SUCCESS &&
		 wc.opcode == IB_WC_RDMA_WRITE && wc.wr_id == 3,
		 "RDMA WRITE: completion");
	ib_dma_sync_single_for_cpu(t->ibdev, t->dma[1], KT_BUF_SIZE,
				   DMA_BIDIRECTIONAL);
	kt_check(t, !memcmp(t->buf[0], t->buf[1] + KT_BUF_SIZE / 2,
			    KT_MSG_SIZE), "RDMA WRITE: data arrived");

	/* An armed CQ: the next completion raises the handler. */
	reinit_completion(&t->comp);
	err = ib_req_notify_cq(t->cq, IB_CQ_NEXT_COMP |
			       IB_CQ_REPORT_MISSED_EVENTS);
	kt_check(t, err == 0, "req_notify_cq on an empty CQ reports none");
	for (i = 0; i < KT_MSG_SIZE; i++)
		((u8 *)t->buf[0])[i] = 0x3c + i;
	ib_dma_sync_single_for_device(t->ibdev, t->dma[0], KT_BUF_SIZE,
				      DMA_BIDIRECTIONAL);
	err = kt_post_recv(t, 5);
	if (!err)
		err = kt_post_send(t, 4, IB_WR_SEND, KT_MSG_SIZE);
	if (!kt_check(t, !err, "post a SEND to an armed CQ"))
		return;
	kt_check(t, wait_for_completion_timeout(&t->comp,
						msecs_to_jiffies(KT_TIMEOUT_MS)),
		 "completion event reaches the CQ's handler");
	kt_check_send(t, "SEND after arming", 4);
}

static void kt_teardown(struct kt_ctx *t)
{
	int i, err, errs = 0;

	for (i = 0; i < 2; i++) {
		if (t->buf[i]) {
			ib_dma_unmap_single(t->ibdev, t->dma[i], KT_BUF_SIZE,
					    DMA_BIDIRECTIONAL);
			kfree(t->buf[i]);
		}
		if (!IS_ERR_OR_NULL(t->qp[i])) {
			err = ib_destroy_qp(t->qp[i]);
			errs += !!err;
		}
	}
	/* ib_destroy_cq() returns nothing on newer kernels. */
	if (!IS_ERR_OR_NULL(t->cq))
		ib_destroy_cq(t->cq);
	if (!IS_ERR_OR_NULL(t->pd))
		ib_dealloc_pd(t->pd);
	kt_check(t, !errs, "destroy QPs, CQ and PD");
}

static int kt_add(struct ib_device *ibdev);
static void kt_remove(struct ib_device *ibdev, void *data) {}

static struct ib_client kt_client = {
	.name = "vmmbib_ktest",
	.add = kt_add,
	.remove = kt_remove,
};

static int kt_add(struct ib_device *ibdev)
{
	struct kt_ctx *t;

	if (strncmp(dev_name(&ibdev->dev), "vmmbib", 6))
		return -EOPNOTSUPP;
	t = kzalloc(sizeof(*t), GFP_KERNEL);
	if (!t)
		return -ENOMEM;
	t->ibdev = ibdev;
	init_completion(&t->comp);
	pr_info("vmmbib_ktest: testing %s\n", dev_name(&ibdev->dev));
	kt_run(t);
	kt_teardown(t);
	pr_info("vmmbib_ktest: done: %d passed, %d failed\n", passed, failed);
	kfree(t);
	return 0;
}

static int __init kt_init(void)
{
	return ib_register_client(&kt_client);
}

static void __exit kt_exit(void)
{
	ib_unregister_client(&kt_client);
}

module_init(kt_init);
module_exit(kt_exit);
MODULE_DESCRIPTION("vmmbypass-ib kernel verbs test (guest tests only)");
MODULE_LICENSE("Dual BSD/GPL");
