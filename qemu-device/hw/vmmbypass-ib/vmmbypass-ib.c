/*
 * vmmbypass-ib: a virtio RDMA device whose data path bypasses QEMU
 *
 * This file is the virtio side: the controlq that carries privileged verbs
 * to libvmmbib, the eventq, and the UAR window of doorbell and kick pages.
 * The guest<->device ABI is include/vmmbypass_ib_abi.h (docs/spec.md).
 *
 * The engine is embedded (libvmmbib's vmmbib_dev, one VM alone on its
 * subnet) unless the chardev property names a socket connected to vmmbibd:
 * then the daemon's engine serves this VM and every other VM joined to it
 * (docs/daemon.md), through libvmmbib's client (vmmbib_client.h).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/iov.h"
#include "qemu/log.h"
#include "qemu/main-loop.h"
#include "qemu/memfd.h"
#include "qemu/module.h"
#include "qemu/sockets.h"
#include "qemu/units.h"
#include "qemu/uuid.h"
#include "qapi/error.h"
#include "qapi/visitor.h"
#include "chardev/char-socket.h"
#include "hw/boards.h"
#include "hw/qdev-properties.h"
#include "hw/qdev-properties-system.h"
#include "hw/core/qdev-prop-internal.h"
#include "system/system.h"
#include "hw/virtio/virtio.h"
#include "hw/vmmbypass-ib/vmmbypass-ib.h"
#include "migration/vmstate.h"
#include "exec/address-spaces.h"
#include "exec/ramblock.h"
#include "standard-headers/linux/virtio_ids.h"
#include "trace.h"

#include "vmmbib.h"
#include "vmmbib_client.h"

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

/* The engine's entry points: vmmbibd's through the client, or embedded. */
static size_t vmmbib_be_execute(VMMBypassIB *vib, const void *req,
                                size_t req_len, void *reply, size_t reply_cap)
{
    if (vib->client) {
        return vmmbib_client_execute(vib->client, req, req_len, reply,
                                     reply_cap);
    }
    return vmmbib_dev_execute(vib->backend, req, req_len, reply, reply_cap);
}

static void vmmbib_be_kick(VMMBypassIB *vib)
{
    if (vib->client) {
        vmmbib_client_kick(vib->client);
    } else {
        vmmbib_dev_kick(vib->backend);
    }
}

/* The eventfd the backend's engine thread waits on while it sleeps. */
static int vmmbib_be_kick_fd(VMMBypassIB *vib)
{
    return vib->client ? vmmbib_client_kick_fd(vib->client) :
                         vmmbib_dev_kick_fd(vib->backend);
}

/*
 * KICK of every slot becomes an ioeventfd on the backend's kick eventfd:
 * a kick wakes the engine (embedded, or vmmbibd's, which made the eventfd
 * and passed it with its HELLO reply) without running device code or the
 * main loop.
 * Under KVM it does not even leave the kernel; under TCG the vCPU thread
 * writes the eventfd in its MMIO dispatch.  The engine reads the eventfd,
 * so it counts the kicks (stats-kicks).  BQL held.
 */
static void vmmbib_kick_eventfd_add(VMMBypassIB *vib)
{
    uint32_t i;

    assert(!vib->kick_eventfd_added);
    event_notifier_init_fd(&vib->kick_notifier, vmmbib_be_kick_fd(vib));
    memory_region_transaction_begin();
    for (i = 0; i < vib->conf.uar_slots; i++) {
        memory_region_add_eventfd(&vib->kick_mmio[i], VMMBIB_KICK, 4, false,
                                  0, &vib->kick_notifier);
    }
    memory_region_transaction_commit();
    vib->kick_eventfd_added = true;
}

/* Before the backend's eventfd goes away; not event_notifier_cleanup. */
static void vmmbib_kick_eventfd_del(VMMBypassIB *vib)
{
    uint32_t i;

    if (!vib->kick_eventfd_added) {
        return;
    }
    memory_region_transaction_begin();
    for (i = 0; i < vib->conf.uar_slots; i++) {
        memory_region_del_eventfd(&vib->kick_mmio[i], VMMBIB_KICK, 4, false,
                                  0, &vib->kick_notifier);
    }
    memory_region_transaction_commit();
    vib->kick_eventfd_added = false;
}

static void vmmbib_be_doorbell(VMMBypassIB *vib, uint32_t slot, uint64_t db)
{
    if (vib->client) {
        vmmbib_client_doorbell(vib->client, slot, db);
    } else {
        vmmbib_dev_doorbell(vib->backend, slot, db);
    }
}

static void vmmbib_be_get_stats(VMMBypassIB *vib,
                                struct vmmbib_dev_stats *stats)
{
    if (vib->client) {
        vmmbib_client_get_stats(vib->client, stats);
    } else if (vib->backend) {
        vmmbib_dev_get_stats(vib->backend, stats);
    }
}

/*
 * The controlq runs asynchronously: the vCPU (or main loop) thread that
 * sees the notification only copies each request and queues it; the
 * command thread executes it in libvmmbib, however long that takes; a
 * bottom half in the main loop completes the request.  Replies go out in
 * the order the commands finish.
 */
struct VMMBypassIBCmd {
    VirtQueueElement *elem;
    size_t req_len;
    size_t reply_cap;
    size_t reply_len;
    int64_t start_ns;
    QSIMPLEQ_ENTRY(VMMBypassIBCmd) next;
    uint8_t req[VMMBIB_MAX_CMD_SIZE + 1];
    /* libvmmbib writes reply bodies as structs: keep them aligned. */
    uint8_t reply[VMMBIB_MAX_REPLY_SIZE] QEMU_ALIGNED(8);
};

/*
 * libvmmbib callbacks: a context's doorbell page enters or leaves its
 * slot.  Every slot's page stays mapped in the UAR window from realize on
 * (vmmbib_db_pages_map), so a context changes no memory region: each
 * change of the memory map rebuilds the flat views and flushes every
 * vCPU's TLB (a KVM memory slot update under KVM), and QEMU 10.0's TCG
 * resolves MMIO through a stale TLB entry against the new map until that
 * flush runs, so a vCPU's store can reach the wrong device (a guest's APIC
 * EOI went to the LPC bridge and its timer interrupt stayed in service:
 * docs/security.md, Soak).  Which process may store to a slot's page is
 * the guest kernel's choice, and a doorbell names only objects of the
 * slot's own context (libvmmbib checks).
 */
