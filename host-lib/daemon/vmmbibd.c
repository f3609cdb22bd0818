/*
 * vmmbibd: one libvmmbib engine for every VM of the host.
 *
 * Each VMM (QEMU) connects to a UNIX socket and hands over one VM's device
 * (protocol: vmmbib_daemon.h, docs/daemon.md).  The daemon creates a
 * vmmbib_dev for it on its single shared engine, so all VMs form one
 * InfiniBand subnet and the engine moves data straight between their
 * memories, which the VMMs share as memfds.  One thread runs this loop:
 * it accepts clients and executes their requests; the engine thread does
 * the data path, waits on the VMs' KICK eventfds itself while it sleeps,
 * and writes events into each VM's ring.  Every fd the daemon reads,
 * writes or polls for a VM is its own (the KICK eventfd, the CALL pipe,
 * the doorbell and event ring memfds, handed to the client with the HELLO
 * reply); what a client hands over, its guest RAM, must be sealed memfds.
 *
 * A client that breaks the protocol is disconnected with a log line; a
 * client that goes away loses every object, and the engine completes its
 * peers' work with errors.  Nothing a client sends can stop the loop: all
 * sockets are non-blocking, every message is checked before it is used.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "vmmbib_daemon.h"

#define DEFAULT_MAX_VMS     64
/* Mappings of guest RAM one VM may keep (current and replaced ones). */
#define MAX_MAPPINGS        (4 * VMMBIBD_MAX_REGIONS)
/*
 * Address space those mappings may take, one VM's and all VMs': a sparse
 * memfd costs a client nothing, and a daemon whose address space is full
 * fails every allocation.  All VMs together stay within half of x86-64's
 * 128 TiB of user address space.
 */
#define MAX_VM_MAPPED       (4ull << 40)
#define MAX_ALL_MAPPED      (64ull << 40)
/* Messages taken from one client before the others get their turn. */
#define MESSAGE_BUDGET      16
/* Unicast LIDs are 1..0xbfff. */
#define LID_MAX             0xbfff

/* A mapping of (part of) one memfd: it stays until reset or disconnect. */
struct mapping {
    uint8_t *hva;
    uint64_t size;
    uint64_t offset;
    dev_t st_dev;
    ino_t st_ino;
};

/* One entry of the current memory table. */
struct region {
    uint64_t gpa;
    uint64_t size;
    uint8_t *hva;
};

struct vm {
    struct vm *next;
    int sock;
    int call_fd;                /* the CALL pipe's write end: ours alone */
    int call_peer_fd;           /* its read end, until the HELLO reply */
    char id[VMMBIBD_VM_ID_SIZE];    /* "" until HELLO */
    char name[VMMBIBD_VM_ID_SIZE + 32]; /* for log lines */
    struct vmmbib_dev *dev;
    uint32_t uar_slots;

    uint8_t *db_pages;
    size_t db_size;
    int db_fd;

    /* The event ring; the engine thread writes it under ring_lock. */
    pthread_mutex_t ring_lock;
    uint8_t *ring;
    size_t ring_size;
    int ring_fd;
    uint32_t ring_entries;
    uint32_t ring_producer;     /* ours: the page's copy is shared */
    uint32_t ring_dropped;

    /* Guest RAM; guest_ptr runs in the engine thread too. */
    pthread_mutex_t mem_lock;
    struct mapping maps[MAX_MAPPINGS];
    unsigned int nmaps;
    uint64_t mapped;            /* bytes of maps[] */
    struct region regions[VMMBIBD_MAX_REGIONS];
    unsigned int nregions;

    /* The message being received. */
    uint8_t in[sizeof(struct vmmbibd_hdr) + VMMBIBD_MAX_PAYLOAD];
    size_t in_len;
    int in_fds[VMMBIBD_MAX_FDS];
    unsigned int in_nfds;
    uint8_t out[VMMBIBD_MAX_PAYLOAD];
};

/* A VM id the daemon has seen, and the LID it keeps. */
struct known_id {
    char id[VMMBIBD_VM_ID_SIZE];
    uint16_t lid;
    bool connected;
};

struct daemon {
    const char *socket_path;
    int listen_fd;
    int signal_fd;
    unsigned int max_vms;
    unsigned int nvms;
    struct vm *vms;
    struct vmmbib_engine *engine;
    struct known_id *known;
    unsigned int nknown;
    /* backend, verbs_*: the options, for every VM's device */
    struct vmmbib_dev_config backend;
};

