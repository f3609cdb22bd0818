/*
 * vmmbypass-ib: a virtio RDMA device whose data path bypasses QEMU
 *
 * Privileged verbs arrive on the controlq and are executed by libvmmbib;
 * work requests and completions live in rings in guest memory, and the
 * guest rings doorbells in UAR pages mapped through a PCI BAR.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef HW_VMMBYPASS_IB_H
#define HW_VMMBYPASS_IB_H

#include "hw/virtio/virtio.h"
#include "chardev/char-fe.h"
#include "exec/memory.h"
#include "qemu/event_notifier.h"
#include "qemu/queue.h"
#include "qemu/thread.h"
#include "qom/object.h"

#include "vmmbypass_ib_abi.h"

#define TYPE_VMMBYPASS_IB "vmmbypass-ib-device"
OBJECT_DECLARE_SIMPLE_TYPE(VMMBypassIB, VMMBYPASS_IB)

#define VMMBYPASS_IB_QUEUE_SIZE 128

struct vmmbib_dev;
struct vmmbib_client;
struct vmmbib_dev_config;
typedef struct VMMBypassIBCmd VMMBypassIBCmd;

typedef struct VMMBypassIBConf {
    uint32_t max_pd;
    uint32_t max_mr;
    uint32_t max_mr_pages;
    uint32_t max_pinned_mb;
    uint32_t max_cq;
    uint32_t max_cqe;
    uint32_t max_qp;
    uint32_t max_qp_wr;
    uint32_t max_sge;
    uint32_t max_srq;
    uint32_t max_srq_wr;
    uint32_t max_ah;
    uint32_t max_inline_data;
    uint32_t uar_slots;
    uint32_t idle_poll_us;
    uint64_t node_guid;
    uint16_t lid;
    int doorbell;               /* VMMBIB_DB_MODE_* */
    int backend;                /* VMMBIB_BACKEND_* */
    char *verbs_device;
    uint32_t verbs_port;
    uint32_t verbs_gid_index;
    bool restart_handles;       /* tests only: x-restart-handles */
} VMMBypassIBConf;

/* A RAM section of guest memory, as the engine may touch it. */
typedef struct VMMBypassIBRamSection {
    uint64_t gpa;
    uint64_t size;
    uint8_t *hva;
    int fd;                     /* its file (-1: none), for vmmbibd */
    uint64_t fd_offset;         /* where gpa is in that file */
} VMMBypassIBRamSection;

/* Events from the engine thread waiting for eventq buffers. */
#define VMMBYPASS_IB_PENDING_EVENTS 1024

/* Guest-visible counters, read through QOM properties. */
typedef struct VMMBypassIBStats {
    uint64_t doorbell_writes;   /* trapped DOORBELL writes */
    uint64_t bad_register_accesses;
    uint64_t events_dropped;    /* pending queue full */
} VMMBypassIBStats;

struct VMMBypassIB {
    VirtIODevice parent_obj;

    VMMBypassIBConf conf;
    VirtQueue *ctrl_vq;
    VirtQueue *event_vq;

    /* The controlq's command thread and its queues (vmmbypass-ib.c). */
    QemuThread cmd_thread;
    QemuMutex cmd_lock;
    QemuCond cmd_cond;          /* cmd_todo got work, or cmd_stop */
    QemuCond cmd_idle;          /* the thread finished a command */
    bool cmd_stop;
    bool cmd_busy;
    QSIMPLEQ_HEAD(, VMMBypassIBCmd) cmd_todo;
    QSIMPLEQ_HEAD(, VMMBypassIBCmd) cmd_done;
    QEMUBH *cmd_done_bh;

    /*
     * The UAR window: uar_slots slots of a doorbell page (host RAM shared
     * with the backend, an alias of db_ram) and a kick page (trapped
     * registers), all mapped from realize to unrealize.
     */
    MemoryRegion uar_window;
    MemoryRegion db_ram;
    MemoryRegion *db_alias;     /* [uar_slots] */
    MemoryRegion *kick_mmio;    /* [uar_slots] */
    bool db_pages_mapped;
    /*
     * KICK of every slot is an ioeventfd on the backend's kick eventfd
     * (libvmmbib's or vmmbibd's, which its engine thread waits on); the
     * fd belongs to the backend.
     */
    EventNotifier kick_notifier;
    bool kick_eventfd_added;

    /*
     * Guest RAM as the engine thread sees it: maintained by a memory
     * listener, read under ram_lock, so the engine never needs the BQL or
     * QEMU's RCU.
     */
    MemoryListener ram_listener;
    QemuMutex ram_lock;
    VMMBypassIBRamSection *ram;
    unsigned int ram_count;
    /* With vmmbibd: the table it has (merged, sorted, files only). */
    VMMBypassIBRamSection *ram_sent;
    unsigned int ram_sent_count;

    /* Events raised by the engine, delivered by event_bh. */
    QemuMutex event_lock;
    QEMUBH *event_bh;
    struct vmmbib_event pending[VMMBYPASS_IB_PENDING_EVENTS];
    unsigned int pending_head;
    unsigned int pending_count;

    /*
     * The engine: embedded (backend), or vmmbibd's through its client when
     * the chardev property names a socket joining the daemon (client).
     */
    struct vmmbib_dev *backend;
    CharBackend chr;
    char *vm_id;
    struct vmmbib_client *client;
    char *daemon_path;          /* the socket, the id and the config it */
    char *daemon_vm_id;         /* joined with, to join again */
    struct vmmbib_dev_config *daemon_cfg;
    bool client_watched;        /* fd handlers on its event and socket fds */
    bool ram_error_reported;    /* vmmbibd refused the RAM table */
    VMMBypassIBStats stats;
    int inject_faults;          /* x-inject-faults (tests only); BQL */
};

/* Size of the UAR window BAR for the configured number of slots. */
uint64_t vmmbypass_ib_uar_window_size(VMMBypassIB *vib);

/* Show the device's counters on @proxy too (the PCI device users name). */
void vmmbypass_ib_alias_stats(VMMBypassIB *vib, Object *proxy);

#endif
