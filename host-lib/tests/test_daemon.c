/*
 * vmmbibd with synthetic VMs: a real daemon process on a socket in a temp
 * directory, and VMs whose guest RAM is a sealed memfd, each driving its
 * device through the client library (vmmbib_client.h).  The guest driver
 * is guest.c's: the test links with -Wl,--wrap for the vmmbib_dev_* calls
 * it makes, so each of them goes to the client the "device" pointer really
 * is (see the __wrap_ functions below).  Usage: test_daemon PATH_TO_VMMBIBD
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "guest.h"
#include "tap.h"
#include "vmmbib_client.h"
#include "vmmbib_daemon.h"

/* Each VM's registered buffer: larger than guest.h's BUF_SIZE. */
#define CLIENT_VM_BUF_SIZE (256u << 10)
#define VM_RAM_SIZE (8u << 20)
#define QKEY        0x11111111u

/* ---- guest.c's device calls, sent to the daemon instead ---- */

struct raw_vm;
static struct raw_vm *as_raw(struct vmmbib_dev *dev);
static size_t raw_execute(struct raw_vm *r, const void *req, size_t req_len,
                          void *reply, size_t reply_cap);
static void *raw_db_pages(struct raw_vm *r);
static void raw_kick(struct raw_vm *r);

size_t __wrap_vmmbib_dev_execute(struct vmmbib_dev *dev, const void *req,
                                 size_t req_len, void *reply,
                                 size_t reply_cap);
void *__wrap_vmmbib_dev_db_pages(struct vmmbib_dev *dev);
void __wrap_vmmbib_dev_kick(struct vmmbib_dev *dev);
void __wrap_vmmbib_dev_doorbell(struct vmmbib_dev *dev, uint32_t slot,
                                uint64_t doorbell);

size_t __wrap_vmmbib_dev_execute(struct vmmbib_dev *dev, const void *req,
                                 size_t req_len, void *reply,
                                 size_t reply_cap)
{
    if (as_raw(dev)) {
        return raw_execute(as_raw(dev), req, req_len, reply, reply_cap);
    }
    return vmmbib_client_execute((struct vmmbib_client *)dev, req, req_len,
                                 reply, reply_cap);
}

void *__wrap_vmmbib_dev_db_pages(struct vmmbib_dev *dev)
{
    if (as_raw(dev)) {
        return raw_db_pages(as_raw(dev));
    }
    return vmmbib_client_db_pages((struct vmmbib_client *)dev);
}

void __wrap_vmmbib_dev_kick(struct vmmbib_dev *dev)
{
    if (as_raw(dev)) {
        raw_kick(as_raw(dev));
        return;
    }
    vmmbib_client_kick((struct vmmbib_client *)dev);
}

void __wrap_vmmbib_dev_doorbell(struct vmmbib_dev *dev, uint32_t slot,
                                uint64_t doorbell)
{
    /* Raw VMs ring doorbells in their pages only (VMMBIB_DB_MODE_RING). */
    if (!as_raw(dev)) {
        vmmbib_client_doorbell((struct vmmbib_client *)dev, slot, doorbell);
    }
}

/* ---- the daemon ---- */

static char tmpdir[64];
static char sock_path[128];
static char log_path[128];
static const char *daemon_exe;
static pid_t daemon_pid = -1;

static int raw_connect(void)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    strcpy(addr.sun_path, sock_path);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof(addr))) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool daemon_start(void)
{
    uint64_t end = mono_ms() + 5000;

    daemon_pid = fork();
    if (daemon_pid == 0) {
        int log = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
        char arg[160], threads[48];

        dup2(log, STDERR_FILENO);
        snprintf(arg, sizeof(arg), "--socket=%s", sock_path);
        /* VMMBIB_TEST_ENGINE_THREADS: the daemon's --engine-threads. */
        snprintf(threads, sizeof(threads), "--engine-threads=%u",
                 test_engine_threads() ? test_engine_threads() : 1);
        execl(daemon_exe, daemon_exe, arg, "--idle-poll-us=200", threads,
              (char *)NULL);
        fprintf(stderr, "cannot run %s: %s\n", daemon_exe, strerror(errno));
        _exit(127);
    }
    while (mono_ms() < end) {
        int fd = raw_connect();

        if (fd >= 0) {
            close(fd);
            return true;
        }
        if (waitpid(daemon_pid, NULL, WNOHANG) == daemon_pid) {
            daemon_pid = -1;
            return false;
        }
        usleep(10000);
    }
    return false;
}

/* SIGTERM, and the exit status (-1: it did not stop within 5 s). */
static int daemon_stop(void)
{
    uint64_t end = mono_ms() + 5000;
    int status;

    kill(daemon_pid, SIGTERM);
    while (mono_ms() < end) {
        if (waitpid(daemon_pid, &status, WNOHANG) == daemon_pid) {
            daemon_pid = -1;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 +
                   WTERMSIG(status);
        }
        usleep(10000);
    }
    kill(daemon_pid, SIGKILL);
    waitpid(daemon_pid, &status, 0);
    daemon_pid = -1;
    return -1;
}

/* How often @needle appears in the daemon's log so far. */
static int log_count(const char *needle)
{
    FILE *f = fopen(log_path, "r");
    char line[512];
    int n = 0;

    if (!f) {
        return 0;
    }
    while (fgets(line, sizeof(line), f)) {
        n += strstr(line, needle) != NULL;
    }
    fclose(f);
    return n;
}

/* Wait up to 2 s until @needle appears @n times in the daemon's log. */
static bool log_wait(const char *needle, int n)
{
    uint64_t end = mono_ms() + 2000;

    while (log_count(needle) < n) {
        if (mono_ms() >= end) {
            return false;
        }
        usleep(1000);
    }
    return true;
}

static void log_dump(void)
{
    FILE *f = fopen(log_path, "r");
    char line[512];

    while (f && fgets(line, sizeof(line), f)) {
        printf("# daemon: %s", line);
    }
    if (f) {
        fclose(f);
    }
}

/* ---- a synthetic VM: guest RAM in a memfd, events from a thread ---- */

struct client_vm {
    struct vm vm;                   /* vm.dev: the client, for guest.c */
    int memfd;
    struct vmmbib_client *client;
    pthread_t events;
    int stop_fd;
    bool fatal;
};

static void vm_event(void *opaque, const struct vmmbib_event *ev)
{
    struct client_vm *v = opaque;

    if (le16toh(ev->type) == VMMBIB_EVENT_DEVICE_FATAL) {
        __atomic_store_n(&v->fatal, true, __ATOMIC_RELEASE);
    }
    guest_host_ops.event(&v->vm.g, ev);
}

static const struct vmmbib_host_ops vm_ops = {
    .event = vm_event,
};

/* What a VMM's main loop does: wait on the event fd, then process. */
static void *vm_event_thread(void *opaque)
{
    struct client_vm *v = opaque;

    for (;;) {
        struct pollfd pfd[3] = {
            { .fd = vmmbib_client_event_fd(v->client), .events = POLLIN },
            { .fd = vmmbib_client_socket_fd(v->client), .events = POLLIN },
            { .fd = v->stop_fd, .events = POLLIN },
        };

        poll(pfd, 3, -1);
        if (pfd[2].revents) {
            return NULL;
        }
        if (!vmmbib_client_process_events(v->client)) {
            return NULL;
        }
    }
}

/*
 * Guest RAM as QEMU's memory-backend-memfd makes it: sealed, shared.  The
 * guest's own RAM (guest_init's) goes; *memfd backs it instead.
 */
static bool memfd_ram(struct guest *g, int *memfd)
{
    void *p;

    guest_init(g, VM_RAM_SIZE);
    guest_fini(g);
    pthread_mutex_init(&g->lock, NULL);
    *memfd = memfd_create("guest-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (*memfd < 0 || ftruncate(*memfd, VM_RAM_SIZE) ||
        fcntl(*memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW)) {
        return false;
    }
    p = mmap(NULL, VM_RAM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
             *memfd, 0);
    if (p == MAP_FAILED) {
        return false;
    }
    g->ram = p;
    return true;
}

static bool vm_ram(struct client_vm *v)
{
    return memfd_ram(&v->vm.g, &v->memfd);
}

static void vm_config(struct vmmbib_dev_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    vmmbib_limits_default(&cfg->limits);
    cfg->limits.max_ucontext = 8;
    cfg->uar_slots = 8;
    cfg->doorbell_mode = VMMBIB_DB_MODE_RING;
}

