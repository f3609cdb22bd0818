/*
 * The client of vmmbibd (vmmbib_client.h): one VM's device, served by the
 * daemon.  Requests and replies alternate on the socket under one mutex;
 * events arrive in a shared ring, signalled through a pipe.  The daemon
 * makes every fd the two share (vmmbib_daemon.h, HELLO).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "vmmbib_client.h"
#include "vmmbib_daemon.h"

struct vmmbib_client {
    pthread_mutex_t lock;       /* one request/reply at a time */
    int sock;
    int kick_fd;                /* the daemon's eventfd: we write it */
    int call_fd;                /* the daemon's pipe: we read it */
    int db_fd;
    int ring_fd;
    bool dead;                  /* the daemon is gone */
    bool fatal_raised;
    uint32_t seq;
    struct vmmbib_host_ops ops;
    void *opaque;
    uint16_t lid;
    uint64_t node_guid;
    uint32_t uar_slots;
    uint8_t *db_pages;
    size_t db_size;
    uint8_t *ring;
    size_t ring_size;
    uint32_t ring_entries;
    pthread_mutex_t event_lock; /* the ring's consumer side */
    uint32_t *slot_ctx;         /* [uar_slots]: context mapped there, or 0 */
    uint8_t buf[sizeof(struct vmmbibd_hdr) + VMMBIBD_MAX_PAYLOAD];
};

static void set_err(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;

    if (!err || !err_len) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

static void close_fds(int *fds, unsigned int n)
{
    for (unsigned int i = 0; i < n; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
        }
    }
}

/* Read exactly @len bytes; fds that come along are appended to @fds. */
static int recv_full(int sock, void *buf, size_t len, int *fds,
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
        struct cmsghdr *cmsg;
        ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return n < 0 ? -errno : -ECONNRESET;
        }
        for (cmsg = CMSG_FIRSTHDR(&msg); cmsg;
             cmsg = CMSG_NXTHDR(&msg, cmsg)) {
            unsigned int k;

            if (cmsg->cmsg_level != SOL_SOCKET ||
                cmsg->cmsg_type != SCM_RIGHTS) {
                continue;
            }
            k = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (unsigned int i = 0; i < k; i++) {
                int fd;

                memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(fd));
                if (*nfds < VMMBIBD_MAX_FDS) {
                    fds[(*nfds)++] = fd;
                } else {
                    close(fd);
                }
            }
        }
        buf = (char *)buf + n;
        len -= n;
    }
    return 0;
}

/*
 * The daemon is gone: every later call fails fast, and the guest hears
 * DEVICE_FATAL once (from process_events or the call that found out).
 */
static void mark_dead(struct vmmbib_client *c)
{
    c->dead = true;
}

static void raise_fatal(struct vmmbib_client *c)
{
    bool raise;

    pthread_mutex_lock(&c->lock);
    raise = c->dead && !c->fatal_raised;
    c->fatal_raised |= raise;
    pthread_mutex_unlock(&c->lock);
    if (raise && c->ops.event) {
        struct vmmbib_event ev = {
            .type = htole16(VMMBIB_EVENT_DEVICE_FATAL),
        };

        c->ops.event(c->opaque, &ev);
    }
}

/*
 * One request and its reply; lock held.  The reply payload is left in
 * c->buf after the header (*reply_hdr), its fds in @fds.  Returns 0, or
 * -errno when the daemon is gone or broke the protocol.
 */
static int transact(struct vmmbib_client *c, uint16_t type,
                    const void *payload, uint32_t size,
                    const int *send_fds, unsigned int nsend,
                    struct vmmbibd_hdr *reply_hdr, int *fds,
                    unsigned int *nfds)
{
    struct vmmbibd_hdr hdr = {
        .type = type,
        .size = size,
        .seq = ++c->seq,
    };
    int ret;

    *nfds = 0;
    if (c->dead) {
        return -ECONNRESET;
    }
    ret = vmmbibd_send(c->sock, &hdr, payload, send_fds, nsend);
    if (!ret) {
        ret = recv_full(c->sock, reply_hdr, sizeof(*reply_hdr), fds, nfds);
    }
    if (!ret && (reply_hdr->type != type || reply_hdr->seq != hdr.seq ||
                 reply_hdr->flags != VMMBIBD_FLAG_REPLY ||
                 reply_hdr->size > VMMBIBD_MAX_PAYLOAD)) {
        ret = -EPROTO;
    }
    if (!ret) {
        ret = recv_full(c->sock, c->buf, reply_hdr->size, fds, nfds);
    }
    if (ret) {
        close_fds(fds, *nfds);
        *nfds = 0;
        mark_dead(c);
    }
    return ret;
}