static void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void log_line(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("vmmbibd: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void close_fds(int *fds, unsigned int n)
{
    for (unsigned int i = 0; i < n; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
            fds[i] = -1;
        }
    }
}

/* ---- guest memory ---- */

static void *vm_guest_ptr(void *opaque, uint64_t gpa, uint64_t len)
{
    struct vm *vm = opaque;
    void *p = NULL;

    pthread_mutex_lock(&vm->mem_lock);
    for (unsigned int i = 0; i < vm->nregions; i++) {
        const struct region *r = &vm->regions[i];

        if (gpa >= r->gpa && gpa - r->gpa <= r->size &&
            len <= r->size - (gpa - r->gpa)) {
            p = r->hva + (gpa - r->gpa);
            break;
        }
    }
    pthread_mutex_unlock(&vm->mem_lock);
    return p;
}

/* The current table's region @index (the verbs backend's DMA MRs). */
static bool vm_guest_ram(void *opaque, uint32_t index, uint64_t *gpa,
                         uint64_t *size)
{
    struct vm *vm = opaque;
    bool found;

    pthread_mutex_lock(&vm->mem_lock);
    found = index < vm->nregions;
    if (found) {
        *gpa = vm->regions[index].gpa;
        *size = vm->regions[index].size;
    }
    pthread_mutex_unlock(&vm->mem_lock);
    return found;
}

/* Bytes of guest RAM all VMs' mappings take (the main thread's). */
static uint64_t all_mapped;

/* Unmap what the current table does not use; no object may use it. */
static void drop_unused_mappings(struct vm *vm)
{
    unsigned int kept = 0;

    pthread_mutex_lock(&vm->mem_lock);
    for (unsigned int m = 0; m < vm->nmaps; m++) {
        struct mapping *map = &vm->maps[m];
        bool used = false;

        for (unsigned int i = 0; i < vm->nregions; i++) {
            used |= vm->regions[i].hva == map->hva;
        }
        if (used) {
            vm->maps[kept++] = *map;
        } else {
            munmap(map->hva, map->size);
            vm->mapped -= map->size;
            all_mapped -= map->size;
        }
    }
    vm->nmaps = kept;
    pthread_mutex_unlock(&vm->mem_lock);
}

/*
 * Check one region and its fd, and find or make its mapping.  Old objects
 * may still point into a mapping the new table drops, so mappings are only
 * added here; a reset or the disconnect removes them.
 */
static uint8_t *map_region(struct vm *vm, const struct vmmbibd_region *r,
                           int fd, char *err, size_t err_len)
{
    struct statfs sfs;
    struct stat st;
    int seals;
    void *p;

    if (!r->size || ((r->gpa | r->size | r->offset) & (VMMBIB_PAGE_SIZE - 1)) ||
        r->gpa + r->size < r->gpa || r->offset + r->size < r->offset) {
        snprintf(err, err_len, "region at gpa %#llx of %#llx bytes (fd "
                 "offset %#llx) is empty, wraps, or not 4 KiB aligned",
                 (unsigned long long)r->gpa, (unsigned long long)r->size,
                 (unsigned long long)r->offset);
        return NULL;
    }
    /*
     * Only a memfd has seals, and only a sealed one cannot shrink under
     * our mapping (an access past its end would be SIGBUS).  Not hugetlb:
     * a hole punched in it (allowed by F_SEAL_SHRINK) may find no huge
     * page free when we touch it again, which is SIGBUS too.
     */
    seals = fcntl(fd, F_GET_SEALS);
    if (fstat(fd, &st) || !S_ISREG(st.st_mode) || seals < 0 ||
        !(seals & F_SEAL_SHRINK)) {
        snprintf(err, err_len, "region at gpa %#llx: its fd is not a memfd "
                 "sealed against shrinking (use memory-backend-memfd with "
                 "seal=on)", (unsigned long long)r->gpa);
        return NULL;
    }
    if (fstatfs(fd, &sfs) || sfs.f_type != TMPFS_MAGIC) {
        snprintf(err, err_len, "region at gpa %#llx: its memfd is not in "
                 "shared memory (hugetlb=on is not accepted: use "
                 "memory-backend-memfd without hugetlb)",
                 (unsigned long long)r->gpa);
        return NULL;
    }
    if ((uint64_t)st.st_size < r->offset + r->size) {
        snprintf(err, err_len, "region at gpa %#llx: the memfd has %llu "
                 "bytes, fewer than offset + size", (unsigned long long)r->gpa,
                 (unsigned long long)st.st_size);
        return NULL;
    }
    for (unsigned int m = 0; m < vm->nmaps; m++) {
        const struct mapping *map = &vm->maps[m];

        if (map->st_dev == st.st_dev && map->st_ino == st.st_ino &&
            map->offset == r->offset && map->size == r->size) {
            return map->hva;
        }
    }
    if (r->size > MAX_VM_MAPPED - vm->mapped ||
        r->size > MAX_ALL_MAPPED - all_mapped) {
        snprintf(err, err_len, "region at gpa %#llx: mapping its %llu MiB "
                 "would take the daemon past %llu GiB of guest RAM mappings "
                 "for this VM (%llu GiB for all VMs; a reset drops replaced "
                 "ones)", (unsigned long long)r->gpa,
                 (unsigned long long)(r->size >> 20), MAX_VM_MAPPED >> 30,
                 MAX_ALL_MAPPED >> 30);
        return NULL;
    }
    if (vm->nmaps == MAX_MAPPINGS) {
        snprintf(err, err_len, "the VM changed its memory layout too often "
                 "since its last reset: at most %u mappings", MAX_MAPPINGS);
        return NULL;
    }
    p = mmap(NULL, r->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, r->offset);
    if (p == MAP_FAILED) {
        snprintf(err, err_len, "region at gpa %#llx: cannot map it: %s",
                 (unsigned long long)r->gpa, strerror(errno));
        return NULL;
    }
    pthread_mutex_lock(&vm->mem_lock);
    vm->mapped += r->size;
    all_mapped += r->size;
    vm->maps[vm->nmaps++] = (struct mapping) {
        .hva = p, .size = r->size, .offset = r->offset,
        .st_dev = st.st_dev, .st_ino = st.st_ino,
    };
    pthread_mutex_unlock(&vm->mem_lock);
    return p;
}

/* ---- events: the engine thread writes the ring, then the CALL pipe ---- */

static void vm_event(void *opaque, const struct vmmbib_event *ev)
{
    struct vm *vm = opaque;
    uint32_t *prod_p = (uint32_t *)(vm->ring + VMMBIBD_RING_PRODUCER);
    uint32_t *dropped_p = (uint32_t *)(vm->ring + VMMBIBD_RING_DROPPED);
    uint32_t *cons_p = (uint32_t *)(vm->ring + VMMBIBD_RING_CONSUMER);
    struct vmmbib_event *ring =
        (struct vmmbib_event *)(vm->ring + VMMBIBD_RING_ENTRIES);
    uint32_t cons;
    ssize_t n;

    pthread_mutex_lock(&vm->ring_lock);
    /* The client writes consumer: any value must be harmless. */
    cons = __atomic_load_n(cons_p, __ATOMIC_ACQUIRE);
    if (vm->ring_producer - cons >= vm->ring_entries) {
        __atomic_store_n(dropped_p, ++vm->ring_dropped, __ATOMIC_RELAXED);
    } else {
        ring[vm->ring_producer & (vm->ring_entries - 1)] = *ev;
        __atomic_store_n(prod_p, ++vm->ring_producer, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&vm->ring_lock);

    /*
     * Our write end is O_NONBLOCK, and the client cannot change that (it
     * has only the read end): a full pipe (EAGAIN) means a call waits
     * already, a closed one (EPIPE; SIGPIPE is ignored) a client that
     * does not want calls.  Either way the engine goes on.
     */
    n = write(vm->call_fd, "", 1);
    (void)n;
}

/* ---- VM ids and LIDs ---- */

static struct known_id *find_known(struct daemon *d, const char *id)
{
    for (unsigned int i = 0; i < d->nknown; i++) {
        if (!strcmp(d->known[i].id, id)) {
            return &d->known[i];
        }
    }
    return NULL;
}

static bool lid_known(struct daemon *d, uint16_t lid)
{
    for (unsigned int i = 0; i < d->nknown; i++) {
        if (d->known[i].lid == lid) {
            return true;
        }
    }
    return false;
}

/*
 * The LID of @id: the one it had before, else one derived from the id
 * (so it survives a daemon restart unless two ids collide).
 */
static struct known_id *remember_id(struct daemon *d, const char *id)
{
    struct known_id *k = find_known(d, id);
    uint32_t hash = 2166136261u;        /* FNV-1a */
    uint16_t lid;

    if (k) {
        return k;
    }
    if (d->nknown == LID_MAX) {
        /* Forget one that is not connected. */
        for (unsigned int i = 0; i < d->nknown; i++) {
            if (!d->known[i].connected) {
                d->known[i] = d->known[--d->nknown];
                break;
            }
        }
        if (d->nknown == LID_MAX) {
            return NULL;
        }
    }
    if (!(d->nknown & (d->nknown + 1))) {
        struct known_id *n = realloc(d->known, (d->nknown * 2 + 2) *
                                     sizeof(*n));
        if (!n) {
            return NULL;
        }
        d->known = n;
    }
    for (const char *p = id; *p; p++) {
        hash = (hash ^ (uint8_t)*p) * 16777619u;
    }
    lid = 1 + hash % LID_MAX;
    while (lid_known(d, lid)) {
        lid = lid == LID_MAX ? 1 : lid + 1;
    }
    k = &d->known[d->nknown++];
    memset(k, 0, sizeof(*k));
    strcpy(k->id, id);
    k->lid = lid;
    return k;
}

/* ---- one VM ---- */

static void vm_free(struct daemon *d, struct vm *vm)
{
    /* Objects first: the engine stops using the memory below. */
    vmmbib_dev_free(vm->dev);
    if (vm->id[0]) {
        struct known_id *k = find_known(d, vm->id);

        if (k) {
            k->connected = false;
        }
    }
    vm->nregions = 0;
    drop_unused_mappings(vm);
    if (vm->db_pages) {
        munmap(vm->db_pages, vm->db_size);
    }
    if (vm->ring) {
        munmap(vm->ring, vm->ring_size);
    }
    close_fds(vm->in_fds, vm->in_nfds);
    close_fds(&vm->sock, 1);
    close_fds(&vm->call_fd, 1);
    close_fds(&vm->call_peer_fd, 1);
    close_fds(&vm->db_fd, 1);
    close_fds(&vm->ring_fd, 1);
    pthread_mutex_destroy(&vm->mem_lock);
    pthread_mutex_destroy(&vm->ring_lock);
    free(vm);
}

static void disconnect(struct daemon *d, struct vm *vm, const char *why)
{
    char name[sizeof(vm->name)];
    struct vm **p;

    for (p = &d->vms; *p != vm; p = &(*p)->next) {
    }
    *p = vm->next;
    d->nvms--;
    /* Logged when it is over: the VM's objects are gone. */
    strcpy(name, vm->name);
    vm_free(d, vm);
    log_line("%s: %s; disconnected", name, why);
}

/* A memfd of @size bytes that the client can neither shrink nor grow. */
static uint8_t *shared_pages(const char *name, size_t size, int *fd_out,
                             char *err, size_t err_len)
{
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    void *p;

    if (fd < 0 || ftruncate(fd, size) ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) {
        snprintf(err, err_len, "cannot create the %s memfd: %s", name,
                 strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return NULL;
    }
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        snprintf(err, err_len, "cannot map the %s memfd: %s", name,
                 strerror(errno));
        close(fd);
        return NULL;
    }
    *fd_out = fd;
    return p;
}

/* How a request ended: the connection stays or goes. */
enum outcome {
    KEEP,
    DROP,       /* it broke the protocol */
    REFUSED,    /* HELLO was refused; the reply said why */
    UNSENT,     /* its reply could not be sent */
};

static enum outcome reply(struct vm *vm, const struct vmmbibd_hdr *req,
                          uint32_t result, const void *payload, uint32_t size,
                          const int *fds, unsigned int nfds)
{
    struct vmmbibd_hdr hdr = {
        .type = req->type,
        .flags = VMMBIBD_FLAG_REPLY,
        .size = size,
        .seq = req->seq,
        .result = result,
    };
    int ret = vmmbibd_send(vm->sock, &hdr, payload, fds, nfds);

    if (ret) {
        log_line("%s: cannot send a reply (%s): the client does not read its "
             "replies", vm->name, strerror(-ret));
        return UNSENT;
    }
    return KEEP;
}

static const char *msg_name(uint16_t type)
{
    static const char *const names[] = {
        [VMMBIBD_MSG_HELLO] = "HELLO",
        [VMMBIBD_MSG_MEMORY] = "MEMORY",
        [VMMBIBD_MSG_COMMAND] = "COMMAND",
        [VMMBIBD_MSG_DOORBELL] = "DOORBELL",
        [VMMBIBD_MSG_RESET] = "RESET",
        [VMMBIBD_MSG_STATS] = "STATS",
    };

    return type < sizeof(names) / sizeof(names[0]) && names[type] ?
           names[type] : "an unknown message";
}

static enum outcome reply_error(struct vm *vm, const struct vmmbibd_hdr *req,
                                uint32_t result, const char *why)
{
    log_line("%s: %s refused: %s", vm->name, msg_name(req->type), why);
    return reply(vm, req, result, why, strlen(why) + 1, NULL, 0);
}

/* Refuse HELLO: say why, then close the connection. */
static enum outcome refuse(struct vm *vm, const struct vmmbibd_hdr *req,
                           uint32_t result, const char *why)
{
    reply_error(vm, req, result, why);
    return REFUSED;
}

static bool valid_vm_id(const char *id, size_t size)
{
    size_t n = strnlen(id, size);

    if (n == 0 || n == size) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                    "0123456789._:-", id[i])) {
            return false;
        }
    }
    /* NUL-padded: nothing may hide after the terminator. */
    for (size_t i = n; i < size; i++) {
        if (id[i]) {
            return false;
        }
    }
    return true;
}