/* Connect as @id, describe the RAM; err gets the client's sentence. */
static bool vm_connect(struct client_vm *v, const char *id, char *err,
                       size_t err_len)
{
    struct vmmbib_dev_config cfg;
    struct vmmbib_client_region r = {
        .gpa = GUEST_RAM_BASE, .size = VM_RAM_SIZE, .fd = v->memfd,
    };

    vm_config(&cfg);
    v->client = vmmbib_client_connect(sock_path, id, &cfg, &vm_ops, v, err,
                                      err_len);
    if (!v->client) {
        return false;
    }
    v->vm.dev = (struct vmmbib_dev *)v->client;
    v->stop_fd = eventfd(0, EFD_CLOEXEC);
    if (pthread_create(&v->events, NULL, vm_event_thread, v)) {
        return false;
    }
    return vmmbib_client_set_memory(v->client, &r, 1, err, err_len);
}

/* A VM with a context, a PD and a registered buffer. */
static bool vm_start(struct client_vm *v, const char *id)
{
    char err[256];

    memset(v, 0, sizeof(*v));
    if (!vm_ram(v)) {
        return false;
    }
    if (!vm_connect(v, id, err, sizeof(err))) {
        printf("# %s: %s\n", id, err);
        return false;
    }
    return vm_ctx(&v->vm, CLIENT_VM_BUF_SIZE, ACCESS_ALL_RIGHTS);
}

/* Leave without a word: what the daemon sees when QEMU is killed. */
static void vm_stop(struct client_vm *v)
{
    if (v->client) {
        eventfd_write(v->stop_fd, 1);
        pthread_join(v->events, NULL);
        close(v->stop_fd);
        vmmbib_client_free(v->client);
        v->client = NULL;
    }
    if (v->vm.g.ram) {
        munmap(v->vm.g.ram, VM_RAM_SIZE);
        v->vm.g.ram = NULL;
    }
    if (v->memfd > 0) {
        close(v->memfd);
    }
    guest_fini(&v->vm.g);
}

/* ---- tests ---- */

static void test_socket_mode(void)
{
    struct stat st;

    TAP_CHECK(stat(sock_path, &st) == 0 && S_ISSOCK(st.st_mode) &&
              (st.st_mode & 0777) == 0600,
              "the socket is mode 0600: only the daemon's user connects");
}

static void test_rc(struct client_vm *a, struct client_vm *b)
{
    struct rc_pair p;
    struct vmmbib_cqe c;
    struct vmmbib_sge s;
    const uint32_t len = 100000;

    TAP_CHECK(port_lid(a->vm.dev) != port_lid(b->vm.dev) &&
              port_lid(a->vm.dev) == vmmbib_client_lid(a->client),
              "two VMs: distinct LIDs, as QUERY_PORT and HELLO report them");
    TAP_CHECK(rc_pair_create(&p, &a->vm.c, a->vm.pd, &b->vm.c, b->vm.pd,
                             NULL) == OK,
              "RC QPs in two VMs connect");

    /* SEND: A -> B */
    pattern_fill(a->vm.buf.p, len, 1);
    s = buf_sge(&b->vm, 0, len);
    qp_post_recv(&p.b, 0x11, &s, 1);
    s = buf_sge(&a->vm, 0, len);
    post_send(&p.a, 0x12, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x12, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS),
              "SEND across VMs completes at the sender");
    TAP_CHECK(cq_wait(&p.b_rcq, &c, 1) == 1 &&
              cqe_is(&c, 0x11, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(c.byte_len) == len &&
              pattern_check(b->vm.buf.p, len, 1),
              "SEND across VMs: the receiver has the data");

    /* RDMA WRITE: B -> A */
    pattern_fill(b->vm.buf.p + 131072, len, 2);
    s = buf_sge(&b->vm, 131072, len);
    post_send(&p.b, 0x21, VMMBIB_WR_RDMA_WRITE, &s, 1, a->vm.buf.gpa + 131072,
              a->vm.mr.rkey);
    TAP_CHECK(cq_wait(&p.b_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x21, VMMBIB_WC_RDMA_WRITE, VMMBIB_WC_SUCCESS) &&
              pattern_check(a->vm.buf.p + 131072, len, 2),
              "RDMA WRITE into another VM's memory");

    /* RDMA READ: A reads B */
    pattern_fill(b->vm.buf.p, 4096, 3);
    memset(a->vm.buf.p, 0, 4096);
    s = buf_sge(&a->vm, 0, 4096);
    post_send(&p.a, 0x31, VMMBIB_WR_RDMA_READ, &s, 1, b->vm.buf.gpa,
              b->vm.mr.rkey);
    TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x31, VMMBIB_WC_RDMA_READ, VMMBIB_WC_SUCCESS) &&
              pattern_check(a->vm.buf.p, 4096, 3),
              "RDMA READ from another VM's memory");

    TAP_CHECK(guest_wait_event(&a->vm.g, VMMBIB_EVENT_PORT_ACTIVE, 1, 1,
                               wait_timeout_ms()),
              "events reach the VM through the ring (PORT_ACTIVE)");
}

static void test_ud(struct client_vm *a, struct client_vm *b)
{
    struct gcq as, ar, bs, br;
    struct gqp qa, qb;
    struct vmmbib_send_wqe w = {
        .wr_id = htole64(0x41),
        .opcode = VMMBIB_WR_SEND,
        .flags = VMMBIB_WQE_SIGNALED,
    };
    struct vmmbib_cqe c;
    struct vmmbib_sge s;
    uint32_t ah;

    TAP_CHECK(make_ud(&a->vm.c, a->vm.pd, &as, &ar, &qa, QKEY) == OK &&
              make_ud(&b->vm.c, b->vm.pd, &bs, &br, &qb, QKEY) == OK &&
              ah_create(&a->vm.c, a->vm.pd, port_lid(b->vm.dev), &ah) == OK,
              "UD QPs in two VMs, an AH to the other VM's LID");
    pattern_fill(a->vm.buf.p, 1000, 4);
    memset(b->vm.buf.p, 0, 2048);
    s = buf_sge(&b->vm, 0, VMMBIB_GRH_SIZE + 1024);
    qp_post_recv(&qb, 0x42, &s, 1);
    w.ud.ah_handle = htole32(ah);
    w.ud.remote_qpn = htole32(qb.qpn);
    w.ud.remote_qkey = htole32(QKEY);
    s = buf_sge(&a->vm, 0, 1000);
    qp_post_send(&qa, &w, &s, 1, NULL, 0, true);
    TAP_CHECK(cq_wait(&as, &c, 1) == 1 &&
              cqe_is(&c, 0x41, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS),
              "UD send to another VM completes");
    TAP_CHECK(cq_wait(&br, &c, 1) == 1 &&
              cqe_is(&c, 0x42, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              le32toh(c.byte_len) == 1000 + VMMBIB_GRH_SIZE &&
              le32toh(c.src_qp) == qa.qpn &&
              le16toh(c.slid) == port_lid(a->vm.dev) &&
              pattern_check(b->vm.buf.p + VMMBIB_GRH_SIZE, 1000, 4),
              "UD recv in the other VM: data, src_qp and slid of the sender");
}

static void test_isolation(struct client_vm *a, struct client_vm *b)
{
    struct vmmbib_cmd_destroy d = { 0 };
    struct vmmbib_cmd_query_qp q = { 0 };
    struct vmmbib_resp_query_qp qr;
    struct gcq acq[4];
    struct gqp aqp[4];
    struct qp_opts o;
    struct rc_pair p;
    struct gbuf nb;
    struct gmr nomr;
    struct vmmbib_cqe c;
    struct vmmbib_sge s;
    int i;

    /* A has more QPs than B: their handles name nothing in B's device. */
    qp_opts_default(&o, VMMBIB_QPT_RC);
    for (i = 0; i < 4; i++) {
        TAP_CHECK(cq_create(&a->vm.c, 16, &acq[i]) == OK &&
                  qp_create(&a->vm.c, a->vm.pd, &acq[i], &acq[i], NULL, &o,
                            &aqp[i]) == OK, "A creates a QP");
    }
    d.handle = htole32(aqp[3].handle);
    TAP_CHECK(cmd(b->vm.dev, VMMBIB_CMD_DESTROY_QP, b->vm.c.handle, &d,
                  sizeof(d), NULL, 0) == VMMBIB_STATUS_BAD_HANDLE,
              "B destroying A's QP handle: BAD_HANDLE");
    d.handle = htole32(a->vm.mr.handle);
    TAP_CHECK(cmd(b->vm.dev, VMMBIB_CMD_DEREG_MR, a->vm.c.handle + 0x1000000,
                  &d, sizeof(d), NULL, 0) != OK,
              "B naming a context it does not have fails");
    q.qp_handle = htole32(aqp[3].handle);
    TAP_CHECK(cmd(a->vm.dev, VMMBIB_CMD_QUERY_QP, a->vm.c.handle, &q, sizeof(q),
                  &qr, sizeof(qr)) == OK,
              "A's QP is untouched");

    /* B's second context cannot use objects of B's first: NOT_OWNER. */
    {
        struct gctx c2;

        d.handle = htole32(b->vm.pd);
        TAP_CHECK(ctx_create(&c2, b->vm.dev, &b->vm.g) == OK &&
                  cmd(b->vm.dev, VMMBIB_CMD_DESTROY_PD, c2.handle, &d,
                      sizeof(d), NULL, 0) == VMMBIB_STATUS_NOT_OWNER,
                  "another context's PD: NOT_OWNER");
    }

    /* Remote keys: forged ones and ones without remote rights fail. */
    TAP_CHECK(rc_pair_create(&p, &b->vm.c, b->vm.pd, &a->vm.c, a->vm.pd,
                             NULL) == OK,
              "isolation: B and A connected");
    s = buf_sge(&b->vm, 0, 64);
    post_send(&p.a, 0x51, VMMBIB_WR_RDMA_WRITE, &s, 1, a->vm.buf.gpa,
              a->vm.mr.rkey ^ 0x100);
    TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x51, VMMBIB_WC_RDMA_WRITE,
                     VMMBIB_WC_REM_ACCESS_ERR),
              "a forged rkey: REM_ACCESS_ERR");

    TAP_CHECK(rc_pair_create(&p, &b->vm.c, b->vm.pd, &a->vm.c, a->vm.pd,
                             NULL) == OK,
              "isolation: B and A connected again");
    gbuf_alloc(&a->vm.g, 4096, &nb);
    memset(nb.p, 0x5a, 4096);
    TAP_CHECK(mr_reg(&a->vm.c, a->vm.pd, nb.gpa, 4096,
                     VMMBIB_ACCESS_LOCAL_WRITE, &nomr) == OK,
              "A registers an MR without remote rights");
    pattern_fill(b->vm.buf.p, 64, 5);
    post_send(&p.a, 0x52, VMMBIB_WR_RDMA_WRITE, &s, 1, nb.gpa, nomr.rkey);
    TAP_CHECK(cq_wait(&p.a_scq, &c, 1) == 1 &&
              cqe_is(&c, 0x52, VMMBIB_WC_RDMA_WRITE,
                     VMMBIB_WC_REM_ACCESS_ERR) &&
              nb.p[0] == 0x5a && nb.p[63] == 0x5a,
              "the key of an MR without REMOTE_WRITE: REM_ACCESS_ERR, "
              "memory untouched");
}

