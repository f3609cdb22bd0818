/*
 * vmmbypass-ib: a virtio RDMA device whose data path bypasses QEMU
 *
 * This file is the virtio side: the controlq that carries privileged verbs
 * to libvmmbib, the eventq, and the UAR window of doorbell and kick pages.
 * The guest<->device ABI is include/vmmbypass_ib_abi.h (docs/spec.md).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/iov.h"
#include "qemu/log.h"
#include "qemu/main-loop.h"
#include "qemu/module.h"
#include "qapi/error.h"
#include "qapi/visitor.h"
#include "hw/qdev-properties.h"
#include "hw/core/qdev-prop-internal.h"
#include "hw/virtio/virtio.h"
#include "hw/vmmbypass-ib/vmmbypass-ib.h"
#include "migration/vmstate.h"
#include "exec/address-spaces.h"
#include "exec/ramblock.h"
#include "standard-headers/linux/virtio_ids.h"
#include "trace.h"

#include "vmmbib.h"

/* Largest request the controlq accepts; every command is smaller. */
#define VMMBIB_MAX_CMD_SIZE     256
/* Largest reply we build; the guest may offer a larger buffer. */
#define VMMBIB_MAX_REPLY_SIZE   512
/* One context per slot; 65536 slots make a 512 MiB BAR. */
#define VMMBYPASS_IB_MAX_UAR_SLOTS 65536

uint64_t vmmbypass_ib_uar_window_size(VMMBypassIB *vib)
{
    /* A BAR is a power of two; slots past uar_slots are never mapped. */
    return pow2ceil((uint64_t)vib->conf.uar_slots * VMMBIB_UAR_SLOT_SIZE);
}

/*
 * The controlq runs asynchronously: the vCPU (or main loop) thread that
 * sees the notification only copies each request and queues it; the
 * command thread executes it in libvmmbib, however long that takes; a
 * bottom half in the main loop maps or unmaps UAR pages the command asked
 * for and then completes the request.  Replies go out in the order the
 * commands finish.
 */
struct VMMBypassIBCmd {
    VirtQueueElement *elem;
    size_t req_len;
    size_t reply_cap;
    size_t reply_len;
    int64_t start_ns;
    QSIMPLEQ_ENTRY(VMMBypassIBCmd) next;
    uint8_t req[VMMBIB_MAX_CMD_SIZE + 1];
    uint8_t reply[VMMBIB_MAX_REPLY_SIZE];
};

/* A UAR change a command made, applied by the completion BH. */
struct VMMBypassIBUarOp {
    uint32_t slot;
    bool map;
    QSIMPLEQ_ENTRY(VMMBypassIBUarOp) next;
};

static void vmmbib_uar_apply(VMMBypassIB *vib, uint32_t slot, bool map)
{
    hwaddr offset = (hwaddr)slot * VMMBIB_UAR_SLOT_SIZE +
                    VMMBIB_UAR_DB_PAGE_OFFSET;

    assert(slot < vib->conf.uar_slots && vib->slot_mapped[slot] != map);
    if (map) {
        memory_region_add_subregion(&vib->uar_window, offset,
                                    &vib->db_alias[slot]);
        trace_vmmbib_uar_map(vib, slot);
    } else {
        memory_region_del_subregion(&vib->uar_window, &vib->db_alias[slot]);
        trace_vmmbib_uar_unmap(vib, slot);
    }
    vib->slot_mapped[slot] = map;
}

/* Apply queued UAR changes, oldest first; BQL held. */
static void vmmbib_uar_apply_pending(VMMBypassIB *vib)
{
    VMMBypassIBUarOp *op;

    qemu_mutex_lock(&vib->cmd_lock);
    while ((op = QSIMPLEQ_FIRST(&vib->uar_ops))) {
        QSIMPLEQ_REMOVE_HEAD(&vib->uar_ops, next);
        qemu_mutex_unlock(&vib->cmd_lock);
        vmmbib_uar_apply(vib, op->slot, op->map);
        g_free(op);
        qemu_mutex_lock(&vib->cmd_lock);
    }
    qemu_mutex_unlock(&vib->cmd_lock);
}

/*
 * libvmmbib callbacks: a context's doorbell page enters or leaves its
 * slot.  Memory regions change only under the BQL, so a change asked for
 * by the command thread waits for the completion BH.
 */
static void vmmbib_uar_change(VMMBypassIB *vib, uint32_t slot, bool map)
{
    VMMBypassIBUarOp *op;

    if (bql_locked()) {
        vmmbib_uar_apply_pending(vib);
        vmmbib_uar_apply(vib, slot, map);
        return;
    }
    op = g_new0(VMMBypassIBUarOp, 1);
    op->slot = slot;
    op->map = map;
    qemu_mutex_lock(&vib->cmd_lock);
    QSIMPLEQ_INSERT_TAIL(&vib->uar_ops, op, next);
    qemu_mutex_unlock(&vib->cmd_lock);
}

