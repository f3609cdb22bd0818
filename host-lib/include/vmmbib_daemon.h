/*
 * The vmmbibd wire protocol: how a VMM (QEMU) hands one VM's device to the
 * vmmbibd daemon over a UNIX stream socket.  docs/daemon.md explains it.
 *
 * Both ends run on one host, so every field is in host byte order.  A
 * message is a header and hdr.size payload bytes; file descriptors travel
 * as SCM_RIGHTS with the first byte of the message they belong to.  The
 * client sends requests, the daemon answers each with one reply (the same
 * type and seq, VMMBIBD_FLAG_REPLY) before it reads the next; nothing else
 * comes from the daemon on the socket.  Events go through a shared ring.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef VMMBIB_DAEMON_H
#define VMMBIB_DAEMON_H

#include <stdint.h>

#include "vmmbib.h"

/*
 * Version 3: the daemon makes the KICK eventfd and the CALL pipe and passes
 * them with the HELLO reply (version 2 took the client's eventfds).  The
 * version is the first field of HELLO and the daemon checks it first, so
 * a client of another version always gets a refusal that names both.
 */
#define VMMBIBD_PROTOCOL_VERSION    3

/* The largest payload either side sends or accepts. */
#define VMMBIBD_MAX_PAYLOAD         8192
/* The most file descriptors one message may carry. */
#define VMMBIBD_MAX_FDS             32
/* Regions of one memory table (each one fd). */
#define VMMBIBD_MAX_REGIONS         VMMBIBD_MAX_FDS
/* A VM id: 1 to 63 of [A-Za-z0-9._:-], NUL-padded. */
#define VMMBIBD_VM_ID_SIZE          64
/* Event ring entries when HELLO asks for 0; the most it may ask for. */
#define VMMBIBD_EVENT_RING_DEFAULT  1024
#define VMMBIBD_EVENT_RING_MAX      65536

enum vmmbibd_msg_type {
    VMMBIBD_MSG_HELLO = 1,      /* the first message, exactly once */
    VMMBIBD_MSG_MEMORY,         /* replace the guest memory table */
    VMMBIBD_MSG_COMMAND,        /* one controlq request */
    VMMBIBD_MSG_DOORBELL,       /* a trapped DOORBELL write (mmio mode) */
    VMMBIBD_MSG_RESET,          /* the device was reset: drop all objects */
    VMMBIBD_MSG_STATS,          /* read the device's counters */
    VMMBIBD_MSG_MAX = VMMBIBD_MSG_STATS,
};

#define VMMBIBD_FLAG_REPLY          (1u << 0)

/* Reply results (hdr.result); requests carry 0. */
enum vmmbibd_result {
    VMMBIBD_OK = 0,
    VMMBIBD_ERR_INVALID,        /* a value is wrong: the payload says which */
    VMMBIBD_ERR_BUSY,           /* the VM id is connected already */
    VMMBIBD_ERR_NO_RESOURCES,   /* the daemon is full or out of memory */
};

struct vmmbibd_hdr {
    uint16_t type;              /* enum vmmbibd_msg_type */
    uint16_t flags;             /* VMMBIBD_FLAG_* */
    uint32_t size;              /* payload bytes that follow */
    uint32_t seq;               /* chosen by the client, echoed */
    uint32_t result;            /* enum vmmbibd_result, replies only */
};

/*
 * HELLO: the device's configuration, no fds.  Reply: struct
 * vmmbibd_hello_reply and VMMBIBD_HELLO_REPLY_FDS fds, all made by the
 * daemon, so that nothing it reads, writes, polls or maps for the VM's
 * device is a file the client chose:
 *  - DB: the doorbell pages memfd (uar_slots pages, slot i at i * 4 KiB),
 *    sealed against resizing;
 *  - RING: the event ring memfd (below), sealed against resizing;
 *  - KICK: an eventfd (not a semaphore) the daemon's engine thread waits
 *    on while it sleeps: a write, e.g. by an ioeventfd on the guest's KICK
 *    register, wakes the engine with no message; the engine reads it
 *    without blocking, whatever flags the client sets, and counts kicks;
 *  - CALL: the read end of a pipe.  The daemon writes a byte to its own
 *    non-blocking write end after it put events into the ring; the client
 *    reads the pipe empty, then the ring.  A pipe and not an eventfd: an
 *    eventfd is one open file on both sides, so a client could clear its
 *    O_NONBLOCK and fill its counter, and the daemon's write would block.
 * An error reply carries a sentence and the daemon then disconnects.
 */
#define VMMBIBD_HELLO_FDS           0
enum vmmbibd_hello_reply_fd {
    VMMBIBD_HELLO_FD_DB,
    VMMBIBD_HELLO_FD_RING,
    VMMBIBD_HELLO_FD_KICK,
    VMMBIBD_HELLO_FD_CALL,
    VMMBIBD_HELLO_REPLY_FDS,
};