/*
 * The daemon's ceiling on what one VM may ask for: each table costs the
 * daemon memory up front, so a VM gets at most the documented defaults.
 */
static bool within_ceiling(const struct vmmbib_limits *l, char *err,
                           size_t err_len)
{
    struct vmmbib_limits max;

    vmmbib_limits_default(&max);
#define CEIL(field, name)                                                   \
    if (l->field > max.field) {                                             \
        snprintf(err, err_len, name "=%u is above vmmbibd's ceiling of %u " \
                 "per VM: ask for less", l->field, max.field);              \
        return false;                                                       \
    }
    CEIL(max_ucontext, "max-ucontext");
    CEIL(max_pd, "max-pd");
    CEIL(max_mr, "max-mr");
    CEIL(max_cq, "max-cq");
    CEIL(max_qp, "max-qp");
    CEIL(max_srq, "max-srq");
    CEIL(max_ah, "max-ah");
#undef CEIL
    return true;
}

static enum outcome handle_hello(struct daemon *d, struct vm *vm,
                                 const struct vmmbibd_hdr *hdr,
                                 const uint8_t *payload)
{
    static const struct vmmbib_host_ops ops = {
        .guest_ptr = vm_guest_ptr,
        .event = vm_event,
        .guest_ram = vm_guest_ram,
    };
    struct vmmbibd_hello h;
    struct vmmbibd_hello_reply r = { .version = VMMBIBD_PROTOCOL_VERSION };
    struct vmmbib_dev_config cfg = { 0 };
    struct known_id *k;
    enum outcome outcome;
    char err[256];
    int fds[VMMBIBD_HELLO_REPLY_FDS];
    int call[2];

    /* The version first: whatever else changed, the refusal names both. */
    if (hdr->size >= sizeof(h.version)) {
        memcpy(&h.version, payload, sizeof(h.version));
        if (h.version != VMMBIBD_PROTOCOL_VERSION) {
            snprintf(err, sizeof(err), "vmmbibd speaks protocol %u, this "
                     "QEMU speaks %u: use the QEMU and vmmbibd from the same "
                     "build", VMMBIBD_PROTOCOL_VERSION, h.version);
            return refuse(vm, hdr, VMMBIBD_ERR_INVALID, err);
        }
    }
    if (hdr->size != sizeof(h) || vm->in_nfds != VMMBIBD_HELLO_FDS) {
        return refuse(vm, hdr, VMMBIBD_ERR_INVALID, "HELLO must be "
                           "one struct vmmbibd_hello and no fds (the "
                           "daemon makes the KICK and CALL fds)");
    }
    memcpy(&h, payload, sizeof(h));
    if (!valid_vm_id(h.vm_id, sizeof(h.vm_id)) || h.reserved) {
        return refuse(vm, hdr, VMMBIBD_ERR_INVALID, "the VM id must be "
                           "1 to 63 of A-Z a-z 0-9 . _ : -, NUL-padded");
    }
    snprintf(vm->name, sizeof(vm->name), "VM %s", h.vm_id);
    if (!h.event_ring_entries) {
        h.event_ring_entries = VMMBIBD_EVENT_RING_DEFAULT;
    }
    if (h.event_ring_entries > VMMBIBD_EVENT_RING_MAX ||
        (h.event_ring_entries & (h.event_ring_entries - 1))) {
        snprintf(err, sizeof(err), "event-ring-entries=%u must be a power "
                 "of two up to %u", h.event_ring_entries,
                 VMMBIBD_EVENT_RING_MAX);
        return refuse(vm, hdr, VMMBIBD_ERR_INVALID, err);
    }
    if (!within_ceiling(&h.limits, err, sizeof(err))) {
        return refuse(vm, hdr, VMMBIBD_ERR_INVALID, err);
    }
    if (h.uar_slots < 1 || h.uar_slots > h.limits.max_ucontext) {
        snprintf(err, sizeof(err), "uar-slots=%u is out of range: use 1 to "
                 "max-ucontext (%u)", h.uar_slots, h.limits.max_ucontext);
        return refuse(vm, hdr, VMMBIBD_ERR_INVALID, err);
    }
    k = find_known(d, h.vm_id);
    if (k && k->connected) {
        return refuse(vm, hdr, VMMBIBD_ERR_BUSY, "this VM id is "
                           "connected already: give every VM its own id");
    }
    k = remember_id(d, h.vm_id);
    if (!k) {
        return refuse(vm, hdr, VMMBIBD_ERR_NO_RESOURCES, "out of LIDs "
                           "or memory");
    }

    /*
     * CALL: a pipe, whose write end (our own open file, O_NONBLOCK) the
     * client never holds.  A page of room: more bytes say nothing more.
     */
    if (pipe2(call, O_NONBLOCK | O_CLOEXEC)) {
        snprintf(err, sizeof(err), "cannot create the CALL pipe: %s",
                 strerror(errno));
        return refuse(vm, hdr, VMMBIBD_ERR_NO_RESOURCES, err);
    }
    vm->call_peer_fd = call[0];
    vm->call_fd = call[1];
    fcntl(vm->call_fd, F_SETPIPE_SZ, VMMBIB_PAGE_SIZE);
    vm->uar_slots = h.uar_slots;
    vm->db_size = (size_t)h.uar_slots * VMMBIB_PAGE_SIZE;
    vm->db_pages = shared_pages("vmmbibd-doorbells", vm->db_size, &vm->db_fd,
                                err, sizeof(err));
    vm->ring_entries = h.event_ring_entries;
    vm->ring_size = VMMBIBD_RING_ENTRIES +
                    (size_t)h.event_ring_entries * sizeof(struct vmmbib_event);
    vm->ring = vm->db_pages ?
               shared_pages("vmmbibd-events", vm->ring_size, &vm->ring_fd,
                            err, sizeof(err)) : NULL;
    if (!vm->ring) {
        return refuse(vm, hdr, VMMBIBD_ERR_NO_RESOURCES, err);
    }

    cfg.limits = h.limits;
    cfg.uar_slots = h.uar_slots;
    cfg.doorbell_mode = h.doorbell_mode;
    cfg.lid = k->lid;
    cfg.db_pages = vm->db_pages;
    cfg.backend = d->backend.backend;
    memcpy(cfg.verbs_device, d->backend.verbs_device,
           sizeof(cfg.verbs_device));
    cfg.verbs_port = d->backend.verbs_port;
    cfg.verbs_gid_index = d->backend.verbs_gid_index;
    vm->dev = vmmbib_dev_new(&cfg, d->engine, &ops, vm, err, sizeof(err));
    if (!vm->dev) {
        return refuse(vm, hdr, VMMBIBD_ERR_INVALID, err);
    }
    strcpy(vm->id, h.vm_id);
    k->connected = true;

    r.lid = k->lid;
    r.node_guid = vmmbib_dev_node_guid(vm->dev);
    r.uar_slots = h.uar_slots;
    r.event_ring_entries = vm->ring_entries;
    r.db_size = vm->db_size;
    r.event_ring_size = vm->ring_size;
    fds[VMMBIBD_HELLO_FD_DB] = vm->db_fd;
    fds[VMMBIBD_HELLO_FD_RING] = vm->ring_fd;
    /*
     * KICK: the device's own eventfd, which its engine thread waits on
     * while it sleeps and reads (never blocking) to count kicks.
     */
    fds[VMMBIBD_HELLO_FD_KICK] = vmmbib_dev_kick_fd(vm->dev);
    fds[VMMBIBD_HELLO_FD_CALL] = vm->call_peer_fd;
    log_line("%s: connected, LID %u, %u UAR slots", vm->name, r.lid,
         r.uar_slots);
    outcome = reply(vm, hdr, VMMBIBD_OK, &r, sizeof(r), fds,
                    VMMBIBD_HELLO_REPLY_FDS);
    /* The client has its copy (or is gone): we only ever write the pipe. */
    close_fds(&vm->call_peer_fd, 1);
    return outcome;
}