static void vmmbib_uar_map(void *opaque, uint32_t slot, void *db_page)
{
    trace_vmmbib_uar_map(opaque, slot);
}

static void vmmbib_uar_unmap(void *opaque, uint32_t slot)
{
    trace_vmmbib_uar_unmap(opaque, slot);
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

        cmd->reply_len = vmmbib_be_execute(vib, cmd->req, cmd->req_len,
                                           cmd->reply, cmd->reply_cap);

        qemu_mutex_lock(&vib->cmd_lock);
        vib->cmd_busy = false;
        QSIMPLEQ_INSERT_TAIL(&vib->cmd_done, cmd, next);
        qemu_cond_broadcast(&vib->cmd_idle);
        qemu_bh_schedule(vib->cmd_done_bh);
    }
    qemu_mutex_unlock(&vib->cmd_lock);
    return NULL;
}

/*
 * x-inject-faults, for tests of the guest driver only (tests/guest/
 * faults.sh): the device misbehaves the way a broken one would.  Reply
 * faults spoil every controlq reply while they are set; event faults
 * push their events once, when set on a started device.
 */
enum {
    VMMBIB_FAULT_NONE,
    VMMBIB_FAULT_REPLY_SHORT,       /* used length: half a header */
    VMMBIB_FAULT_REPLY_LONG,        /* length field one past the body */
    VMMBIB_FAULT_BAD_STATUS,        /* a status the spec does not define */
    VMMBIB_FAULT_WRONG_ID,          /* the used entry names no request */
    VMMBIB_FAULT_EVENT_GARBAGE,     /* unknown types, a short event */
    VMMBIB_FAULT_EVENT_BAD_HANDLE,  /* events of objects never created */
    VMMBIB_FAULT__MAX,
};

static const QEnumLookup vmmbib_fault_lookup = {
    .array = (const char *const[]) {
        "none", "reply-short", "reply-long", "bad-status", "wrong-id",
        "event-garbage", "event-bad-handle",
    },
    .size = VMMBIB_FAULT__MAX,
};

/* A handle and context no guest object has: tables are far smaller. */
#define VMMBIB_FAULT_HANDLE     0x00fedcbau

/* Spoil the reply of @cmd as the fault in force says. */
static void vmmbib_fault_reply(VMMBypassIB *vib, VMMBypassIBCmd *cmd)
{
    VirtIODevice *vdev = VIRTIO_DEVICE(vib);
    struct vmmbib_resp_hdr *hdr = (struct vmmbib_resp_hdr *)cmd->reply;

    switch (vib->inject_faults) {
    case VMMBIB_FAULT_REPLY_SHORT:
        cmd->reply_len = sizeof(*hdr) / 2;
        break;
    case VMMBIB_FAULT_REPLY_LONG:
        hdr->length = cpu_to_le32(le32_to_cpu(hdr->length) + 1);
        break;
    case VMMBIB_FAULT_BAD_STATUS:
        hdr->status = cpu_to_le16(VMMBIB_STATUS_MAX + 0x100);
        break;
    case VMMBIB_FAULT_WRONG_ID:
        /* Split rings: ids are descriptor indexes, the ring size none. */
        if (!virtio_vdev_has_feature(vdev, VIRTIO_F_RING_PACKED)) {
            cmd->elem->index = virtio_queue_get_num(vdev, VMMBIB_VQ_CONTROL);
        }
        break;
    }
}

/* Push @len bytes of @ev into the next eventq buffer, if there is one. */
static void vmmbib_fault_event(VMMBypassIB *vib, uint16_t type,
                               uint32_t handle, size_t len)
{
    struct vmmbib_event ev = {
        .type = cpu_to_le16(type),
        .handle = cpu_to_le32(handle),
        .ctx_handle = cpu_to_le32(VMMBIB_FAULT_HANDLE),
    };
    VirtQueueElement *elem;

    elem = virtqueue_pop(vib->event_vq, sizeof(VirtQueueElement));
    if (!elem) {
        return;
    }
    if (iov_size(elem->in_sg, elem->in_num) < sizeof(ev)) {
        virtqueue_detach_element(vib->event_vq, elem, 0);
        g_free(elem);
        return;
    }
    iov_from_buf(elem->in_sg, elem->in_num, 0, &ev, len);
    virtqueue_push(vib->event_vq, elem, len);
    g_free(elem);
    trace_vmmbib_event(vib, type, handle);
}

/* The events of an event fault, pushed when it is set. */
static void vmmbib_fault_events(VMMBypassIB *vib, int fault)
{
    static const uint16_t object_events[] = {
        VMMBIB_EVENT_COMP, VMMBIB_EVENT_CQ_ERR, VMMBIB_EVENT_QP_FATAL,
        VMMBIB_EVENT_SRQ_ERR,
    };
    VirtIODevice *vdev = VIRTIO_DEVICE(vib);
    size_t i;

    if (!vib->event_vq || !virtio_device_started(vdev, vdev->status)) {
        return;
    }
    /* Under the lock, the device's own events wait their turn. */
    qemu_mutex_lock(&vib->event_lock);
    if (fault == VMMBIB_FAULT_EVENT_GARBAGE) {
        vmmbib_fault_event(vib, 0, 0, sizeof(struct vmmbib_event));
        vmmbib_fault_event(vib, VMMBIB_EVENT_MAX + 1, VMMBIB_FAULT_HANDLE,
                           sizeof(struct vmmbib_event));
        vmmbib_fault_event(vib, 0xffff, VMMBIB_FAULT_HANDLE,
                           sizeof(struct vmmbib_event));
        vmmbib_fault_event(vib, VMMBIB_EVENT_COMP, 0,
                           sizeof(struct vmmbib_event) / 2);
    } else {
        for (i = 0; i < ARRAY_SIZE(object_events); i++) {
            vmmbib_fault_event(vib, object_events[i], VMMBIB_FAULT_HANDLE,
                               sizeof(struct vmmbib_event));
        }
        vmmbib_fault_event(vib, VMMBIB_EVENT_PORT_ERR, 9,
                           sizeof(struct vmmbib_event));
    }
    qemu_mutex_unlock(&vib->event_lock);
    virtio_notify(vdev, vib->event_vq);
}