/* Drain @cq until @n CQEs arrived; the first error status, or SUCCESS. */
static int drain(struct gcq *cq, int n, int *got, uint8_t *first_err)
{
    struct vmmbib_cqe c[64];
    uint64_t end = mono_ms() + 3000;

    *got = 0;
    *first_err = VMMBIB_WC_SUCCESS;
    while (*got < n && mono_ms() < end) {
        int k = cq_poll(cq, c, n - *got < 64 ? n - *got : 64);

        for (int i = 0; i < k; i++) {
            if (c[i].status != VMMBIB_WC_SUCCESS &&
                *first_err == VMMBIB_WC_SUCCESS) {
                *first_err = c[i].status;
            }
        }
        *got += k;
        if (!k) {
            usleep(200);
        }
    }
    return *got;
}

/*
 * VM A dies (its client goes away mid-traffic, as when QEMU is killed):
 * B's QP completes everything with errors, B keeps working with C, and A
 * coming back under its id gets its LID again.
 */
static void test_disconnect(struct client_vm *a, struct client_vm *b)
{
    struct rc_pair p, pc;
    struct client_vm c;
    struct vmmbib_sge s;
    struct vmmbib_cqe e;
    uint16_t a_lid = vmmbib_client_lid(a->client);
    uint64_t a_guid = vmmbib_client_node_guid(a->client);
    uint8_t first_err;
    int got, i;
    struct rc_opts o;

    rc_opts_default(&o);
    o.timeout = 4;              /* 64 us, so retries end quickly */
    o.retry_cnt = 2;
    TAP_CHECK(rc_pair_create(&p, &b->vm.c, b->vm.pd, &a->vm.c, a->vm.pd,
                             &o) == OK,
              "disconnect: B and A connected");
    /* 15 WQEs: the CQ has 16 entries. */
    s = buf_sge(&b->vm, 0, CLIENT_VM_BUF_SIZE);
    for (i = 0; i < 8; i++) {
        post_send(&p.a, 0x60 + i, VMMBIB_WR_RDMA_WRITE, &s, 1, a->vm.buf.gpa,
                  a->vm.mr.rkey);
    }
    vm_stop(a);
    /* Until the daemon saw the socket close, A's device still works. */
    log_wait("VM vm-a: the connection closed", 1);
    for (; i < 15; i++) {
        post_send(&p.a, 0x60 + i, VMMBIB_WR_RDMA_WRITE, &s, 1, a->vm.buf.gpa,
                  a->vm.mr.rkey);
    }
    TAP_CHECK(drain(&p.a_scq, 15, &got, &first_err) == 15,
              "A's socket closes during traffic: every WQE of B completes");
    printf("# first error status %u\n", first_err);
    TAP_CHECK(first_err == VMMBIB_WC_RETRY_EXC_ERR ||
              first_err == VMMBIB_WC_WR_FLUSH_ERR,
              "B's completions say RETRY_EXC_ERR or WR_FLUSH_ERR");
    TAP_CHECK(qp_state(&p.a) == VMMBIB_QPS_ERR, "B's QP is in ERR");
    TAP_CHECK(log_count("VM vm-a: the connection closed; disconnected") == 1,
              "the daemon logs A's disconnect");

    /* B and a third VM. */
    TAP_CHECK(vm_start(&c, "vm-c"), "a third VM joins");
    TAP_CHECK(rc_pair_create(&pc, &b->vm.c, b->vm.pd, &c.vm.c, c.vm.pd,
                             NULL) == OK,
              "B connects to C");
    pattern_fill(b->vm.buf.p, 8192, 6);
    s = buf_sge(&b->vm, 0, 8192);
    post_send(&pc.a, 0x71, VMMBIB_WR_RDMA_WRITE, &s, 1, c.vm.buf.gpa,
              c.vm.mr.rkey);
    TAP_CHECK(cq_wait(&pc.a_scq, &e, 1) == 1 &&
              cqe_is(&e, 0x71, VMMBIB_WC_RDMA_WRITE, VMMBIB_WC_SUCCESS) &&
              pattern_check(c.vm.buf.p, 8192, 6),
              "B keeps working: RDMA WRITE into C");

    TAP_CHECK(vm_start(a, "vm-a"), "A reconnects under its id");
    TAP_CHECK(vmmbib_client_lid(a->client) == a_lid &&
              port_lid(a->vm.dev) == a_lid &&
              vmmbib_client_node_guid(a->client) == a_guid,
              "the same VM id gets the same LID and GUID");
    {
        char err[256];
        struct client_vm dup;

        memset(&dup, 0, sizeof(dup));
        TAP_CHECK(vm_ram(&dup) && !vm_connect(&dup, "vm-c", err, sizeof(err)) &&
                  strstr(err, "connected already"),
                  "a second connection under a live id is refused");
        printf("# %s\n", err);
        vm_stop(&dup);
    }
    vm_stop(&c);
}

/* What a VM tells its peer to connect an RC QP and write into it. */
struct rc_peer {
    uint16_t lid;
    uint32_t qpn;
    uint32_t rkey;
    uint64_t addr;
};