static void vmmbib_uar_map(void *opaque, uint32_t slot, void *db_page)
{
    vmmbib_uar_change(opaque, slot, true);
}

static void vmmbib_uar_unmap(void *opaque, uint32_t slot)
{
    vmmbib_uar_change(opaque, slot, false);
}

static void *vmmbib_cmd_thread(void *opaque)
{
    VMMBypassIB *vib = opaque;
    VMMBypassIBCmd *cmd;

    qemu_mutex_lock(&vib->cmd_lock);
    for (;;) {
        while (!vib->cmd_stop && QSIMPLEQ_EMPTY(&vib->cmd_todo)) {
            qemu_cond_wait(&vib->cmd_cond, &vib->cmd_lock);
        }
        if (vib->cmd_stop) {
            break;
        }
        cmd = QSIMPLEQ_FIRST(&vib->cmd_todo);
        QSIMPLEQ_REMOVE_HEAD(&vib->cmd_todo, next);
        vib->cmd_busy = true;
        qemu_mutex_unlock(&vib->cmd_lock);

        cmd->reply_len = vmmbib_dev_execute(vib->backend, cmd->req,
                                            cmd->req_len, cmd->reply,
                                            cmd->reply_cap);

        qemu_mutex_lock(&vib->cmd_lock);
        vib->cmd_busy = false;
        QSIMPLEQ_INSERT_TAIL(&vib->cmd_done, cmd, next);
        qemu_cond_broadcast(&vib->cmd_idle);
        qemu_bh_schedule(vib->cmd_done_bh);
    }
    qemu_mutex_unlock(&vib->cmd_lock);
    return NULL;
}

/* Main loop: finish executed commands. */
static void vmmbib_cmd_done_bh(void *opaque)
{
    VMMBypassIB *vib = opaque;
    VirtIODevice *vdev = VIRTIO_DEVICE(vib);
    VMMBypassIBCmd *cmd;
    bool pushed = false;

    /* The UAR page must be in place before the guest learns its slot. */
    vmmbib_uar_apply_pending(vib);
    for (;;) {
        const struct vmmbib_resp_hdr *hdr;

        qemu_mutex_lock(&vib->cmd_lock);
        cmd = QSIMPLEQ_FIRST(&vib->cmd_done);
        if (cmd) {
            QSIMPLEQ_REMOVE_HEAD(&vib->cmd_done, next);
        }
        qemu_mutex_unlock(&vib->cmd_lock);
        if (!cmd) {
            break;
        }
        hdr = (const struct vmmbib_resp_hdr *)cmd->reply;
        assert(cmd->reply_len >= sizeof(*hdr));
        trace_vmmbib_cmd(vib, cmd->req_len >= 2 ?
                         vmmbib_cmd_name(lduw_le_p(cmd->req)) : "SHORT",
                         vmmbib_status_name(le16_to_cpu(hdr->status)),
                         cmd->req_len,
                         (qemu_clock_get_ns(QEMU_CLOCK_REALTIME) -
                          cmd->start_ns) / 1000);
        iov_from_buf(cmd->elem->in_sg, cmd->elem->in_num, 0, cmd->reply,
                     cmd->reply_len);
        virtqueue_push(vib->ctrl_vq, cmd->elem, cmd->reply_len);
        g_free(cmd->elem);
        g_free(cmd);
        pushed = true;
    }
    if (pushed) {
        virtio_notify(vdev, vib->ctrl_vq);
    }
}

/*
 * Take one request off the controlq.  Returns false if the guest broke
 * the virtio protocol (virtio_error then marks the device broken).
 */
static bool vmmbib_ctrl_queue(VMMBypassIB *vib, VirtQueueElement *elem)
{
    VirtIODevice *vdev = VIRTIO_DEVICE(vib);
    size_t out_len = iov_size(elem->out_sg, elem->out_num);
    size_t in_len = iov_size(elem->in_sg, elem->in_num);
    VMMBypassIBCmd *cmd;

    if (in_len < sizeof(struct vmmbib_resp_hdr)) {
        virtio_error(vdev, "vmmbypass-ib: controlq reply buffer of %zu bytes "
                     "cannot hold a %zu-byte status", in_len,
                     sizeof(struct vmmbib_resp_hdr));
        return false;
    }
    cmd = g_new0(VMMBypassIBCmd, 1);
    cmd->elem = elem;
    cmd->start_ns = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
    /*
     * Copy at most one byte more than any command: the backend then sees
     * an oversized request as such and answers BAD_LENGTH, and we never
     * read the rest.  This copy is the only read of the request.
     */
    cmd->req_len = iov_to_buf(elem->out_sg, elem->out_num, 0, cmd->req,
                              MIN(out_len, sizeof(cmd->req)));
    cmd->reply_cap = MIN(in_len, sizeof(cmd->reply));
    qemu_mutex_lock(&vib->cmd_lock);
    QSIMPLEQ_INSERT_TAIL(&vib->cmd_todo, cmd, next);
    qemu_cond_signal(&vib->cmd_cond);
    qemu_mutex_unlock(&vib->cmd_lock);
    return true;
}