static int vmmbib_get_inject_faults(Object *obj, Error **errp)
{
    return VMMBYPASS_IB(obj)->inject_faults;
}

static void vmmbib_set_inject_faults(Object *obj, int value, Error **errp)
{
    VMMBypassIB *vib = VMMBYPASS_IB(obj);

    vib->inject_faults = value;
    if (value == VMMBIB_FAULT_EVENT_GARBAGE ||
        value == VMMBIB_FAULT_EVENT_BAD_HANDLE) {
        vmmbib_fault_events(vib, value);
    }
}

/* Main loop: finish executed commands. */
static void vmmbib_cmd_done_bh(void *opaque)
{
    VMMBypassIB *vib = opaque;
    VirtIODevice *vdev = VIRTIO_DEVICE(vib);
    VMMBypassIBCmd *cmd;
    bool pushed = false;

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
        if (vib->inject_faults) {
            vmmbib_fault_reply(vib, cmd);
        }
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

/*
 * Take every request, then look again with notifications re-enabled.
 * virtqueue_pop publishes avail_event (VIRTIO_RING_F_EVENT_IDX) with no
 * barrier before its next read of avail->idx, so without the second look
 * the guest can add a request and read the old avail_event (no kick due)
 * while this loop reads the old avail->idx (empty): that request then
 * waits, unanswered, for the guest's next kick.  Enabling notification
 * publishes avail_event with a full barrier before the re-check.
 */
static void vmmbib_ctrl_pop(VMMBypassIB *vib, VirtQueue *vq)
{
    VirtQueueElement *elem;

    do {
        virtio_queue_set_notification(vq, 0);
        /* Bounded: the guest has at most a queue's worth outstanding. */
        while ((elem = virtqueue_pop(vq, sizeof(VirtQueueElement)))) {
            if (!vmmbib_ctrl_queue(vib, elem)) {
                virtqueue_detach_element(vq, elem, 0);
                g_free(elem);
                virtio_queue_set_notification(vq, 1);
                return;
            }
        }
        virtio_queue_set_notification(vq, 1);
    } while (!virtio_queue_empty(vq));
}

static void vmmbib_handle_ctrl(VirtIODevice *vdev, VirtQueue *vq)
{
    /*
     * No request is consumed before DRIVER_OK (virtio 1.2, 3.1.2): one
     * kicked earlier waits for vmmbib_set_status.
     */
    if (!virtio_device_started(vdev, vdev->status)) {
        return;
    }
    vmmbib_ctrl_pop(VMMBYPASS_IB(vdev), vq);
}

/* At DRIVER_OK, take the requests the guest queued before it. */
static void vmmbib_set_status(VirtIODevice *vdev, uint8_t status)
{
    VMMBypassIB *vib = VMMBYPASS_IB(vdev);

    if ((status & VIRTIO_CONFIG_S_DRIVER_OK) && vib->ctrl_vq &&
        virtio_queue_get_desc_addr(vdev, 0)) {
        vmmbib_ctrl_pop(vib, vib->ctrl_vq);
    }
}

/*
 * Forget every queued and finished command and wait for the one running:
 * a reset discards the guest's requests.  Detaching unmaps the buffers:
 * g_free alone would leak their mappings (and the bounce buffer of one
 * outside RAM) on every reset with a request in flight.  BQL held.
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
        virtqueue_detach_element(vib->ctrl_vq, cmd->elem, 0);
        g_free(cmd->elem);
        g_free(cmd);
    }
    while ((cmd = QSIMPLEQ_FIRST(&vib->cmd_done))) {
        QSIMPLEQ_REMOVE_HEAD(&vib->cmd_done, next);
        virtqueue_detach_element(vib->ctrl_vq, cmd->elem, 0);
        g_free(cmd->elem);
        g_free(cmd);
    }
    qemu_mutex_unlock(&vib->cmd_lock);
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
            /*
             * As in vmmbib_ctrl_pop: publish avail_event with a barrier
             * and look once more, or a buffer the guest adds now brings
             * no kick and the events wait for the next one.
             */
            virtio_queue_set_notification(vib->event_vq, 1);
            elem = virtqueue_pop(vib->event_vq, sizeof(VirtQueueElement));
        }
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

/*
 * Only ordinary writable guest RAM: not ROM, not a device's RAM, not the
 * doorbell pages of this or another vmmbypass-ib.
 */