/* A child process's VM: an RC QP to @b's, then it waits to be killed. */
static void killed_child(int to_parent, int from_parent)
{
    struct client_vm k;
    struct gcq cq;
    struct gqp qp;
    struct qp_opts o;
    struct rc_opts ro;
    struct rc_peer me, peer;

    rc_opts_default(&ro);
    qp_opts_default(&o, VMMBIB_QPT_RC);
    if (!vm_start(&k, "vm-k") || cq_create(&k.vm.c, 16, &cq) != OK ||
        qp_create(&k.vm.c, k.vm.pd, &cq, &cq, NULL, &o, &qp) != OK) {
        _exit(1);
    }
    me = (struct rc_peer) {
        .lid = vmmbib_client_lid(k.client), .qpn = qp.qpn,
        .rkey = k.vm.mr.rkey, .addr = k.vm.buf.gpa,
    };
    if (write(to_parent, &me, sizeof(me)) != sizeof(me) ||
        read(from_parent, &peer, sizeof(peer)) != sizeof(peer) ||
        qp_rc_init(&qp, ro.access) != OK ||
        qp_rc_rtr(&qp, peer.lid, peer.qpn, &ro) != OK ||
        qp_rc_rts(&qp, &ro) != OK ||
        write(to_parent, &me, sizeof(me)) != sizeof(me)) {
        _exit(1);
    }
    for (;;) {
        pause();
    }
}

/* A VM whose process is SIGKILLed during traffic, as when QEMU is. */
static void test_killed(struct client_vm *b)
{
    int up[2], down[2];
    struct rc_peer k, me;
    struct gcq cq;
    struct gqp qp;
    struct qp_opts o;
    struct rc_opts ro;
    struct vmmbib_sge s = buf_sge(&b->vm, 0, CLIENT_VM_BUF_SIZE);
    struct vmmbib_cqe e;
    uint8_t first_err;
    int got, i, status;
    pid_t pid;

    rc_opts_default(&ro);
    ro.timeout = 4;
    ro.retry_cnt = 2;
    qp_opts_default(&o, VMMBIB_QPT_RC);
    if (pipe(up) || pipe(down)) {
        TAP_CHECK(0, "killed VM: pipes");
        return;
    }
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        killed_child(up[1], down[0]);
    }
    TAP_CHECK(pid > 0 && read(up[0], &k, sizeof(k)) == sizeof(k) &&
              cq_create(&b->vm.c, 16, &cq) == OK &&
              qp_create(&b->vm.c, b->vm.pd, &cq, &cq, NULL, &o, &qp) == OK &&
              qp_rc_init(&qp, ro.access) == OK &&
              qp_rc_rtr(&qp, k.lid, k.qpn, &ro) == OK &&
              qp_rc_rts(&qp, &ro) == OK,
              "a VM in another process; B's RC QP connected to it");
    me = (struct rc_peer) { .lid = port_lid(b->vm.dev), .qpn = qp.qpn };
    TAP_CHECK(write(down[1], &me, sizeof(me)) == sizeof(me) &&
              read(up[0], &k, sizeof(k)) == sizeof(k),
              "its QP is connected to B's");
    post_send(&qp, 0x90, VMMBIB_WR_RDMA_WRITE, &s, 1, k.addr, k.rkey);
    TAP_CHECK(cq_wait(&cq, &e, 1) == 1 &&
              cqe_is(&e, 0x90, VMMBIB_WC_RDMA_WRITE, VMMBIB_WC_SUCCESS),
              "B writes into the other process's VM");
    for (i = 1; i < 6; i++) {
        post_send(&qp, 0x90 + i, VMMBIB_WR_RDMA_WRITE, &s, 1, k.addr,
                  k.rkey);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    TAP_CHECK(log_wait("VM vm-k: the connection closed", 1),
              "the daemon notices the process died");
    for (; i < 12; i++) {
        post_send(&qp, 0x90 + i, VMMBIB_WR_RDMA_WRITE, &s, 1, k.addr,
                  k.rkey);
    }
    drain(&cq, 11, &got, &first_err);
    printf("# %d CQEs, first error status %u\n", got, first_err);
    TAP_CHECK(WIFSIGNALED(status) && got == 11 &&
              (first_err == VMMBIB_WC_RETRY_EXC_ERR ||
               first_err == VMMBIB_WC_WR_FLUSH_ERR),
              "its process SIGKILLed mid-traffic: B's WQEs all complete, "
              "with errors");
    close(up[0]);
    close(up[1]);
    close(down[0]);
    close(down[1]);
}

/* ---- hostile clients: the protocol by hand, not the client library ---- */

#define MAX_RAW_VMS 2

/* A client that speaks the protocol itself, so that it can misbehave. */
struct raw_vm {
    struct vm vm;                   /* vm.dev: this raw_vm, for guest.c */
    int sock;
    int memfd;
    int fds[VMMBIBD_MAX_FDS];       /* the HELLO reply's */
    unsigned int nfds;
    struct vmmbibd_hello_reply r;
    uint8_t *db;
    uint8_t *ring;
    uint32_t seq;
    char why[256];                  /* the sentence of the last refusal */
};

static struct raw_vm *raw_vms[MAX_RAW_VMS];

static struct raw_vm *as_raw(struct vmmbib_dev *dev)
{
    for (int i = 0; i < MAX_RAW_VMS; i++) {
        if (raw_vms[i] && (struct vmmbib_dev *)raw_vms[i] == dev) {
            return raw_vms[i];
        }
    }
    return NULL;
}

/*
 * Receive exactly @len bytes (3 s at most); fds that come along go to
 * @fds, or are closed if @fds is NULL.  False on EOF, error or timeout.
 */
static bool raw_recv(int sock, void *buf, size_t len, int *fds,
                     unsigned int *nfds)
{
    while (len) {
        union {
            char buf[CMSG_SPACE(sizeof(int) * VMMBIBD_MAX_FDS)];
            struct cmsghdr align;
        } control;
        struct iovec iov = { .iov_base = buf, .iov_len = len };
        struct msghdr msg = {
            .msg_iov = &iov,
            .msg_iovlen = 1,
            .msg_control = control.buf,
            .msg_controllen = sizeof(control.buf),
        };
        struct pollfd pfd = { .fd = sock, .events = POLLIN };
        struct cmsghdr *cmsg;
        ssize_t n;

        if (poll(&pfd, 1, 3000) != 1) {
            return false;
        }
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
        if (n <= 0) {
            return false;
        }
        for (cmsg = CMSG_FIRSTHDR(&msg); cmsg;
             cmsg = CMSG_NXTHDR(&msg, cmsg)) {
            unsigned int k = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);

            for (unsigned int i = 0; i < k; i++) {
                int fd;

                memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(fd));
                if (fds && *nfds < VMMBIBD_MAX_FDS) {
                    fds[(*nfds)++] = fd;
                } else {
                    close(fd);
                }
            }
        }
        buf = (uint8_t *)buf + n;
        len -= n;
    }
    return true;
}

/*
 * One request and its reply: returns the reply's result (its payload in
 * @out, at most @cap bytes, *out_len the length; an error's sentence in
 * r->why), or -1 if no well-formed reply came.
 */
static int raw_transact(struct raw_vm *r, uint16_t type, const void *payload,
                        uint32_t size, const int *fds, unsigned int nfds,
                        void *out, uint32_t cap, uint32_t *out_len)
{
    uint8_t buf[VMMBIBD_MAX_PAYLOAD + 1];
    struct vmmbibd_hdr hdr = { .type = type, .size = size, .seq = ++r->seq };
    struct vmmbibd_hdr rh;
    bool hello = type == VMMBIBD_MSG_HELLO;

    r->why[0] = '\0';
    if (vmmbibd_send(r->sock, &hdr, payload, fds, nfds) ||
        !raw_recv(r->sock, &rh, sizeof(rh), hello ? r->fds : NULL,
                  &r->nfds) ||
        rh.type != type || rh.seq != hdr.seq ||
        rh.flags != VMMBIBD_FLAG_REPLY || rh.size > VMMBIBD_MAX_PAYLOAD ||
        !raw_recv(r->sock, buf, rh.size, hello ? r->fds : NULL, &r->nfds)) {
        return -1;
    }
    if (rh.result != VMMBIBD_OK) {
        size_t n = rh.size < sizeof(r->why) - 1 ? rh.size :
                   sizeof(r->why) - 1;

        memcpy(r->why, buf, n);
        r->why[n] = '\0';
        return rh.result;
    }
    if (out) {
        memcpy(out, buf, rh.size < cap ? rh.size : cap);
    }
    if (out_len) {
        *out_len = rh.size < cap ? rh.size : cap;
    }
    return VMMBIBD_OK;
}