static void vmmbib_handle_ctrl(VirtIODevice *vdev, VirtQueue *vq)
{
    VMMBypassIB *vib = VMMBYPASS_IB(vdev);
    VirtQueueElement *elem;

    /* Bounded: the guest has at most a queue's worth outstanding. */
    while ((elem = virtqueue_pop(vq, sizeof(VirtQueueElement)))) {
        if (!vmmbib_ctrl_queue(vib, elem)) {
            virtqueue_detach_element(vq, elem, 0);
            g_free(elem);
            return;
        }
    }
}

/*
 * Forget every queued and finished command and wait for the one running:
 * a reset discards the guest's requests.  BQL held.
 */
static void vmmbib_cmd_flush(VMMBypassIB *vib)
{
    VMMBypassIBCmd *cmd;

    qemu_mutex_lock(&vib->cmd_lock);
    while (vib->cmd_busy) {
        qemu_cond_wait(&vib->cmd_idle, &vib->cmd_lock);
    }
    while ((cmd = QSIMPLEQ_FIRST(&vib->cmd_todo))) {
        QSIMPLEQ_REMOVE_HEAD(&vib->cmd_todo, next);
        g_free(cmd->elem);
        g_free(cmd);
    }
    while ((cmd = QSIMPLEQ_FIRST(&vib->cmd_done))) {
        QSIMPLEQ_REMOVE_HEAD(&vib->cmd_done, next);
        g_free(cmd->elem);
        g_free(cmd);
    }
    qemu_mutex_unlock(&vib->cmd_lock);
    vmmbib_uar_apply_pending(vib);
}

/*
 * Deliver pending events into the guest's eventq buffers.  Events wait in
 * the pending queue while the guest has posted no buffer.
 */
static void vmmbib_event_bh(void *opaque)
{
    VMMBypassIB *vib = opaque;
    VirtIODevice *vdev = VIRTIO_DEVICE(vib);
    bool pushed = false;

    qemu_mutex_lock(&vib->event_lock);
    while (vib->pending_count) {
        VirtQueueElement *elem = virtqueue_pop(vib->event_vq,
                                               sizeof(VirtQueueElement));
        struct vmmbib_event *ev = &vib->pending[vib->pending_head];

        if (!elem) {
            break;
        }
        if (elem->out_num || iov_size(elem->in_sg, elem->in_num) <
            sizeof(*ev)) {
            virtio_error(vdev, "vmmbypass-ib: eventq buffers must be "
                         "device-writable and hold %zu bytes", sizeof(*ev));
            virtqueue_detach_element(vib->event_vq, elem, 0);
            g_free(elem);
            break;
        }
        iov_from_buf(elem->in_sg, elem->in_num, 0, ev, sizeof(*ev));
        virtqueue_push(vib->event_vq, elem, sizeof(*ev));
        g_free(elem);
        trace_vmmbib_event(vib, le16_to_cpu(ev->type),
                           le32_to_cpu(ev->handle));
        vib->pending_head = (vib->pending_head + 1) %
                            VMMBYPASS_IB_PENDING_EVENTS;
        vib->pending_count--;
        pushed = true;
    }
    qemu_mutex_unlock(&vib->event_lock);
    if (pushed) {
        virtio_notify(vdev, vib->event_vq);
    }
}

static void vmmbib_handle_event(VirtIODevice *vdev, VirtQueue *vq)
{
    /* New buffers: events may be waiting for them. */
    qemu_bh_schedule(VMMBYPASS_IB(vdev)->event_bh);
}

/* libvmmbib callback, from the engine thread or a command. */
static void vmmbib_event(void *opaque, const struct vmmbib_event *ev)
{
    VMMBypassIB *vib = opaque;

    qemu_mutex_lock(&vib->event_lock);
    if (vib->pending_count == VMMBYPASS_IB_PENDING_EVENTS) {
        vib->stats.events_dropped++;
    } else {
        vib->pending[(vib->pending_head + vib->pending_count) %
                     VMMBYPASS_IB_PENDING_EVENTS] = *ev;
        vib->pending_count++;
    }
    qemu_mutex_unlock(&vib->event_lock);
    qemu_bh_schedule(vib->event_bh);
}