static bool vmmbib_section_is_guest_ram(VMMBypassIB *vib,
                                        MemoryRegionSection *section)
{
    MemoryRegion *mr = section->mr;
    Object *owner = memory_region_owner(mr);

    return memory_region_is_ram(mr) && !memory_region_is_ram_device(mr) &&
           !mr->readonly && !memory_region_is_rom(mr) && mr != &vib->db_ram &&
           !(owner && object_dynamic_cast(owner, TYPE_VMMBYPASS_IB));
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
    r->fd = section->mr->ram_block ? memory_region_get_fd(section->mr) : -1;
    r->fd_offset = section->offset_within_region +
                   (section->mr->ram_block ? section->mr->ram_block->fd_offset :
                    0);
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

static int vmmbib_ram_cmp(const void *a, const void *b)
{
    const VMMBypassIBRamSection *x = a, *y = b;

    return x->gpa < y->gpa ? -1 : x->gpa > y->gpa;
}

/*
 * vmmbibd: describe guest RAM to the daemon, the sections that have a file
 * (the memfd of memory-backend-memfd), adjacent ones merged.  Sent only
 * when it differs from what the daemon has.  BQL held.
 */
static bool vmmbib_ram_send(VMMBypassIB *vib, Error **errp)
{
    g_autofree VMMBypassIBRamSection *t = NULL;
    g_autofree struct vmmbib_client_region *regions = NULL;
    unsigned int i, n = 0, count;
    char err[256];

    qemu_mutex_lock(&vib->ram_lock);
    count = vib->ram_count;
    t = g_new0(VMMBypassIBRamSection, MAX(count, 1));
    memcpy(t, vib->ram, count * sizeof(*t));
    qemu_mutex_unlock(&vib->ram_lock);
    qsort(t, count, sizeof(*t), vmmbib_ram_cmp);
    for (i = 0; i < count; i++) {
        t[i].hva = NULL;        /* not the daemon's business */
        if (t[i].fd < 0) {
            continue;           /* no file: the daemon cannot reach it */
        }
        if (n && t[n - 1].fd == t[i].fd &&
            t[n - 1].gpa + t[n - 1].size == t[i].gpa &&
            t[n - 1].fd_offset + t[n - 1].size == t[i].fd_offset) {
            t[n - 1].size += t[i].size;
            continue;
        }
        t[n++] = t[i];
    }
    if (vib->ram_sent && n == vib->ram_sent_count &&
        !memcmp(t, vib->ram_sent, n * sizeof(*t))) {
        return true;
    }
    regions = g_new0(struct vmmbib_client_region, MAX(n, 1));
    for (i = 0; i < n; i++) {
        regions[i] = (struct vmmbib_client_region) {
            .gpa = t[i].gpa,
            .size = t[i].size,
            .fd = t[i].fd,
            .offset = t[i].fd_offset,
        };
    }
    if (!vmmbib_client_set_memory(vib->client, regions, n, err,
                                  sizeof(err))) {
        error_setg(errp, "vmmbypass-ib: %s", err);
        return false;
    }
    trace_vmmbib_ram_sent(vib, n);
    g_free(vib->ram_sent);
    vib->ram_sent = g_steal_pointer(&t);
    vib->ram_sent_count = n;
    return true;
}

static void vmmbib_ram_commit(MemoryListener *listener)
{
    VMMBypassIB *vib = container_of(listener, VMMBypassIB, ram_listener);
    Error *local_err = NULL;

    if (!vib->client || !vmmbib_client_connected(vib->client)) {
        return;
    }
    if (!vmmbib_ram_send(vib, &local_err)) {
        /* Once: the guest's DMA to the new layout then fails, visibly. */
        if (!vib->ram_error_reported) {
            vib->ram_error_reported = true;
            error_report_err(local_err);
        } else {
            error_free(local_err);
        }
    }
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
        /* Only if the ioeventfd is not there; the engine counts it. */
        trace_vmmbib_kick(vib, slot);
        vmmbib_be_kick(vib);
        return;
    }
    if (addr == VMMBIB_DOORBELL && size == 8) {
        vib->stats.doorbell_writes++;
        trace_vmmbib_doorbell(vib, slot, val);
        vmmbib_be_doorbell(vib, slot, val);
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
    /*
     * Both backends implement all of them (docs/spec.md, feature bits;
     * docs/design-verbs.md: the verbs backend relays SRQs, UD and AHs).
     */
    virtio_add_feature(&features, VMMBIB_F_SRQ);
    virtio_add_feature(&features, VMMBIB_F_UD);
    virtio_add_feature(&features, VMMBIB_F_ATOMIC);
    return features;
}

/* What vmmbibd takes as a VM id: 1 to 63 of [A-Za-z0-9._:-]. */
static bool vmmbib_vm_id_valid(const char *id)
{
    size_t len = strlen(id);

    return len >= 1 && len <= 63 &&
           strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                      "0123456789._:-") == len;
}

/* vm-id by default: -name, else -uuid, else a random UUID. */
static char *vmmbib_default_vm_id(void)
{
    QemuUUID uuid;

    if (qemu_name) {
        return g_strdup(qemu_name);
    }
    if (qemu_uuid_set) {
        return qemu_uuid_unparse_strdup(&qemu_uuid);
    }
    qemu_uuid_generate(&uuid);
    return qemu_uuid_unparse_strdup(&uuid);
}

/*
 * vmmbibd maps guest RAM from its files: a RAM block must be a shared
 * memfd sealed against shrinking (memory-backend-memfd,share=on).
 */
static bool vmmbib_ram_mr_shareable(MemoryRegion *mr)
{
    int fd, seals;

    while (mr->alias) {
        mr = mr->alias;
    }
    if (!mr->ram_block || !qemu_ram_is_shared(mr->ram_block)) {
        return false;
    }
    fd = memory_region_get_fd(mr);
    if (fd < 0) {
        return false;
    }
    seals = fcntl(fd, F_GET_SEALS);
    return seals >= 0 && (seals & F_SEAL_SHRINK);
}

static bool vmmbib_check_guest_ram(Error **errp)
{
    MachineState *ms = current_machine;
    MemoryRegion *ram = ms ? ms->ram : NULL;
    g_autofree char *size = NULL;
    MemoryRegion *sub;
    bool ok = ram != NULL;

    if (ram && !ram->ram_block && !ram->alias) {
        /* -numa: a container of the nodes' memory backends */
        ok = !QTAILQ_EMPTY(&ram->subregions);
        QTAILQ_FOREACH(sub, &ram->subregions, subregions_link) {
            ok = ok && vmmbib_ram_mr_shareable(sub);
        }
    } else if (ram) {
        ok = vmmbib_ram_mr_shareable(ram);
    }
    if (ok) {
        return true;
    }
    size = ms && !(ms->ram_size & (MiB - 1)) ?
           g_strdup_printf("%" PRIu64 "M", (uint64_t)ms->ram_size / MiB) :
           g_strdup_printf("%" PRIu64, ms ? (uint64_t)ms->ram_size : 0);
    error_setg(errp, "vmmbypass-ib: with chardev= (vmmbibd) guest RAM must "
               "be a shared memfd the daemon can map: add -object "
               "memory-backend-memfd,id=mem,share=on,size=%s -machine "
               "memory-backend=mem (with -numa: make every node's memdev "
               "a memory-backend-memfd with share=on)", size);
    return false;
}

/* Main loop: the client's fds are no longer watched. */
static void vmmbib_client_unwatch(VMMBypassIB *vib)
{
    if (vib->client_watched) {
        qemu_set_fd_handler(vmmbib_client_event_fd(vib->client), NULL, NULL,
                            NULL);
        qemu_set_fd_handler(vmmbib_client_socket_fd(vib->client), NULL, NULL,
                            NULL);
        vib->client_watched = false;
    }
}

/*
 * Main loop: events of the daemon's engine for this VM (into the eventq
 * through vmmbib_event), or the daemon went away (the client then raises
 * DEVICE_FATAL once, and every command fails with DEVICE_ERROR).
 */