/* The sentence of an error reply, made safe to print. */
static const char *reply_text(struct vmmbib_client *c,
                              const struct vmmbibd_hdr *hdr)
{
    size_t n = hdr->size < sizeof(c->buf) - 1 ? hdr->size :
               sizeof(c->buf) - 1;

    c->buf[n] = '\0';
    return n ? (const char *)c->buf : "no reason given";
}

static void *map_fd(int fd, size_t size, char *err, size_t err_len,
                    const char *what)
{
    struct stat st;
    void *p;

    if (fstat(fd, &st) || (uint64_t)st.st_size < size) {
        set_err(err, err_len, "the daemon's %s memfd is smaller than the "
                "%zu bytes it announced", what, size);
        return NULL;
    }
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        set_err(err, err_len, "cannot map the daemon's %s memfd: %s", what,
                strerror(errno));
        return NULL;
    }
    return p;
}

static bool hello(struct vmmbib_client *c, const char *vm_id,
                  const struct vmmbib_dev_config *cfg, char *err,
                  size_t err_len)
{
    struct vmmbibd_hello h = {
        .version = VMMBIBD_PROTOCOL_VERSION,
        .uar_slots = cfg->uar_slots,
        .doorbell_mode = cfg->doorbell_mode,
        .limits = cfg->limits,
    };
    struct vmmbibd_hello_reply r;
    struct vmmbibd_hdr rh;
    struct stat st;
    int fds[VMMBIBD_MAX_FDS];
    unsigned int nfds;
    int ret;

    if (strlen(vm_id) >= sizeof(h.vm_id)) {
        set_err(err, err_len, "VM id '%s' is too long: use at most %zu "
                "characters", vm_id, sizeof(h.vm_id) - 1);
        return false;
    }
    strncpy(h.vm_id, vm_id, sizeof(h.vm_id));
    ret = transact(c, VMMBIBD_MSG_HELLO, &h, sizeof(h), NULL, 0, &rh, fds,
                   &nfds);
    if (ret) {
        set_err(err, err_len, "the daemon did not answer HELLO (%s): is it "
                "running, and of the same version?", strerror(-ret));
        return false;
    }
    if (rh.result != VMMBIBD_OK) {
        const char *why = reply_text(c, &rh);

        /* A version 2 daemon looks at the fds before the version. */
        if (strstr(why, "vmmbibd_hello with two eventfds")) {
            set_err(err, err_len, "vmmbibd speaks protocol 2, this QEMU "
                    "speaks %u: use the QEMU and vmmbibd from the same build",
                    VMMBIBD_PROTOCOL_VERSION);
        } else {
            set_err(err, err_len, "the daemon refused the device: %s", why);
        }
        close_fds(fds, nfds);
        return false;
    }
    memcpy(&r, c->buf, sizeof(r));
    if (rh.size != sizeof(r) || nfds != VMMBIBD_HELLO_REPLY_FDS ||
        r.version != VMMBIBD_PROTOCOL_VERSION ||
        r.uar_slots != cfg->uar_slots ||
        r.db_size != (uint64_t)r.uar_slots * VMMBIB_PAGE_SIZE ||
        !r.event_ring_entries || r.event_ring_entries > VMMBIBD_EVENT_RING_MAX ||
        (r.event_ring_entries & (r.event_ring_entries - 1)) ||
        r.event_ring_size < VMMBIBD_RING_ENTRIES + (uint64_t)
                            r.event_ring_entries * sizeof(struct vmmbib_event)) {
        set_err(err, err_len, "the daemon's HELLO reply is malformed: is it "
                "of the same version?");
        close_fds(fds, nfds);
        return false;
    }
    c->db_fd = fds[VMMBIBD_HELLO_FD_DB];
    c->ring_fd = fds[VMMBIBD_HELLO_FD_RING];
    c->kick_fd = fds[VMMBIBD_HELLO_FD_KICK];
    c->call_fd = fds[VMMBIBD_HELLO_FD_CALL];
    if (fstat(c->call_fd, &st) || !S_ISFIFO(st.st_mode) ||
        fcntl(c->call_fd, F_SETFL, O_NONBLOCK)) {
        set_err(err, err_len, "the daemon's CALL fd is not a pipe: is it "
                "of the same version?");
        return false;
    }
    c->lid = r.lid;
    c->node_guid = r.node_guid;
    c->uar_slots = r.uar_slots;
    c->db_size = r.db_size;
    c->ring_size = r.event_ring_size;
    c->ring_entries = r.event_ring_entries;
    c->db_pages = map_fd(c->db_fd, c->db_size, err, err_len, "doorbell");
    if (!c->db_pages) {
        return false;
    }
    c->ring = map_fd(c->ring_fd, c->ring_size, err, err_len, "event ring");
    return c->ring != NULL;
}