/* libvmmbib callback: host address of guest RAM, from any thread. */
static void *vmmbib_guest_ptr(void *opaque, uint64_t gpa, uint64_t len)
{
    VMMBypassIB *vib = opaque;
    void *ptr = NULL;
    unsigned int i;

    qemu_mutex_lock(&vib->ram_lock);
    for (i = 0; i < vib->ram_count; i++) {
        VMMBypassIBRamSection *r = &vib->ram[i];

        /* Written so that no sum can wrap. */
        if (gpa >= r->gpa && len <= r->size && gpa - r->gpa <= r->size - len) {
            ptr = r->hva + (gpa - r->gpa);
            break;
        }
    }
    qemu_mutex_unlock(&vib->ram_lock);
    return ptr;
}

/* Only ordinary writable guest RAM: not ROM, not a device's RAM. */
static bool vmmbib_section_is_guest_ram(VMMBypassIB *vib,
                                        MemoryRegionSection *section)
{
    MemoryRegion *mr = section->mr;

    return memory_region_is_ram(mr) && !memory_region_is_ram_device(mr) &&
           !mr->readonly && !memory_region_is_rom(mr) && mr != &vib->db_ram;
}

static void vmmbib_ram_add(MemoryListener *listener,
                           MemoryRegionSection *section)
{
    VMMBypassIB *vib = container_of(listener, VMMBypassIB, ram_listener);
    VMMBypassIBRamSection *r;

    if (!vmmbib_section_is_guest_ram(vib, section)) {
        return;
    }
    qemu_mutex_lock(&vib->ram_lock);
    vib->ram = g_renew(VMMBypassIBRamSection, vib->ram, vib->ram_count + 1);
    r = &vib->ram[vib->ram_count++];
    r->gpa = section->offset_within_address_space;
    r->size = int128_get64(section->size);
    r->hva = (uint8_t *)memory_region_get_ram_ptr(section->mr) +
             section->offset_within_region;
    qemu_mutex_unlock(&vib->ram_lock);
}

static void vmmbib_ram_del(MemoryListener *listener,
                           MemoryRegionSection *section)
{
    VMMBypassIB *vib = container_of(listener, VMMBypassIB, ram_listener);
    unsigned int i;

    qemu_mutex_lock(&vib->ram_lock);
    for (i = 0; i < vib->ram_count; i++) {
        if (vib->ram[i].gpa == section->offset_within_address_space) {
            vib->ram[i] = vib->ram[--vib->ram_count];
            break;
        }
    }
    qemu_mutex_unlock(&vib->ram_lock);
}

/*
 * Kick page of a slot: KICK wakes the engine, DOORBELL is one trapped
 * doorbell (doorbell=mmio).  Reads and other offsets are no register:
 * they read as zero and are counted, never fatal.
 */
static uint64_t vmmbib_kick_read(void *opaque, hwaddr addr, unsigned size)
{
    MemoryRegion *mr = opaque;
    VMMBypassIB *vib = VMMBYPASS_IB(memory_region_owner(mr));

    vib->stats.bad_register_accesses++;
    trace_vmmbib_bad_register(vib, mr - vib->kick_mmio, addr, size, false);
    return 0;
}

static void vmmbib_kick_write(void *opaque, hwaddr addr, uint64_t val,
                              unsigned size)
{
    MemoryRegion *mr = opaque;
    VMMBypassIB *vib = VMMBYPASS_IB(memory_region_owner(mr));
    unsigned int slot = mr - vib->kick_mmio;

    if (addr == VMMBIB_KICK && size == 4) {
        vib->stats.kicks++;
        trace_vmmbib_kick(vib, slot);
        vmmbib_dev_kick(vib->backend);
        return;
    }
    if (addr == VMMBIB_DOORBELL && size == 8) {
        vib->stats.doorbell_writes++;
        trace_vmmbib_doorbell(vib, slot, val);
        vmmbib_dev_doorbell(vib->backend, slot, val);
        return;
    }
    vib->stats.bad_register_accesses++;
    trace_vmmbib_bad_register(vib, slot, addr, size, true);
    qemu_log_mask(LOG_GUEST_ERROR, "vmmbypass-ib: write of %u bytes to UAR "
                  "slot %u kick page offset 0x%" HWADDR_PRIx " is no "
                  "register\n", size, slot, addr);
}

static const MemoryRegionOps vmmbib_kick_ops = {
    .read = vmmbib_kick_read,
    .write = vmmbib_kick_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .valid = {
        .min_access_size = 1,
        .max_access_size = 8,
    },
    .impl = {
        .min_access_size = 1,
        .max_access_size = 8,
    },
};