static void vmmbib_client_readable(void *opaque)
{
    VMMBypassIB *vib = opaque;

    if (!vmmbib_client_process_events(vib->client)) {
        vmmbib_client_unwatch(vib);
        error_report("vmmbypass-ib: vmmbibd closed the connection: the "
                     "guest's RDMA device failed (DEVICE_FATAL); restart the "
                     "daemon, then reset the device (docs/daemon.md)");
    }
}

static void vmmbib_client_watch(VMMBypassIB *vib)
{
    /*
     * The event fd is the daemon's CALL pipe: readable when events wait.
     * Between requests the daemon sends nothing on the socket: readable
     * means it is gone.  (While the command thread waits for a reply the
     * client ignores it.)
     */
    qemu_set_fd_handler(vmmbib_client_event_fd(vib->client),
                        vmmbib_client_readable, NULL, vib);
    qemu_set_fd_handler(vmmbib_client_socket_fd(vib->client),
                        vmmbib_client_readable, NULL, vib);
    vib->client_watched = true;
}

/*
 * Join vmmbibd on the socket of the chardev.  The client library speaks
 * the daemon's protocol itself, with blocking sendmsg/recvmsg and fds
 * (SCM_RIGHTS) from whichever thread calls it (the command thread, the
 * main loop); so the device takes its own copy of the chardev's connected
 * socket rather than doing the I/O through CharBackend, whose handlers
 * belong to the main loop.  The chardev, which gets no frontend handlers,
 * never reads from the socket.
 */
static bool vmmbib_client_create(VMMBypassIB *vib,
                                 const struct vmmbib_dev_config *dev_cfg,
                                 Error **errp)
{
    Chardev *chr = qemu_chr_fe_get_driver(&vib->chr);
    SocketChardev *s = (SocketChardev *)object_dynamic_cast(
                           OBJECT(chr), TYPE_CHARDEV_SOCKET);
    struct vmmbib_dev_config cfg_copy = *dev_cfg;
    const struct vmmbib_dev_config *cfg = &cfg_copy;
    g_autofree char *id = NULL;
    char err[256];

    /* The daemon's engine polls as vmmbibd --idle-poll-us says. */
    cfg_copy.idle_poll_us = 0;
    int fd;

    if (vib->conf.lid || vib->conf.node_guid) {
        error_setg(errp, "vmmbypass-ib: with chardev= the LID and node GUID "
                   "are vmmbibd's to choose (stable per vm-id): do not set "
                   "lid or node-guid");
        return false;
    }
    if (!s || s->is_listen || s->state != TCP_CHARDEV_STATE_CONNECTED ||
        !s->sioc || s->tls_creds || s->is_websock || s->do_telnetopt ||
        s->reconnect_time_ms || !s->addr ||
        s->addr->type != SOCKET_ADDRESS_TYPE_UNIX) {
        error_setg(errp, "vmmbypass-ib: chardev '%s' must be a UNIX socket "
                   "connected to vmmbibd: -chardev socket,id=%s,path=<the "
                   "daemon's socket> (a client: no server=on, reconnect-ms, "
                   "tls-creds or websocket)", chr->label, chr->label);
        return false;
    }
    if (!vmmbib_check_guest_ram(errp)) {
        return false;
    }
    id = vib->vm_id ? g_strdup(vib->vm_id) : vmmbib_default_vm_id();
    if (!vmmbib_vm_id_valid(id)) {
        error_setg(errp, "vmmbypass-ib: the VM id '%s'%s must be 1 to 63 of "
                   "A-Z a-z 0-9 . _ : - (set vm-id=)", id,
                   vib->vm_id ? "" : " (from -name)");
        return false;
    }
    fd = dup(s->sioc->fd);
    if (fd < 0) {
        error_setg_errno(errp, errno, "vmmbypass-ib: cannot duplicate the "
                         "socket of chardev '%s'", chr->label);
        return false;
    }
    /* One open file: the chardev's socket turns blocking too, unused. */
    qemu_socket_set_block(fd);
    vib->client = vmmbib_client_new(fd, id, cfg, &vmmbib_host_ops, vib, err,
                                    sizeof(err));
    if (!vib->client) {
        error_setg(errp, "vmmbypass-ib: vmmbibd (chardev '%s'): %s",
                   chr->label, err);
        return false;
    }
    trace_vmmbib_daemon_joined(vib, id, vmmbib_client_lid(vib->client));
    /* To join a restarted daemon at a reset (vmmbib_client_reconnect). */
    vib->daemon_path = g_strdup(s->addr->u.q_unix.path);
    vib->daemon_vm_id = g_steal_pointer(&id);
    vib->daemon_cfg = g_memdup2(cfg, sizeof(*cfg));
    return true;
}

/*
 * vmmbibd went away: join it again, restarted on the same socket path, as
 * the same VM (which keeps its LID and GUID).  The device connects by
 * itself, since the chardev closed its socket when the daemon went away.
 * At a device reset, when no guest object exists; if the daemon is still
 * gone, the device stays failed until the next reset.  BQL held.
 */
/*
 * The new daemon's doorbell memfd in place of the old one, at the same
 * host address (MAP_FIXED) and under the RAM block's own fd (dup2, which
 * drops the old memfd): the memory map does not change, so no TLB entry
 * goes stale (see vmmbib_uar_map).
 */
static bool vmmbib_db_pages_remap(VMMBypassIB *vib, struct vmmbib_client *c,
                                  Error **errp)
{
    void *host = memory_region_get_ram_ptr(&vib->db_ram);
    uint64_t size = memory_region_size(&vib->db_ram);
    int block_fd = memory_region_get_fd(&vib->db_ram);

    if (block_fd < 0) {
        error_setg(errp, "the doorbell pages are not a shared memfd");
        return false;
    }
    if (mmap(host, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
             vmmbib_client_db_fd(c), 0) == MAP_FAILED ||
        dup2(vmmbib_client_db_fd(c), block_fd) < 0) {
        error_setg_errno(errp, errno, "cannot map vmmbibd's new doorbell "
                         "pages");
        return false;
    }
    return true;
}