static enum outcome handle_memory(struct vm *vm, const struct vmmbibd_hdr *hdr,
                                  const uint8_t *payload)
{
    struct vmmbibd_memory m;
    struct region table[VMMBIBD_MAX_REGIONS];
    char err[256];
    unsigned int n;

    if (hdr->size < sizeof(m)) {
        return DROP;
    }
    memcpy(&m, payload, sizeof(m));
    n = m.nregions;
    if (n > VMMBIBD_MAX_REGIONS || m.reserved ||
        hdr->size != sizeof(m) + n * sizeof(struct vmmbibd_region) ||
        vm->in_nfds != n) {
        return DROP;
    }
    for (unsigned int i = 0; i < n; i++) {
        struct vmmbibd_region r;

        memcpy(&r, payload + sizeof(m) + i * sizeof(r), sizeof(r));
        table[i].hva = map_region(vm, &r, vm->in_fds[i], err, sizeof(err));
        if (!table[i].hva) {
            return reply_error(vm, hdr, VMMBIBD_ERR_INVALID, err);
        }
        table[i].gpa = r.gpa;
        table[i].size = r.size;
        for (unsigned int j = 0; j < i; j++) {
            if (r.gpa < table[j].gpa + table[j].size &&
                table[j].gpa < r.gpa + r.size) {
                snprintf(err, sizeof(err), "regions at gpa %#llx and %#llx "
                         "overlap", (unsigned long long)r.gpa,
                         (unsigned long long)table[j].gpa);
                return reply_error(vm, hdr, VMMBIBD_ERR_INVALID, err);
            }
        }
    }
    pthread_mutex_lock(&vm->mem_lock);
    memcpy(vm->regions, table, n * sizeof(table[0]));
    vm->nregions = n;
    pthread_mutex_unlock(&vm->mem_lock);
    return reply(vm, hdr, VMMBIBD_OK, NULL, 0, NULL, 0);
}