static const struct vmmbib_host_ops vmmbib_host_ops = {
    .guest_ptr = vmmbib_guest_ptr,
    .uar_map = vmmbib_uar_map,
    .uar_unmap = vmmbib_uar_unmap,
    .event = vmmbib_event,
};

static void vmmbib_get_config(VirtIODevice *vdev, uint8_t *config)
{
    VMMBypassIB *vib = VMMBYPASS_IB(vdev);
    struct vmmbib_config cfg = {
        .magic = cpu_to_le32(VMMBIB_MAGIC),
        .abi_version = cpu_to_le16(VMMBIB_ABI_VERSION),
        .num_ports = cpu_to_le16(1),
        .uar_slots = cpu_to_le32(vib->conf.uar_slots),
        .uar_slot_size = cpu_to_le32(VMMBIB_UAR_SLOT_SIZE),
        .max_cmd_size = cpu_to_le32(VMMBIB_MAX_CMD_SIZE),
        .event_size = cpu_to_le32(sizeof(struct vmmbib_event)),
    };

    memcpy(config, &cfg, sizeof(cfg));
}

static uint64_t vmmbib_get_features(VirtIODevice *vdev, uint64_t features,
                                    Error **errp)
{
    /* The backend implements all of them (docs/spec.md, feature bits). */
    virtio_add_feature(&features, VMMBIB_F_SRQ);
    virtio_add_feature(&features, VMMBIB_F_ATOMIC);
    virtio_add_feature(&features, VMMBIB_F_UD);
    return features;
}

static bool vmmbib_backend_create(VMMBypassIB *vib, Error **errp)
{
    const VMMBypassIBConf *c = &vib->conf;
    struct vmmbib_dev_config cfg = {
        .node_guid = c->node_guid,
        .lid = c->lid,
        .uar_slots = c->uar_slots,
        .doorbell_mode = c->doorbell,
    };
    char err[256];

    if (c->uar_slots < 1 || c->uar_slots > VMMBYPASS_IB_MAX_UAR_SLOTS) {
        error_setg(errp, "vmmbypass-ib: uar-slots=%u is out of range: use 1 "
                   "to %u", c->uar_slots, VMMBYPASS_IB_MAX_UAR_SLOTS);
        return false;
    }
    vmmbib_limits_default(&cfg.limits);
    cfg.limits.max_ucontext = c->uar_slots;
    cfg.limits.max_pd = c->max_pd;
    cfg.limits.max_mr = c->max_mr;
    cfg.limits.max_mr_pages = c->max_mr_pages;
    cfg.limits.max_pinned_pages = MIN((uint64_t)c->max_pinned_mb <<
                                      (20 - VMMBIB_PAGE_SHIFT), UINT32_MAX);
    cfg.limits.max_cq = c->max_cq;
    cfg.limits.max_cqe = c->max_cqe;
    cfg.limits.max_qp = c->max_qp;
    cfg.limits.max_qp_wr = c->max_qp_wr;
    cfg.limits.max_send_sge = c->max_sge;
    cfg.limits.max_recv_sge = c->max_sge;
    cfg.limits.max_srq = c->max_srq;
    cfg.limits.max_srq_wr = c->max_srq_wr;
    cfg.limits.max_srq_sge = c->max_sge;
    cfg.limits.max_ah = c->max_ah;
    cfg.limits.max_inline_data = c->max_inline_data;

    vib->backend = vmmbib_dev_new(&cfg, NULL, &vmmbib_host_ops, vib, err,
                                  sizeof(err));
    if (!vib->backend) {
        error_setg(errp, "vmmbypass-ib: %s", err);
        return false;
    }
    return true;
}

/* The UAR window; the PCI wrapper maps it as a BAR. */
static void vmmbib_uar_window_init(VMMBypassIB *vib)
{
    Object *owner = OBJECT(vib);
    uint32_t slots = vib->conf.uar_slots;
    uint32_t i;

    memory_region_init(&vib->uar_window, owner, "vmmbypass-ib-uar",
                       vmmbypass_ib_uar_window_size(vib));
    /*
     * Plain RAM, not a RAM device: TCG then accesses it directly, so a
     * doorbell in steady state is a store, not a call into QEMU.
     */
    memory_region_init_ram_ptr(&vib->db_ram, owner, "vmmbypass-ib-doorbells",
                               (uint64_t)slots * VMMBIB_PAGE_SIZE,
                               vmmbib_dev_db_pages(vib->backend));
    vib->db_alias = g_new0(MemoryRegion, slots);
    vib->kick_mmio = g_new0(MemoryRegion, slots);
    vib->slot_mapped = g_new0(bool, slots);
    for (i = 0; i < slots; i++) {
        memory_region_init_alias(&vib->db_alias[i], owner,
                                 "vmmbypass-ib-doorbell-page", &vib->db_ram,
                                 (hwaddr)i * VMMBIB_PAGE_SIZE,
                                 VMMBIB_PAGE_SIZE);
        memory_region_init_io(&vib->kick_mmio[i], owner, &vmmbib_kick_ops,
                              &vib->kick_mmio[i], "vmmbypass-ib-kick-page",
                              VMMBIB_PAGE_SIZE);
        memory_region_add_subregion(&vib->uar_window,
                                    (hwaddr)i * VMMBIB_UAR_SLOT_SIZE +
                                    VMMBIB_UAR_KICK_PAGE_OFFSET,
                                    &vib->kick_mmio[i]);
    }
}