static void vmmbib_client_reconnect(VMMBypassIB *vib)
{
    struct vmmbib_client *c;
    Error *local_err = NULL;
    char err[256];

    c = vmmbib_client_connect(vib->daemon_path, vib->daemon_vm_id,
                              vib->daemon_cfg, &vmmbib_host_ops, vib, err,
                              sizeof(err));
    if (!c) {
        warn_report("vmmbypass-ib: the device stays failed until vmmbibd is "
                    "back and the device is reset again: %s", err);
        return;
    }
    if (!vmmbib_db_pages_remap(vib, c, &local_err)) {
        error_prepend(&local_err, "vmmbypass-ib: the device stays failed "
                      "until the next reset: ");
        warn_report_err(local_err);
        vmmbib_client_free(c);
        return;
    }
    vmmbib_client_unwatch(vib);
    vmmbib_kick_eventfd_del(vib);
    vmmbib_client_free(vib->client);
    vib->client = c;
    vmmbib_kick_eventfd_add(vib);
    g_free(vib->ram_sent);
    vib->ram_sent = NULL;
    vib->ram_sent_count = 0;
    vib->ram_error_reported = false;
    if (!vmmbib_ram_send(vib, &local_err)) {
        vib->ram_error_reported = true;
        error_report_err(local_err);
    }
    vmmbib_client_watch(vib);
    info_report("vmmbypass-ib: rejoined vmmbibd at %s as VM %s, LID %u",
                vib->daemon_path, vib->daemon_vm_id, vmmbib_client_lid(c));
}

static bool vmmbib_backend_create(VMMBypassIB *vib, Error **errp)
{
    const VMMBypassIBConf *c = &vib->conf;
    struct vmmbib_dev_config cfg = {
        .node_guid = c->node_guid,
        .lid = c->lid,
        .uar_slots = c->uar_slots,
        .doorbell_mode = c->doorbell,
        .idle_poll_us = c->idle_poll_us,
        .backend = c->backend,
        .verbs_port = c->verbs_port,
        .verbs_gid_index = c->verbs_gid_index,
    };
    char err[256];

    if (c->backend != VMMBIB_BACKEND_VERBS && c->verbs_device) {
        error_setg(errp, "vmmbypass-ib: verbs-device=%s needs backend=verbs "
                   "(the soft backend uses no host RDMA device)",
                   c->verbs_device);
        return false;
    }
    if (c->verbs_port < 1 || c->verbs_port > 255) {
        error_setg(errp, "vmmbypass-ib: verbs-port=%u is out of range: host "
                   "ports are numbered from 1 to 255 (ibv_devinfo lists a "
                   "device's ports)", c->verbs_port);
        return false;
    }
    if (c->verbs_gid_index > 65535) {
        error_setg(errp, "vmmbypass-ib: verbs-gid-index=%u is out of range: "
                   "use 0 to 65535 (an index of the host port's GID table)",
                   c->verbs_gid_index);
        return false;
    }
    if (c->verbs_device &&
        strlen(c->verbs_device) >= sizeof(cfg.verbs_device)) {
        error_setg(errp, "vmmbypass-ib: verbs-device=%s is too long: at most "
                   "%zu characters", c->verbs_device,
                   sizeof(cfg.verbs_device) - 1);
        return false;
    }
    pstrcpy(cfg.verbs_device, sizeof(cfg.verbs_device),
            c->verbs_device ? c->verbs_device : "");

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
    cfg.restart_handles = c->restart_handles;

    if (qemu_chr_fe_backend_connected(&vib->chr)) {
        if (c->backend != VMMBIB_BACKEND_SOFT) {
            error_setg(errp, "vmmbypass-ib: with chardev= the daemon's "
                       "backend serves this VM: start vmmbibd "
                       "--backend=verbs instead of setting backend=");
            return false;
        }
        return vmmbib_client_create(vib, &cfg, errp);
    }
    if (vib->vm_id) {
        error_setg(errp, "vmmbypass-ib: vm-id=%s names this VM to vmmbibd: "
                   "it needs chardev= too (a -chardev socket,path=... "
                   "connected to the daemon)", vib->vm_id);
        return false;
    }
    /*
     * The doorbell pages are QEMU RAM that the engine uses: QEMU frees it
     * only after RCU readers, so no vCPU's TLB entry outlives it.
     */
    if (!memory_region_init_ram_nomigrate(&vib->db_ram, OBJECT(vib),
                                          "vmmbypass-ib-doorbells",
                                          (uint64_t)c->uar_slots *
                                          VMMBIB_PAGE_SIZE, errp)) {
        return false;
    }
    cfg.db_pages = memory_region_get_ram_ptr(&vib->db_ram);
    vib->backend = vmmbib_dev_new(&cfg, NULL, &vmmbib_host_ops, vib, err,
                                  sizeof(err));
    if (!vib->backend) {
        object_unparent(OBJECT(&vib->db_ram));
        g_autofree char *named = c->verbs_device ?
            g_strdup_printf("verbs-device=%s", c->verbs_device) : NULL;

        if (named && c->backend == VMMBIB_BACKEND_VERBS &&
            !strstr(err, named)) {
            /* e.g. the host has no RDMA device at all: name the one asked */
            error_setg(errp, "vmmbypass-ib: %s: %s", named, err);
        } else {
            error_setg(errp, "vmmbypass-ib: %s", err);
        }
        return false;
    }
    return true;
}

/*
 * The embedded engine or the client goes away (with the client, the
 * daemon destroys every object of this VM when the socket closes).
 */
static void vmmbib_backend_destroy(VMMBypassIB *vib)
{
    if (vib->client) {
        vmmbib_client_unwatch(vib);
        vmmbib_client_free(vib->client);
        vib->client = NULL;
        /* The chardev holds the socket too: close it for the daemon. */
        qemu_chr_fe_disconnect(&vib->chr);
        g_clear_pointer(&vib->daemon_path, g_free);
        g_clear_pointer(&vib->daemon_vm_id, g_free);
        g_clear_pointer(&vib->daemon_cfg, g_free);
    }
    if (vib->backend) {
        /* Stops the engine: nothing raises events or reads RAM after. */
        vmmbib_dev_reset(vib->backend);
        vmmbib_dev_free(vib->backend);
        vib->backend = NULL;
    }
}