/* One complete message with its fds; the fds are closed afterwards. */
static enum outcome handle_message(struct daemon *d, struct vm *vm,
                                   const struct vmmbibd_hdr *hdr,
                                   const uint8_t *payload)
{
    if (!vm->dev) {
        return hdr->type == VMMBIBD_MSG_HELLO ?
               handle_hello(d, vm, hdr, payload) : DROP;
    }
    if (hdr->type != VMMBIBD_MSG_MEMORY && vm->in_nfds) {
        return DROP;
    }
    switch (hdr->type) {
    case VMMBIBD_MSG_MEMORY:
        return handle_memory(vm, hdr, payload);
    case VMMBIBD_MSG_COMMAND: {
        struct vmmbibd_command c;
        size_t len;

        if (hdr->size < sizeof(c)) {
            return DROP;
        }
        memcpy(&c, payload, sizeof(c));
        if (c.reserved || c.reply_cap > sizeof(vm->out)) {
            return DROP;
        }
        len = vmmbib_dev_execute(vm->dev, payload + sizeof(c),
                                 hdr->size - sizeof(c), vm->out, c.reply_cap);
        return reply(vm, hdr, VMMBIBD_OK, vm->out, len, NULL, 0);
    }
    case VMMBIBD_MSG_DOORBELL: {
        struct vmmbibd_doorbell db;

        if (hdr->size != sizeof(db)) {
            return DROP;
        }
        memcpy(&db, payload, sizeof(db));
        if (db.reserved || db.slot >= vm->uar_slots) {
            return DROP;
        }
        vmmbib_dev_doorbell(vm->dev, db.slot, db.doorbell);
        return reply(vm, hdr, VMMBIBD_OK, NULL, 0, NULL, 0);
    }
    case VMMBIBD_MSG_RESET:
        if (hdr->size) {
            return DROP;
        }
        vmmbib_dev_reset(vm->dev);
        /* No object is left that could use a replaced mapping. */
        drop_unused_mappings(vm);
        return reply(vm, hdr, VMMBIBD_OK, NULL, 0, NULL, 0);
    case VMMBIBD_MSG_STATS: {
        struct vmmbib_dev_stats stats;

        if (hdr->size) {
            return DROP;
        }
        vmmbib_dev_get_stats(vm->dev, &stats);
        return reply(vm, hdr, VMMBIBD_OK, &stats, sizeof(stats), NULL, 0);
    }
    default:    /* HELLO again */
        return DROP;
    }
}