static void raw_close(struct raw_vm *r)
{
    for (int i = 0; i < MAX_RAW_VMS; i++) {
        if (raw_vms[i] == r) {
            raw_vms[i] = NULL;
        }
    }
    if (r->db) {
        munmap(r->db, r->r.db_size);
    }
    if (r->ring) {
        munmap(r->ring, r->r.event_ring_size);
    }
    for (unsigned int i = 0; i < r->nfds; i++) {
        if (r->fds[i] >= 0) {
            close(r->fds[i]);
        }
    }
    if (r->sock >= 0) {
        close(r->sock);
    }
    if (r->vm.g.ram) {
        munmap(r->vm.g.ram, VM_RAM_SIZE);
        r->vm.g.ram = NULL;
        guest_fini(&r->vm.g);
    }
    if (r->memfd >= 0) {
        close(r->memfd);
    }
    memset(r, 0, sizeof(*r));
    r->sock = r->memfd = -1;
}

/*
 * Connect and say HELLO as protocol @version with @nsend fds: returns the
 * result (-1: no reply).  On OK the reply's fds are checked and the
 * doorbell pages and the event ring mapped.
 */
static int raw_join(struct raw_vm *r, const char *id, uint32_t version,
                    const int *send_fds, unsigned int nsend)
{
    struct vmmbibd_hello h = {
        .version = version,
        .uar_slots = 8,
        .doorbell_mode = VMMBIB_DB_MODE_RING,
    };
    uint32_t len = 0;
    int ret;

    memset(r, 0, sizeof(*r));
    r->memfd = -1;
    vmmbib_limits_default(&h.limits);
    h.limits.max_ucontext = 8;
    strcpy(h.vm_id, id);
    r->sock = raw_connect();
    if (r->sock < 0) {
        return -1;
    }
    ret = raw_transact(r, VMMBIBD_MSG_HELLO, &h, sizeof(h), send_fds, nsend,
                       &r->r, sizeof(r->r), &len);
    if (ret != VMMBIBD_OK) {
        return ret;
    }
    if (len != sizeof(r->r) || r->nfds != VMMBIBD_HELLO_REPLY_FDS) {
        return -1;
    }
    r->db = mmap(NULL, r->r.db_size, PROT_READ | PROT_WRITE, MAP_SHARED,
                 r->fds[VMMBIBD_HELLO_FD_DB], 0);
    r->ring = mmap(NULL, r->r.event_ring_size, PROT_READ | PROT_WRITE,
                   MAP_SHARED, r->fds[VMMBIBD_HELLO_FD_RING], 0);
    if (r->db == MAP_FAILED || r->ring == MAP_FAILED) {
        r->db = r->ring = NULL;
        return -1;
    }
    for (int i = 0; i < MAX_RAW_VMS; i++) {
        if (!raw_vms[i]) {
            raw_vms[i] = r;
            break;
        }
    }
    r->vm.dev = (struct vmmbib_dev *)r;
    return VMMBIBD_OK;
}

/* MEMORY by hand: one region, [gpa, gpa + size) at @offset of @fd. */
static int raw_memory(struct raw_vm *r, uint64_t gpa, uint64_t size,
                      uint64_t offset, int fd)
{
    struct {
        struct vmmbibd_memory m;
        struct vmmbibd_region region;
    } msg = {
        .m = { .nregions = 1 },
        .region = { .gpa = gpa, .size = size, .offset = offset },
    };

    return raw_transact(r, VMMBIBD_MSG_MEMORY, &msg, sizeof(msg), &fd, 1,
                        NULL, 0, NULL);
}

/* A raw VM with RAM, a context, a PD and a registered buffer. */
static bool raw_start(struct raw_vm *r, const char *id)
{
    if (raw_join(r, id, VMMBIBD_PROTOCOL_VERSION, NULL, 0) != VMMBIBD_OK ||
        !memfd_ram(&r->vm.g, &r->memfd) ||
        raw_memory(r, GUEST_RAM_BASE, VM_RAM_SIZE, 0, r->memfd) !=
        VMMBIBD_OK) {
        return false;
    }
    return vm_ctx(&r->vm, CLIENT_VM_BUF_SIZE, ACCESS_ALL_RIGHTS);
}

static size_t raw_execute(struct raw_vm *r, const void *req, size_t req_len,
                          void *reply, size_t reply_cap)
{
    uint8_t payload[VMMBIBD_MAX_PAYLOAD];
    struct vmmbibd_command c = { .reply_cap = reply_cap };
    uint32_t len = 0;

    if (req_len > sizeof(payload) - sizeof(c) ||
        reply_cap > VMMBIBD_MAX_PAYLOAD) {
        return 0;
    }
    memcpy(payload, &c, sizeof(c));
    memcpy(payload + sizeof(c), req, req_len);
    if (raw_transact(r, VMMBIBD_MSG_COMMAND, payload, sizeof(c) + req_len,
                     NULL, 0, reply, reply_cap, &len) != VMMBIBD_OK) {
        return 0;
    }
    return len;
}

static void *raw_db_pages(struct raw_vm *r)
{
    return r->db;
}

static void raw_kick(struct raw_vm *r)
{
    eventfd_write(r->fds[VMMBIBD_HELLO_FD_KICK], 1);
}

/* A raw client after HELLO: its socket, for the malformed messages. */
static int raw_hello(const char *id)
{
    struct raw_vm r;
    int fd;

    if (raw_join(&r, id, VMMBIBD_PROTOCOL_VERSION, NULL, 0) != VMMBIBD_OK) {
        raw_close(&r);
        return -1;
    }
    fd = r.sock;
    r.sock = -1;
    raw_close(&r);
    return fd;
}

/* Whether the daemon closed @fd (EOF within a second). */
static bool closed_by_daemon(int fd)
{
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    char c[256];

    while (poll(&pfd, 1, 1000) == 1) {
        ssize_t n = recv(fd, c, sizeof(c), 0);

        if (n <= 0) {
            return true;
        }
    }
    return false;
}

static void test_malformed(struct client_vm *b)
{
    struct vmmbibd_hdr hdr = { .type = 99, .size = 0 };
    uint8_t junk[64] = { 0 };
    struct client_vm c;
    struct rc_pair p;
    struct vmmbib_cqe e;
    struct vmmbib_sge s;
    int before = log_count("protocol error");
    int fd, efd;

    fd = raw_connect();
    TAP_CHECK(fd >= 0 && vmmbibd_send(fd, &hdr, NULL, NULL, 0) == 0 &&
              closed_by_daemon(fd),
              "an unknown message type: disconnected");
    close(fd);

    fd = raw_connect();
    hdr = (struct vmmbibd_hdr) { .type = VMMBIBD_MSG_COMMAND, .size = 8 };
    TAP_CHECK(fd >= 0 && vmmbibd_send(fd, &hdr, junk, NULL, 0) == 0 &&
              closed_by_daemon(fd),
              "a COMMAND before HELLO: disconnected");
    close(fd);

    fd = raw_hello("bad-1");
    hdr = (struct vmmbibd_hdr) { .type = VMMBIBD_MSG_COMMAND,
                                 .size = 0x7fffffff };
    TAP_CHECK(fd >= 0 && send(fd, &hdr, sizeof(hdr), MSG_NOSIGNAL) ==
              sizeof(hdr) && closed_by_daemon(fd),
              "a header announcing 2 GiB: disconnected at once");
    close(fd);

    fd = raw_hello("bad-2");
    hdr = (struct vmmbibd_hdr) { .type = VMMBIBD_MSG_STATS, .size = 0 };
    efd = eventfd(0, 0);
    TAP_CHECK(fd >= 0 && vmmbibd_send(fd, &hdr, NULL, &efd, 1) == 0 &&
              closed_by_daemon(fd),
              "an fd with a message that takes none: disconnected");
    close(efd);
    close(fd);

    fd = raw_hello("bad-3");
    hdr = (struct vmmbibd_hdr) { .type = VMMBIBD_MSG_COMMAND, .size = 4 };
    TAP_CHECK(fd >= 0 && vmmbibd_send(fd, &hdr, junk, NULL, 0) == 0 &&
              closed_by_daemon(fd),
              "a COMMAND shorter than its header: disconnected");
    close(fd);

    fd = raw_hello("bad-4");
    hdr = (struct vmmbibd_hdr) { .type = VMMBIBD_MSG_HELLO, .size = 8 };
    TAP_CHECK(fd >= 0 && vmmbibd_send(fd, &hdr, junk, NULL, 0) == 0 &&
              closed_by_daemon(fd),
              "a second HELLO: disconnected");
    close(fd);

    /* Half a message, then gone: the daemon must not wait for the rest. */
    fd = raw_hello("bad-5");
    hdr = (struct vmmbibd_hdr) { .type = VMMBIBD_MSG_COMMAND, .size = 64 };
    TAP_CHECK(fd >= 0 && send(fd, &hdr, sizeof(hdr), MSG_NOSIGNAL) ==
              sizeof(hdr) && send(fd, junk, 10, MSG_NOSIGNAL) == 10,
              "half a message sent");
    close(fd);

    TAP_CHECK(log_count("protocol error") >= before + 6,
              "each protocol error is logged");

    /* The daemon and the other clients go on. */
    TAP_CHECK(vm_start(&c, "vm-c2"), "a new VM joins after the bad clients");
    TAP_CHECK(rc_pair_create(&p, &b->vm.c, b->vm.pd, &c.vm.c, c.vm.pd,
                             NULL) == OK,
              "B connects to it");
    pattern_fill(b->vm.buf.p, 1000, 7);
    s = buf_sge(&c.vm, 0, 1000);
    qp_post_recv(&p.b, 0x81, &s, 1);
    s = buf_sge(&b->vm, 0, 1000);
    post_send(&p.a, 0x82, VMMBIB_WR_SEND, &s, 1, 0, 0);
    TAP_CHECK(cq_wait(&p.b_rcq, &e, 1) == 1 &&
              cqe_is(&e, 0x81, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS) &&
              pattern_check(c.vm.buf.p, 1000, 7),
              "and data moves between B and it");
    vm_stop(&c);
}