struct vmmbib_client *vmmbib_client_new(int fd, const char *vm_id,
                                        const struct vmmbib_dev_config *cfg,
                                        const struct vmmbib_host_ops *ops,
                                        void *opaque,
                                        char *err, size_t err_len)
{
    struct vmmbib_client *c;

    if (cfg->lid || cfg->node_guid || cfg->idle_poll_us || cfg->db_pages ||
        cfg->restart_handles) {
        set_err(err, err_len, "lid, node-guid, idle-poll-us and "
                "x-restart-handles are the daemon's to choose: leave them "
                "unset");
        close(fd);
        return NULL;
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        set_err(err, err_len, "out of memory");
        close(fd);
        return NULL;
    }
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->event_lock, NULL);
    c->sock = fd;
    c->db_fd = c->ring_fd = c->kick_fd = c->call_fd = -1;
    if (ops) {
        c->ops = *ops;
    }
    c->opaque = opaque;
    c->slot_ctx = calloc(cfg->uar_slots ? cfg->uar_slots : 1,
                         sizeof(*c->slot_ctx));
    if (!c->slot_ctx) {
        set_err(err, err_len, "out of memory");
        vmmbib_client_free(c);
        return NULL;
    }
    if (!hello(c, vm_id, cfg, err, err_len)) {
        vmmbib_client_free(c);
        return NULL;
    }
    return c;
}

struct vmmbib_client *vmmbib_client_connect(const char *path,
                                            const char *vm_id,
                                            const struct vmmbib_dev_config *cfg,
                                            const struct vmmbib_host_ops *ops,
                                            void *opaque,
                                            char *err, size_t err_len)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    int fd;

    if (strlen(path) >= sizeof(addr.sun_path)) {
        set_err(err, err_len, "socket path '%s' is too long: use at most "
                "%zu characters", path, sizeof(addr.sun_path) - 1);
        return NULL;
    }
    strcpy(addr.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        set_err(err, err_len, "cannot create a socket: %s", strerror(errno));
        return NULL;
    }
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr))) {
        set_err(err, err_len, "cannot connect to vmmbibd at %s: %s (is the "
                "daemon running, and may this user open its socket?)",
                path, strerror(errno));
        close(fd);
        return NULL;
    }
    return vmmbib_client_new(fd, vm_id, cfg, ops, opaque, err, err_len);
}