static void vmmbib_uar_window_fini(VMMBypassIB *vib)
{
    uint32_t i;

    for (i = 0; i < vib->conf.uar_slots; i++) {
        memory_region_del_subregion(&vib->uar_window, &vib->kick_mmio[i]);
        object_unparent(OBJECT(&vib->kick_mmio[i]));
        object_unparent(OBJECT(&vib->db_alias[i]));
    }
    object_unparent(OBJECT(&vib->db_ram));
    g_free(vib->db_alias);
    g_free(vib->kick_mmio);
    g_free(vib->slot_mapped);
    vib->db_alias = NULL;
    vib->kick_mmio = NULL;
    vib->slot_mapped = NULL;
}

static void vmmbib_realize(DeviceState *dev, Error **errp)
{
    VirtIODevice *vdev = VIRTIO_DEVICE(dev);
    VMMBypassIB *vib = VMMBYPASS_IB(dev);

    qemu_mutex_init(&vib->ram_lock);
    qemu_mutex_init(&vib->event_lock);
    if (!vmmbib_backend_create(vib, errp)) {
        qemu_mutex_destroy(&vib->event_lock);
        qemu_mutex_destroy(&vib->ram_lock);
        return;
    }
    vmmbib_uar_window_init(vib);
    vib->ram_listener = (MemoryListener) {
        .name = "vmmbypass-ib",
        .region_add = vmmbib_ram_add,
        .region_del = vmmbib_ram_del,
    };
    memory_listener_register(&vib->ram_listener, &address_space_memory);

    virtio_init(vdev, VIRTIO_ID_RDMA, sizeof(struct vmmbib_config));
    vib->ctrl_vq = virtio_add_queue(vdev, VMMBYPASS_IB_QUEUE_SIZE,
                                    vmmbib_handle_ctrl);
    vib->event_vq = virtio_add_queue(vdev, VMMBYPASS_IB_QUEUE_SIZE,
                                     vmmbib_handle_event);
    vib->event_bh = virtio_bh_new_guarded(dev, vmmbib_event_bh, vib);
    vib->cmd_done_bh = virtio_bh_new_guarded(dev, vmmbib_cmd_done_bh, vib);
    qemu_mutex_init(&vib->cmd_lock);
    qemu_cond_init(&vib->cmd_cond);
    qemu_cond_init(&vib->cmd_idle);
    QSIMPLEQ_INIT(&vib->cmd_todo);
    QSIMPLEQ_INIT(&vib->cmd_done);
    QSIMPLEQ_INIT(&vib->uar_ops);
    qemu_thread_create(&vib->cmd_thread, "vmmbib-cmd", vmmbib_cmd_thread,
                       vib, QEMU_THREAD_JOINABLE);
    trace_vmmbib_realize(vib, vib->conf.uar_slots, vib->conf.doorbell);
}

static void vmmbib_unrealize(DeviceState *dev)
{
    VirtIODevice *vdev = VIRTIO_DEVICE(dev);
    VMMBypassIB *vib = VMMBYPASS_IB(dev);

    vmmbib_cmd_flush(vib);
    qemu_mutex_lock(&vib->cmd_lock);
    vib->cmd_stop = true;
    qemu_cond_signal(&vib->cmd_cond);
    qemu_mutex_unlock(&vib->cmd_lock);
    qemu_thread_join(&vib->cmd_thread);
    qemu_cond_destroy(&vib->cmd_idle);
    qemu_cond_destroy(&vib->cmd_cond);
    qemu_mutex_destroy(&vib->cmd_lock);
    qemu_bh_delete(vib->cmd_done_bh);

    /* Stops the engine: nothing raises events or reads guest RAM after. */
    vmmbib_dev_reset(vib->backend);
    vmmbib_dev_free(vib->backend);
    vib->backend = NULL;
    memory_listener_unregister(&vib->ram_listener);
    qemu_bh_delete(vib->event_bh);
    virtio_delete_queue(vib->event_vq);
    virtio_delete_queue(vib->ctrl_vq);
    virtio_cleanup(vdev);
    vmmbib_uar_window_fini(vib);
    g_free(vib->ram);
    vib->ram = NULL;
    vib->ram_count = 0;
    qemu_mutex_destroy(&vib->event_lock);
    qemu_mutex_destroy(&vib->ram_lock);
}