/*
 * Traffic between two well-behaved VMs, on a thread, while hostile clients
 * do their worst: RDMA WRITEs of a new pattern each round, the data
 * checked in the target VM.
 */
struct traffic {
    struct client_vm *src, *dst;
    struct rc_pair p;
    pthread_t thread;
    bool stop;
    unsigned long rounds;           /* completed with the data checked */
    unsigned long bad;              /* a round with a wrong CQE or data */
};

static void *traffic_thread(void *opaque)
{
    struct traffic *t = opaque;
    struct vmmbib_sge s = buf_sge(&t->src->vm, 0, 4096);

    while (!__atomic_load_n(&t->stop, __ATOMIC_ACQUIRE)) {
        unsigned long n = t->rounds;
        unsigned int seed = 100 + n % 1000;
        struct vmmbib_cqe c;

        pattern_fill(t->src->vm.buf.p, 4096, seed);
        post_send(&t->p.a, n, VMMBIB_WR_RDMA_WRITE, &s, 1,
                  t->dst->vm.buf.gpa, t->dst->vm.mr.rkey);
        if (cq_wait(&t->p.a_scq, &c, 1) != 1 ||
            !cqe_is(&c, n, VMMBIB_WC_RDMA_WRITE, VMMBIB_WC_SUCCESS) ||
            !pattern_check(t->dst->vm.buf.p, 4096, seed)) {
            __atomic_store_n(&t->bad, t->bad + 1, __ATOMIC_RELEASE);
            return NULL;
        }
        __atomic_store_n(&t->rounds, n + 1, __ATOMIC_RELEASE);
    }
    return NULL;
}

static unsigned long traffic_rounds(struct traffic *t)
{
    return __atomic_load_n(&t->rounds, __ATOMIC_ACQUIRE);
}

/* Whether @n more rounds than @since completed, all good (3 s at most). */
static bool traffic_flows(struct traffic *t, unsigned long since,
                          unsigned long n)
{
    uint64_t end = mono_ms() + 3000;

    while (traffic_rounds(t) < since + n &&
           !__atomic_load_n(&t->bad, __ATOMIC_ACQUIRE) && mono_ms() < end) {
        usleep(1000);
    }
    return traffic_rounds(t) >= since + n &&
           !__atomic_load_n(&t->bad, __ATOMIC_ACQUIRE);
}

/*
 * Protocol versions: a version 2 QEMU (its HELLO passes two eventfds)
 * and a future one are refused with a sentence naming both versions,
 * then disconnected; this client, meeting a version 2 daemon, says so.
 */
static void test_old_version(void)
{
    struct raw_vm r;
    int efds[2] = { eventfd(0, 0), eventfd(0, 0) };
    int sv[2];
    struct vmmbibd_hdr refusal = {
        .type = VMMBIBD_MSG_HELLO, .flags = VMMBIBD_FLAG_REPLY, .seq = 1,
        .result = VMMBIBD_ERR_INVALID,
    };
    /* What a version 2 vmmbibd answered to a HELLO without fds. */
    static const char v2_text[] = "HELLO must be one struct vmmbibd_hello "
                                  "with two eventfds";
    struct vmmbib_dev_config cfg;
    struct vmmbib_client *c;
    char err[256] = "";

    TAP_CHECK(raw_join(&r, "old-qemu", 2, efds, 2) == VMMBIBD_ERR_INVALID &&
              strstr(r.why, "vmmbibd speaks protocol 3, this QEMU speaks 2: "
                     "use the QEMU and vmmbibd from the same build") &&
              closed_by_daemon(r.sock),
              "a version 2 HELLO (with its two eventfds): refused, naming "
              "both versions, and disconnected");
    printf("# %s\n", r.why);
    raw_close(&r);
    close(efds[0]);
    close(efds[1]);

    TAP_CHECK(raw_join(&r, "new-qemu", 4, NULL, 0) == VMMBIBD_ERR_INVALID &&
              strstr(r.why, "this QEMU speaks 4") && closed_by_daemon(r.sock),
              "a version 4 HELLO: refused, naming both versions");
    raw_close(&r);

    /* The client meets a version 2 daemon: its refusal is waiting. */
    refusal.size = sizeof(v2_text);
    vm_config(&cfg);
    TAP_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0 &&
              vmmbibd_send(sv[1], &refusal, v2_text, NULL, 0) == 0,
              "a fake version 2 daemon");
    c = vmmbib_client_new(sv[0], "vm-x", &cfg, NULL, NULL, err, sizeof(err));
    TAP_CHECK(!c && strstr(err, "vmmbibd speaks protocol 2, this QEMU speaks "
                           "3: use the QEMU and vmmbibd from the same build"),
              "the client meeting a version 2 daemon says which is which");
    printf("# %s\n", err);
    close(sv[1]);
}

/*
 * Fds of the wrong kind: HELLO takes none; a MEMORY region must be a
 * memfd, sealed against shrinking, not hugetlb, large enough, mappable.
 * Each gets an error status with the reason; the connection stays.
 */