/* The doorbell pages of every slot, and the alias of each slot's page. */
static bool vmmbib_db_ram_init(VMMBypassIB *vib, Error **errp)
{
    Object *owner = OBJECT(vib);
    uint32_t slots = vib->conf.uar_slots;
    uint64_t db_size = (uint64_t)slots * VMMBIB_PAGE_SIZE;
    uint32_t i;

    /*
     * Plain RAM, not a RAM device: TCG then accesses it directly, so a
     * doorbell in steady state is a store, not a call into QEMU.  With
     * vmmbibd, the pages are the daemon's memfd, which its engine polls.
     */
    if (vib->client) {
        int fd = dup(vmmbib_client_db_fd(vib->client));

        if (fd < 0) {
            error_setg_errno(errp, errno, "vmmbypass-ib: cannot duplicate "
                             "vmmbibd's doorbell memfd");
            return false;
        }
        if (!memory_region_init_ram_from_fd(&vib->db_ram, owner,
                                            "vmmbypass-ib-doorbells",
                                            db_size, RAM_SHARED, fd, 0,
                                            errp)) {
            close(fd);
            return false;
        }
    }
    /* Without a daemon, db_ram came before the backend (its db_pages). */
    for (i = 0; i < slots; i++) {
        memory_region_init_alias(&vib->db_alias[i], owner,
                                 "vmmbypass-ib-doorbell-page", &vib->db_ram,
                                 (hwaddr)i * VMMBIB_PAGE_SIZE,
                                 VMMBIB_PAGE_SIZE);
    }
    return true;
}

/* Every slot's doorbell page into the UAR window, for good (see above). */
static void vmmbib_db_pages_map(VMMBypassIB *vib)
{
    uint32_t i;

    memory_region_transaction_begin();
    for (i = 0; i < vib->conf.uar_slots; i++) {
        memory_region_add_subregion(&vib->uar_window,
                                    (hwaddr)i * VMMBIB_UAR_SLOT_SIZE +
                                    VMMBIB_UAR_DB_PAGE_OFFSET,
                                    &vib->db_alias[i]);
    }
    memory_region_transaction_commit();
    vib->db_pages_mapped = true;
}

/*
 * Out of the window, before the backend that uses the pages goes; the
 * regions themselves go after it (vmmbib_uar_window_fini).
 */
static void vmmbib_db_pages_unmap(VMMBypassIB *vib)
{
    uint32_t i;

    if (!vib->db_pages_mapped) {
        return;
    }
    memory_region_transaction_begin();
    for (i = 0; i < vib->conf.uar_slots; i++) {
        memory_region_del_subregion(&vib->uar_window, &vib->db_alias[i]);
    }
    memory_region_transaction_commit();
    vib->db_pages_mapped = false;
}

/* The per-slot arrays of the UAR window. */
static void vmmbib_uar_slots_free(VMMBypassIB *vib)
{
    g_clear_pointer(&vib->db_alias, g_free);
    g_clear_pointer(&vib->kick_mmio, g_free);
}

/* The UAR window; the PCI wrapper maps it as a BAR. */
static bool vmmbib_uar_window_init(VMMBypassIB *vib, Error **errp)
{
    Object *owner = OBJECT(vib);
    uint32_t slots = vib->conf.uar_slots;
    uint32_t i;

    vib->db_alias = g_new0(MemoryRegion, slots);
    vib->kick_mmio = g_new0(MemoryRegion, slots);
    if (!vmmbib_db_ram_init(vib, errp)) {
        vmmbib_uar_slots_free(vib);
        return false;
    }
    memory_region_init(&vib->uar_window, owner, "vmmbypass-ib-uar",
                       vmmbypass_ib_uar_window_size(vib));
    for (i = 0; i < slots; i++) {
        memory_region_init_io(&vib->kick_mmio[i], owner, &vmmbib_kick_ops,
                              &vib->kick_mmio[i], "vmmbypass-ib-kick-page",
                              VMMBIB_PAGE_SIZE);
        memory_region_add_subregion(&vib->uar_window,
                                    (hwaddr)i * VMMBIB_UAR_SLOT_SIZE +
                                    VMMBIB_UAR_KICK_PAGE_OFFSET,
                                    &vib->kick_mmio[i]);
    }
    vmmbib_db_pages_map(vib);
    vmmbib_kick_eventfd_add(vib);
    return true;
}

static void vmmbib_uar_window_fini(VMMBypassIB *vib)
{
    uint32_t i;

    vmmbib_kick_eventfd_del(vib);
    vmmbib_db_pages_unmap(vib);
    for (i = 0; i < vib->conf.uar_slots; i++) {
        memory_region_del_subregion(&vib->uar_window, &vib->kick_mmio[i]);
        object_unparent(OBJECT(&vib->kick_mmio[i]));
        object_unparent(OBJECT(&vib->db_alias[i]));
    }
    object_unparent(OBJECT(&vib->db_ram));
    vmmbib_uar_slots_free(vib);
}

static void vmmbib_realize(DeviceState *dev, Error **errp)
{
    VirtIODevice *vdev = VIRTIO_DEVICE(dev);
    VMMBypassIB *vib = VMMBYPASS_IB(dev);

    qemu_mutex_init(&vib->ram_lock);
    qemu_mutex_init(&vib->event_lock);
    if (!vmmbib_backend_create(vib, errp)) {
        goto fail_backend;
    }
    if (!vmmbib_uar_window_init(vib, errp)) {
        goto fail_uar;
    }
    vib->ram_listener = (MemoryListener) {
        .name = "vmmbypass-ib",
        .region_add = vmmbib_ram_add,
        .region_del = vmmbib_ram_del,
        .commit = vmmbib_ram_commit,
    };
    /* The realize reports an error of the first RAM table itself. */
    vib->ram_error_reported = true;
    memory_listener_register(&vib->ram_listener, &address_space_memory);
    if (vib->client) {
        if (!vmmbib_ram_send(vib, errp)) {
            goto fail_ram;
        }
        vmmbib_client_watch(vib);
    }
    vib->ram_error_reported = false;

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
    qemu_thread_create(&vib->cmd_thread, "vmmbib-cmd", vmmbib_cmd_thread,
                       vib, QEMU_THREAD_JOINABLE);
    trace_vmmbib_realize(vib, vib->conf.uar_slots, vib->conf.doorbell);
    return;

fail_ram:
    memory_listener_unregister(&vib->ram_listener);
    g_free(vib->ram);
    vib->ram = NULL;
    vib->ram_count = 0;
    vmmbib_uar_window_fini(vib);
fail_uar:
    vmmbib_backend_destroy(vib);
fail_backend:
    qemu_mutex_destroy(&vib->event_lock);
    qemu_mutex_destroy(&vib->ram_lock);
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

    /*
     * The eventfd is the backend's: no ioeventfd may outlive it; and no
     * vCPU may store to doorbell pages of a backend that is gone.
     */
    vmmbib_kick_eventfd_del(vib);
    vmmbib_db_pages_unmap(vib);
    vmmbib_backend_destroy(vib);
    memory_listener_unregister(&vib->ram_listener);
    qemu_bh_delete(vib->event_bh);
    virtio_delete_queue(vib->event_vq);
    virtio_delete_queue(vib->ctrl_vq);
    virtio_cleanup(vdev);
    vmmbib_uar_window_fini(vib);
    g_free(vib->ram);
    vib->ram = NULL;
    vib->ram_count = 0;
    g_free(vib->ram_sent);
    vib->ram_sent = NULL;
    vib->ram_sent_count = 0;
    qemu_mutex_destroy(&vib->event_lock);
    qemu_mutex_destroy(&vib->ram_lock);
}

