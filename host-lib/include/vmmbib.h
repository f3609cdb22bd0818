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

struct vmmbib_dev_config {
    struct vmmbib_limits limits;
    uint64_t node_guid;         /* 0: derived from the LID */
    uint16_t lid;               /* 0: the engine assigns one */
    uint32_t uar_slots;         /* UAR window slots, >= 1 */
    uint32_t doorbell_mode;     /* VMMBIB_DB_MODE_* */
};

/* Callbacks into the host side; all optional. */
struct vmmbib_host_ops {
    /* A context's doorbell page appears in / leaves UAR slot @slot. */
    void (*uar_map)(void *opaque, uint32_t slot, void *db_page);
    void (*uar_unmap)(void *opaque, uint32_t slot);
};

/* Counters readable by the host (QMP, tests). */
struct vmmbib_dev_stats {
    uint64_t commands;
    uint64_t command_errors;
    uint32_t ucontexts;
};

struct vmmbib_dev;

/* Fill @limits with the defaults documented in docs/spec.md. */
void vmmbib_limits_default(struct vmmbib_limits *limits);

/*
 * Check @cfg and create a device.  On failure returns NULL and writes a
 * sentence saying what is wrong into @err.
 */
struct vmmbib_dev *vmmbib_dev_new(const struct vmmbib_dev_config *cfg,
                                  const struct vmmbib_host_ops *ops,
                                  void *opaque, char *err, size_t err_len);
void vmmbib_dev_free(struct vmmbib_dev *dev);

/*
 * The doorbell pages of all UAR slots: uar_slots pages, contiguous and
 * page aligned, valid for the device's lifetime, so the host can map them
 * once.  Slot i's page is at offset i * VMMBIB_PAGE_SIZE.
 */
void *vmmbib_dev_db_pages(struct vmmbib_dev *dev);

/* Destroy every guest object: the device returns to its initial state. */
void vmmbib_dev_reset(struct vmmbib_dev *dev);

/*
 * Execute one controlq request.  Writes a reply (struct vmmbib_resp_hdr and
 * a body) into @reply and returns its length; returns 0 only when
 * @reply_cap cannot hold even the reply header.
 */
size_t vmmbib_dev_execute(struct vmmbib_dev *dev,
                          const void *req, size_t req_len,
                          void *reply, size_t reply_cap);

void vmmbib_dev_get_stats(struct vmmbib_dev *dev,
                          struct vmmbib_dev_stats *stats);

const char *vmmbib_cmd_name(unsigned int opcode);
const char *vmmbib_status_name(unsigned int status);

#ifdef __cplusplus
}
#endif

#endif /* VMMBIB_H */