static void test_wrong_fds(void)
{
    struct raw_vm r;
    int efds[2] = { eventfd(0, 0), eventfd(0, 0) };
    int pfd[2] = { -1, -1 }, sv[2] = { -1, -1 }, fd, ok;
    char path[160];
    struct {
        const char *what;
        int fd;
        uint64_t size;
        const char *why;
    } bad[9];
    unsigned int n = 0;

    TAP_CHECK(raw_join(&r, "fds-hello", VMMBIBD_PROTOCOL_VERSION, efds, 2) ==
              VMMBIBD_ERR_INVALID && strstr(r.why, "no fds") &&
              closed_by_daemon(r.sock),
              "HELLO with eventfds of the client's own: refused (the daemon "
              "makes them), disconnected");
    printf("# %s\n", r.why);
    raw_close(&r);
    close(efds[1]);

    TAP_CHECK(raw_join(&r, "fds-memory", VMMBIBD_PROTOCOL_VERSION, NULL, 0) ==
              VMMBIBD_OK,
              "a raw client joins");
    {
        struct stat st;
        int kick = r.fds[VMMBIBD_HELLO_FD_KICK];
        int call = r.fds[VMMBIBD_HELLO_FD_CALL];

        TAP_CHECK(fstat(call, &st) == 0 && S_ISFIFO(st.st_mode) &&
                  write(call, "x", 1) < 0 && errno == EBADF &&
                  eventfd_write(kick, 1) == 0,
                  "HELLO reply: KICK is an eventfd to write, CALL the read "
                  "end of a pipe (the client cannot write it)");
    }

    if (pipe2(pfd, O_CLOEXEC) == 0) {
        bad[n++] = (typeof(bad[0])) { "a pipe", pfd[0], 4096, "not a memfd" };
    }
    bad[n++] = (typeof(bad[0])) { "an eventfd", efds[0], 4096,
                                  "not a memfd" };
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0) {
        bad[n++] = (typeof(bad[0])) { "a socket", sv[0], 4096,
                                      "not a memfd" };
    }
    bad[n++] = (typeof(bad[0])) { "/dev/zero",
                                  open("/dev/zero", O_RDWR | O_CLOEXEC),
                                  4096, "not a memfd" };
    snprintf(path, sizeof(path), "%s/file", tmpdir);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    ok = fd >= 0 && ftruncate(fd, 8192) == 0;
    unlink(path);
    bad[n++] = (typeof(bad[0])) { "a regular file", ok ? fd : -1, 4096,
                                  "not a memfd" };
    fd = memfd_create("unsealed", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    ok = fd >= 0 && ftruncate(fd, 8192) == 0;
    bad[n++] = (typeof(bad[0])) { "an unsealed memfd", ok ? fd : -1, 4096,
                                  "not a memfd sealed" };
    fd = memfd_create("small", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    ok = fd >= 0 && ftruncate(fd, 4096) == 0 &&
         fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) == 0;
    bad[n++] = (typeof(bad[0])) { "a sealed memfd smaller than the region",
                                  ok ? fd : -1, 8192, "fewer than" };
    fd = memfd_create("readonly", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    ok = fd >= 0 && ftruncate(fd, 4096) == 0 &&
         fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_WRITE) == 0;
    bad[n++] = (typeof(bad[0])) { "a memfd sealed against writes",
                                  ok ? fd : -1, 4096, "cannot map it" };
    fd = memfd_create("huge", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB);
    if (fd >= 0 && ftruncate(fd, 2 << 20) == 0 &&
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) == 0) {
        bad[n++] = (typeof(bad[0])) { "a hugetlb memfd", fd, 2 << 20,
                                      "hugetlb" };
    } else {
        printf("# no hugetlb memfd on this host (%s): not tried\n",
               strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
    }
    for (unsigned int i = 0; i < n; i++) {
        char name[160];

        snprintf(name, sizeof(name), "MEMORY with %s: refused, with the "
                 "reason", bad[i].what);
        TAP_CHECK(bad[i].fd >= 0 &&
                  raw_memory(&r, GUEST_RAM_BASE, bad[i].size, 0, bad[i].fd) ==
                  VMMBIBD_ERR_INVALID && strstr(r.why, bad[i].why), "%s",
                  name);
        printf("# %s\n", r.why);
        if (bad[i].fd >= 0) {
            close(bad[i].fd);
        }
    }
    close(pfd[1]);
    close(sv[1]);

    /* A sparse memfd costs the client nothing; its mappings are bounded. */
    fd = memfd_create("sparse", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    ok = fd >= 0 && ftruncate(fd, 8ull << 40) == 0 &&
         fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) == 0;
    TAP_CHECK(ok && raw_memory(&r, GUEST_RAM_BASE, 8ull << 40, 0, fd) ==
              VMMBIBD_ERR_INVALID && strstr(r.why, "past 4096 GiB"),
              "MEMORY of 8 TiB from a sparse memfd: refused (a VM's "
              "mappings take at most 4 TiB of the daemon's address space)");
    printf("# %s\n", r.why);
    TAP_CHECK(ok && raw_memory(&r, GUEST_RAM_BASE, 3ull << 40, 0, fd) ==
              VMMBIBD_OK &&
              raw_memory(&r, GUEST_RAM_BASE, 3ull << 40, 3ull << 40, fd) ==
              VMMBIBD_ERR_INVALID && strstr(r.why, "past 4096 GiB"),
              "3 TiB of it is taken; another 3 TiB, while the first is "
              "kept until a reset, is refused");
    if (fd >= 0) {
        close(fd);
    }

    /* The one thing the daemon relies on: the seal stops a shrink. */
    TAP_CHECK(memfd_ram(&r.vm.g, &r.memfd) &&
              raw_memory(&r, GUEST_RAM_BASE, VM_RAM_SIZE, 0, r.memfd) ==
              VMMBIBD_OK,
              "after the refusals the connection works: a sealed memfd is "
              "taken");
    TAP_CHECK(ftruncate(r.memfd, 4096) < 0 && errno == EPERM,
              "the client cannot shrink its sealed RAM under the daemon");

    /* No reader on the CALL pipe: the daemon's write fails, harmlessly. */
    close(r.fds[VMMBIBD_HELLO_FD_CALL]);
    r.fds[VMMBIBD_HELLO_FD_CALL] = -1;
    {
        struct vmmbib_dev_stats st;
        uint32_t len = 0;

        TAP_CHECK(vm_ctx(&r.vm, 4096, ACCESS_ALL_RIGHTS) &&
                  raw_transact(&r, VMMBIBD_MSG_STATS, NULL, 0, NULL, 0, &st,
                               sizeof(st), &len) == VMMBIBD_OK &&
                  len == sizeof(st) && st.events >= 1,
                  "the client closed its CALL pipe: its event (PORT_ACTIVE) "
                  "finds no reader, the daemon goes on");
    }
    raw_close(&r);
}

/*
 * A VMM punches a hole into guest RAM the daemon maps (F_SEAL_SHRINK
 * allows it): the daemon's next access finds zeroed pages, not SIGBUS.
 */
static void test_hole(struct client_vm *a, struct client_vm *b)
{
    struct rc_pair p;
    struct vmmbib_cqe e;
    struct vmmbib_sge s;
    uint64_t off = 131072, ram_off = a->vm.buf.gpa + off - GUEST_RAM_BASE;

    pattern_fill(a->vm.buf.p + off, 65536, 8);
    memset(b->vm.buf.p + off, 0xee, 65536);
    TAP_CHECK(rc_pair_create(&p, &b->vm.c, b->vm.pd, &a->vm.c, a->vm.pd,
                             NULL) == OK &&
              fallocate(a->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                        ram_off, 65536) == 0,
              "A's VMM punches a hole into the RAM of A's registered buffer");
    s = buf_sge(&b->vm, off, 65536);
    post_send(&p.a, 0xa1, VMMBIB_WR_RDMA_READ, &s, 1, a->vm.buf.gpa + off,
              a->vm.mr.rkey);
    TAP_CHECK(cq_wait(&p.a_scq, &e, 1) == 1 &&
              cqe_is(&e, 0xa1, VMMBIB_WC_RDMA_READ, VMMBIB_WC_SUCCESS) &&
              b->vm.buf.p[off] == 0 && b->vm.buf.p[off + 65535] == 0,
              "B's RDMA READ of the hole: success, zeros (no SIGBUS)");
    pattern_fill(b->vm.buf.p + off, 65536, 9);
    post_send(&p.a, 0xa2, VMMBIB_WR_RDMA_WRITE, &s, 1, a->vm.buf.gpa + off,
              a->vm.mr.rkey);
    TAP_CHECK(cq_wait(&p.a_scq, &e, 1) == 1 &&
              cqe_is(&e, 0xa2, VMMBIB_WC_RDMA_WRITE, VMMBIB_WC_SUCCESS) &&
              pattern_check(a->vm.buf.p + off, 65536, 9),
              "B's RDMA WRITE into it: A sees the data");
}

/*
 * A client that never reads its CALL pipe, its event ring or its socket,
 * and clears O_NONBLOCK on the fds it got, while its guest raises
 * interrupts by the thousand: the daemon drops what does not fit and
 * goes on; a client that does not read its replies is disconnected.
 */
