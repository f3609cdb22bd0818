// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * vmmbib-reg-mr: the verbs control path of issue 7, timed in a guest.
 *
 *  - ibv_reg_mr and ibv_dereg_mr of 1 to 262,144 pages (4 KiB to 1 GiB):
 *    the median time of each over a few repetitions;
 *  - RC QPs created, moved to RTS (connected to themselves) and destroyed,
 *    as many as fit in a second or so: the rate.
 *
 * The guests have 256-512 MiB of RAM, so the 1 GiB range is a 16 MiB memfd
 * mapped 64 times over one reserved range: every page is a real, pinned
 * page, only the same 4096 pages recur.  Registration pins pages and hands
 * the device (or rxe) one entry per page either way.
 *
 * Usage: vmmbib-reg-mr [-x GID_INDEX] [-p MAX_PAGES] [-t SECONDS] DEVICE
 *   -x  RoCE GID index for the QPs' address (rxe); none: by LID (vmmbypass-ib)
 * Prints one line per figure:
 *   REGMR pages=N reps=R reg_us=MEDIAN dereg_us=MEDIAN
 *   REGMR_FAIL pages=N errno=E      (larger sizes are not tried)
 *   QPRATE qps=N secs=S per_sec=RATE
 * and exits 1, saying what failed, if a verb fails.
 *
 * Built like tests/guest/integrity.c: against this tree's libibverbs,
 * plain IBVERBS_1.x API (bench/meson.build).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <infiniband/verbs.h>

#define PAGE 4096ul
#define CHUNK (16ul << 20)		/* the memfd mapped over and over */
#define MAX_REPS 15

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "vmmbib-reg-mr: %s failed: %s\n", what, strerror(err));
	exit(1);
}

/* A range of @bytes whose every 16 MiB are the same memfd's pages. */
static char *repeated_range(size_t bytes)
{
	char *base;
	int fd;

	fd = memfd_create("reg-mr", 0);
	if (fd < 0)
		die("memfd_create", errno);
	if (ftruncate(fd, CHUNK))
		die("ftruncate of the memfd", errno);
	base = mmap(NULL, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS |
		    MAP_NORESERVE, -1, 0);
	if (base == MAP_FAILED)
		die("reserving the address range", errno);
	for (size_t off = 0; off < bytes; off += CHUNK) {
		size_t len = bytes - off < CHUNK ? bytes - off : CHUNK;

		if (mmap(base + off, len, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED)
			die("mapping the memfd", errno);
	}
	memset(base, 0x5a, bytes < CHUNK ? bytes : CHUNK);
	close(fd);
	return base;
}

/* False if a registration failed (said on stdout and stderr). */
static bool reg_mr_figures(struct ibv_pd *pd, unsigned long max_pages)
{
	char *buf = repeated_range(max_pages * PAGE);
	int access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
		     IBV_ACCESS_REMOTE_READ;

	for (unsigned long pages = 1; pages <= max_pages; pages *= 4) {
		double reg[MAX_REPS], dereg[MAX_REPS];
		/* ~32k pages registered per size, 3 to 15 times. */
		int reps = 32768 / pages;

		reps = reps < 3 ? 3 : reps > MAX_REPS ? MAX_REPS : reps;
		for (int i = 0; i < reps; i++) {
			double t0 = now_us(), t1;
			struct ibv_mr *mr;

			mr = ibv_reg_mr(pd, buf, pages * PAGE, access);
			t1 = now_us();
			if (!mr) {
				/* Larger sizes would fail too: go on to the QPs. */
				printf("REGMR_FAIL pages=%lu errno=%d\n", pages, errno);
				fprintf(stderr, "vmmbib-reg-mr: ibv_reg_mr of %lu pages failed: %s\n",
					pages, strerror(errno));
				munmap(buf, max_pages * PAGE);
				return false;
			}
			if (mr->length != pages * PAGE || !mr->lkey) {
				fprintf(stderr, "vmmbib-reg-mr: MR of %lu pages has length %zu, lkey %#x\n",
					pages, mr->length, mr->lkey);
				exit(1);
			}
			reg[i] = t1 - t0;
			errno = ibv_dereg_mr(mr);
			if (errno)
				die("ibv_dereg_mr", errno);
			dereg[i] = now_us() - t1;
		}
		printf("REGMR pages=%lu reps=%d reg_us=%.1f dereg_us=%.1f\n",
		       pages, reps, median(reg, reps), median(dereg, reps));
		fflush(stdout);
		if (pages < max_pages && pages * 4 > max_pages)
			pages = max_pages / 4;
	}
	munmap(buf, max_pages * PAGE);
	return true;
}

/* INIT, RTR (to itself), RTS: what a connection costs on the control path. */
static void connect_self(struct ibv_qp *qp, const struct ibv_port_attr *port,
			 int gid_index, const union ibv_gid *gid)
{
	struct ibv_qp_attr a = {
		.qp_state = IBV_QPS_INIT,
		.port_num = 1,
		.qp_access_flags = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ,
	};

	errno = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX |
			      IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
	if (errno)
		die("ibv_modify_qp to INIT", errno);
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTR;
	a.path_mtu = IBV_MTU_1024;
	a.dest_qp_num = qp->qp_num;
	a.rq_psn = 1;
	a.max_dest_rd_atomic = 1;
	a.min_rnr_timer = 12;
	a.ah_attr.dlid = port->lid;
	a.ah_attr.port_num = 1;
	if (gid_index >= 0) {
		a.ah_attr.is_global = 1;
		a.ah_attr.grh.dgid = *gid;
		a.ah_attr.grh.sgid_index = gid_index;
		a.ah_attr.grh.hop_limit = 1;
	}
	errno = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU |
			      IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
			      IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
	if (errno)
		die("ibv_modify_qp to RTR", errno);
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTS;
	a.sq_psn = 1;
	a.timeout = 14;
	a.retry_cnt = 7;
	a.rnr_retry = 7;
	a.max_rd_atomic = 1;
	errno = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_SQ_PSN | IBV_QP_TIMEOUT |
			      IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
			      IBV_QP_MAX_QP_RD_ATOMIC);
	if (errno)
		die("ibv_modify_qp to RTS", errno);
}

