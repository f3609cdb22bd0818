/*
 * libvmmbib: the host backend of the vmmbypass-ib device.
 *
 * A device model that executes the control commands of the guest<->device
 * ABI (include/vmmbypass_ib_abi.h, docs/spec.md).  It knows nothing of QEMU:
 * the host side (the QEMU device, the vmmbibd daemon, a test) hands it raw
 * request bytes and gets raw reply bytes back, and is called back for what
 * only it can do (mapping UAR pages into the guest).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef VMMBIB_H
#define VMMBIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmmbypass_ib_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Resource limits the device reports and enforces (QUERY_DEVICE). */
struct vmmbib_limits {
    uint32_t max_ucontext;
    uint32_t max_pd;
    uint32_t max_mr;
    uint32_t max_cq;
    uint32_t max_cqe;
    uint32_t max_qp;
    uint32_t max_qp_wr;
    uint32_t max_send_sge;
    uint32_t max_recv_sge;
    uint32_t max_srq;
    uint32_t max_srq_wr;
    uint32_t max_srq_sge;
    uint32_t max_ah;
    uint32_t max_inline_data;
    uint32_t max_qp_rd_atom;
    uint32_t max_mr_pages;      /* pages in one page list */
    uint32_t max_pinned_pages;  /* all MRs and rings of the device */
};

/* How long an engine polls without work before it sleeps, by default. */
#define VMMBIB_IDLE_POLL_US_DEFAULT 50
/* The most it may poll: beyond this an idle engine is just a busy loop. */
#define VMMBIB_IDLE_POLL_US_MAX     1000000

struct vmmbib_dev_config {
    struct vmmbib_limits limits;
    uint64_t node_guid;         /* 0: derived from the LID */
    uint16_t lid;               /* 0: the engine assigns one */
    uint32_t uar_slots;         /* UAR window slots, >= 1 */
    uint32_t doorbell_mode;     /* VMMBIB_DB_MODE_* */
    /*
     * For the engine the device creates when vmmbib_dev_new gets none:
     * poll this long without work, then sleep.  0: the default.
     */
    uint32_t idle_poll_us;
    /*
     * Memory for the doorbell pages: uar_slots pages, page aligned, that
     * stay valid until vmmbib_dev_free (vmmbibd passes a memfd mapping so
     * that QEMU maps the same pages).  NULL: the device allocates them.
     */
    void *db_pages;
    /*
     * Which backend serves the device (docs/design-verbs.md): the software
     * engine, or a host libibverbs device that moves the data.
     */
    uint32_t backend;           /* VMMBIB_BACKEND_* */
    char verbs_device[64];      /* host device name; "": the first one */
    uint32_t verbs_port;        /* host port; 0: 1 */
    uint32_t verbs_gid_index;   /* host GID for RoCE addressing */
    /*
     * Tests only: a reset makes handles, keys and QP numbers start over as
     * on a new device, so that inputs replayed after a reset (QEMU's
     * generic-fuzz) can name what they create.  Off, a handle from before
     * a reset names nothing after it.
     */
    bool restart_handles;
};

#define VMMBIB_BACKEND_SOFT  0
#define VMMBIB_BACKEND_VERBS 1

/*
 * Callbacks into the host side.  guest_ptr is required for anything that
 * touches guest memory; the others are optional.  uar_map/uar_unmap run in
 * the thread that executes commands; event may run in an engine thread.
 */
struct vmmbib_host_ops {
    /*
     * Host address of guest physical [gpa, gpa + len), or NULL unless all
     * of it is guest RAM.  The address stays valid while the device exists.
     */
    void *(*guest_ptr)(void *opaque, uint64_t gpa, uint64_t len);
    /*
     * A context takes / leaves UAR slot @slot.  The VMM may map the page
     * at uar_map and unmap it at uar_unmap, or keep every slot's page
     * mapped (QEMU does): a new context's page is cleared first.
     */
    void (*uar_map)(void *opaque, uint32_t slot, void *db_page);
    void (*uar_unmap)(void *opaque, uint32_t slot);
    /* An eventq entry for the guest. */
    void (*event)(void *opaque, const struct vmmbib_event *event);
    /*
     * Optional: RAM region @index (from 0) of the guest, [*gpa, *gpa +
     * *size), which guest_ptr maps to one host range; false past the last.
     * The verbs backend registers the regions for a DMA MR
     * (docs/design-verbs.md); without it a verbs device has no DMA MRs.
     */
    bool (*guest_ram)(void *opaque, uint32_t index, uint64_t *gpa,
                      uint64_t *size);
};

/* Counters readable by the host (QMP, tests). */
struct vmmbib_dev_stats {
    uint64_t commands;
    uint64_t command_errors;
    uint64_t doorbells;         /* executed, from the ring or trapped */
    uint64_t bad_doorbells;     /* naming no queue of their context */
    uint64_t wqes;              /* send and receive WQEs consumed */
    uint64_t cqes;
    uint64_t events;
    uint64_t error_completions;
    uint64_t sa_requests;       /* SubnAdm MADs to the engine's SA */
    uint64_t sa_dropped;        /* of those, dropped unanswered */
    uint64_t kicks;             /* KICK writes, read from the kick eventfd */
    uint32_t ucontexts;
    uint32_t pds;
    uint32_t mrs;
    uint32_t cqs;
    uint32_t qps;
    uint32_t srqs;
    uint32_t ahs;
    uint64_t pinned_pages;
};