/*
 * Receive from @vm until a message is complete, the socket is empty, or
 * the budget is spent.  Returns false (after logging why) when the client
 * must go.
 */
static bool vm_receive(struct daemon *d, struct vm *vm)
{
    const size_t hdr_size = sizeof(struct vmmbibd_hdr);

    for (unsigned int budget = MESSAGE_BUDGET; budget; ) {
        union {
            char buf[CMSG_SPACE(sizeof(int) * VMMBIBD_MAX_FDS)];
            struct cmsghdr align;
        } control;
        struct vmmbibd_hdr hdr;
        size_t want = hdr_size;
        struct iovec iov;
        struct msghdr msg = {
            .msg_iov = &iov,
            .msg_iovlen = 1,
            .msg_control = control.buf,
            .msg_controllen = sizeof(control.buf),
        };
        struct cmsghdr *cmsg;
        ssize_t n;
        bool too_many_fds = false;
        enum outcome outcome;
        unsigned int nfds;

        if (vm->in_len >= hdr_size) {
            memcpy(&hdr, vm->in, hdr_size);
            want += hdr.size;
        }
        /* Exactly up to the end of this message: the next stays queued. */
        iov.iov_base = vm->in + vm->in_len;
        iov.iov_len = want - vm->in_len;
        n = recvmsg(vm->sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return true;
        }
        if (n <= 0) {
            disconnect(d, vm, n < 0 ? strerror(errno) :
                       vm->in_len ? "the connection closed in the middle "
                       "of a message" : "the connection closed");
            return false;
        }
        for (cmsg = CMSG_FIRSTHDR(&msg); cmsg;
             cmsg = CMSG_NXTHDR(&msg, cmsg)) {
            unsigned int k = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);

            if (cmsg->cmsg_level != SOL_SOCKET ||
                cmsg->cmsg_type != SCM_RIGHTS) {
                continue;
            }
            for (unsigned int i = 0; i < k; i++) {
                int fd;

                memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(fd));
                if (vm->in_nfds < VMMBIBD_MAX_FDS) {
                    vm->in_fds[vm->in_nfds++] = fd;
                } else {
                    close(fd);
                    too_many_fds = true;
                }
            }
        }
        if (too_many_fds || (msg.msg_flags & MSG_CTRUNC)) {
            disconnect(d, vm, "protocol error: too many fds with one "
                       "message");
            return false;
        }
        vm->in_len += n;
        if (vm->in_len == hdr_size) {
            memcpy(&hdr, vm->in, hdr_size);
            if (hdr.type < VMMBIBD_MSG_HELLO || hdr.type > VMMBIBD_MSG_MAX ||
                hdr.flags || hdr.result || hdr.size > VMMBIBD_MAX_PAYLOAD) {
                char why[128];

                snprintf(why, sizeof(why), "protocol error: malformed "
                         "header (type %u, flags %#x, size %u)", hdr.type,
                         hdr.flags, hdr.size);
                disconnect(d, vm, why);
                return false;
            }
        }
        if (vm->in_len < hdr_size || vm->in_len < hdr_size + hdr.size) {
            continue;
        }

        outcome = handle_message(d, vm, &hdr, vm->in + hdr_size);
        nfds = vm->in_nfds;
        close_fds(vm->in_fds, vm->in_nfds);
        vm->in_nfds = 0;
        vm->in_len = 0;
        if (outcome == REFUSED) {
            disconnect(d, vm, "HELLO refused");
            return false;
        }
        if (outcome == UNSENT) {
            disconnect(d, vm, "a reply could not be sent");
            return false;
        }
        if (outcome == DROP) {
            char why[128];

            snprintf(why, sizeof(why), "protocol error: malformed or "
                     "unexpected %s (%u bytes, %u fds)", msg_name(hdr.type),
                     hdr.size, nfds);
            disconnect(d, vm, why);
            return false;
        }
        budget--;
    }
    return true;
}

/* ---- the daemon ---- */