/* A virtio reset (driver unload, guest reboot) drops every guest object. */
static void vmmbib_reset(VirtIODevice *vdev)
{
    VMMBypassIB *vib = VMMBYPASS_IB(vdev);

    vmmbib_cmd_flush(vib);
    vmmbib_dev_reset(vib->backend);
    /* Events of objects that no longer exist must not reach the guest. */
    qemu_mutex_lock(&vib->event_lock);
    vib->pending_head = 0;
    vib->pending_count = 0;
    qemu_mutex_unlock(&vib->event_lock);
    trace_vmmbib_reset(vib);
}

static void vmmbib_get_stat(Object *obj, Visitor *v, const char *name,
                            void *opaque, Error **errp)
{
    VMMBypassIB *vib = VMMBYPASS_IB(obj);
    struct vmmbib_dev_stats bs = { 0 };
    uint64_t value = 0;
    size_t i;

    if (vib->backend) {
        vmmbib_dev_get_stats(vib->backend, &bs);
    }

    const struct {
        const char *name;
        uint64_t value;
    } stats[] = {
        { "stats-kicks", vib->stats.kicks },
        { "stats-doorbell-writes", vib->stats.doorbell_writes },
        { "stats-bad-register-accesses", vib->stats.bad_register_accesses },
        { "stats-events-dropped", vib->stats.events_dropped },
        { "stats-commands", bs.commands },
        { "stats-command-errors", bs.command_errors },
        { "stats-doorbells", bs.doorbells },
        { "stats-bad-doorbells", bs.bad_doorbells },
        { "stats-wqes", bs.wqes },
        { "stats-cqes", bs.cqes },
        { "stats-events", bs.events },
        { "stats-error-completions", bs.error_completions },
        { "stats-sa-requests", bs.sa_requests },
        { "stats-sa-dropped", bs.sa_dropped },
        { "stats-ucontexts", bs.ucontexts },
        { "stats-pds", bs.pds },
        { "stats-mrs", bs.mrs },
        { "stats-cqs", bs.cqs },
        { "stats-qps", bs.qps },
        { "stats-srqs", bs.srqs },
        { "stats-ahs", bs.ahs },
        { "stats-pinned-pages", bs.pinned_pages },
    };

    for (i = 0; i < ARRAY_SIZE(stats); i++) {
        if (!strcmp(name, stats[i].name)) {
            value = stats[i].value;
        }
    }
    visit_type_uint64(v, name, &value, errp);
}

static const char *const vmmbib_stat_names[] = {
    "stats-kicks", "stats-doorbell-writes", "stats-bad-register-accesses",
    "stats-events-dropped", "stats-commands", "stats-command-errors",
    "stats-doorbells", "stats-bad-doorbells", "stats-wqes", "stats-cqes",
    "stats-events", "stats-error-completions", "stats-sa-requests",
    "stats-sa-dropped", "stats-ucontexts",
    "stats-pds", "stats-mrs", "stats-cqs", "stats-qps", "stats-srqs",
    "stats-ahs", "stats-pinned-pages",
};

static void vmmbib_instance_init(Object *obj)
{
    size_t i;

    /* Read-only counters, e.g. qom-get path=... property=stats-commands. */
    for (i = 0; i < ARRAY_SIZE(vmmbib_stat_names); i++) {
        object_property_add(obj, vmmbib_stat_names[i], "uint64",
                            vmmbib_get_stat, NULL, NULL, NULL);
    }
}

void vmmbypass_ib_alias_stats(VMMBypassIB *vib, Object *proxy)
{
    size_t i;

    for (i = 0; i < ARRAY_SIZE(vmmbib_stat_names); i++) {
        object_property_add_alias(proxy, vmmbib_stat_names[i], OBJECT(vib),
                                  vmmbib_stat_names[i]);
    }
}

static const QEnumLookup vmmbib_doorbell_lookup = {
    .array = (const char *const[]) { "ring", "mmio" },
    .size = 2,
};

static const PropertyInfo vmmbib_prop_doorbell = {
    .type = "VMMBypassIBDoorbell",
    .description = "ring (exitless, kick only to wake the engine) or mmio "
                   "(every doorbell is a trapped write)",
    .enum_table = &vmmbib_doorbell_lookup,
    .get = qdev_propinfo_get_enum,
    .set = qdev_propinfo_set_enum,
    .set_default_value = qdev_propinfo_set_default_value_enum,
};

