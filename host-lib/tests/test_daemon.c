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
    return vmmbib_client_execute((struct vmmbib_client *)dev, req, req_len,
                                 reply, reply_cap);
}

void *__wrap_vmmbib_dev_db_pages(struct vmmbib_dev *dev)
{
    return vmmbib_client_db_pages((struct vmmbib_client *)dev);
}

void __wrap_vmmbib_dev_kick(struct vmmbib_dev *dev)
{
    vmmbib_client_kick((struct vmmbib_client *)dev);
}

void __wrap_vmmbib_dev_doorbell(struct vmmbib_dev *dev, uint32_t slot,
                                uint64_t doorbell)
{
    vmmbib_client_doorbell((struct vmmbib_client *)dev, slot, doorbell);
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
        char arg[160];

        dup2(log, STDERR_FILENO);
        snprintf(arg, sizeof(arg), "--socket=%s", sock_path);
        execl(daemon_exe, daemon_exe, arg, "--idle-poll-us=200",
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

/* Guest RAM as QEMU's memory-backend-memfd makes it: sealed, shared. */
static bool vm_ram(struct client_vm *v)
{
    void *p;

    guest_init(&v->vm.g, VM_RAM_SIZE);
    free(v->vm.g.ram);
    v->vm.g.ram = NULL;
    v->memfd = memfd_create("guest-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (v->memfd < 0 || ftruncate(v->memfd, VM_RAM_SIZE) ||
        fcntl(v->memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW)) {
        return false;
    }
    p = mmap(NULL, VM_RAM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
             v->memfd, 0);
    if (p == MAP_FAILED) {
        return false;
    }
    v->vm.g.ram = p;
    return true;
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

/* A raw client: HELLO done by hand, so that we can then misbehave. */
static int raw_hello(const char *id)
{
    struct vmmbibd_hello h = {
        .version = VMMBIBD_PROTOCOL_VERSION,
        .uar_slots = 1,
    };
    struct vmmbibd_hdr hdr = {
        .type = VMMBIBD_MSG_HELLO, .size = sizeof(h), .seq = 1,
    };
    int fds[2] = { eventfd(0, 0), eventfd(0, 0) };
    uint8_t buf[256];
    int fd = raw_connect();
    ssize_t n;

    vmmbib_limits_default(&h.limits);
    strcpy(h.vm_id, id);
    if (fd < 0 || vmmbibd_send(fd, &hdr, &h, fds, 2)) {
        return -1;
    }
    close(fds[0]);
    close(fds[1]);
    /* The reply and its two fds; the fds close with the socket. */
    n = recv(fd, buf, sizeof(buf), 0);
    return n >= (ssize_t)sizeof(hdr) ? fd : -1;
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
    if (access(sock_path, F_OK) == 0) {
        TAP_CHECK(0, "the daemon removes its socket");
    } else {
        TAP_CHECK(1, "the daemon removes its socket");
    }
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