static void test_irq_flood(struct traffic *t)
{
    /* Two events a round: more than the ring (1024) and the pipe hold. */
    const int rounds = 2500;
    struct vmmbib_dev_stats st;
    struct raw_vm r;
    struct rc_pair p;
    struct vmmbib_sge s;
    struct vmmbib_cqe e;
    unsigned long before;
    uint32_t prod, dropped, len = 0;
    int good = 0, queued = -1, pipe_size;
    int call, kick, sent = 0;

    TAP_CHECK(raw_start(&r, "irq-flood") &&
              rc_pair_create(&p, &r.vm.c, r.vm.pd, &r.vm.c, r.vm.pd,
                             NULL) == OK,
              "a raw client with an RC QP pair of its own");
    call = r.fds[VMMBIBD_HELLO_FD_CALL];
    kick = r.fds[VMMBIBD_HELLO_FD_KICK];
    TAP_CHECK(fcntl(call, F_SETFL, 0) == 0 && fcntl(kick, F_SETFL, 0) == 0,
              "it clears O_NONBLOCK on its KICK eventfd and CALL pipe");
    before = traffic_rounds(t);
    for (int i = 0; i < rounds; i++) {
        cq_arm(&p.a_scq, VMMBIB_DB_ARM_NEXT);
        cq_arm(&p.b_rcq, VMMBIB_DB_ARM_NEXT);
        s = buf_sge(&r.vm, 0, 64);
        qp_post_recv(&p.b, i, &s, 1);
        post_send(&p.a, i, VMMBIB_WR_SEND, &s, 1, 0, 0);
        good += cq_wait(&p.a_scq, &e, 1) == 1 &&
                cqe_is(&e, i, VMMBIB_WC_SEND, VMMBIB_WC_SUCCESS) &&
                cq_wait(&p.b_rcq, &e, 1) == 1 &&
                cqe_is(&e, i, VMMBIB_WC_RECV, VMMBIB_WC_SUCCESS);
    }
    printf("# %d of %d rounds, the good VMs' traffic %lu rounds meanwhile\n",
           good, rounds, traffic_rounds(t) - before);
    TAP_CHECK(good == rounds,
              "its guest's SENDs all complete while nobody reads its events");
    TAP_CHECK(traffic_rounds(t) > before && traffic_flows(t, before, 1),
              "the good VMs' traffic went on during the flood, data checked");
    TAP_CHECK(raw_transact(&r, VMMBIBD_MSG_STATS, NULL, 0, NULL, 0, &st,
                           sizeof(st), &len) == VMMBIBD_OK &&
              len == sizeof(st) && st.events >= 2u * rounds,
              "STATS: the daemon raised every interrupt");
    memcpy(&prod, r.ring + VMMBIBD_RING_PRODUCER, sizeof(prod));
    memcpy(&dropped, r.ring + VMMBIBD_RING_DROPPED, sizeof(dropped));
    printf("# events %llu, ring producer %u, dropped %u\n",
           (unsigned long long)st.events, prod, dropped);
    TAP_CHECK(prod == r.r.event_ring_entries && prod + dropped == st.events,
              "the ring filled, the rest was dropped and counted");
    pipe_size = fcntl(call, F_GETPIPE_SZ);
    TAP_CHECK(ioctl(call, FIONREAD, &queued) == 0 && queued == pipe_size,
              "the CALL pipe is full: the daemon's writes found it so and "
              "went on");
    printf("# CALL pipe: %d of %d bytes\n", queued, pipe_size);

    /* Now requests without reading a reply. */
    before = traffic_rounds(t);
    for (; sent < 100000; sent++) {
        struct vmmbibd_hdr hdr = { .type = VMMBIBD_MSG_STATS, .seq = sent };
        struct pollfd pfd = { .fd = r.sock, .events = POLLOUT };

        if (poll(&pfd, 1, 2000) != 1 ||
            send(r.sock, &hdr, sizeof(hdr), MSG_NOSIGNAL | MSG_DONTWAIT) !=
            sizeof(hdr)) {
            break;
        }
    }
    printf("# %d requests sent unread\n", sent);
    TAP_CHECK(log_wait("VM irq-flood: a reply could not be sent; "
                       "disconnected", 1) && closed_by_daemon(r.sock),
              "a client that does not read its replies is disconnected");
    TAP_CHECK(traffic_flows(t, before, 20),
              "the good VMs' traffic goes on, data checked");
    raw_close(&r);
}

/* The hostile clients, while two good VMs keep moving data. */
static void test_hostile(struct client_vm *a, struct client_vm *b)
{
    struct traffic t = { .src = a, .dst = b };
    unsigned long before;

    TAP_CHECK(rc_pair_create(&t.p, &a->vm.c, a->vm.pd, &b->vm.c, b->vm.pd,
                             NULL) == OK &&
              pthread_create(&t.thread, NULL, traffic_thread, &t) == 0 &&
              traffic_flows(&t, 0, 10),
              "hostile clients: traffic between two good VMs, data checked");
    before = traffic_rounds(&t);
    test_old_version();
    test_wrong_fds();
    TAP_CHECK(traffic_flows(&t, before, 20),
              "the good VMs' traffic went on through the bad HELLOs and fds");
    test_irq_flood(&t);
    __atomic_store_n(&t.stop, true, __ATOMIC_RELEASE);
    pthread_join(t.thread, NULL);
    printf("# the good VMs' traffic: %lu rounds, %lu bad\n", t.rounds,
           t.bad);
    TAP_CHECK(!t.bad, "no round of the good VMs' traffic went wrong");
}

static void test_bad_memory(struct client_vm *b)
{
    struct vmmbib_client_region r = { .gpa = 0x40000000, .size = 4096 };
    char err[256] = "";
    int fd = memfd_create("unsealed", MFD_CLOEXEC);

    r.fd = fd;
    TAP_CHECK(fd >= 0 && ftruncate(fd, 4096) == 0 &&
              !vmmbib_client_set_memory(b->client, &r, 1, err, sizeof(err)) &&
              strstr(err, "sealed"),
              "an unsealed memfd is refused, with the reason");
    printf("# %s\n", err);
    TAP_CHECK(vmmbib_client_connected(b->client) && port_lid(b->vm.dev),
              "the refusal keeps the connection and the old table");
    close(fd);
}

static void test_shutdown(struct client_vm *b)
{
    struct vmmbib_dev_stats st;
    uint8_t reply[64];
    struct vmmbib_cmd_hdr req = { .opcode = htole16(VMMBIB_CMD_QUERY_DEVICE) };
    struct vmmbib_resp_hdr rh;
    uint64_t end;

    vmmbib_client_get_stats(b->client, &st);
    TAP_CHECK(st.commands > 10 && st.qps >= 1 && st.wqes > 0,
              "STATS: the daemon's counters of B's device");
    TAP_CHECK(daemon_stop() == 0, "SIGTERM: the daemon stops cleanly");
    TAP_CHECK(access(sock_path, F_OK) != 0, "the daemon removes its socket");
    end = mono_ms() + 2000;
    while (!__atomic_load_n(&b->fatal, __ATOMIC_ACQUIRE) && mono_ms() < end) {
        usleep(1000);
    }
    TAP_CHECK(__atomic_load_n(&b->fatal, __ATOMIC_ACQUIRE) &&
              !vmmbib_client_connected(b->client),
              "the VM gets DEVICE_FATAL when the daemon is gone");
    TAP_CHECK(vmmbib_client_execute(b->client, &req, sizeof(req), reply,
                                    sizeof(reply)) == sizeof(rh) &&
              (memcpy(&rh, reply, sizeof(rh)), le16toh(rh.status) ==
               VMMBIB_STATUS_DEVICE_ERROR),
              "commands then fail with DEVICE_ERROR, at once");
}

int main(int argc, char **argv)
{
    struct client_vm a, b;

    if (argc != 2) {
        fprintf(stderr, "usage: %s PATH_TO_VMMBIBD\n", argv[0]);
        return 2;
    }
    daemon_exe = argv[1];
    signal(SIGPIPE, SIG_IGN);
    strcpy(tmpdir, "/tmp/vmmbibd-test.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        printf("Bail out! cannot create a temp dir: %s\n", strerror(errno));
        return 1;
    }
    snprintf(sock_path, sizeof(sock_path), "%s/run/vmmbibd.sock", tmpdir);
    snprintf(log_path, sizeof(log_path), "%s/vmmbibd.log", tmpdir);
    if (!daemon_start()) {
        printf("Bail out! vmmbibd did not start\n");
        log_dump();
        return 1;
    }
    test_socket_mode();
    TAP_CHECK(vm_start(&a, "vm-a") && vm_start(&b, "vm-b"),
              "two VMs connect, each with its RAM in a memfd");
    test_rc(&a, &b);
    test_ud(&a, &b);
    test_isolation(&a, &b);
    test_disconnect(&a, &b);
    test_killed(&b);
    test_malformed(&b);
    test_hostile(&a, &b);
    test_hole(&a, &b);
    test_bad_memory(&b);
    test_shutdown(&b);
    vm_stop(&a);
    vm_stop(&b);
    if (daemon_pid > 0) {
        daemon_stop();
    }
    /* The daemon's side of the story, as TAP comments. */
    log_dump();
    unlink(log_path);
    snprintf(sock_path, sizeof(sock_path), "%s/run", tmpdir);
    rmdir(sock_path);
    rmdir(tmpdir);
    return tap_done();
}
