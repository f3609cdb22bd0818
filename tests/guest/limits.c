// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * vmmbib-limits: a guest that asks for objects without bound.  It registers
 * memory regions over one buffer, then creates CQs, QPs and PDs, each kind
 * until a verb fails (or MAX of them exist), and reports for each kind
 * how many it got and the errno of the failure:
 *
 *     mrs 255 errno 12 (Cannot allocate memory)
 *
 * ("errno 0" means MAX was reached without a failure).  Then it prints
 * "holding" and keeps every object until it is killed, so that the host can
 * measure what they cost it (tests/guest/limits.sh).
 *
 * Usage: vmmbib-limits [-b BUFFER_KIB] [-x MAX] [DEVICE]
 * Built by scripts/build-provider.sh like verbs-check.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <infiniband/verbs.h>

/* One line per kind: how many exist, why the next one failed. */
static void report(const char *kind, unsigned int count, int err)
{
	printf("%s %u errno %d (%s)\n", kind, count, err,
	       err ? strerror(err) : "limit of this program");
	fflush(stdout);
}

static struct ibv_qp *create_qp(struct ibv_pd *pd, struct ibv_cq *cq)
{
	struct ibv_qp_init_attr attr = {
		.send_cq = cq,
		.recv_cq = cq,
		.qp_type = IBV_QPT_RC,
		.cap = { .max_send_wr = 4, .max_recv_wr = 4,
			 .max_send_sge = 1, .max_recv_sge = 1 },
	};

	return ibv_create_qp(pd, &attr);
}

int main(int argc, char **argv)
{
	unsigned long buf_kib = 1024, max = 100000, n;
	struct ibv_device **list;
	struct ibv_context *ctx;
	const char *name = NULL;
	struct ibv_cq *cq0;
	struct ibv_pd *pd;
	void *buf;
	int i, opt;

	while ((opt = getopt(argc, argv, "b:x:")) != -1) {
		switch (opt) {
		case 'b':
			buf_kib = strtoul(optarg, NULL, 0);
			break;
		case 'x':
			max = strtoul(optarg, NULL, 0);
			break;
		default:
			fprintf(stderr, "usage: %s [-b BUFFER_KIB] [-x MAX] [DEVICE]\n",
				argv[0]);
			return 2;
		}
	}
	if (optind < argc)
		name = argv[optind];

	list = ibv_get_device_list(NULL);
	for (i = 0; list && list[i]; i++)
		if (!name || !strcmp(ibv_get_device_name(list[i]), name))
			break;
	if (!list || !list[i]) {
		fprintf(stderr, "no RDMA device %s\n", name ? name : "at all");
		return 1;
	}
	ctx = ibv_open_device(list[i]);
	if (!ctx) {
		fprintf(stderr, "cannot open %s: %s\n",
			ibv_get_device_name(list[i]), strerror(errno));
		return 1;
	}
	pd = ibv_alloc_pd(ctx);
	cq0 = ibv_create_cq(ctx, 16, NULL, NULL, 0);
	buf = calloc(buf_kib, 1024);
	if (!pd || !cq0 || !buf) {
		fprintf(stderr, "cannot set up: %s\n", strerror(errno));
		return 1;
	}

	/* Objects are never freed: the process holds them until killed. */
	for (n = 0; n < max; n++) {
		errno = 0;
		if (!ibv_reg_mr(pd, buf, buf_kib * 1024, IBV_ACCESS_LOCAL_WRITE))
			break;
	}
	report("mrs", n, n < max ? errno : 0);
	/* cq0 is one more CQ; the QPs complete into it. */
	for (n = 0; n < max; n++) {
		errno = 0;
		if (!ibv_create_cq(ctx, 16, NULL, NULL, 0))
			break;
	}
	report("cqs", n + 1, n < max ? errno : 0);
	for (n = 0; n < max; n++) {
		errno = 0;
		if (!create_qp(pd, cq0))
			break;
	}
	report("qps", n, n < max ? errno : 0);
	/* pd is one more PD. */
	for (n = 0; n < max; n++) {
		errno = 0;
		if (!ibv_alloc_pd(ctx))
			break;
	}
	report("pds", n + 1, n < max ? errno : 0);

	printf("holding\n");
	fflush(stdout);
	for (;;)
		pause();
}