void vmmbib_client_free(struct vmmbib_client *c)
{
    if (!c) {
        return;
    }
    /* The daemon destroys the VM's objects when the socket closes. */
    close_fds(&c->sock, 1);
    close_fds(&c->kick_fd, 1);
    close_fds(&c->call_fd, 1);
    close_fds(&c->db_fd, 1);
    close_fds(&c->ring_fd, 1);
    if (c->db_pages) {
        munmap(c->db_pages, c->db_size);
    }
    if (c->ring) {
        munmap(c->ring, c->ring_size);
    }
    free(c->slot_ctx);
    pthread_mutex_destroy(&c->event_lock);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

uint16_t vmmbib_client_lid(struct vmmbib_client *c)
{
    return c->lid;
}

uint64_t vmmbib_client_node_guid(struct vmmbib_client *c)
{
    return c->node_guid;
}

bool vmmbib_client_set_memory(struct vmmbib_client *c,
                              const struct vmmbib_client_region *regions,
                              unsigned int nregions,
                              char *err, size_t err_len)
{
    uint8_t payload[sizeof(struct vmmbibd_memory) +
                    VMMBIBD_MAX_REGIONS * sizeof(struct vmmbibd_region)];
    struct vmmbibd_memory *m = (struct vmmbibd_memory *)payload;
    int send_fds[VMMBIBD_MAX_REGIONS];
    int fds[VMMBIBD_MAX_FDS];
    struct vmmbibd_hdr rh;
    unsigned int nfds;
    bool ok = false;
    int ret;

    if (nregions > VMMBIBD_MAX_REGIONS) {
        set_err(err, err_len, "guest RAM has %u regions; the daemon takes "
                "at most %u", nregions, VMMBIBD_MAX_REGIONS);
        return false;
    }
    memset(payload, 0, sizeof(payload));
    m->nregions = nregions;
    for (unsigned int i = 0; i < nregions; i++) {
        m->regions[i] = (struct vmmbibd_region) {
            .gpa = regions[i].gpa,
            .size = regions[i].size,
            .offset = regions[i].offset,
        };
        send_fds[i] = regions[i].fd;
    }
    pthread_mutex_lock(&c->lock);
    ret = transact(c, VMMBIBD_MSG_MEMORY, payload,
                   sizeof(*m) + nregions * sizeof(struct vmmbibd_region),
                   send_fds, nregions, &rh, fds, &nfds);
    if (ret) {
        set_err(err, err_len, "vmmbibd is gone (%s)", strerror(-ret));
    } else if (rh.result != VMMBIBD_OK) {
        set_err(err, err_len, "vmmbibd refused the memory table: %s",
                reply_text(c, &rh));
    } else {
        ok = true;
    }
    close_fds(fds, nfds);
    pthread_mutex_unlock(&c->lock);
    if (ret) {
        raise_fatal(c);
    }
    return ok;
}

/* A reply with @status and no body, as vmmbib_dev_execute writes it. */
static size_t status_reply(void *reply, size_t reply_cap, uint16_t status)
{
    struct vmmbib_resp_hdr hdr = { .status = htole16(status) };

    if (reply_cap < sizeof(hdr)) {
        return 0;
    }
    memcpy(reply, &hdr, sizeof(hdr));
    return sizeof(hdr);
}

/*
 * Follow the contexts' UAR slots as the embedded device reports them:
 * a context appears with a successful CREATE_UCONTEXT and leaves with
 * DESTROY_UCONTEXT (or a reset).  Lock held; callbacks run after.
 */
static void track_uar(struct vmmbib_client *c, const void *req,
                      size_t req_len, const void *reply, size_t reply_len,
                      int *map_slot, int *unmap_slot)
{
    struct vmmbib_cmd_hdr ch;
    struct vmmbib_resp_hdr rh;

    *map_slot = *unmap_slot = -1;
    if (req_len < sizeof(ch) || reply_len < sizeof(rh)) {
        return;
    }
    memcpy(&ch, req, sizeof(ch));
    memcpy(&rh, reply, sizeof(rh));
    if (le16toh(rh.status) != VMMBIB_STATUS_OK) {
        return;
    }
    if (le16toh(ch.opcode) == VMMBIB_CMD_CREATE_UCONTEXT &&
        reply_len >= sizeof(rh) + sizeof(struct vmmbib_resp_create_ucontext)) {
        struct vmmbib_resp_create_ucontext r;

        memcpy(&r, (const uint8_t *)reply + sizeof(rh), sizeof(r));
        if (le32toh(r.uar_slot) < c->uar_slots) {
            c->slot_ctx[le32toh(r.uar_slot)] = le32toh(r.ctx_handle);
            *map_slot = le32toh(r.uar_slot);
        }
    } else if (le16toh(ch.opcode) == VMMBIB_CMD_DESTROY_UCONTEXT) {
        for (uint32_t s = 0; s < c->uar_slots; s++) {
            if (c->slot_ctx[s] && c->slot_ctx[s] == le32toh(ch.ctx_handle)) {
                c->slot_ctx[s] = 0;
                *unmap_slot = s;
            }
        }
    }
}

size_t vmmbib_client_execute(struct vmmbib_client *c,
                             const void *req, size_t req_len,
                             void *reply, size_t reply_cap)
{
    uint8_t payload[VMMBIBD_MAX_PAYLOAD];
    struct vmmbibd_command cmd = {
        .reply_cap = reply_cap < VMMBIBD_MAX_PAYLOAD ? reply_cap :
                     VMMBIBD_MAX_PAYLOAD,
    };
    int fds[VMMBIBD_MAX_FDS];
    struct vmmbibd_hdr rh;
    unsigned int nfds;
    int map_slot = -1, unmap_slot = -1;
    size_t len = 0;
    int ret;

    if (req_len > sizeof(payload) - sizeof(cmd)) {
        /* What the device answers to any request of the wrong size. */
        return status_reply(reply, reply_cap, VMMBIB_STATUS_BAD_LENGTH);
    }
    memcpy(payload, &cmd, sizeof(cmd));
    memcpy(payload + sizeof(cmd), req, req_len);
    pthread_mutex_lock(&c->lock);
    ret = transact(c, VMMBIBD_MSG_COMMAND, payload, sizeof(cmd) + req_len,
                   NULL, 0, &rh, fds, &nfds);
    if (!ret && (nfds || rh.result != VMMBIBD_OK || rh.size > cmd.reply_cap)) {
        close_fds(fds, nfds);
        ret = -EPROTO;
        mark_dead(c);
    }
    if (!ret) {
        len = rh.size;
        memcpy(reply, c->buf, len);
        track_uar(c, req, req_len, reply, len, &map_slot, &unmap_slot);
    }
    pthread_mutex_unlock(&c->lock);
    if (ret) {
        raise_fatal(c);
        return status_reply(reply, reply_cap, VMMBIB_STATUS_DEVICE_ERROR);
    }
    if (map_slot >= 0 && c->ops.uar_map) {
        c->ops.uar_map(c->opaque, map_slot,
                       c->db_pages + (size_t)map_slot * VMMBIB_PAGE_SIZE);
    }
    if (unmap_slot >= 0 && c->ops.uar_unmap) {
        c->ops.uar_unmap(c->opaque, unmap_slot);
    }
    return len;
}

void *vmmbib_client_db_pages(struct vmmbib_client *c)
{
    return c->db_pages;
}

int vmmbib_client_db_fd(struct vmmbib_client *c)
{
    return c->db_fd;
}

void vmmbib_client_kick(struct vmmbib_client *c)
{
    /* EAGAIN: the counter is full, the daemon has a kick pending anyway. */
    if (eventfd_write(c->kick_fd, 1) < 0 && errno != EAGAIN) {
        fprintf(stderr, "vmmbib client: cannot kick the engine: %s\n",
                strerror(errno));
    }
}

int vmmbib_client_kick_fd(struct vmmbib_client *c)
{
    return c->kick_fd;
}

/* A request with a fixed payload and an empty or fixed reply. */
static bool simple_request(struct vmmbib_client *c, uint16_t type,
                           const void *payload, uint32_t size,
                           void *reply, uint32_t reply_size)
{
    int fds[VMMBIBD_MAX_FDS];
    struct vmmbibd_hdr rh;
    unsigned int nfds;
    int ret;

    pthread_mutex_lock(&c->lock);
    ret = transact(c, type, payload, size, NULL, 0, &rh, fds, &nfds);
    if (!ret && (nfds || rh.result != VMMBIBD_OK || rh.size != reply_size)) {
        close_fds(fds, nfds);
        ret = -EPROTO;
        mark_dead(c);
    }
    if (!ret && reply_size) {
        memcpy(reply, c->buf, reply_size);
    }
    pthread_mutex_unlock(&c->lock);
    if (ret) {
        raise_fatal(c);
    }
    return !ret;
}

void vmmbib_client_doorbell(struct vmmbib_client *c, uint32_t slot,
                            uint64_t doorbell)
{
    struct vmmbibd_doorbell db = { .slot = slot, .doorbell = doorbell };

    simple_request(c, VMMBIBD_MSG_DOORBELL, &db, sizeof(db), NULL, 0);
}

void vmmbib_client_reset(struct vmmbib_client *c)
{
    simple_request(c, VMMBIBD_MSG_RESET, NULL, 0, NULL, 0);
    /* Like the embedded device: every context leaves its slot. */
    for (uint32_t s = 0; s < c->uar_slots; s++) {
        uint32_t was;

        pthread_mutex_lock(&c->lock);
        was = c->slot_ctx[s];
        c->slot_ctx[s] = 0;
        pthread_mutex_unlock(&c->lock);
        if (was && c->ops.uar_unmap) {
            c->ops.uar_unmap(c->opaque, s);
        }
    }
}

void vmmbib_client_get_stats(struct vmmbib_client *c,
                             struct vmmbib_dev_stats *stats)
{
    if (!simple_request(c, VMMBIBD_MSG_STATS, NULL, 0, stats,
                        sizeof(*stats))) {
        memset(stats, 0, sizeof(*stats));
    }
}

int vmmbib_client_event_fd(struct vmmbib_client *c)
{
    return c->call_fd;
}

int vmmbib_client_socket_fd(struct vmmbib_client *c)
{
    return c->sock;
}

bool vmmbib_client_connected(struct vmmbib_client *c)
{
    bool dead;

    pthread_mutex_lock(&c->lock);
    dead = c->dead;
    pthread_mutex_unlock(&c->lock);
    return !dead;
}

/*
 * Between requests the daemon sends nothing, so a readable socket means
 * it went away.  Only when no request is in flight (trylock): a request
 * finds out by itself.
 */
static void check_socket(struct vmmbib_client *c)
{
    struct pollfd pfd = { .fd = c->sock, .events = POLLIN };

    if (pthread_mutex_trylock(&c->lock)) {
        return;
    }
    if (!c->dead && poll(&pfd, 1, 0) > 0 && pfd.revents) {
        mark_dead(c);
    }
    pthread_mutex_unlock(&c->lock);
}

bool vmmbib_client_process_events(struct vmmbib_client *c)
{
    volatile uint32_t *prod_p = (uint32_t *)(c->ring + VMMBIBD_RING_PRODUCER);
    uint32_t *cons_p = (uint32_t *)(c->ring + VMMBIBD_RING_CONSUMER);
    const struct vmmbib_event *ring =
        (const struct vmmbib_event *)(c->ring + VMMBIBD_RING_ENTRIES);
    char drain[VMMBIB_PAGE_SIZE];
    uint32_t prod, cons;

    /*
     * Clear the signal first: an event after our last read signals again.
     * The daemon keeps the pipe at one page, so this is one read.
     */
    for (int i = 0; i < 16 && read(c->call_fd, drain, sizeof(drain)) ==
                             (ssize_t)sizeof(drain); i++) {
        /* A full page: there may be more. */
    }
    pthread_mutex_lock(&c->event_lock);
    prod = __atomic_load_n(prod_p, __ATOMIC_ACQUIRE);
    cons = __atomic_load_n(cons_p, __ATOMIC_RELAXED);
    if (prod - cons > c->ring_entries) {
        /* The daemon never does this; don't trust it to loop on it. */
        cons = prod;
    }
    while (cons != prod) {
        struct vmmbib_event ev = ring[cons & (c->ring_entries - 1)];

        cons++;
        __atomic_store_n(cons_p, cons, __ATOMIC_RELEASE);
        if (c->ops.event) {
            c->ops.event(c->opaque, &ev);
        }
    }
    pthread_mutex_unlock(&c->event_lock);
    check_socket(c);
    raise_fatal(c);
    return vmmbib_client_connected(c);
}