/* Engine threads: at most this many (vmmbibd --engine-threads). */
#define VMMBIB_ENGINE_THREADS_MAX 64

/*
 * An engine executes the work requests of every device attached to it, on
 * threads of its own; its devices form one InfiniBand subnet.
 */
struct vmmbib_engine_config {
    /* Poll this long without work, then sleep; 0: the default. */
    uint32_t idle_poll_us;
    /* Threads that run the devices' work, 1 to 64; 0: one. */
    uint32_t threads;
};

/* How an engine's threads shared the work (docs/daemon.md, Scheduling). */
struct vmmbib_engine_stats {
    uint32_t threads;
    uint64_t turns;             /* device turns run */
    uint64_t unlocked_copies;   /* data copies run without the lock */
    uint64_t locked_copies;     /* large copies that had to keep it */
    uint64_t busy_retries;      /* a receive queue was busy: WQE retried */
    uint32_t max_parallel_copies;   /* most copies in flight at once */
    uint64_t parks;             /* an idle thread stopped for the others */
    uint64_t unparks;           /* a parked thread was woken for work */
    uint64_t sleeps;            /* all idle: one thread slept on eventfds */
};

struct vmmbib_engine;

struct vmmbib_engine *vmmbib_engine_new(const struct vmmbib_engine_config *cfg,
                                        char *err, size_t err_len);
/* All devices must be freed first. */
void vmmbib_engine_free(struct vmmbib_engine *eng);
void vmmbib_engine_get_stats(struct vmmbib_engine *eng,
                             struct vmmbib_engine_stats *stats);

struct vmmbib_dev;

/* Fill @limits with the defaults documented in docs/spec.md. */
void vmmbib_limits_default(struct vmmbib_limits *limits);

/*
 * Check @cfg and create a device attached to @engine, or to an engine of
 * its own, with @cfg->idle_poll_us, if @engine is NULL.  On failure returns
 * NULL and writes a sentence saying what is wrong into @err.
 */
struct vmmbib_dev *vmmbib_dev_new(const struct vmmbib_dev_config *cfg,
                                  struct vmmbib_engine *engine,
                                  const struct vmmbib_host_ops *ops,
                                  void *opaque, char *err, size_t err_len);
void vmmbib_dev_free(struct vmmbib_dev *dev);

/*
 * The doorbell pages of all UAR slots: uar_slots pages, contiguous and
 * page aligned, valid for the device's lifetime, so the host can map them
 * once.  Slot i's page is at offset i * VMMBIB_PAGE_SIZE.
 */
void *vmmbib_dev_db_pages(struct vmmbib_dev *dev);

/*
 * Destroy every guest object: the device returns to its initial state,
 * and its port comes up again (PORT_ACTIVE) with the next context.
 */
void vmmbib_dev_reset(struct vmmbib_dev *dev);

/*
 * Execute one controlq request.  Writes a reply (struct vmmbib_resp_hdr and
 * a body) into @reply and returns its length; returns 0 only when
 * @reply_cap cannot hold even the reply header.
 */
size_t vmmbib_dev_execute(struct vmmbib_dev *dev,
                          const void *req, size_t req_len,
                          void *reply, size_t reply_cap);

/*
 * The guest wrote KICK of a slot: wake the engine.  The same as writing 1
 * to vmmbib_dev_kick_fd, which a VMM may instead have written by the
 * hypervisor itself (an ioeventfd on the KICK register): the engine
 * thread waits on that eventfd while it sleeps, and counts the kicks it
 * reads from it (stats.kicks).
 */
void vmmbib_dev_kick(struct vmmbib_dev *dev);
int vmmbib_dev_kick_fd(struct vmmbib_dev *dev);
/*
 * Use @fd, an eventfd the caller keeps open until vmmbib_dev_free, as the
 * kick eventfd instead of the device's own.  The engine never blocks on
 * it, whatever its flags.  (vmmbibd no longer does: since protocol 3 it
 * hands QEMU the device's own, vmmbib_dev_kick_fd.)
 */
void vmmbib_dev_set_kick_fd(struct vmmbib_dev *dev, int fd);

/* The guest wrote DOORBELL of @slot (doorbell=mmio): execute it now. */
void vmmbib_dev_doorbell(struct vmmbib_dev *dev, uint32_t slot,
                         uint64_t doorbell);

void vmmbib_dev_get_stats(struct vmmbib_dev *dev,
                          struct vmmbib_dev_stats *stats);

/* The port's LID and the node GUID, as configured or assigned. */
uint16_t vmmbib_dev_lid(struct vmmbib_dev *dev);
uint64_t vmmbib_dev_node_guid(struct vmmbib_dev *dev);

const char *vmmbib_cmd_name(unsigned int opcode);
const char *vmmbib_status_name(unsigned int status);

#ifdef __cplusplus
}
#endif

#endif /* VMMBIB_H */