/* A virtio reset (driver unload, guest reboot) drops every guest object. */
static void vmmbib_reset(VirtIODevice *vdev)
{
    VMMBypassIB *vib = VMMBYPASS_IB(vdev);

    vmmbib_cmd_flush(vib);
    if (vib->client) {
        vmmbib_client_reset(vib->client);
        if (!vmmbib_client_connected(vib->client)) {
            vmmbib_client_reconnect(vib);
        }
    } else {
        vmmbib_dev_reset(vib->backend);
    }
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

    vmmbib_be_get_stats(vib, &bs);

    const struct {
        const char *name;
        uint64_t value;
    } stats[] = {
        { "stats-kicks", bs.kicks },
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

static const QEnumLookup vmmbib_backend_lookup = {
    .array = (const char *const[]) { "soft", "verbs" },
    .size = 2,
};

static const PropertyInfo vmmbib_prop_backend = {
    .type = "VMMBypassIBBackend",
    .description = "soft (the software HCA engine) or verbs (a host RDMA "
                   "device, verbs-device=, moves the data)",
    .enum_table = &vmmbib_backend_lookup,
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
                       2048),
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
    DEFINE_PROP_UINT32("idle-poll-us", VMMBypassIB, conf.idle_poll_us,
                       VMMBIB_IDLE_POLL_US_DEFAULT),
    DEFINE_PROP_UINT64("node-guid", VMMBypassIB, conf.node_guid, 0),
    DEFINE_PROP_UINT16("lid", VMMBypassIB, conf.lid, 0),
    DEFINE_PROP_SIGNED("doorbell", VMMBypassIB, conf.doorbell,
                       VMMBIB_DB_MODE_RING, vmmbib_prop_doorbell, int),
    DEFINE_PROP_SIGNED("backend", VMMBypassIB, conf.backend,
                       VMMBIB_BACKEND_SOFT, vmmbib_prop_backend, int),
    DEFINE_PROP_STRING("verbs-device", VMMBypassIB, conf.verbs_device),
    DEFINE_PROP_UINT32("verbs-port", VMMBypassIB, conf.verbs_port, 1),
    DEFINE_PROP_UINT32("verbs-gid-index", VMMBypassIB, conf.verbs_gid_index,
                       0),
    DEFINE_PROP_CHR("chardev", VMMBypassIB, chr),
    DEFINE_PROP_STRING("vm-id", VMMBypassIB, vm_id),
    DEFINE_PROP_BOOL("x-restart-handles", VMMBypassIB, conf.restart_handles,
                     false),
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
    { "idle-poll-us", "microseconds the engine polls without work before it "
                      "sleeps (a doorbell then costs one trapped kick)" },
    { "node-guid", "node GUID (0: derived from the LID)" },
    { "lid", "port LID (0: assigned by the engine)" },
    { "verbs-device", "backend=verbs: the host RDMA device, as ibv_devices "
                      "lists it (rxe0, mlx5_0); unset: the first one" },
    { "verbs-port", "backend=verbs: the port of verbs-device, 1 to 255" },
    { "verbs-gid-index", "backend=verbs: the host port's GID for RoCE "
                         "addressing, an index of "
                         "/sys/class/infiniband/DEV/ports/N/gids" },
    { "chardev", "a -chardev socket,path=... connected to vmmbibd: the "
                 "daemon's engine serves this VM (unset: an engine of its "
                 "own inside QEMU)" },
    { "vm-id", "this VM's name to vmmbibd, which keeps its LID and GUID "
               "(default: -name, else the UUID)" },
    { "x-restart-handles", "tests only (QEMU's generic-fuzz), never in "
      "production: a device reset makes handles, keys and QP numbers start "
      "over, so inputs replayed after it can name the objects they create "
      "(and a stale key or QPN would name a new object)" },
    { "x-inject-faults", "tests only, settable at run time (qom-set): "
      "none, or a fault of every controlq reply (reply-short: half a "
      "header; reply-long: a length past the body; bad-status: an "
      "undefined status; wrong-id: a used id naming no request, which "
      "breaks the controlq until reset), or events pushed once when set "
      "(event-garbage: unknown types and a short event; event-bad-handle: "
      "CQ, QP, SRQ and port events naming nothing)" },
};

static void vmmbib_class_init(ObjectClass *klass, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);
    VirtioDeviceClass *vdc = VIRTIO_DEVICE_CLASS(klass);
    size_t i;

    device_class_set_props(dc, vmmbib_properties);
    /*
     * Not a qdev property: tests switch it while the guest runs.  The PCI
     * device gets it as it gets the others, by qdev_alias_all_properties.
     */
    object_class_property_add_enum(klass, "x-inject-faults",
                                   "VMMBypassIBFault", &vmmbib_fault_lookup,
                                   vmmbib_get_inject_faults,
                                   vmmbib_set_inject_faults);
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
    vdc->set_status = vmmbib_set_status;
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