static void qp_rate(struct ibv_context *ctx, struct ibv_pd *pd, int gid_index,
		    double secs)
{
	struct ibv_port_attr port;
	union ibv_gid gid = {};
	struct ibv_cq *cq;
	double t0, t;
	long n = 0;

	errno = ibv_query_port(ctx, 1, &port);
	if (errno)
		die("ibv_query_port", errno);
	if (gid_index >= 0) {
		errno = ibv_query_gid(ctx, 1, gid_index, &gid);
		if (errno)
			die("ibv_query_gid", errno);
	}
	cq = ibv_create_cq(ctx, 16, NULL, NULL, 0);
	if (!cq)
		die("ibv_create_cq", errno);
	t0 = now_us();
	do {
		struct ibv_qp_init_attr init = {
			.send_cq = cq, .recv_cq = cq, .qp_type = IBV_QPT_RC,
			.cap = { .max_send_wr = 16, .max_recv_wr = 16,
				 .max_send_sge = 1, .max_recv_sge = 1 },
		};
		struct ibv_qp *qp = ibv_create_qp(pd, &init);

		if (!qp)
			die("ibv_create_qp", errno);
		connect_self(qp, &port, gid_index, &gid);
		errno = ibv_destroy_qp(qp);
		if (errno)
			die("ibv_destroy_qp", errno);
		n++;
		t = now_us() - t0;
	} while (t < secs * 1e6 || n < 5);
	printf("QPRATE qps=%ld secs=%.3f per_sec=%.1f\n", n, t / 1e6, n / (t / 1e6));
	ibv_destroy_cq(cq);
}

int main(int argc, char **argv)
{
	unsigned long max_pages = 262144;
	struct ibv_device **list;
	struct ibv_context *ctx = NULL;
	struct ibv_pd *pd;
	int gid_index = -1, opt;
	bool reg_ok;
	double secs = 1;

	while ((opt = getopt(argc, argv, "x:p:t:")) != -1) {
		switch (opt) {
		case 'x':
			gid_index = atoi(optarg);
			break;
		case 'p':
			max_pages = strtoul(optarg, NULL, 0);
			break;
		case 't':
			secs = atof(optarg);
			break;
		default:
			goto usage;
		}
	}
	if (optind != argc - 1 || !max_pages)
		goto usage;
	list = ibv_get_device_list(NULL);
	for (int i = 0; list && list[i]; i++)
		if (!strcmp(ibv_get_device_name(list[i]), argv[optind]))
			ctx = ibv_open_device(list[i]);
	if (!ctx) {
		fprintf(stderr, "vmmbib-reg-mr: no device %s could be opened (see ibv_devices)\n",
			argv[optind]);
		return 1;
	}
	pd = ibv_alloc_pd(ctx);
	if (!pd)
		die("ibv_alloc_pd", errno);
	reg_ok = reg_mr_figures(pd, max_pages);
	qp_rate(ctx, pd, gid_index, secs);
	ibv_dealloc_pd(pd);
	ibv_close_device(ctx);
	ibv_free_device_list(list);
	return reg_ok ? 0 : 1;
usage:
	fprintf(stderr, "usage: vmmbib-reg-mr [-x GID_INDEX] [-p MAX_PAGES] [-t SECONDS] DEVICE\n");
	return 2;
}