static void accept_clients(struct daemon *d)
{
    for (;;) {
        struct ucred cred;
        socklen_t len = sizeof(cred);
        struct vm *vm;
        int fd = accept4(d->listen_fd, NULL, NULL,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                log_line("cannot accept a client: %s", strerror(errno));
            }
            return;
        }
        /* The socket's mode keeps others out; this keeps them out too. */
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) ||
            (cred.uid != geteuid() && cred.uid != 0)) {
            log_line("refused a client of uid %u: only uid %u may connect",
                 (unsigned int)cred.uid, (unsigned int)geteuid());
            close(fd);
            continue;
        }
        if (d->nvms == d->max_vms) {
            log_line("refused a client (pid %d): %u VMs are connected, the "
                 "most --max-vms allows", (int)cred.pid, d->max_vms);
            close(fd);
            continue;
        }
        vm = calloc(1, sizeof(*vm));
        if (!vm) {
            log_line("refused a client: out of memory");
            close(fd);
            continue;
        }
        vm->sock = fd;
        vm->call_fd = vm->call_peer_fd = vm->db_fd = vm->ring_fd = -1;
        snprintf(vm->name, sizeof(vm->name), "client pid %d", (int)cred.pid);
        pthread_mutex_init(&vm->mem_lock, NULL);
        pthread_mutex_init(&vm->ring_lock, NULL);
        vm->next = d->vms;
        d->vms = vm;
        d->nvms++;
    }
}

/*
 * The poll set: listener, signals, then each VM's socket.  (Not the kick
 * eventfds: the engine thread waits on those itself.)
 */
static void run(struct daemon *d)
{
    for (;;) {
        unsigned int cap = 2 + d->nvms, n = 2;
        struct pollfd *pfds = calloc(cap, sizeof(*pfds));
        struct vm **owner = calloc(cap, sizeof(*owner));
        struct vm *vm;

        if (!pfds || !owner) {
            log_line("out of memory; stopping");
            free(pfds);
            free(owner);
            return;
        }
        pfds[0] = (struct pollfd) { .fd = d->listen_fd, .events = POLLIN };
        pfds[1] = (struct pollfd) { .fd = d->signal_fd, .events = POLLIN };
        for (vm = d->vms; vm; vm = vm->next) {
            owner[n] = vm;
            pfds[n++] = (struct pollfd) { .fd = vm->sock, .events = POLLIN };
        }
        if (poll(pfds, n, -1) < 0 && errno != EINTR) {
            log_line("poll failed: %s; stopping", strerror(errno));
            free(pfds);
            free(owner);
            return;
        }
        if (pfds[1].revents) {
            struct signalfd_siginfo si;

            if (read(d->signal_fd, &si, sizeof(si)) == sizeof(si)) {
                log_line("signal %u: stopping", si.ssi_signo);
                free(pfds);
                free(owner);
                return;
            }
        }
        for (unsigned int i = 2; i < n; i++) {
            if (pfds[i].revents) {
                /* owner[i] is still connected: only its turn drops it. */
                vm_receive(d, owner[i]);
            }
        }
        if (pfds[0].revents) {
            accept_clients(d);
        }
        free(pfds);
        free(owner);
    }
}

/* Where the socket goes without --socket: the runtime dir of the user. */
static char *default_socket_path(void)
{
    const char *dir = geteuid() == 0 ? "/run" : getenv("XDG_RUNTIME_DIR");
    char *path;

    if (!dir || !*dir) {
        return NULL;
    }
    if (asprintf(&path, "%s/vmmbibd/vmmbibd.sock", dir) < 0) {
        return NULL;
    }
    return path;
}

/*
 * Create the listening socket, mode 0600 from the start (umask), in a
 * directory we make 0700 if it is missing.  A socket file left by a dead
 * daemon is replaced; one with a live daemon behind it is an error.
 */
static int listen_on(const char *path)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    char dir[sizeof(addr.sun_path)];
    char *slash;
    struct stat st;
    mode_t old_umask;
    int fd, ret;

    if (strlen(path) >= sizeof(addr.sun_path)) {
        log_line("socket path %s is too long: use at most %zu characters",
                 path, sizeof(addr.sun_path) - 1);
        return -1;
    }
    strcpy(addr.sun_path, path);
    strcpy(dir, path);
    slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if (mkdir(dir, 0700) && errno != EEXIST) {
            log_line("cannot create the socket directory %s: %s", dir,
                     strerror(errno));
            return -1;
        }
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_line("cannot create a socket: %s", strerror(errno));
        return -1;
    }
    if (lstat(path, &st) == 0) {
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (!S_ISSOCK(st.st_mode)) {
            log_line("%s exists and is not a socket: remove it or choose "
                     "another --socket", path);
            close(probe);
            close(fd);
            return -1;
        }
        if (probe >= 0 &&
            connect(probe, (struct sockaddr *)&addr, sizeof(addr)) == 0) {
            log_line("another vmmbibd listens on %s: stop it or choose "
                     "another --socket", path);
            close(probe);
            close(fd);
            return -1;
        }
        close(probe);
        unlink(path);
    }
    old_umask = umask(0177);
    ret = bind(fd, (struct sockaddr *)&addr, sizeof(addr));
    umask(old_umask);
    if (ret || chmod(path, 0600) || listen(fd, 64)) {
        log_line("cannot listen on %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static void usage(FILE *f)
{
    fprintf(f,
"Usage: vmmbibd [OPTION]...\n"
"Serve the vmmbypass-ib devices of many VMs with one engine: the VMs form\n"
"one InfiniBand subnet.  QEMU connects through the socket.\n"
"\n"
"  -s, --socket=PATH      listen here (default: /run/vmmbibd/vmmbibd.sock\n"
"                         for root, else $XDG_RUNTIME_DIR/vmmbibd/...)\n"
"  -m, --max-vms=N        VMs served at once (default %u)\n"
"  -p, --idle-poll-us=US  the engine polls this long without work, then\n"
"                         sleeps (default %u, at most %u)\n"
"  -t, --engine-threads=N  engine threads serving all VMs, each taking one\n"
"                         VM's turn at a time (default 1, at most %u)\n"
"      --backend=soft|verbs  the software engine (default), or a host RDMA\n"
"                         device that moves the data (docs/design-verbs.md)\n"
"      --verbs-device=NAME  that device, as ibv_devices lists it (default:\n"
"                         the first one)\n"
"      --verbs-port=N     its port (default 1)\n"
"      --verbs-gid-index=N  its GID for RoCE addressing (default 0)\n"
"  -h, --help             show this and exit\n"
"\n"
"Logs go to stderr.  SIGTERM, SIGINT or SIGHUP stop the daemon; its VMs'\n"
"devices then report a fatal error.  See docs/daemon.md.\n",
            DEFAULT_MAX_VMS, VMMBIB_IDLE_POLL_US_DEFAULT,
            VMMBIB_IDLE_POLL_US_MAX, VMMBIB_ENGINE_THREADS_MAX);
}

static bool parse_uint(const char *s, unsigned long max, unsigned int *out)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v > max || *s == '-') {
        return false;
    }
    *out = v;
    return true;
}