struct vmmbibd_hello {
    uint32_t version;           /* VMMBIBD_PROTOCOL_VERSION: stays first */
    uint32_t uar_slots;
    uint32_t doorbell_mode;     /* VMMBIB_DB_MODE_* */
    uint32_t event_ring_entries;    /* a power of two; 0: the default */
    char vm_id[VMMBIBD_VM_ID_SIZE];
    struct vmmbib_limits limits;
    uint32_t reserved;          /* 0 */
};

struct vmmbibd_hello_reply {
    uint32_t version;
    uint16_t lid;               /* the same for the same vm_id */
    uint16_t reserved;
    uint64_t node_guid;         /* the same for the same vm_id */
    uint32_t uar_slots;
    uint32_t event_ring_entries;
    uint64_t db_size;           /* bytes of the doorbell memfd */
    uint64_t event_ring_size;   /* bytes of the event ring memfd */
};

/*
 * MEMORY: the complete guest RAM layout, replacing the previous one.  One
 * fd per region: a memfd (not hugetlb) sealed against shrinking
 * (F_SEAL_SHRINK, as memory-backend-memfd's seal=on does), mapped from
 * @offset.  Addresses, sizes and offsets are multiples of 4 KiB; regions
 * do not overlap.
 * Reply: empty, or an error with a sentence (the old table stays).
 */
struct vmmbibd_region {
    uint64_t gpa;
    uint64_t size;
    uint64_t offset;            /* in the fd */
};

struct vmmbibd_memory {
    uint32_t nregions;          /* 0 to VMMBIBD_MAX_REGIONS */
    uint32_t reserved;          /* 0 */
    struct vmmbibd_region regions[];
};

/*
 * COMMAND: a controlq request as the guest wrote it, after this header.
 * Reply: the reply bytes vmmbib_dev_execute wrote (at most reply_cap).
 */
struct vmmbibd_command {
    uint32_t reply_cap;         /* the guest's reply buffer size */
    uint32_t reserved;          /* 0 */
    /* the request bytes follow */
};

/* DOORBELL: reply empty. */
struct vmmbibd_doorbell {
    uint32_t slot;
    uint32_t reserved;          /* 0 */
    uint64_t doorbell;
};

/* RESET: empty; reply empty.  STATS: empty; reply struct vmmbib_dev_stats. */

/*
 * The event ring, in the memfd the HELLO reply passes: a header page, then
 * event_ring_entries struct vmmbib_event.  The daemon writes an entry,
 * then advances producer (release); the client reads entries up to
 * producer (acquire), then advances consumer.  When the ring is full the
 * daemon drops the event and counts it in dropped.  After each event the
 * daemon writes one byte to the CALL pipe (when the pipe is full, a byte
 * waits already).
 */
#define VMMBIBD_RING_PRODUCER       0x000   /* uint32_t, daemon writes */
#define VMMBIBD_RING_DROPPED        0x004   /* uint32_t, daemon writes */
#define VMMBIBD_RING_CONSUMER       0x040   /* uint32_t, client writes */
#define VMMBIBD_RING_ENTRIES        0x1000  /* struct vmmbib_event[] */

_Static_assert(sizeof(struct vmmbibd_hdr) == 16, "wire layout");
_Static_assert(sizeof(struct vmmbib_limits) == 17 * 4,
               "struct vmmbib_limits is on the wire: a change needs a new "
               "VMMBIBD_PROTOCOL_VERSION");
_Static_assert(sizeof(struct vmmbibd_hello) == 16 + 64 + 68 + 4, "wire");
_Static_assert(sizeof(struct vmmbibd_hello_reply) == 40, "wire layout");
_Static_assert(sizeof(struct vmmbibd_region) == 24, "wire layout");
_Static_assert(sizeof(struct vmmbibd_memory) == 8, "wire layout");
_Static_assert(sizeof(struct vmmbibd_doorbell) == 16, "wire layout");
_Static_assert(sizeof(struct vmmbib_event) == 16, "wire layout");
_Static_assert(8 + VMMBIBD_MAX_REGIONS * 24 <= VMMBIBD_MAX_PAYLOAD,
               "a full memory table must fit one message");

/*
 * Send one message (header, payload, fds with its first byte) on @sock,
 * all of it or nothing more: returns 0, or -errno (-EAGAIN if a
 * non-blocking socket filled up).  Both ends use it (wire.c).
 */
int vmmbibd_send(int sock, const struct vmmbibd_hdr *hdr,
                 const void *payload, const int *fds, unsigned int nfds);

#endif /* VMMBIB_DAEMON_H */