static const Property vmmbib_properties[] = {
    DEFINE_PROP_UINT32("max-pd", VMMBypassIB, conf.max_pd, 1024),
    DEFINE_PROP_UINT32("max-mr", VMMBypassIB, conf.max_mr, 8192),
    DEFINE_PROP_UINT32("max-mr-pages", VMMBypassIB, conf.max_mr_pages,
                       262144),
    DEFINE_PROP_UINT32("max-pinned-mb", VMMBypassIB, conf.max_pinned_mb,
                       1024),
    DEFINE_PROP_UINT32("max-cq", VMMBypassIB, conf.max_cq, 4096),
    DEFINE_PROP_UINT32("max-cqe", VMMBypassIB, conf.max_cqe, 65536),
    DEFINE_PROP_UINT32("max-qp", VMMBypassIB, conf.max_qp, 4096),
    DEFINE_PROP_UINT32("max-qp-wr", VMMBypassIB, conf.max_qp_wr, 16384),
    DEFINE_PROP_UINT32("max-sge", VMMBypassIB, conf.max_sge, 16),
    DEFINE_PROP_UINT32("max-srq", VMMBypassIB, conf.max_srq, 1024),
    DEFINE_PROP_UINT32("max-srq-wr", VMMBypassIB, conf.max_srq_wr, 16384),
    DEFINE_PROP_UINT32("max-ah", VMMBypassIB, conf.max_ah, 4096),
    DEFINE_PROP_UINT32("max-inline-data", VMMBypassIB, conf.max_inline_data,
                       256),
    DEFINE_PROP_UINT32("uar-slots", VMMBypassIB, conf.uar_slots, 64),
    DEFINE_PROP_UINT64("node-guid", VMMBypassIB, conf.node_guid, 0),
    DEFINE_PROP_UINT16("lid", VMMBypassIB, conf.lid, 0),
    DEFINE_PROP_SIGNED("doorbell", VMMBypassIB, conf.doorbell,
                       VMMBIB_DB_MODE_RING, vmmbib_prop_doorbell, int),
};

/*
 * Guest objects live in libvmmbib and doorbell pages in host memory that
 * migration does not know about yet, so the device blocks migration.
 */
static const VMStateDescription vmstate_vmmbib = {
    .name = "vmmbypass-ib",
    .unmigratable = 1,
};

/* What `-device vmmbypass-ib,help` prints next to each property. */
static const struct {
    const char *name;
    const char *description;
} vmmbib_property_help[] = {
    { "max-pd", "protection domains the guest may hold" },
    { "max-mr", "memory regions the guest may hold" },
    { "max-mr-pages", "pages in one memory region" },
    { "max-pinned-mb", "guest memory (MiB) all regions and rings may pin" },
    { "max-cq", "completion queues the guest may hold" },
    { "max-cqe", "entries in one completion queue" },
    { "max-qp", "queue pairs the guest may hold" },
    { "max-qp-wr", "work requests in one send or receive queue" },
    { "max-sge", "scatter/gather entries in one work request" },
    { "max-srq", "shared receive queues the guest may hold" },
    { "max-srq-wr", "work requests in one shared receive queue" },
    { "max-ah", "address handles the guest may hold" },
    { "max-inline-data", "bytes of inline data in one send work request" },
    { "uar-slots", "doorbell pages in the UAR BAR: one per user context, "
                   "page 0 the kernel's" },
    { "node-guid", "node GUID (0: derived from the LID)" },
    { "lid", "port LID (0: assigned by the engine)" },
};

static void vmmbib_class_init(ObjectClass *klass, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);
    VirtioDeviceClass *vdc = VIRTIO_DEVICE_CLASS(klass);
    size_t i;

    device_class_set_props(dc, vmmbib_properties);
    for (i = 0; i < ARRAY_SIZE(vmmbib_property_help); i++) {
        object_class_property_set_description(
            klass, vmmbib_property_help[i].name,
            vmmbib_property_help[i].description);
    }
    dc->vmsd = &vmstate_vmmbib;
    set_bit(DEVICE_CATEGORY_NETWORK, dc->categories);
    vdc->realize = vmmbib_realize;
    vdc->unrealize = vmmbib_unrealize;
    vdc->get_config = vmmbib_get_config;
    vdc->get_features = vmmbib_get_features;
    vdc->reset = vmmbib_reset;
}

static const TypeInfo vmmbib_info = {
    .name = TYPE_VMMBYPASS_IB,
    .parent = TYPE_VIRTIO_DEVICE,
    .instance_size = sizeof(VMMBypassIB),
    .instance_init = vmmbib_instance_init,
    .class_init = vmmbib_class_init,
};

static void vmmbib_register_types(void)
{
    type_register_static(&vmmbib_info);
}

type_init(vmmbib_register_types)