/* Long options without a short one. */
enum {
    OPT_BACKEND = 0x100,
    OPT_VERBS_DEVICE,
    OPT_VERBS_PORT,
    OPT_VERBS_GID_INDEX,
};

int main(int argc, char **argv)
{
    static const struct option options[] = {
        { "socket", required_argument, NULL, 's' },
        { "max-vms", required_argument, NULL, 'm' },
        { "idle-poll-us", required_argument, NULL, 'p' },
        { "engine-threads", required_argument, NULL, 't' },
        { "help", no_argument, NULL, 'h' },
        { "backend", required_argument, NULL, OPT_BACKEND },
        { "verbs-device", required_argument, NULL, OPT_VERBS_DEVICE },
        { "verbs-port", required_argument, NULL, OPT_VERBS_PORT },
        { "verbs-gid-index", required_argument, NULL, OPT_VERBS_GID_INDEX },
        { NULL, 0, NULL, 0 },
    };
    struct daemon d = { .max_vms = DEFAULT_MAX_VMS, .signal_fd = -1 };
    struct vmmbib_engine_config ecfg = { 0 };
    char *default_path = NULL;
    char err[256];
    sigset_t sigs;
    int opt;

    while ((opt = getopt_long(argc, argv, "s:m:p:t:h", options, NULL)) != -1) {
        switch (opt) {
        case 's':
            d.socket_path = optarg;
            break;
        case 'm':
            if (!parse_uint(optarg, 4096, &d.max_vms) || !d.max_vms) {
                log_line("--max-vms=%s is not a number from 1 to 4096",
                         optarg);
                return 2;
            }
            break;
        case 'p':
            if (!parse_uint(optarg, VMMBIB_IDLE_POLL_US_MAX,
                            &ecfg.idle_poll_us)) {
                log_line("--idle-poll-us=%s is not a number from 0 to %u",
                         optarg, VMMBIB_IDLE_POLL_US_MAX);
                return 2;
            }
            break;
        case 't':
            if (!parse_uint(optarg, VMMBIB_ENGINE_THREADS_MAX,
                            &ecfg.threads) || !ecfg.threads) {
                log_line("--engine-threads=%s is not a number from 1 to %u",
                         optarg, VMMBIB_ENGINE_THREADS_MAX);
                return 2;
            }
            break;
        case OPT_BACKEND:
            if (strcmp(optarg, "soft") && strcmp(optarg, "verbs")) {
                log_line("--backend=%s is unknown: use soft or verbs", optarg);
                return 2;
            }
            d.backend.backend = strcmp(optarg, "verbs") ?
                                VMMBIB_BACKEND_SOFT : VMMBIB_BACKEND_VERBS;
            break;
        case OPT_VERBS_DEVICE:
            if (strlen(optarg) >= sizeof(d.backend.verbs_device)) {
                log_line("--verbs-device=%s is too long: at most %zu "
                         "characters", optarg,
                         sizeof(d.backend.verbs_device) - 1);
                return 2;
            }
            strcpy(d.backend.verbs_device, optarg);
            break;
        case OPT_VERBS_PORT:
            if (!parse_uint(optarg, 255, &d.backend.verbs_port) ||
                !d.backend.verbs_port) {
                log_line("--verbs-port=%s is not a number from 1 to 255",
                         optarg);
                return 2;
            }
            break;
        case OPT_VERBS_GID_INDEX:
            if (!parse_uint(optarg, 65535, &d.backend.verbs_gid_index)) {
                log_line("--verbs-gid-index=%s is not a number from 0 to "
                         "65535", optarg);
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        log_line("unexpected argument '%s': see --help", argv[optind]);
        return 2;
    }
    if (!d.socket_path) {
        default_path = default_socket_path();
        if (!default_path) {
            log_line("XDG_RUNTIME_DIR is not set: pass --socket=PATH");
            return 2;
        }
        d.socket_path = default_path;
    }

    /* Signals arrive through the poll loop; a closed peer is an error. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    d.signal_fd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
    if (d.signal_fd < 0) {
        log_line("cannot create a signalfd: %s", strerror(errno));
        return 1;
    }
    /* The engine thread inherits the blocked signals: it never takes one. */
    d.engine = vmmbib_engine_new(&ecfg, err, sizeof(err));
    if (!d.engine) {
        log_line("cannot start the engine: %s", err);
        return 1;
    }
    d.listen_fd = listen_on(d.socket_path);
    if (d.listen_fd < 0) {
        vmmbib_engine_free(d.engine);
        return 1;
    }
    log_line("listening on %s, %u engine thread%s", d.socket_path,
             ecfg.threads ? ecfg.threads : 1, ecfg.threads > 1 ? "s" : "");

    run(&d);

    while (d.vms) {
        disconnect(&d, d.vms, "the daemon stops");
    }
    vmmbib_engine_free(d.engine);
    close(d.listen_fd);
    close(d.signal_fd);
    unlink(d.socket_path);
    free(d.known);
    free(default_path);
    log_line("stopped");
    return 0;
}
