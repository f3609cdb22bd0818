/*
 * QTest testcases for the vmmbypass-ib device: identity, configuration,
 * controlq requests and their error statuses, the UAR window, reset.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "libqtest-single.h"
#include "qemu/bswap.h"
#include "qemu/module.h"
#include "qobject/qdict.h"
#include "qobject/qjson.h"
#include "qobject/qlist.h"
#include "hw/pci/pci_regs.h"
#include "standard-headers/linux/virtio_config.h"
#include "libqos/qgraph.h"
#include "libqos/pci.h"
#include "libqos/vmmbypass-ib.h"
#include "vmmbypass_ib_abi.h"

#define VMMBIB_TIMEOUT_US (30 * 1000 * 1000)

typedef struct VmmbibReply {
    struct vmmbib_resp_hdr hdr;
    union {
        struct vmmbib_resp_query_device dev;
        struct vmmbib_resp_query_port port;
        struct vmmbib_resp_create_ucontext uctx;
        uint8_t raw[256];
    };
} VmmbibReply;

/*
 * Send @req_len bytes of @req on the controlq with a reply buffer of
 * @reply_size bytes; returns the used length the device reported.
 */
static uint32_t vmmbib_send_raw(QVmmbib *vib, const void *req, size_t req_len,
                                VmmbibReply *reply, size_t reply_size,
                                QGuestAllocator *alloc)
{
    QTestState *qts = global_qtest;
    uint64_t req_addr = guest_alloc(alloc, req_len);
    uint64_t reply_addr = guest_alloc(alloc, reply_size);
    uint32_t head, used_len = 0;

    memset(reply, 0xa5, sizeof(*reply));
    qtest_memwrite(qts, req_addr, req, req_len);
    qtest_memwrite(qts, reply_addr, reply, reply_size);
    head = qvirtqueue_add(qts, vib->ctrl_vq, req_addr, req_len, false, true);
    qvirtqueue_add(qts, vib->ctrl_vq, reply_addr, reply_size, true, false);
    qvirtqueue_kick(qts, vib->vdev, vib->ctrl_vq, head);
    qvirtio_wait_used_elem(qts, vib->vdev, vib->ctrl_vq, head, &used_len,
                           VMMBIB_TIMEOUT_US);
    qtest_memread(qts, reply_addr, reply, MIN(reply_size, sizeof(*reply)));
    guest_free(alloc, req_addr);
    guest_free(alloc, reply_addr);
    return used_len;
}

/* One command; returns its status and checks the reply framing. */
static int vmmbib_cmd(QVmmbib *vib, uint16_t opcode, uint32_t ctx,
                      const void *body, size_t body_len, VmmbibReply *reply,
                      QGuestAllocator *alloc)
{
    uint8_t req[512];
    struct vmmbib_cmd_hdr hdr = {
        .opcode = cpu_to_le16(opcode),
        .ctx_handle = cpu_to_le32(ctx),
    };
    uint32_t used;

    g_assert(sizeof(hdr) + body_len <= sizeof(req));
    memcpy(req, &hdr, sizeof(hdr));
    if (body_len) {
        memcpy(req + sizeof(hdr), body, body_len);
    }
    used = vmmbib_send_raw(vib, req, sizeof(hdr) + body_len, reply,
                           sizeof(*reply), alloc);
    g_assert_cmpuint(used, ==, sizeof(reply->hdr) +
                     le32_to_cpu(reply->hdr.length));
    return le16_to_cpu(reply->hdr.status);
}

/* ---- helpers for object commands, with buffers in guest memory ---- */

typedef struct VmmbibObjs {
    QVmmbib *vib;
    QGuestAllocator *alloc;
    uint32_t ctx;
    uint32_t slot;
} VmmbibObjs;

static uint64_t vmmbib_guest_pages(QGuestAllocator *alloc, unsigned int n)
{
    uint64_t gpa = guest_alloc(alloc, (uint64_t)n * VMMBIB_PAGE_SIZE);

    g_assert_cmphex(gpa & (VMMBIB_PAGE_SIZE - 1), ==, 0);
    qtest_memset(global_qtest, gpa, 0, (uint64_t)n * VMMBIB_PAGE_SIZE);
    return gpa;
}

/* A level-0 (one page) or level-1 page list of @n contiguous pages. */
static struct vmmbib_page_list vmmbib_list(QGuestAllocator *alloc,
                                           uint64_t gpa, unsigned int n)
{
    struct vmmbib_page_list list = {
        .npages = cpu_to_le32(n),
        .page_shift = VMMBIB_PAGE_SHIFT,
    };
    unsigned int i;

    if (n == 1) {
        list.addr = cpu_to_le64(gpa);
        return list;
    }
    list.levels = 1;
    list.addr = cpu_to_le64(vmmbib_guest_pages(alloc, 1));
    for (i = 0; i < n; i++) {
        qtest_writeq(global_qtest, le64_to_cpu(list.addr) + 8 * i,
                     gpa + (uint64_t)i * VMMBIB_PAGE_SIZE);
    }
    return list;
}

static int vmmbib_obj_cmd(VmmbibObjs *o, uint16_t op, const void *body,
                          size_t len, VmmbibReply *r)
{
    return vmmbib_cmd(o->vib, op, o->ctx, body, len, r, o->alloc);
}

static void vmmbib_objs_init(VmmbibObjs *o, QVmmbib *vib,
                             QGuestAllocator *alloc)
{
    VmmbibReply r;

    o->vib = vib;
    o->alloc = alloc;
    o->ctx = 0;
    g_assert_cmpint(vmmbib_obj_cmd(o, VMMBIB_CMD_CREATE_UCONTEXT, NULL, 0,
                                   &r), ==, VMMBIB_STATUS_OK);
    o->ctx = le32_to_cpu(r.uctx.ctx_handle);
    o->slot = le32_to_cpu(r.uctx.uar_slot);
}

static uint32_t vmmbib_handle(VmmbibObjs *o, uint16_t op, const void *body,
                              size_t len)
{
    VmmbibReply r;

    g_assert_cmpint(vmmbib_obj_cmd(o, op, body, len, &r), ==,
                    VMMBIB_STATUS_OK);
    return ldl_le_p(r.raw);     /* every create reply starts with it */
}

static uint64_t vmmbib_stat(const char *name)
{
    QDict *resp = qmp("{'execute': 'qom-get', 'arguments': "
                      "{'path': %s, 'property': %s}}", QVMMBIB_QOM_PATH, name);
    uint64_t value;

    g_assert(qdict_haskey(resp, "return"));
    value = qdict_get_int(resp, "return");
    qobject_unref(resp);
    return value;
}

static void test_pci_identity(void *obj, void *data, QGuestAllocator *alloc)
{
    QVmmbibPCI *dev = obj;
    QPCIDevice *pdev = dev->pci_vdev.pdev;

    g_assert_cmphex(qpci_config_readw(pdev, PCI_VENDOR_ID), ==,
                    VMMBIB_PCI_VENDOR_ID);
    g_assert_cmphex(qpci_config_readw(pdev, PCI_DEVICE_ID), ==,
                    VMMBIB_PCI_DEVICE_ID);
    g_assert_cmphex(qpci_config_readw(pdev, PCI_CLASS_DEVICE), ==,
                    VMMBIB_PCI_CLASS);
    g_assert_cmphex(qpci_config_readb(pdev, PCI_REVISION_ID), ==, 1);
}

static void test_config(void *obj, void *data, QGuestAllocator *alloc)
{
    QVmmbib *vib = obj;
    QVirtioDevice *vdev = vib->vdev;

    g_assert_cmphex(qvirtio_config_readl(vdev, 0), ==, VMMBIB_MAGIC);
    g_assert_cmpuint(qvirtio_config_readw(vdev, 4), ==, VMMBIB_ABI_VERSION);
    g_assert_cmpuint(qvirtio_config_readw(vdev, 6), ==, 1);
    g_assert_cmpuint(qvirtio_config_readl(vdev, 8), ==, 64);
    g_assert_cmpuint(qvirtio_config_readl(vdev, 12), ==,
                     VMMBIB_UAR_SLOT_SIZE);
    g_assert_cmpuint(qvirtio_config_readl(vdev, 20), ==,
                     sizeof(struct vmmbib_event));
    /* start_hw negotiated VERSION_1 and set DRIVER_OK: the device took it. */
    g_assert_cmpuint(qvirtio_get_features(vdev) &
                     (1ull << VIRTIO_F_VERSION_1), !=, 0);
}

static void test_query_device(void *obj, void *data, QGuestAllocator *alloc)
{
    QVmmbib *vib = obj;
    VmmbibReply r;
    struct vmmbib_cmd_query_port qp = { .port_num = 1 };

    g_assert_cmpint(vmmbib_cmd(vib, VMMBIB_CMD_QUERY_DEVICE, 0, NULL, 0, &r,
                               alloc), ==, VMMBIB_STATUS_OK);
    g_assert_cmpuint(le32_to_cpu(r.hdr.length), ==, sizeof(r.dev));
    /* max-qp=77 is set on the command line by this test's options. */
    g_assert_cmpuint(le32_to_cpu(r.dev.max_qp), ==, 77);
    g_assert_cmpuint(le32_to_cpu(r.dev.vendor_part_id), ==,
                     VMMBIB_PCI_DEVICE_ID);
    g_assert_cmpuint(r.dev.phys_port_cnt, ==, 1);

    g_assert_cmpint(vmmbib_cmd(vib, VMMBIB_CMD_QUERY_PORT, 0, &qp,
                               sizeof(qp), &r, alloc), ==, VMMBIB_STATUS_OK);
    g_assert_cmpuint(r.port.state, ==, VMMBIB_PORT_ACTIVE);
    g_assert_cmpuint(le16_to_cpu(r.port.lid), !=, 0);
}

static void test_malformed(void *obj, void *data, QGuestAllocator *alloc)
{
    QVmmbib *vib = obj;
    VmmbibReply r;
    uint8_t junk[300] = { 0 };
    uint64_t errors = vmmbib_stat("stats-command-errors");
    g_autofree char *expect = g_strdup_printf("%" PRIu64, errors + 4);
    char *hmp;
    uint32_t used;

    /* Shorter than a command header. */
    used = vmmbib_send_raw(vib, junk, 3, &r, sizeof(r), alloc);
    g_assert_cmpuint(used, ==, sizeof(r.hdr));
    g_assert_cmpint(le16_to_cpu(r.hdr.status), ==, VMMBIB_STATUS_BAD_LENGTH);

    /* Longer than any command: only the first bytes are even looked at. */
    stw_le_p(junk, VMMBIB_CMD_QUERY_DEVICE);
    used = vmmbib_send_raw(vib, junk, sizeof(junk), &r, sizeof(r), alloc);
    g_assert_cmpuint(used, ==, sizeof(r.hdr));
    g_assert_cmpint(le16_to_cpu(r.hdr.status), ==, VMMBIB_STATUS_BAD_LENGTH);

    g_assert_cmpint(vmmbib_cmd(vib, 0x7777, 0, NULL, 0, &r, alloc), ==,
                    VMMBIB_STATUS_BAD_OPCODE);
    g_assert_cmpint(vmmbib_cmd(vib, VMMBIB_CMD_DESTROY_UCONTEXT, 0x1234, NULL,
                               0, &r, alloc), ==, VMMBIB_STATUS_BAD_HANDLE);
    g_assert_cmpuint(vmmbib_stat("stats-command-errors"), ==, errors + 4);
    /* The same counter in the human monitor. */
    hmp = qtest_hmp(global_qtest, "qom-get %s stats-command-errors",
                    QVMMBIB_QOM_PATH);
    g_assert_cmpstr(g_strstrip(hmp), ==, expect);
    g_free(hmp);

    /* The device still serves valid requests. */
    g_assert_cmpint(vmmbib_cmd(vib, VMMBIB_CMD_QUERY_DEVICE, 0, NULL, 0, &r,
                               alloc), ==, VMMBIB_STATUS_OK);
}

static char *vmmbib_footprint(void);

static void test_uar_window(void *obj, void *data, QGuestAllocator *alloc)
{
    QVmmbibPCI *dev = obj;
    QVmmbib *vib = &dev->vib;
    QPCIDevice *pdev = dev->pci_vdev.pdev;
    uint64_t bar_size;
    QPCIBar uar = qpci_iomap(pdev, 2, &bar_size);
    uint64_t kicks = vmmbib_stat("stats-kicks");
    uint64_t bad = vmmbib_stat("stats-bad-register-accesses");
    VmmbibReply r;
    uint32_t ctx, slot;
    uint64_t db;
    g_autofree char *before = vmmbib_footprint();
    g_autofree char *with_context = NULL;

    g_assert_cmpuint(bar_size, ==, 64 * VMMBIB_UAR_SLOT_SIZE);
    /*
     * No context yet: slot 0's doorbell page is blank, and what the guest
     * stores there (a producer past a doorbell) is no doorbell: the
     * engine reads only the pages of contexts.
     */
    g_assert_cmpuint(qpci_io_readl(pdev, uar, VMMBIB_DB_RING_SIZE), ==, 0);
    qpci_io_writeq(pdev, uar, VMMBIB_DB_RING,
                   VMMBIB_DB(VMMBIB_DB_KIND_SQ, 1, 1));
    qpci_io_writel(pdev, uar, VMMBIB_DB_PRODUCER, 1);
    qpci_io_writel(pdev, uar, VMMBIB_DB_CONSUMER, 0x5a5a);

    g_assert_cmpint(vmmbib_cmd(vib, VMMBIB_CMD_CREATE_UCONTEXT, 0, NULL, 0,
                               &r, alloc), ==, VMMBIB_STATUS_OK);
    ctx = le32_to_cpu(r.uctx.ctx_handle);
    slot = le32_to_cpu(r.uctx.uar_slot);
    g_assert_cmpuint(slot, ==, 0);
    db = (uint64_t)slot * VMMBIB_UAR_SLOT_SIZE;
    g_assert_cmpuint(qpci_io_readl(pdev, uar, db + VMMBIB_DB_RING_SIZE), ==,
                     VMMBIB_DB_RING_ENTRIES);
    /*
     * A context changes no memory region: under TCG a change of the
     * memory map sent a vCPU's MMIO store to another device until the
     * TLB flush it queues (docs/security.md, Soak).
     */
    with_context = vmmbib_footprint();
    g_assert_cmpstr(with_context, ==, before);
    /* CREATE_UCONTEXT cleared what the guest stored before. */
    g_assert_cmpuint(qpci_io_readl(pdev, uar, db + VMMBIB_DB_PRODUCER), ==, 0);
    g_assert_cmpuint(qpci_io_readl(pdev, uar, db + VMMBIB_DB_CONSUMER), ==, 0);
    g_assert_cmpuint(qpci_io_readq(pdev, uar, db + VMMBIB_DB_RING), ==, 0);
    g_assert_cmpuint(vmmbib_stat("stats-bad-doorbells"), ==, 0);
    /*
     * The engine has had no work since realize, so it sleeps, and a new
     * doorbell page must say so or the guest would never kick it.
     */
    g_assert_cmpuint(qpci_io_readl(pdev, uar, db + VMMBIB_DB_ENGINE_STATE),
                     ==, VMMBIB_ENGINE_ASLEEP);
    g_assert_cmpuint(vmmbib_stat("stats-ucontexts"), ==, 1);

    /* The kick register counts; other offsets are no register. */
    qpci_io_writel(pdev, uar, db + VMMBIB_UAR_KICK_PAGE_OFFSET + VMMBIB_KICK,
                   1);
    g_assert_cmpuint(vmmbib_stat("stats-kicks"), ==, kicks + 1);
    g_assert_cmpuint(qpci_io_readl(pdev, uar, db +
                                   VMMBIB_UAR_KICK_PAGE_OFFSET + 0x100),
                     ==, 0);
    qpci_io_writel(pdev, uar, db + VMMBIB_UAR_KICK_PAGE_OFFSET + 0x104, 1);
    g_assert_cmpuint(vmmbib_stat("stats-bad-register-accesses"), ==, bad + 2);

    /*
     * The page stays in the BAR after DESTROY_UCONTEXT (the memory map
     * never changes per context); the next context of the slot finds it
     * cleared again.
     */
    g_assert_cmpint(vmmbib_cmd(vib, VMMBIB_CMD_DESTROY_UCONTEXT, ctx, NULL, 0,
                               &r, alloc), ==, VMMBIB_STATUS_OK);
    g_assert_cmpuint(vmmbib_stat("stats-ucontexts"), ==, 0);
    qpci_io_writel(pdev, uar, db + VMMBIB_DB_PRODUCER, 7);
    g_assert_cmpint(vmmbib_cmd(vib, VMMBIB_CMD_CREATE_UCONTEXT, 0, NULL, 0,
                               &r, alloc), ==, VMMBIB_STATUS_OK);
    g_assert_cmpuint(le32_to_cpu(r.uctx.uar_slot), ==, slot);
    g_assert_cmpuint(qpci_io_readl(pdev, uar, db + VMMBIB_DB_PRODUCER), ==, 0);
    g_assert_cmpint(vmmbib_cmd(vib, VMMBIB_CMD_DESTROY_UCONTEXT,
                               le32_to_cpu(r.uctx.ctx_handle), NULL, 0, &r,
                               alloc), ==, VMMBIB_STATUS_OK);
    qpci_iounmap(pdev, uar);
}

static void test_reset(void *obj, void *data, QGuestAllocator *alloc)
{
    QVmmbib *vib = obj;
    VmmbibReply r;

    g_assert_cmpint(vmmbib_cmd(vib, VMMBIB_CMD_CREATE_UCONTEXT, 0, NULL, 0,
                               &r, alloc), ==, VMMBIB_STATUS_OK);
    g_assert_cmpint(vmmbib_cmd(vib, VMMBIB_CMD_CREATE_UCONTEXT, 0, NULL, 0,
                               &r, alloc), ==, VMMBIB_STATUS_OK);
    g_assert_cmpuint(vmmbib_stat("stats-ucontexts"), ==, 2);
    qvirtio_reset(vib->vdev);
    g_assert_cmpuint(vmmbib_stat("stats-ucontexts"), ==, 0);
}

/* The used index of @vq as the device last wrote it. */
static uint16_t vmmbib_used_idx(QVirtQueue *vq)
{
    return qtest_readw(global_qtest, vq->used + 2);
}

/* Make @req (a request) and @reply (its buffer) available on @vq. */
static uint32_t vmmbib_post_cmd(QVmmbib *vib, QVirtQueue *vq, uint64_t req,
                                size_t req_len, uint64_t reply,
                                size_t reply_len)
{
    QTestState *qts = global_qtest;
    uint32_t head = qvirtqueue_add(qts, vq, req, req_len, false, true);

    qvirtqueue_add(qts, vq, reply, reply_len, true, false);
    qvirtqueue_kick(qts, vib->vdev, vq, head);
    return head;
}

/*
 * Commands before the device is set up (pvrdma: commands before its DSR
 * existed).  A controlq request kicked after a reset, or after the queues
 * are set up but before DRIVER_OK, is not consumed (virtio 1.2, 3.1.2);
 * the one queued before DRIVER_OK is answered once the driver sets it.
 */
static void test_before_driver_ok(void *obj, void *data,
                                  QGuestAllocator *alloc)
{
    QVmmbib *vib = obj;
    QTestState *qts = global_qtest;
    struct vmmbib_cmd_hdr hdr = {
        .opcode = cpu_to_le16(VMMBIB_CMD_CREATE_UCONTEXT),
    };
    uint64_t req = guest_alloc(alloc, sizeof(hdr));
    uint64_t reply = guest_alloc(alloc, sizeof(VmmbibReply));
    uint64_t commands = vmmbib_stat("stats-commands");
    VmmbibReply r;
    uint32_t head, len = 0;
    uint16_t used;

    qtest_memwrite(qts, req, &hdr, sizeof(hdr));

    /* After a reset the device has no ring: the kick is no request. */
    qvirtio_reset(vib->vdev);
    used = vmmbib_used_idx(vib->ctrl_vq);
    vmmbib_post_cmd(vib, vib->ctrl_vq, req, sizeof(hdr), reply, sizeof(r));
    g_usleep(200 * 1000);
    g_assert_cmpuint(vmmbib_used_idx(vib->ctrl_vq), ==, used);
    g_assert_cmpuint(vmmbib_stat("stats-commands"), ==, commands);
    g_assert_cmpuint(vmmbib_stat("stats-ucontexts"), ==, 0);

    /* Queues set up again, features accepted, but no DRIVER_OK yet. */
    qvirtqueue_cleanup(vib->vdev->bus, vib->ctrl_vq, alloc);
    qvirtqueue_cleanup(vib->vdev->bus, vib->event_vq, alloc);
    qvirtio_set_acknowledge(vib->vdev);
    qvirtio_set_driver(vib->vdev);
    qvirtio_set_features(vib->vdev, vib->vdev->features);
    vib->ctrl_vq = qvirtqueue_setup(vib->vdev, alloc, 0);
    vib->event_vq = qvirtqueue_setup(vib->vdev, alloc, 1);
    used = vmmbib_used_idx(vib->ctrl_vq);
    head = vmmbib_post_cmd(vib, vib->ctrl_vq, req, sizeof(hdr), reply,
                           sizeof(r));
    g_usleep(200 * 1000);
    g_assert_cmpuint(vmmbib_used_idx(vib->ctrl_vq), ==, used);
    g_assert_cmpuint(vmmbib_stat("stats-commands"), ==, commands);
    g_assert_cmpuint(vmmbib_stat("stats-ucontexts"), ==, 0);

    /* DRIVER_OK: the waiting request is taken and answered. */
    qvirtio_set_driver_ok(vib->vdev);
    qvirtio_wait_used_elem(qts, vib->vdev, vib->ctrl_vq, head, &len,
                           VMMBIB_TIMEOUT_US);
    qtest_memread(qts, reply, &r, sizeof(r));
    g_assert_cmpint(le16_to_cpu(r.hdr.status), ==, VMMBIB_STATUS_OK);
    g_assert_cmpuint(len, ==, sizeof(r.hdr) + sizeof(r.uctx));
    g_assert_cmpuint(vmmbib_stat("stats-commands"), ==, commands + 1);
    g_assert_cmpuint(vmmbib_stat("stats-ucontexts"), ==, 1);
    guest_free(alloc, req);
    guest_free(alloc, reply);
}

static void test_object_errors(void *obj, void *data, QGuestAllocator *alloc)
{
    QVmmbib *vib = obj;
    VmmbibObjs a, b;
    VmmbibReply r;
    uint64_t buf = vmmbib_guest_pages(alloc, 2);
    uint32_t pd_a;
    struct vmmbib_cmd_reg_mr mr = {
        .access = cpu_to_le32(VMMBIB_ACCESS_LOCAL_WRITE),
        .iova = cpu_to_le64(0x10000),
        .length = cpu_to_le64(2 * VMMBIB_PAGE_SIZE),
    };
    struct vmmbib_cmd_create_cq cq = { .cqe = cpu_to_le32(3) };
    struct vmmbib_cmd_destroy destroy = { 0 };

    vmmbib_objs_init(&a, vib, alloc);
    vmmbib_objs_init(&b, vib, alloc);
    pd_a = vmmbib_handle(&a, VMMBIB_CMD_CREATE_PD, NULL, 0);
    mr.pd_handle = cpu_to_le32(pd_a);

    /* Another context's PD. */
    g_assert_cmpint(vmmbib_obj_cmd(&b, VMMBIB_CMD_REG_MR, &mr, sizeof(mr),
                                   &r), ==, VMMBIB_STATUS_NOT_OWNER);
    /* Pages outside guest RAM. */
    mr.pages = vmmbib_list(alloc, 0x7fff00000000ull, 2);
    g_assert_cmpint(vmmbib_obj_cmd(&a, VMMBIB_CMD_REG_MR, &mr, sizeof(mr),
                                   &r), ==, VMMBIB_STATUS_BAD_ADDRESS);
    /* npages that do not cover the length. */
    mr.pages = vmmbib_list(alloc, buf, 1);
    g_assert_cmpint(vmmbib_obj_cmd(&a, VMMBIB_CMD_REG_MR, &mr, sizeof(mr),
                                   &r), ==, VMMBIB_STATUS_INVALID);
    /* A good one; then its PD is busy. */
    mr.pages = vmmbib_list(alloc, buf, 2);
    g_assert_cmpint(vmmbib_obj_cmd(&a, VMMBIB_CMD_REG_MR, &mr, sizeof(mr),
                                   &r), ==, VMMBIB_STATUS_OK);
    g_assert_cmpuint(vmmbib_stat("stats-pinned-pages"), ==, 2);
    destroy.handle = cpu_to_le32(pd_a);
    g_assert_cmpint(vmmbib_obj_cmd(&a, VMMBIB_CMD_DESTROY_PD, &destroy,
                                   sizeof(destroy), &r), ==,
                    VMMBIB_STATUS_BUSY);
    /* CQ sizes are powers of two. */
    cq.pages = vmmbib_list(alloc, vmmbib_guest_pages(alloc, 1), 1);
    g_assert_cmpint(vmmbib_obj_cmd(&a, VMMBIB_CMD_CREATE_CQ, &cq, sizeof(cq),
                                   &r), ==, VMMBIB_STATUS_INVALID);

    /* Destroying the context frees everything it owned. */
    g_assert_cmpint(vmmbib_obj_cmd(&a, VMMBIB_CMD_DESTROY_UCONTEXT, NULL, 0,
                                   &r), ==, VMMBIB_STATUS_OK);
    g_assert_cmpuint(vmmbib_stat("stats-pinned-pages"), ==, 0);
    g_assert_cmpuint(vmmbib_stat("stats-mrs"), ==, 0);
    g_assert_cmpuint(vmmbib_stat("stats-pds"), ==, 0);
}

/* Modify a QP; returns the status. */
static int vmmbib_modify(VmmbibObjs *o, uint32_t qp, uint32_t mask,
                         const struct vmmbib_qp_attr *attr)
{
    struct vmmbib_cmd_modify_qp m = {
        .qp_handle = cpu_to_le32(qp),
        .attr_mask = cpu_to_le32(mask),
        .attr = *attr,
    };
    VmmbibReply r;

    return vmmbib_obj_cmd(o, VMMBIB_CMD_MODIFY_QP, &m, sizeof(m), &r);
}

/*
 * RC QP @qp: RESET -> INIT (remote @access) -> RTR -> RTS, connected to
 * @dest_qpn at @lid; @retry is its retry and RNR retry count.
 */
static void vmmbib_qp_connect_rc(VmmbibObjs *o, uint32_t qp,
                                 uint32_t dest_qpn, uint16_t lid,
                                 uint32_t access, uint8_t retry)
{
    struct vmmbib_qp_attr attr = {
        .qp_state = VMMBIB_QPS_INIT,
        .port_num = 1,
        .qp_access_flags = cpu_to_le32(access),
    };

    g_assert_cmpint(vmmbib_modify(o, qp, VMMBIB_QP_STATE |
                                  VMMBIB_QP_PKEY_INDEX | VMMBIB_QP_PORT |
                                  VMMBIB_QP_ACCESS_FLAGS, &attr), ==,
                    VMMBIB_STATUS_OK);
    attr.qp_state = VMMBIB_QPS_RTR;
    attr.path_mtu = VMMBIB_MTU_1024;
    attr.dest_qp_num = cpu_to_le32(dest_qpn);
    attr.max_dest_rd_atomic = 1;
    attr.min_rnr_timer = 1;
    attr.ah_attr.dlid = cpu_to_le16(lid);
    attr.ah_attr.port_num = 1;
    g_assert_cmpint(vmmbib_modify(o, qp, VMMBIB_QP_STATE | VMMBIB_QP_AV |
                                  VMMBIB_QP_PATH_MTU | VMMBIB_QP_DEST_QPN |
                                  VMMBIB_QP_RQ_PSN |
                                  VMMBIB_QP_MAX_DEST_RD_ATOMIC |
                                  VMMBIB_QP_MIN_RNR_TIMER, &attr), ==,
                    VMMBIB_STATUS_OK);
    attr.qp_state = VMMBIB_QPS_RTS;
    attr.timeout = 14;
    attr.retry_cnt = retry;
    attr.rnr_retry = retry;
    attr.max_rd_atomic = 1;
    g_assert_cmpint(vmmbib_modify(o, qp, VMMBIB_QP_STATE |
                                  VMMBIB_QP_SQ_PSN | VMMBIB_QP_TIMEOUT |
                                  VMMBIB_QP_RETRY_CNT | VMMBIB_QP_RNR_RETRY |
                                  VMMBIB_QP_MAX_QP_RD_ATOMIC, &attr), ==,
                    VMMBIB_STATUS_OK);
}

/* An RC QP of one context connected to itself, with a CQ and an MR. */
typedef struct VmmbibLoop {
    VmmbibObjs o;
    QPCIDevice *pdev;
    QPCIBar uar;
    uint64_t db_page;       /* offset of the context's doorbell page */
    uint64_t buf;           /* two pages registered as the MR */
    uint64_t cq_ring;
    uint64_t sq;
    uint32_t key, cq, qp, qpn;
} VmmbibLoop;

static void vmmbib_loop_init(VmmbibLoop *l, QVmmbibPCI *dev,
                             QGuestAllocator *alloc)
{
    VmmbibObjs *o = &l->o;
    VmmbibReply r;
    uint32_t pd;
    uint16_t lid;
    struct vmmbib_cmd_query_port port = { .port_num = 1 };
    struct vmmbib_cmd_reg_mr mr = {
        .access = cpu_to_le32(VMMBIB_ACCESS_LOCAL_WRITE |
                              VMMBIB_ACCESS_REMOTE_WRITE),
        .length = cpu_to_le64(2 * VMMBIB_PAGE_SIZE),
    };
    struct vmmbib_cmd_create_cq ccq = { .cqe = cpu_to_le32(8) };
    struct vmmbib_cmd_create_qp cqp = {
        .qp_type = VMMBIB_QPT_RC,
        .caps = {
            .max_send_wr = cpu_to_le32(8),
            .max_recv_wr = cpu_to_le32(8),
            .max_send_sge = cpu_to_le32(2),
            .max_recv_sge = cpu_to_le32(1),
            .sq_wqe_shift = 7,
            .rq_wqe_shift = 5,
        },
    };
    struct vmmbib_qp_attr attr = { 0 };

    l->pdev = dev->pci_vdev.pdev;
    l->uar = qpci_iomap(l->pdev, 2, NULL);
    l->buf = vmmbib_guest_pages(alloc, 2);
    l->cq_ring = vmmbib_guest_pages(alloc, 1);
    l->sq = vmmbib_guest_pages(alloc, 1);
    vmmbib_objs_init(o, &dev->vib, alloc);
    l->db_page = (uint64_t)o->slot * VMMBIB_UAR_SLOT_SIZE;
    g_assert_cmpint(vmmbib_cmd(o->vib, VMMBIB_CMD_QUERY_PORT, 0, &port,
                               sizeof(port), &r, alloc), ==,
                    VMMBIB_STATUS_OK);
    lid = le16_to_cpu(r.port.lid);
    pd = vmmbib_handle(o, VMMBIB_CMD_CREATE_PD, NULL, 0);
    mr.pd_handle = cpu_to_le32(pd);
    mr.iova = cpu_to_le64(l->buf);
    mr.pages = vmmbib_list(alloc, l->buf, 2);
    g_assert_cmpint(vmmbib_obj_cmd(o, VMMBIB_CMD_REG_MR, &mr, sizeof(mr),
                                   &r), ==, VMMBIB_STATUS_OK);
    l->key = ldl_le_p(r.raw + 4);
    ccq.pages = vmmbib_list(alloc, l->cq_ring, 1);
    l->cq = vmmbib_handle(o, VMMBIB_CMD_CREATE_CQ, &ccq, sizeof(ccq));
    cqp.pd_handle = cpu_to_le32(pd);
    cqp.send_cq_handle = cpu_to_le32(l->cq);
    cqp.recv_cq_handle = cpu_to_le32(l->cq);
    cqp.sq_pages = vmmbib_list(alloc, l->sq, 1);
    cqp.rq_pages = vmmbib_list(alloc, vmmbib_guest_pages(alloc, 1), 1);
    g_assert_cmpint(vmmbib_obj_cmd(o, VMMBIB_CMD_CREATE_QP, &cqp,
                                   sizeof(cqp), &r), ==, VMMBIB_STATUS_OK);
    l->qp = ldl_le_p(r.raw);
    l->qpn = ldl_le_p(r.raw + 4);

    /* RESET -> RTR skips INIT: the spec's state machine refuses it. */
    attr.qp_state = VMMBIB_QPS_RTR;
    g_assert_cmpint(vmmbib_modify(o, l->qp, VMMBIB_QP_STATE, &attr), ==,
                    VMMBIB_STATUS_BAD_STATE);
    vmmbib_qp_connect_rc(o, l->qp, l->qpn, lid, VMMBIB_ACCESS_REMOTE_WRITE,
                         1);
}

/*
 * A doorbell as a guest stores it: ring entry first, then the producer;
 * the trapped kick only if the engine says it sleeps.
 */
static void vmmbib_ring_doorbell(VmmbibLoop *l, uint64_t value)
{
    uint32_t producer = qpci_io_readl(l->pdev, l->uar,
                                      l->db_page + VMMBIB_DB_PRODUCER);

    qpci_io_writeq(l->pdev, l->uar, l->db_page + VMMBIB_DB_RING +
                   8 * (producer % VMMBIB_DB_RING_ENTRIES), value);
    qpci_io_writel(l->pdev, l->uar, l->db_page + VMMBIB_DB_PRODUCER,
                   producer + 1);
    if (qpci_io_readl(l->pdev, l->uar, l->db_page +
                      VMMBIB_DB_ENGINE_STATE) == VMMBIB_ENGINE_ASLEEP) {
        qpci_io_writel(l->pdev, l->uar, l->db_page +
                       VMMBIB_UAR_KICK_PAGE_OFFSET + VMMBIB_KICK, 1);
    }
}

/*
 * Post, as SQ entry @index, a signaled RDMA WRITE of @len bytes from
 * @src to @dst (both in the MR), and ring its doorbell.
 */
static void vmmbib_post_write(VmmbibLoop *l, uint32_t index, uint64_t wr_id,
                              uint64_t src, uint64_t dst, uint32_t len)
{
    struct vmmbib_send_wqe wqe = {
        .wr_id = cpu_to_le64(wr_id),
        .opcode = VMMBIB_WR_RDMA_WRITE,
        .flags = VMMBIB_WQE_SIGNALED,
        .num_sge = 1,
    };
    struct vmmbib_sge sge = {
        .addr = cpu_to_le64(src),
        .length = cpu_to_le32(len),
        .lkey = cpu_to_le32(l->key),
    };
    uint64_t slot = l->sq + (uint64_t)(index % 8) * 128;

    wqe.rdma.remote_addr = cpu_to_le64(dst);
    wqe.rdma.rkey = cpu_to_le32(l->key);
    qtest_memwrite(global_qtest, slot, &wqe, sizeof(wqe));
    qtest_memwrite(global_qtest, slot + sizeof(wqe), &sge, sizeof(sge));
    vmmbib_ring_doorbell(l, VMMBIB_DB(VMMBIB_DB_KIND_SQ,
                                      VMMBIB_HANDLE_INDEX(l->qp),
                                      index + 1));
}

/* Wait for CQE @index of the loop's CQ and return it. */
static struct vmmbib_cqe vmmbib_wait_cqe(VmmbibLoop *l, uint32_t index)
{
    struct vmmbib_cqe cqe;
    unsigned int tries;

    for (tries = 0; tries < 2000; tries++) {
        qtest_memread(global_qtest, l->cq_ring +
                      sizeof(struct vmmbib_cq_header) +
                      (uint64_t)(index % 8) * sizeof(cqe), &cqe,
                      sizeof(cqe));
        if (cqe.owner == VMMBIB_CQE_OWNER) {
            break;
        }
        g_usleep(1000);
    }
    g_assert_cmpuint(cqe.owner, ==, VMMBIB_CQE_OWNER);
    return cqe;
}

/*
 * The whole path in one device: an RDMA WRITE posted in guest memory,
 * its doorbell stored in the UAR page (no trap unless the engine sleeps),
 * the CQE read back from guest memory.
 */
static void test_rdma_write_loopback(void *obj, void *data,
                                     QGuestAllocator *alloc)
{
    QVmmbibPCI *dev = obj;
    VmmbibLoop l;
    struct vmmbib_cqe cqe;
    uint8_t pattern[512], copy[512];
    unsigned int i;

    vmmbib_loop_init(&l, dev, alloc);
    /* 512 bytes that straddle the MR's two pages, written to page 0. */
    for (i = 0; i < sizeof(pattern); i++) {
        pattern[i] = i * 7 + 3;
    }
    qtest_memwrite(global_qtest, l.buf + VMMBIB_PAGE_SIZE - 256, pattern,
                   sizeof(pattern));
    vmmbib_post_write(&l, 0, 0x1234, l.buf + VMMBIB_PAGE_SIZE - 256,
                      l.buf + 64, sizeof(pattern));

    cqe = vmmbib_wait_cqe(&l, 0);
    g_assert_cmpuint(cqe.status, ==, VMMBIB_WC_SUCCESS);
    g_assert_cmpuint(cqe.opcode, ==, VMMBIB_WC_RDMA_WRITE);
    g_assert_cmphex(le64_to_cpu(cqe.wr_id), ==, 0x1234);
    g_assert_cmpuint(le32_to_cpu(cqe.qpn), ==, l.qpn);
    qtest_memread(global_qtest, l.buf + 64, copy, sizeof(copy));
    g_assert_cmpmem(copy, sizeof(copy), pattern, sizeof(pattern));
    g_assert_cmpuint(vmmbib_stat("stats-wqes"), ==, 1);
    g_assert_cmpuint(vmmbib_stat("stats-cqes"), ==, 1);
    g_assert_cmpuint(vmmbib_stat("stats-doorbell-writes"), ==, 0);

    /* A reset with all of it live leaves nothing behind. */
    qvirtio_reset(dev->vib.vdev);
    g_assert_cmpuint(vmmbib_stat("stats-qps"), ==, 0);
    g_assert_cmpuint(vmmbib_stat("stats-cqs"), ==, 0);
    g_assert_cmpuint(vmmbib_stat("stats-pinned-pages"), ==, 0);
    qpci_iounmap(l.pdev, l.uar);
}

/*
 * KICK is an ioeventfd on the engine's kick eventfd: a doorbell stored
 * while the engine sleeps waits, untouched, until the KICK write wakes
 * it; the engine, which reads the eventfd, counts the kick.
 */
static void test_kick_wakes_engine(void *obj, void *data,
                                   QGuestAllocator *alloc)
{
    QVmmbibPCI *dev = obj;
    VmmbibLoop l;
    struct vmmbib_send_wqe wqe = {
        .wr_id = cpu_to_le64(0x4b),
        .opcode = VMMBIB_WR_RDMA_WRITE,
        .flags = VMMBIB_WQE_SIGNALED,
        .num_sge = 1,
    };
    struct vmmbib_sge sge = { .length = cpu_to_le32(4) };
    struct vmmbib_cqe cqe;
    uint64_t kicks, wqes;
    uint32_t producer;
    unsigned int tries;

    vmmbib_loop_init(&l, dev, alloc);
    sge.addr = cpu_to_le64(l.buf);
    for (tries = 0; tries < 2000 &&
         qpci_io_readl(l.pdev, l.uar, l.db_page + VMMBIB_DB_ENGINE_STATE) !=
         VMMBIB_ENGINE_ASLEEP; tries++) {
        g_usleep(1000);
    }
    g_assert_cmpuint(qpci_io_readl(l.pdev, l.uar, l.db_page +
                                   VMMBIB_DB_ENGINE_STATE), ==,
                     VMMBIB_ENGINE_ASLEEP);
    /* Past its last look at the rings: blocked on the eventfds. */
    g_usleep(100 * 1000);
    kicks = vmmbib_stat("stats-kicks");
    wqes = vmmbib_stat("stats-wqes");

    /* A WRITE and its doorbell in the ring, without the kick. */
    wqe.rdma.remote_addr = cpu_to_le64(l.buf + 64);
    wqe.rdma.rkey = cpu_to_le32(l.key);
    sge.lkey = cpu_to_le32(l.key);
    qtest_memwrite(global_qtest, l.sq, &wqe, sizeof(wqe));
    qtest_memwrite(global_qtest, l.sq + sizeof(wqe), &sge, sizeof(sge));
    producer = qpci_io_readl(l.pdev, l.uar, l.db_page + VMMBIB_DB_PRODUCER);
    g_assert_cmpuint(producer, ==, 0);
    qpci_io_writeq(l.pdev, l.uar, l.db_page + VMMBIB_DB_RING,
                   VMMBIB_DB(VMMBIB_DB_KIND_SQ, VMMBIB_HANDLE_INDEX(l.qp),
                             1));
    qpci_io_writel(l.pdev, l.uar, l.db_page + VMMBIB_DB_PRODUCER, 1);
    g_usleep(100 * 1000);
    qtest_memread(global_qtest, l.cq_ring + sizeof(struct vmmbib_cq_header),
                  &cqe, sizeof(cqe));
    g_assert_cmpuint(cqe.owner, !=, VMMBIB_CQE_OWNER);
    g_assert_cmpuint(vmmbib_stat("stats-wqes"), ==, wqes);
    g_assert_cmpuint(qpci_io_readl(l.pdev, l.uar, l.db_page +
                                   VMMBIB_DB_CONSUMER), ==, 0);

    qpci_io_writel(l.pdev, l.uar, l.db_page + VMMBIB_UAR_KICK_PAGE_OFFSET +
                   VMMBIB_KICK, 1);
    cqe = vmmbib_wait_cqe(&l, 0);
    g_assert_cmpuint(cqe.status, ==, VMMBIB_WC_SUCCESS);
    g_assert_cmphex(le64_to_cpu(cqe.wr_id), ==, 0x4b);
    g_assert_cmpuint(vmmbib_stat("stats-wqes"), ==, wqes + 1);
    g_assert_cmpuint(vmmbib_stat("stats-kicks"), ==, kicks + 1);
    g_assert_cmpuint(vmmbib_stat("stats-doorbell-writes"), ==, 0);
    qpci_iounmap(l.pdev, l.uar);
}

/* Event buffers posted on the eventq, consumed in order. */
typedef struct VmmbibEvents {
    uint64_t addr[4];
    uint32_t head[4];
    unsigned int next;
} VmmbibEvents;

static void vmmbib_events_post(QVmmbib *vib, VmmbibEvents *e,
                               QGuestAllocator *alloc)
{
    unsigned int i;

    /* libqos makes one chain available per kick. */
    for (i = 0; i < ARRAY_SIZE(e->addr); i++) {
        e->addr[i] = guest_alloc(alloc, sizeof(struct vmmbib_event));
        e->head[i] = qvirtqueue_add(global_qtest, vib->event_vq, e->addr[i],
                                    sizeof(struct vmmbib_event), true,
                                    false);
        qvirtqueue_kick(global_qtest, vib->vdev, vib->event_vq, e->head[i]);
    }
    e->next = 0;
}

/* The next event that is not about the port (those may come any time). */
static struct vmmbib_event vmmbib_next_event(QVmmbib *vib, VmmbibEvents *e)
{
    struct vmmbib_event ev;
    uint32_t len;

    do {
        uint32_t head = UINT32_MAX;
        unsigned int tries;

        g_assert_cmpuint(e->next, <, ARRAY_SIZE(e->addr));
        /*
         * Poll the used ring itself: the ISR bit that qvirtio_wait_used_elem
         * waits for is one for both queues, so a controlq reply clears it.
         */
        for (tries = 0; tries < 2000; tries++) {
            if (qvirtqueue_get_buf(global_qtest, vib->event_vq, &head,
                                   &len)) {
                break;
            }
            g_usleep(1000);
        }
        g_assert_cmpuint(head, ==, e->head[e->next]);
        g_assert_cmpuint(len, ==, sizeof(ev));
        qtest_memread(global_qtest, e->addr[e->next++], &ev, sizeof(ev));
    } while (le16_to_cpu(ev.type) == VMMBIB_EVENT_PORT_ACTIVE ||
             le16_to_cpu(ev.type) == VMMBIB_EVENT_PORT_ERR);
    return ev;
}

/*
 * Completion events on the eventq: only for an armed CQ, once per arm;
 * a write with a key that names no MR completes in error, raises the
 * armed event too, and the device keeps going.
 */
static void test_eventq(void *obj, void *data, QGuestAllocator *alloc)
{
    QVmmbibPCI *dev = obj;
    QVmmbib *vib = &dev->vib;
    VmmbibLoop l;
    VmmbibEvents events;
    VmmbibReply r;
    struct vmmbib_event ev;
    struct vmmbib_cqe cqe;
    uint64_t raised;

    vmmbib_loop_init(&l, dev, alloc);
    vmmbib_events_post(vib, &events, alloc);
    raised = vmmbib_stat("stats-events");

    /* Not armed: a completion but no event. */
    vmmbib_post_write(&l, 0, 1, l.buf, l.buf + 2048, 64);
    g_assert_cmpuint(vmmbib_wait_cqe(&l, 0).status, ==, VMMBIB_WC_SUCCESS);
    g_assert_cmpuint(vmmbib_stat("stats-events"), ==, raised);

    /* Armed: one COMP event for this CQ of this context. */
    vmmbib_ring_doorbell(&l, VMMBIB_DB(VMMBIB_DB_KIND_CQ_ARM,
                                       VMMBIB_HANDLE_INDEX(l.cq),
                                       VMMBIB_DB_ARM_NEXT));
    vmmbib_post_write(&l, 1, 2, l.buf, l.buf + 2048, 64);
    g_assert_cmpuint(vmmbib_wait_cqe(&l, 1).status, ==, VMMBIB_WC_SUCCESS);
    ev = vmmbib_next_event(vib, &events);
    g_assert_cmpuint(le16_to_cpu(ev.type), ==, VMMBIB_EVENT_COMP);
    g_assert_cmphex(le32_to_cpu(ev.handle), ==, l.cq);
    g_assert_cmphex(le32_to_cpu(ev.ctx_handle), ==, l.o.ctx);

    /* The arm was used up: the next completion raises nothing. */
    vmmbib_post_write(&l, 2, 3, l.buf, l.buf + 2048, 64);
    g_assert_cmpuint(vmmbib_wait_cqe(&l, 2).status, ==, VMMBIB_WC_SUCCESS);
    g_assert_cmpuint(vmmbib_stat("stats-events"), ==, raised + 1);

    l.key ^= 0xff;
    vmmbib_ring_doorbell(&l, VMMBIB_DB(VMMBIB_DB_KIND_CQ_ARM,
                                       VMMBIB_HANDLE_INDEX(l.cq),
                                       VMMBIB_DB_ARM_NEXT));
    vmmbib_post_write(&l, 3, 4, l.buf, l.buf + 2048, 64);
    cqe = vmmbib_wait_cqe(&l, 3);
    g_assert_cmpuint(cqe.status, ==, VMMBIB_WC_LOC_PROT_ERR);
    g_assert_cmphex(le64_to_cpu(cqe.wr_id), ==, 4);
    ev = vmmbib_next_event(vib, &events);
    g_assert_cmpuint(le16_to_cpu(ev.type), ==, VMMBIB_EVENT_COMP);
    g_assert_cmphex(le32_to_cpu(ev.handle), ==, l.cq);
    g_assert_cmpuint(vmmbib_stat("stats-error-completions"), ==, 1);
    g_assert_cmpint(vmmbib_cmd(vib, VMMBIB_CMD_QUERY_DEVICE, 0, NULL, 0, &r,
                               alloc), ==, VMMBIB_STATUS_OK);
    qpci_iounmap(l.pdev, l.uar);
}

/* Destroy @handle with @op in @o; returns the status. */
static int vmmbib_destroy(VmmbibObjs *o, uint16_t op, uint32_t handle)
{
    struct vmmbib_cmd_destroy d = { .handle = cpu_to_le32(handle) };
    VmmbibReply r;

    return vmmbib_obj_cmd(o, op, &d, sizeof(d), &r);
}

/*
 * Every object command once with valid input, then with a stale handle
 * and with another context's handle; the device keeps serving.
 */
static void test_every_command(void *obj, void *data, QGuestAllocator *alloc)
{
    QVmmbib *vib = obj;
    VmmbibObjs a, b;
    VmmbibReply r;
    uint32_t pd, mr, dma_mr, cq, srq, qp, ah;
    struct vmmbib_cmd_create_dma_mr dma = {
        .access = cpu_to_le32(VMMBIB_ACCESS_LOCAL_WRITE),
    };
    struct vmmbib_cmd_reg_mr reg = {
        .access = cpu_to_le32(VMMBIB_ACCESS_LOCAL_WRITE),
        .length = cpu_to_le64(VMMBIB_PAGE_SIZE),
    };
    struct vmmbib_cmd_create_cq ccq = { .cqe = cpu_to_le32(8) };
    struct vmmbib_cmd_resize_cq rcq = { .cqe = cpu_to_le32(16) };
    struct vmmbib_cmd_create_srq csrq = {
        .max_wr = cpu_to_le32(8),
        .max_sge = cpu_to_le32(1),
        .srq_limit = cpu_to_le32(2),
        .wqe_shift = 5,
    };
    struct vmmbib_cmd_modify_srq msrq = {
        .attr_mask = cpu_to_le32(VMMBIB_SRQ_LIMIT),
        .srq_limit = cpu_to_le32(3),
    };
    struct vmmbib_cmd_query_srq qsrq;
    struct vmmbib_cmd_create_qp cqp = {
        .qp_type = VMMBIB_QPT_UD,
        .caps = {
            .max_send_wr = cpu_to_le32(4),
            .max_send_sge = cpu_to_le32(1),
            .sq_wqe_shift = 7,
        },
    };
    struct vmmbib_cmd_query_qp qqp;
    struct vmmbib_qp_attr attr = {
        .qp_state = VMMBIB_QPS_INIT,
        .port_num = 1,
        .qkey = cpu_to_le32(0x11),
    };
    struct vmmbib_cmd_create_ah cah = {
        .attr = { .dlid = cpu_to_le16(1), .port_num = 1 },
    };

    vmmbib_objs_init(&a, vib, alloc);
    vmmbib_objs_init(&b, vib, alloc);
    pd = vmmbib_handle(&a, VMMBIB_CMD_CREATE_PD, NULL, 0);
    dma.pd_handle = cpu_to_le32(pd);
    dma_mr = vmmbib_handle(&a, VMMBIB_CMD_CREATE_DMA_MR, &dma, sizeof(dma));
    reg.pd_handle = cpu_to_le32(pd);
    reg.pages = vmmbib_list(alloc, vmmbib_guest_pages(alloc, 1), 1);
    reg.iova = reg.pages.addr;
    mr = vmmbib_handle(&a, VMMBIB_CMD_REG_MR, &reg, sizeof(reg));
    ccq.pages = vmmbib_list(alloc, vmmbib_guest_pages(alloc, 1), 1);
    cq = vmmbib_handle(&a, VMMBIB_CMD_CREATE_CQ, &ccq, sizeof(ccq));
    rcq.cq_handle = cpu_to_le32(cq);
    rcq.pages = vmmbib_list(alloc, vmmbib_guest_pages(alloc, 2), 2);
    g_assert_cmpint(vmmbib_obj_cmd(&a, VMMBIB_CMD_RESIZE_CQ, &rcq,
                                   sizeof(rcq), &r), ==, VMMBIB_STATUS_OK);
    csrq.pd_handle = cpu_to_le32(pd);
    csrq.pages = vmmbib_list(alloc, vmmbib_guest_pages(alloc, 1), 1);
    srq = vmmbib_handle(&a, VMMBIB_CMD_CREATE_SRQ, &csrq, sizeof(csrq));
    msrq.srq_handle = cpu_to_le32(srq);
    g_assert_cmpint(vmmbib_obj_cmd(&a, VMMBIB_CMD_MODIFY_SRQ, &msrq,
                                   sizeof(msrq), &r), ==, VMMBIB_STATUS_OK);
    qsrq = (struct vmmbib_cmd_query_srq) { .srq_handle = cpu_to_le32(srq) };
    g_assert_cmpint(vmmbib_obj_cmd(&a, VMMBIB_CMD_QUERY_SRQ, &qsrq,
                                   sizeof(qsrq), &r), ==, VMMBIB_STATUS_OK);
    g_assert_cmpuint(ldl_le_p(r.raw + 8), ==, 3);   /* srq_limit */
    cqp.pd_handle = cpu_to_le32(pd);
    cqp.send_cq_handle = cpu_to_le32(cq);
    cqp.recv_cq_handle = cpu_to_le32(cq);
    cqp.srq_handle = cpu_to_le32(srq);
    cqp.sq_pages = vmmbib_list(alloc, vmmbib_guest_pages(alloc, 1), 1);
    qp = vmmbib_handle(&a, VMMBIB_CMD_CREATE_QP, &cqp, sizeof(cqp));
    g_assert_cmpint(vmmbib_modify(&a, qp, VMMBIB_QP_STATE |
                                  VMMBIB_QP_PKEY_INDEX | VMMBIB_QP_PORT |
                                  VMMBIB_QP_QKEY, &attr), ==,
                    VMMBIB_STATUS_OK);
    qqp = (struct vmmbib_cmd_query_qp) { .qp_handle = cpu_to_le32(qp) };
    g_assert_cmpint(vmmbib_obj_cmd(&a, VMMBIB_CMD_QUERY_QP, &qqp,
                                   sizeof(qqp), &r), ==, VMMBIB_STATUS_OK);
    g_assert_cmpuint(((struct vmmbib_resp_query_qp *)r.raw)->attr.qp_state,
                     ==, VMMBIB_QPS_INIT);
    cah.pd_handle = cpu_to_le32(pd);
    ah = vmmbib_handle(&a, VMMBIB_CMD_CREATE_AH, &cah, sizeof(cah));

    /* Another context names none of them. */
    g_assert_cmpint(vmmbib_obj_cmd(&b, VMMBIB_CMD_QUERY_QP, &qqp,
                                   sizeof(qqp), &r), ==,
                    VMMBIB_STATUS_NOT_OWNER);
    g_assert_cmpint(vmmbib_destroy(&b, VMMBIB_CMD_DESTROY_AH, ah), ==,
                    VMMBIB_STATUS_NOT_OWNER);
    g_assert_cmpint(vmmbib_destroy(&b, VMMBIB_CMD_DEREG_MR, mr), ==,
                    VMMBIB_STATUS_NOT_OWNER);
    /* In-use objects cannot go. */
    g_assert_cmpint(vmmbib_destroy(&a, VMMBIB_CMD_DESTROY_CQ, cq), ==,
                    VMMBIB_STATUS_BUSY);
    g_assert_cmpint(vmmbib_destroy(&a, VMMBIB_CMD_DESTROY_SRQ, srq), ==,
                    VMMBIB_STATUS_BUSY);

    /* Destroy all, in order; then every handle is stale. */
    g_assert_cmpint(vmmbib_destroy(&a, VMMBIB_CMD_DESTROY_AH, ah), ==, 0);
    g_assert_cmpint(vmmbib_destroy(&a, VMMBIB_CMD_DESTROY_QP, qp), ==, 0);
    g_assert_cmpint(vmmbib_destroy(&a, VMMBIB_CMD_DESTROY_SRQ, srq), ==, 0);
    g_assert_cmpint(vmmbib_destroy(&a, VMMBIB_CMD_DESTROY_CQ, cq), ==, 0);
    g_assert_cmpint(vmmbib_destroy(&a, VMMBIB_CMD_DEREG_MR, mr), ==, 0);
    g_assert_cmpint(vmmbib_destroy(&a, VMMBIB_CMD_DEREG_MR, dma_mr), ==, 0);
    g_assert_cmpint(vmmbib_destroy(&a, VMMBIB_CMD_DESTROY_PD, pd), ==, 0);
    g_assert_cmpint(vmmbib_destroy(&a, VMMBIB_CMD_DESTROY_AH, ah), ==,
                    VMMBIB_STATUS_BAD_HANDLE);
    g_assert_cmpint(vmmbib_destroy(&a, VMMBIB_CMD_DESTROY_QP, qp), ==,
                    VMMBIB_STATUS_BAD_HANDLE);
    g_assert_cmpint(vmmbib_destroy(&a, VMMBIB_CMD_DESTROY_SRQ, srq), ==,
                    VMMBIB_STATUS_BAD_HANDLE);
    g_assert_cmpint(vmmbib_destroy(&a, VMMBIB_CMD_DESTROY_CQ, cq), ==,
                    VMMBIB_STATUS_BAD_HANDLE);
    g_assert_cmpint(vmmbib_destroy(&a, VMMBIB_CMD_DEREG_MR, mr), ==,
                    VMMBIB_STATUS_BAD_HANDLE);
    g_assert_cmpint(vmmbib_destroy(&a, VMMBIB_CMD_DESTROY_PD, pd), ==,
                    VMMBIB_STATUS_BAD_HANDLE);
    g_assert_cmpuint(vmmbib_stat("stats-qps") + vmmbib_stat("stats-cqs") +
                     vmmbib_stat("stats-mrs") + vmmbib_stat("stats-srqs") +
                     vmmbib_stat("stats-ahs") + vmmbib_stat("stats-pds"),
                     ==, 0);
    g_assert_cmpint(vmmbib_cmd(vib, VMMBIB_CMD_QUERY_DEVICE, 0, NULL, 0, &r,
                               alloc), ==, VMMBIB_STATUS_OK);
}

/* The device offers exactly VERSION_1 and its three feature bits. */
static void test_features(void *obj, void *data, QGuestAllocator *alloc)
{
    QVmmbib *vib = obj;
    uint64_t ours = (1ull << VMMBIB_F_SRQ) | (1ull << VMMBIB_F_ATOMIC) |
                    (1ull << VMMBIB_F_UD);
    uint64_t features = qvirtio_get_features(vib->vdev);
    VmmbibReply r;

    g_assert_cmphex(features & ours, ==, ours);
    /* Device-specific bits 3..23 are not ours to offer. */
    g_assert_cmphex(features & 0xfffff8ull, ==, 0);
    /* start_hw accepted them all and the device serves commands. */
    g_assert_cmphex(vib->vdev->features & ours, ==, ours);
    g_assert_cmpint(vmmbib_cmd(vib, VMMBIB_CMD_QUERY_DEVICE, 0, NULL, 0, &r,
                               alloc), ==, VMMBIB_STATUS_OK);
}

/* QUERY_GID and QUERY_PKEY answer their one entry and refuse the rest. */
static void test_gid_pkey(void *obj, void *data, QGuestAllocator *alloc)
{
    QVmmbib *vib = obj;
    VmmbibReply r;
    struct vmmbib_cmd_query_gid gid = { .port_num = 1 };
    struct vmmbib_cmd_query_pkey pkey = { .port_num = 1 };
    struct vmmbib_cmd_query_port port = { .port_num = 2 };
    static const uint8_t prefix[8] = { 0xfe, 0x80 };
    uint64_t guid;

    g_assert_cmpint(vmmbib_cmd(vib, VMMBIB_CMD_QUERY_DEVICE, 0, NULL, 0, &r,
                               alloc), ==, VMMBIB_STATUS_OK);
    guid = r.dev.node_guid;
    g_assert_cmpint(vmmbib_cmd(vib, VMMBIB_CMD_QUERY_GID, 0, &gid,
                               sizeof(gid), &r, alloc), ==, VMMBIB_STATUS_OK);
    g_assert_cmpmem(r.raw, 8, prefix, 8);
    g_assert_cmpmem(r.raw + 8, 8, &guid, 8);
    gid.index = cpu_to_le32(1);
    g_assert_cmpint(vmmbib_cmd(vib, VMMBIB_CMD_QUERY_GID, 0, &gid,
                               sizeof(gid), &r, alloc), ==,
                    VMMBIB_STATUS_INVALID);
    gid.index = 0;
    gid.port_num = 0;
    g_assert_cmpint(vmmbib_cmd(vib, VMMBIB_CMD_QUERY_GID, 0, &gid,
                               sizeof(gid), &r, alloc), ==,
                    VMMBIB_STATUS_INVALID);

    g_assert_cmpint(vmmbib_cmd(vib, VMMBIB_CMD_QUERY_PKEY, 0, &pkey,
                               sizeof(pkey), &r, alloc), ==,
                    VMMBIB_STATUS_OK);
    g_assert_cmphex(lduw_le_p(r.raw), ==, 0xffff);
    pkey.index = cpu_to_le32(0x80000000);
    g_assert_cmpint(vmmbib_cmd(vib, VMMBIB_CMD_QUERY_PKEY, 0, &pkey,
                               sizeof(pkey), &r, alloc), ==,
                    VMMBIB_STATUS_INVALID);
    g_assert_cmpint(vmmbib_cmd(vib, VMMBIB_CMD_QUERY_PORT, 0, &port,
                               sizeof(port), &r, alloc), ==,
                    VMMBIB_STATUS_INVALID);
    g_assert_cmpint(vmmbib_cmd(vib, VMMBIB_CMD_QUERY_DEVICE, 0, NULL, 0, &r,
                               alloc), ==, VMMBIB_STATUS_OK);
}

/*
 * A valid CREATE_QP request: an RC QP in @pd with @cq for both queues,
 * 8 one-SGE WRs each way, its rings in fresh pages.
 */
static struct vmmbib_cmd_create_qp vmmbib_rc_qp_request(QGuestAllocator *alloc,
                                                       uint32_t pd,
                                                       uint32_t cq)
{
    struct vmmbib_cmd_create_qp q = {
        .pd_handle = cpu_to_le32(pd),
        .send_cq_handle = cpu_to_le32(cq),
        .recv_cq_handle = cpu_to_le32(cq),
        .qp_type = VMMBIB_QPT_RC,
        .caps = {
            .max_send_wr = cpu_to_le32(8),
            .max_recv_wr = cpu_to_le32(8),
            .max_send_sge = cpu_to_le32(1),
            .max_recv_sge = cpu_to_le32(1),
            .sq_wqe_shift = 7,
            .rq_wqe_shift = 5,
        },
    };

    q.sq_pages = vmmbib_list(alloc, vmmbib_guest_pages(alloc, 1), 1);
    q.rq_pages = vmmbib_list(alloc, vmmbib_guest_pages(alloc, 1), 1);
    return q;
}

/* @status for @op, then the device still answers a valid request. */
static void vmmbib_expect(VmmbibObjs *o, uint16_t op, const void *body,
                          size_t len, int status)
{
    VmmbibReply r;

    g_assert_cmpint(vmmbib_obj_cmd(o, op, body, len, &r), ==, status);
    g_assert_cmpint(vmmbib_cmd(o->vib, VMMBIB_CMD_QUERY_DEVICE, 0, NULL, 0,
                               &r, o->alloc), ==, VMMBIB_STATUS_OK);
}

/*
 * Counts of zero, counts above the device's limits and page lists that
 * do not hold what they describe: each an INVALID status.  The test runs
 * with max-cqe=64, max-qp-wr=64, max-srq-wr=64, max-sge=4,
 * max-mr-pages=16.
 */
static void test_bad_counts(void *obj, void *data, QGuestAllocator *alloc)
{
    QVmmbib *vib = obj;
    VmmbibObjs o;
    uint64_t page = vmmbib_guest_pages(alloc, 1);
    uint64_t big = vmmbib_guest_pages(alloc, 17);
    uint32_t pd, cq;
    struct vmmbib_cmd_create_cq ccq = { 0 };
    struct vmmbib_cmd_create_qp cqp, good;
    struct vmmbib_cmd_create_srq csrq = {
        .max_sge = cpu_to_le32(1),
        .wqe_shift = 5,
    };
    struct vmmbib_cmd_reg_mr mr = {
        .access = cpu_to_le32(VMMBIB_ACCESS_LOCAL_WRITE),
        .iova = cpu_to_le64(0x100000),
    };

    vmmbib_objs_init(&o, vib, alloc);
    pd = vmmbib_handle(&o, VMMBIB_CMD_CREATE_PD, NULL, 0);

    /* CQs: zero entries, more than max-cqe, a ring bigger than its pages. */
    ccq.pages = vmmbib_list(alloc, page, 1);
    vmmbib_expect(&o, VMMBIB_CMD_CREATE_CQ, &ccq, sizeof(ccq),
                  VMMBIB_STATUS_INVALID);
    ccq.cqe = cpu_to_le32(128);
    vmmbib_expect(&o, VMMBIB_CMD_CREATE_CQ, &ccq, sizeof(ccq),
                  VMMBIB_STATUS_INVALID);
    ccq.cqe = cpu_to_le32(64);      /* 64 CQEs need more than one page */
    vmmbib_expect(&o, VMMBIB_CMD_CREATE_CQ, &ccq, sizeof(ccq),
                  VMMBIB_STATUS_INVALID);
    ccq.cqe = cpu_to_le32(8);
    ccq.pages.npages = 0;
    vmmbib_expect(&o, VMMBIB_CMD_CREATE_CQ, &ccq, sizeof(ccq),
                  VMMBIB_STATUS_INVALID);
    ccq.pages = vmmbib_list(alloc, page, 1);
    cq = vmmbib_handle(&o, VMMBIB_CMD_CREATE_CQ, &ccq, sizeof(ccq));

    /* QPs: zero or too many WRs or SGEs, rings their pages cannot hold. */
    good = vmmbib_rc_qp_request(alloc, pd, cq);
    cqp = good;
    cqp.caps.max_send_wr = 0;
    vmmbib_expect(&o, VMMBIB_CMD_CREATE_QP, &cqp, sizeof(cqp),
                  VMMBIB_STATUS_INVALID);
    cqp = good;
    cqp.caps.max_send_wr = cpu_to_le32(128);
    vmmbib_expect(&o, VMMBIB_CMD_CREATE_QP, &cqp, sizeof(cqp),
                  VMMBIB_STATUS_INVALID);
    cqp = good;
    cqp.caps.max_recv_wr = cpu_to_le32(0x80000000);
    vmmbib_expect(&o, VMMBIB_CMD_CREATE_QP, &cqp, sizeof(cqp),
                  VMMBIB_STATUS_INVALID);
    cqp = good;
    cqp.caps.max_send_sge = cpu_to_le32(5);
    vmmbib_expect(&o, VMMBIB_CMD_CREATE_QP, &cqp, sizeof(cqp),
                  VMMBIB_STATUS_INVALID);
    cqp = good;
    cqp.caps.max_recv_sge = 0;
    vmmbib_expect(&o, VMMBIB_CMD_CREATE_QP, &cqp, sizeof(cqp),
                  VMMBIB_STATUS_INVALID);
    cqp = good;
    cqp.caps.max_send_wr = cpu_to_le32(64);     /* 64 x 128 B: two pages */
    vmmbib_expect(&o, VMMBIB_CMD_CREATE_QP, &cqp, sizeof(cqp),
                  VMMBIB_STATUS_INVALID);
    cqp = good;
    cqp.caps.sq_wqe_shift = 13;                 /* a stride over a page */
    vmmbib_expect(&o, VMMBIB_CMD_CREATE_QP, &cqp, sizeof(cqp),
                  VMMBIB_STATUS_INVALID);
    cqp = good;
    cqp.qp_type = 9;
    vmmbib_expect(&o, VMMBIB_CMD_CREATE_QP, &cqp, sizeof(cqp),
                  VMMBIB_STATUS_INVALID);
    cqp = good;
    cqp.reserved[5] = 1;
    vmmbib_expect(&o, VMMBIB_CMD_CREATE_QP, &cqp, sizeof(cqp),
                  VMMBIB_STATUS_INVALID);

    /* SRQs: zero or too many WRs. */
    csrq.pd_handle = cpu_to_le32(pd);
    csrq.pages = vmmbib_list(alloc, vmmbib_guest_pages(alloc, 1), 1);
    vmmbib_expect(&o, VMMBIB_CMD_CREATE_SRQ, &csrq, sizeof(csrq),
                  VMMBIB_STATUS_INVALID);
    csrq.max_wr = cpu_to_le32(128);
    vmmbib_expect(&o, VMMBIB_CMD_CREATE_SRQ, &csrq, sizeof(csrq),
                  VMMBIB_STATUS_INVALID);

    /*
     * MRs: no pages, more than max-mr-pages, a page list that claims more
     * entries than its one directory page holds, an unaligned directory.
     */
    mr.pd_handle = cpu_to_le32(pd);
    mr.length = cpu_to_le64(VMMBIB_PAGE_SIZE);
    mr.pages = vmmbib_list(alloc, page, 1);
    mr.pages.npages = 0;
    vmmbib_expect(&o, VMMBIB_CMD_REG_MR, &mr, sizeof(mr),
                  VMMBIB_STATUS_INVALID);
    mr.length = cpu_to_le64(17 * VMMBIB_PAGE_SIZE);
    mr.pages = vmmbib_list(alloc, big, 17);
    vmmbib_expect(&o, VMMBIB_CMD_REG_MR, &mr, sizeof(mr),
                  VMMBIB_STATUS_INVALID);
    mr.length = cpu_to_le64(2 * VMMBIB_PAGE_SIZE);
    mr.pages = vmmbib_list(alloc, page, 1);
    mr.pages.npages = cpu_to_le32(2);           /* level 0 holds one */
    vmmbib_expect(&o, VMMBIB_CMD_REG_MR, &mr, sizeof(mr),
                  VMMBIB_STATUS_INVALID);
    mr.pages = vmmbib_list(alloc, big, 2);
    mr.pages.addr = cpu_to_le64(le64_to_cpu(mr.pages.addr) + 8);
    vmmbib_expect(&o, VMMBIB_CMD_REG_MR, &mr, sizeof(mr),
                  VMMBIB_STATUS_INVALID);
    mr.pages = vmmbib_list(alloc, big, 2);
    mr.pages.levels = 4;
    vmmbib_expect(&o, VMMBIB_CMD_REG_MR, &mr, sizeof(mr),
                  VMMBIB_STATUS_INVALID);

    /* Nothing was created or pinned by any of them. */
    g_assert_cmpuint(vmmbib_stat("stats-qps"), ==, 0);
    g_assert_cmpuint(vmmbib_stat("stats-srqs"), ==, 0);
    g_assert_cmpuint(vmmbib_stat("stats-mrs"), ==, 0);
    g_assert_cmpuint(vmmbib_stat("stats-cqs"), ==, 1);
    g_assert_cmpuint(vmmbib_stat("stats-pinned-pages"), ==, 1);
    /* And the good QP still goes in. */
    vmmbib_handle(&o, VMMBIB_CMD_CREATE_QP, &good, sizeof(good));
}

/*
 * Rings and page directories outside guest RAM: beyond it, in the MMIO
 * hole (the device's own UAR BAR) or with the directory itself outside.
 */
static void test_bad_ring_pages(void *obj, void *data,
                                QGuestAllocator *alloc)
{
    QVmmbibPCI *dev = obj;
    QVmmbib *vib = &dev->vib;
    QPCIDevice *pdev = dev->pci_vdev.pdev;
    QPCIBar uar = qpci_iomap(pdev, 2, NULL);
    uint64_t bar_gpa;
    uint64_t outside[2];
    VmmbibObjs o;
    uint32_t pd, cq;
    unsigned int i;
    struct vmmbib_cmd_create_cq ccq = { .cqe = cpu_to_le32(8) };
    struct vmmbib_cmd_create_srq csrq = {
        .max_wr = cpu_to_le32(8),
        .max_sge = cpu_to_le32(1),
        .wqe_shift = 5,
    };
    struct vmmbib_cmd_create_qp cqp, good;
    struct vmmbib_cmd_reg_mr mr = {
        .access = cpu_to_le32(VMMBIB_ACCESS_LOCAL_WRITE),
        .iova = cpu_to_le64(0x100000),
        .length = cpu_to_le64(2 * VMMBIB_PAGE_SIZE),
    };

    /* A 64-bit BAR: the low dword carries the flags. */
    bar_gpa = (qpci_config_readl(pdev, PCI_BASE_ADDRESS_2) & ~0xfull) |
              (uint64_t)qpci_config_readl(pdev, PCI_BASE_ADDRESS_3) << 32;
    g_assert_cmphex(bar_gpa, !=, 0);
    outside[0] = 0x7fff00000000ull;
    outside[1] = bar_gpa;           /* slot 0: the context's doorbell page */
    vmmbib_objs_init(&o, vib, alloc);
    pd = vmmbib_handle(&o, VMMBIB_CMD_CREATE_PD, NULL, 0);
    ccq.pages = vmmbib_list(alloc, vmmbib_guest_pages(alloc, 1), 1);
    cq = vmmbib_handle(&o, VMMBIB_CMD_CREATE_CQ, &ccq, sizeof(ccq));
    good = vmmbib_rc_qp_request(alloc, pd, cq);
    csrq.pd_handle = cpu_to_le32(pd);
    mr.pd_handle = cpu_to_le32(pd);

    for (i = 0; i < ARRAY_SIZE(outside); i++) {
        ccq.pages = vmmbib_list(alloc, outside[i], 1);
        vmmbib_expect(&o, VMMBIB_CMD_CREATE_CQ, &ccq, sizeof(ccq),
                      VMMBIB_STATUS_BAD_ADDRESS);
        cqp = good;
        cqp.sq_pages = vmmbib_list(alloc, outside[i], 1);
        vmmbib_expect(&o, VMMBIB_CMD_CREATE_QP, &cqp, sizeof(cqp),
                      VMMBIB_STATUS_BAD_ADDRESS);
        cqp = good;
        cqp.rq_pages = vmmbib_list(alloc, outside[i], 1);
        vmmbib_expect(&o, VMMBIB_CMD_CREATE_QP, &cqp, sizeof(cqp),
                      VMMBIB_STATUS_BAD_ADDRESS);
        csrq.pages = vmmbib_list(alloc, outside[i], 1);
        vmmbib_expect(&o, VMMBIB_CMD_CREATE_SRQ, &csrq, sizeof(csrq),
                      VMMBIB_STATUS_BAD_ADDRESS);
        /* The directory page itself is outside RAM. */
        mr.pages = vmmbib_list(alloc, vmmbib_guest_pages(alloc, 2), 2);
        mr.pages.addr = cpu_to_le64(outside[i]);
        vmmbib_expect(&o, VMMBIB_CMD_REG_MR, &mr, sizeof(mr),
                      VMMBIB_STATUS_BAD_ADDRESS);
        /* The second of two pages is outside RAM. */
        mr.pages = vmmbib_list(alloc, vmmbib_guest_pages(alloc, 2), 2);
        qtest_writeq(global_qtest, le64_to_cpu(mr.pages.addr) + 8,
                     outside[i]);
        vmmbib_expect(&o, VMMBIB_CMD_REG_MR, &mr, sizeof(mr),
                      VMMBIB_STATUS_BAD_ADDRESS);
    }
    g_assert_cmpuint(vmmbib_stat("stats-qps") + vmmbib_stat("stats-srqs") +
                     vmmbib_stat("stats-mrs"), ==, 0);
    g_assert_cmpuint(vmmbib_stat("stats-pinned-pages"), ==, 1);
    qpci_iounmap(pdev, uar);
}

/*
 * Quotas: with max-pd=2, max-cq=1, max-mr=1, max-srq=1, max-qp=1,
 * max-ah=1, uar-slots=2 and max-pinned-mb=1 (256 pages), one object too
 * many gets NO_RESOURCES, and freeing one makes room again.
 */
static void test_quotas(void *obj, void *data, QGuestAllocator *alloc)
{
    QVmmbib *vib = obj;
    VmmbibObjs a, b, c;
    VmmbibReply r;
    uint32_t pd, cq, mr, srq, ah;
    uint64_t pages = vmmbib_guest_pages(alloc, 257);
    struct vmmbib_cmd_create_cq ccq = { .cqe = cpu_to_le32(8) };
    struct vmmbib_cmd_create_srq csrq = {
        .max_wr = cpu_to_le32(8),
        .max_sge = cpu_to_le32(1),
        .wqe_shift = 5,
    };
    struct vmmbib_cmd_create_qp cqp = {
        .qp_type = VMMBIB_QPT_UD,
        .caps = {
            .max_send_wr = cpu_to_le32(4),
            .max_send_sge = cpu_to_le32(1),
            .sq_wqe_shift = 7,
        },
    };
    struct vmmbib_cmd_reg_mr reg = {
        .access = cpu_to_le32(VMMBIB_ACCESS_LOCAL_WRITE),
        .iova = cpu_to_le64(0x100000),
        .length = cpu_to_le64(VMMBIB_PAGE_SIZE),
    };
    struct vmmbib_cmd_create_ah cah = {
        .attr = { .dlid = cpu_to_le16(1), .port_num = 1 },
    };

    vmmbib_objs_init(&a, vib, alloc);
    vmmbib_objs_init(&b, vib, alloc);
    /* Both UAR slots are taken: a third context has none to get. */
    g_assert_cmpint(vmmbib_cmd(vib, VMMBIB_CMD_CREATE_UCONTEXT, 0, NULL, 0,
                               &r, alloc), ==, VMMBIB_STATUS_NO_RESOURCES);

    pd = vmmbib_handle(&a, VMMBIB_CMD_CREATE_PD, NULL, 0);
    vmmbib_handle(&b, VMMBIB_CMD_CREATE_PD, NULL, 0);
    vmmbib_expect(&a, VMMBIB_CMD_CREATE_PD, NULL, 0,
                  VMMBIB_STATUS_NO_RESOURCES);

    ccq.pages = vmmbib_list(alloc, vmmbib_guest_pages(alloc, 1), 1);
    cq = vmmbib_handle(&a, VMMBIB_CMD_CREATE_CQ, &ccq, sizeof(ccq));
    vmmbib_expect(&a, VMMBIB_CMD_CREATE_CQ, &ccq, sizeof(ccq),
                  VMMBIB_STATUS_NO_RESOURCES);

    /* 256 pinned pages in all: the CQ has one, so 256 more is too many. */
    reg.pd_handle = cpu_to_le32(pd);
    reg.length = cpu_to_le64(256 * VMMBIB_PAGE_SIZE);
    reg.pages = vmmbib_list(alloc, pages, 256);
    vmmbib_expect(&a, VMMBIB_CMD_REG_MR, &reg, sizeof(reg),
                  VMMBIB_STATUS_NO_RESOURCES);
    reg.length = cpu_to_le64(VMMBIB_PAGE_SIZE);
    reg.pages = vmmbib_list(alloc, pages, 1);
    mr = vmmbib_handle(&a, VMMBIB_CMD_REG_MR, &reg, sizeof(reg));
    vmmbib_expect(&a, VMMBIB_CMD_REG_MR, &reg, sizeof(reg),
                  VMMBIB_STATUS_NO_RESOURCES);

    csrq.pd_handle = cpu_to_le32(pd);
    csrq.pages = vmmbib_list(alloc, vmmbib_guest_pages(alloc, 1), 1);
    srq = vmmbib_handle(&a, VMMBIB_CMD_CREATE_SRQ, &csrq, sizeof(csrq));
    vmmbib_expect(&a, VMMBIB_CMD_CREATE_SRQ, &csrq, sizeof(csrq),
                  VMMBIB_STATUS_NO_RESOURCES);

    cqp.pd_handle = cpu_to_le32(pd);
    cqp.send_cq_handle = cpu_to_le32(cq);
    cqp.recv_cq_handle = cpu_to_le32(cq);
    cqp.srq_handle = cpu_to_le32(srq);
    cqp.sq_pages = vmmbib_list(alloc, vmmbib_guest_pages(alloc, 1), 1);
    vmmbib_handle(&a, VMMBIB_CMD_CREATE_QP, &cqp, sizeof(cqp));
    vmmbib_expect(&a, VMMBIB_CMD_CREATE_QP, &cqp, sizeof(cqp),
                  VMMBIB_STATUS_NO_RESOURCES);

    cah.pd_handle = cpu_to_le32(pd);
    ah = vmmbib_handle(&a, VMMBIB_CMD_CREATE_AH, &cah, sizeof(cah));
    vmmbib_expect(&a, VMMBIB_CMD_CREATE_AH, &cah, sizeof(cah),
                  VMMBIB_STATUS_NO_RESOURCES);

    /* Freeing makes room. */
    g_assert_cmpint(vmmbib_destroy(&a, VMMBIB_CMD_DESTROY_AH, ah), ==, 0);
    vmmbib_handle(&a, VMMBIB_CMD_CREATE_AH, &cah, sizeof(cah));
    g_assert_cmpint(vmmbib_destroy(&a, VMMBIB_CMD_DEREG_MR, mr), ==, 0);
    vmmbib_handle(&a, VMMBIB_CMD_REG_MR, &reg, sizeof(reg));
    g_assert_cmpint(vmmbib_obj_cmd(&b, VMMBIB_CMD_DESTROY_UCONTEXT, NULL, 0,
                                   &r), ==, VMMBIB_STATUS_OK);
    vmmbib_objs_init(&c, vib, alloc);
    vmmbib_handle(&c, VMMBIB_CMD_CREATE_PD, NULL, 0);
}

static int vmmbib_strcmp(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * What QEMU holds on behalf of the device and could leak across reset
 * cycles: its memory regions (doorbell pages mapped into the UAR window
 * and never unmapped, subregions, aliases), the flat views they make, and
 * QEMU's open files (the kick eventfd, ioeventfds, memfds).  The lines of
 * info mtree, sorted: QEMU prints address spaces and flat views in hash
 * table order, which changes from one call to the next.
 */
static char *vmmbib_footprint(void)
{
    g_autofree char *mtree = qtest_hmp(global_qtest, "info mtree");
    g_autofree char *flat = qtest_hmp(global_qtest, "info mtree -f");
    g_autofree char *text = g_strconcat(mtree, flat, NULL);
    g_autofree char *fd_dir = g_strdup_printf("/proc/%d/fd",
                                              (int)qtest_pid(global_qtest));
    g_auto(GStrv) lines = NULL;
    g_autoptr(GPtrArray) kept = g_ptr_array_new();
    g_autoptr(GString) out = g_string_new(NULL);
    GDir *dir = g_dir_open(fd_dir, 0, NULL);
    unsigned int fds = 0, i;

    g_assert(dir);
    while (g_dir_read_name(dir)) {
        fds++;
    }
    g_dir_close(dir);
    g_strdelimit(text, "\r", '\n');
    lines = g_strsplit(text, "\n", -1);
    for (i = 0; lines[i]; i++) {
        if (lines[i][0] && !g_str_has_prefix(lines[i], "FlatView #")) {
            g_ptr_array_add(kept, lines[i]);
        }
    }
    g_ptr_array_sort(kept, vmmbib_strcmp);
    for (i = 0; i < kept->len; i++) {
        g_string_append_printf(out, "%s\n", (char *)kept->pdata[i]);
    }
    g_string_append_printf(out, "open files: %u\n", fds);
    return g_string_free(g_steal_pointer(&out), false);
}

/* A virtio reset, then the driver sets the device up again. */
static void vmmbib_restart(QVmmbib *vib, QGuestAllocator *alloc)
{
    qvirtio_reset(vib->vdev);
    qvirtqueue_cleanup(vib->vdev->bus, vib->ctrl_vq, alloc);
    qvirtqueue_cleanup(vib->vdev->bus, vib->event_vq, alloc);
    qvirtio_set_acknowledge(vib->vdev);
    qvirtio_set_driver(vib->vdev);
    qvirtio_set_features(vib->vdev, vib->vdev->features);
    vib->ctrl_vq = qvirtqueue_setup(vib->vdev, alloc, 0);
    vib->event_vq = qvirtqueue_setup(vib->vdev, alloc, 1);
    qvirtio_set_driver_ok(vib->vdev);
}

/*
 * Both UAR slots mapped, objects in each context (a pinned MR, a CQ); one
 * context destroyed by its command, the other by a reset.  Afterwards
 * nothing of them may be left: no objects, no pinned pages.
 */
static void vmmbib_reset_cycle(QVmmbib *vib, QGuestAllocator *alloc,
                               uint64_t pages)
{
    struct vmmbib_cmd_create_cq ccq = {
        .cqe = cpu_to_le32(8),
        .pages = vmmbib_list(alloc, pages, 1),
    };
    struct vmmbib_cmd_reg_mr reg = {
        .access = cpu_to_le32(VMMBIB_ACCESS_LOCAL_WRITE),
        .iova = cpu_to_le64(0x100000),
        .length = cpu_to_le64(VMMBIB_PAGE_SIZE),
        .pages = vmmbib_list(alloc, pages + VMMBIB_PAGE_SIZE, 1),
    };
    VmmbibObjs a, b;
    VmmbibReply r;

    vmmbib_objs_init(&a, vib, alloc);
    vmmbib_objs_init(&b, vib, alloc);
    g_assert_cmpuint(vmmbib_stat("stats-ucontexts"), ==, 2);
    reg.pd_handle = cpu_to_le32(vmmbib_handle(&a, VMMBIB_CMD_CREATE_PD,
                                              NULL, 0));
    vmmbib_handle(&a, VMMBIB_CMD_REG_MR, &reg, sizeof(reg));
    vmmbib_handle(&a, VMMBIB_CMD_CREATE_CQ, &ccq, sizeof(ccq));
    reg.pd_handle = cpu_to_le32(vmmbib_handle(&b, VMMBIB_CMD_CREATE_PD,
                                              NULL, 0));
    vmmbib_handle(&b, VMMBIB_CMD_REG_MR, &reg, sizeof(reg));
    g_assert_cmpuint(vmmbib_stat("stats-pinned-pages"), ==, 3);
    g_assert_cmpint(vmmbib_obj_cmd(&b, VMMBIB_CMD_DESTROY_UCONTEXT, NULL, 0,
                                   &r), ==, VMMBIB_STATUS_OK);
    vmmbib_restart(vib, alloc);
    g_assert_cmpuint(vmmbib_stat("stats-ucontexts"), ==, 0);
    g_assert_cmpuint(vmmbib_stat("stats-pds"), ==, 0);
    g_assert_cmpuint(vmmbib_stat("stats-mrs"), ==, 0);
    g_assert_cmpuint(vmmbib_stat("stats-cqs"), ==, 0);
    g_assert_cmpuint(vmmbib_stat("stats-pinned-pages"), ==, 0);
}

/*
 * Create/destroy and reset cycles leave QEMU as they found it: the same
 * memory regions, flat views and open files after every cycle as after
 * the first (docs/security.md, issue 8: the fuzzer's slow inputs).
 */
static void test_reset_cycles(void *obj, void *data, QGuestAllocator *alloc)
{
    QVmmbibPCI *dev = obj;
    QVmmbib *vib = &dev->vib;
    uint64_t pages = vmmbib_guest_pages(alloc, 2);
    /* Mapped, so that info mtree shows the UAR window's subregions. */
    QPCIBar uar = qpci_iomap(dev->pci_vdev.pdev, 2, NULL);
    g_autofree char *before = NULL;
    int i;

    vmmbib_reset_cycle(vib, alloc, pages);
    before = vmmbib_footprint();
    for (i = 0; i < 20; i++) {
        g_autofree char *after = NULL;

        vmmbib_reset_cycle(vib, alloc, pages);
        after = vmmbib_footprint();
        g_assert_cmpstr(after, ==, before);
    }
    qpci_iounmap(dev->pci_vdev.pdev, uar);
}

/* A slot count that is not a power of two still makes a valid BAR. */
static void test_odd_uar_slots(void *obj, void *data, QGuestAllocator *alloc)
{
    QVmmbibPCI *dev = obj;
    uint64_t size;
    QPCIBar uar = qpci_iomap(dev->pci_vdev.pdev, 2, &size);

    g_assert_cmpuint(qvirtio_config_readl(&dev->pci_vdev.vdev, 8), ==, 3);
    g_assert_cmpuint(size, ==, 4 * VMMBIB_UAR_SLOT_SIZE);
    qpci_iounmap(dev->pci_vdev.pdev, uar);
}

/*
 * device_add with @props ("name=value,...", values of digits are numbers)
 * must fail realize, with @want and @want2 (unless NULL) in the error.
 */
static void vmmbib_add_fails(QTestState *qts, const char *props,
                             const char *want, const char *want2)
{
    const char *needles[] = { want, want2, NULL };
    const char *const *needle;
    QDict *args = qdict_new();
    g_auto(GStrv) kvs = g_strsplit(props, ",", -1);
    QDict *resp;
    const char *desc;
    char **kv;

    qdict_put_str(args, "driver", "vmmbypass-ib");
    qdict_put_str(args, "id", "vib-bad");
    for (kv = kvs; *kv; kv++) {
        g_auto(GStrv) nv = g_strsplit(*kv, "=", 2);

        g_assert(nv[0] && nv[1]);
        if (nv[1][0] && strspn(nv[1], "0123456789") == strlen(nv[1])) {
            qdict_put_int(args, nv[0], g_ascii_strtoull(nv[1], NULL, 10));
        } else {
            qdict_put_str(args, nv[0], nv[1]);
        }
    }
    resp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments': %p}",
                     args);
    g_assert(qdict_haskey(resp, "error"));
    desc = qdict_get_str(qdict_get_qdict(resp, "error"), "desc");
    g_test_message("%s: %s", props, desc);
    for (needle = needles; *needle; needle++) {
        if (!strstr(desc, *needle)) {
            g_error("device_add %s: the error \"%s\" does not say \"%s\"",
                    props, desc, *needle);
        }
    }
    qobject_unref(resp);
}

/* The default and description of a property, as -device ...,help. */
static void vmmbib_check_prop_help(QTestState *qts, const char *name,
                                   const char *defval, const char *text)
{
    QDict *resp = qtest_qmp(qts, "{'execute': 'device-list-properties', "
                            "'arguments': {'typename': 'vmmbypass-ib'}}");
    QListEntry *e;
    bool found = false;

    g_assert(qdict_haskey(resp, "return"));
    QLIST_FOREACH_ENTRY(qdict_get_qlist(resp, "return"), e) {
        QDict *prop = qobject_to(QDict, qlist_entry_obj(e));

        if (strcmp(qdict_get_str(prop, "name"), name)) {
            continue;
        }
        found = true;
        if (defval) {
            QObject *d = qdict_get(prop, "default-value");
            g_autoptr(GString) json = NULL;

            g_assert(d);
            json = qobject_to_json(d);
            g_assert_cmpstr(json->str, ==, defval);
        }
        g_assert(qdict_haskey(prop, "description"));
        g_assert(strstr(qdict_get_str(prop, "description"), text));
    }
    g_assert(found);
    qobject_unref(resp);
}

/*
 * Backend selection: -device vmmbypass-ib,help documents it, and a wrong
 * choice fails realize with an error that says what to do.  This host
 * may have no RDMA device at all (then the error says so and how to add
 * one) and this build may lack the verbs backend (VMMBIB_QTEST_VERBS=built
 * from meson says it has it: then it must not say so).
 */
static void test_backend_errors(void)
{
    QTestState *qts = qtest_init("-M pc");
    const char *verbs = getenv("VMMBIB_QTEST_VERBS");
    const char *no_verbs = "this build has no verbs backend";
    g_autofree char *long_name = g_strnfill(80, 'x');
    g_autofree char *long_props =
        g_strdup_printf("backend=verbs,verbs-device=%s", long_name);
    QDict *resp;
    const char *desc;

    vmmbib_check_prop_help(qts, "backend", "\"soft\"", "verbs");
    vmmbib_check_prop_help(qts, "verbs-device", NULL, "ibv_devices");
    vmmbib_check_prop_help(qts, "verbs-port", "1", "port");
    vmmbib_check_prop_help(qts, "verbs-gid-index", "0", "GID");

    vmmbib_add_fails(qts, "backend=bogus", "backend", "bogus");
    vmmbib_add_fails(qts, "backend=verbs,verbs-port=0", "verbs-port=0",
                     "1 to 255");
    vmmbib_add_fails(qts, "backend=verbs,verbs-port=256", "verbs-port=256",
                     NULL);
    vmmbib_add_fails(qts, "backend=verbs,verbs-gid-index=65536",
                     "verbs-gid-index=65536", NULL);
    vmmbib_add_fails(qts, "verbs-device=rxe0", "verbs-device=rxe0",
                     "needs backend=verbs");
    vmmbib_add_fails(qts, long_props, "too long", NULL);

    /*
     * A device that does not exist: the error names it and lists what
     * exists, or says the host has none and how to make one.
     */
    resp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments': "
                     "{'driver': 'vmmbypass-ib', 'id': 'vib-bad', "
                     "'backend': 'verbs', "
                     "'verbs-device': 'vmmbib-no-such-hca'}}");
    g_assert(qdict_haskey(resp, "error"));
    desc = qdict_get_str(qdict_get_qdict(resp, "error"), "desc");
    g_test_message("verbs-device=vmmbib-no-such-hca: %s", desc);
    if (strstr(desc, no_verbs)) {
        g_assert_cmpstr(verbs, !=, "built");
        g_assert(strstr(desc, "backend=soft"));
    } else {
        g_assert(strstr(desc, "verbs-device=vmmbib-no-such-hca"));
        g_assert(strstr(desc, "ibv_devices lists: ") ||
                 (strstr(desc, "no RDMA device") &&
                  strstr(desc, "rdma link add")));
    }
    qobject_unref(resp);

    /* None of it left a device behind: the id is free for a good one. */
    resp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments': "
                     "{'driver': 'vmmbypass-ib', 'id': 'vib-bad', "
                     "'backend': 'soft'}}");
    g_assert(qdict_haskey(resp, "return"));
    qobject_unref(resp);
    qtest_quit(qts);
}

/*
 * backend=verbs on a real RDMA device, only with VMMBIB_QTEST_VERBS_DEVICE
 * set (tests/guest/qemu-verbs.sh runs it in a VM with rdma_rxe): two RC
 * QPs of one device connected to each other, RDMA WRITE, SEND/RECV and
 * RDMA READ through the controlq, the guest's rings and the doorbell page,
 * the data moved by the host device.
 */
typedef struct VmmbibVerbsQP {
    uint32_t qp, qpn, cq;
    uint64_t sq, rq, cq_ring;
    uint32_t sq_prod, rq_prod, cq_cons;
} VmmbibVerbsQP;

#define VMMBIB_VERBS_ACCESS (VMMBIB_ACCESS_LOCAL_WRITE | \
                             VMMBIB_ACCESS_REMOTE_WRITE | \
                             VMMBIB_ACCESS_REMOTE_READ)

static void vmmbib_verbs_qp_create(VmmbibLoop *l, uint32_t pd,
                                   VmmbibVerbsQP *q)
{
    VmmbibObjs *o = &l->o;
    VmmbibReply r;
    struct vmmbib_cmd_create_cq ccq = { .cqe = cpu_to_le32(8) };
    struct vmmbib_cmd_create_qp cqp = {
        .qp_type = VMMBIB_QPT_RC,
        .caps = {
            .max_send_wr = cpu_to_le32(8),
            .max_recv_wr = cpu_to_le32(8),
            .max_send_sge = cpu_to_le32(2),
            .max_recv_sge = cpu_to_le32(1),
            .sq_wqe_shift = 7,
            .rq_wqe_shift = 5,
        },
    };

    memset(q, 0, sizeof(*q));
    q->cq_ring = vmmbib_guest_pages(o->alloc, 1);
    q->sq = vmmbib_guest_pages(o->alloc, 1);
    q->rq = vmmbib_guest_pages(o->alloc, 1);
    ccq.pages = vmmbib_list(o->alloc, q->cq_ring, 1);
    q->cq = vmmbib_handle(o, VMMBIB_CMD_CREATE_CQ, &ccq, sizeof(ccq));
    cqp.pd_handle = cpu_to_le32(pd);
    cqp.send_cq_handle = cpu_to_le32(q->cq);
    cqp.recv_cq_handle = cpu_to_le32(q->cq);
    cqp.sq_pages = vmmbib_list(o->alloc, q->sq, 1);
    cqp.rq_pages = vmmbib_list(o->alloc, q->rq, 1);
    g_assert_cmpint(vmmbib_obj_cmd(o, VMMBIB_CMD_CREATE_QP, &cqp,
                                   sizeof(cqp), &r), ==, VMMBIB_STATUS_OK);
    q->qp = ldl_le_p(r.raw);
    q->qpn = ldl_le_p(r.raw + 4);
}

/* A signaled send WQE of one SGE (@local, @len) on @q's SQ, rung. */
static void vmmbib_verbs_post_send(VmmbibLoop *l, VmmbibVerbsQP *q,
                                   uint8_t opcode, uint64_t wr_id,
                                   uint64_t local, uint32_t len,
                                   uint64_t remote, uint32_t rkey)
{
    struct vmmbib_send_wqe wqe = {
        .wr_id = cpu_to_le64(wr_id),
        .opcode = opcode,
        .flags = VMMBIB_WQE_SIGNALED,
        .num_sge = 1,
    };
    struct vmmbib_sge sge = {
        .addr = cpu_to_le64(local),
        .length = cpu_to_le32(len),
        .lkey = cpu_to_le32(l->key),
    };
    uint64_t slot = q->sq + (uint64_t)(q->sq_prod % 8) * 128;

    wqe.rdma.remote_addr = cpu_to_le64(remote);
    wqe.rdma.rkey = cpu_to_le32(rkey);
    qtest_memwrite(global_qtest, slot, &wqe, sizeof(wqe));
    qtest_memwrite(global_qtest, slot + sizeof(wqe), &sge, sizeof(sge));
    q->sq_prod++;
    vmmbib_ring_doorbell(l, VMMBIB_DB(VMMBIB_DB_KIND_SQ,
                                      VMMBIB_HANDLE_INDEX(q->qp),
                                      q->sq_prod));
}

static void vmmbib_verbs_post_recv(VmmbibLoop *l, VmmbibVerbsQP *q,
                                   uint64_t wr_id, uint64_t addr,
                                   uint32_t len)
{
    struct vmmbib_recv_wqe wqe = {
        .wr_id = cpu_to_le64(wr_id),
        .num_sge = cpu_to_le32(1),
    };
    struct vmmbib_sge sge = {
        .addr = cpu_to_le64(addr),
        .length = cpu_to_le32(len),
        .lkey = cpu_to_le32(l->key),
    };
    uint64_t slot = q->rq + (uint64_t)(q->rq_prod % 8) * 32;

    qtest_memwrite(global_qtest, slot, &wqe, sizeof(wqe));
    qtest_memwrite(global_qtest, slot + sizeof(wqe), &sge, sizeof(sge));
    q->rq_prod++;
    vmmbib_ring_doorbell(l, VMMBIB_DB(VMMBIB_DB_KIND_RQ,
                                      VMMBIB_HANDLE_INDEX(q->qp),
                                      q->rq_prod));
}

/* The next CQE of @q's CQ (30 s at most: rxe in a TCG guest is slow). */
static struct vmmbib_cqe vmmbib_verbs_next_cqe(VmmbibVerbsQP *q)
{
    struct vmmbib_cqe cqe;
    unsigned int tries;

    for (tries = 0; tries < 30000; tries++) {
        qtest_memread(global_qtest, q->cq_ring +
                      sizeof(struct vmmbib_cq_header) +
                      (uint64_t)(q->cq_cons % 8) * sizeof(cqe), &cqe,
                      sizeof(cqe));
        if (cqe.owner == VMMBIB_CQE_OWNER) {
            break;
        }
        g_usleep(1000);
    }
    g_assert_cmpuint(cqe.owner, ==, VMMBIB_CQE_OWNER);
    q->cq_cons++;
    return cqe;
}

static void vmmbib_verbs_check_cqe(VmmbibVerbsQP *q, uint8_t opcode,
                                   uint64_t wr_id)
{
    struct vmmbib_cqe cqe = vmmbib_verbs_next_cqe(q);

    g_assert_cmpuint(cqe.status, ==, VMMBIB_WC_SUCCESS);
    g_assert_cmpuint(cqe.opcode, ==, opcode);
    g_assert_cmphex(le64_to_cpu(cqe.wr_id), ==, wr_id);
    g_assert_cmpuint(le32_to_cpu(cqe.qpn), ==, q->qpn);
}

static void vmmbib_fill(uint8_t *buf, size_t len, unsigned int seed)
{
    size_t i;

    for (i = 0; i < len; i++) {
        buf[i] = i * seed + 11;
    }
}

static void test_verbs_rc(void *obj, void *data, QGuestAllocator *alloc)
{
    QVmmbibPCI *dev = obj;
    VmmbibLoop l = { 0 };
    VmmbibObjs *o = &l.o;
    VmmbibVerbsQP a, b;
    VmmbibReply r;
    struct vmmbib_cmd_query_port port = { .port_num = 1 };
    struct vmmbib_cmd_reg_mr mr = {
        .access = cpu_to_le32(VMMBIB_VERBS_ACCESS),
        .length = cpu_to_le64(2 * VMMBIB_PAGE_SIZE),
    };
    struct vmmbib_cqe cqe;
    uint8_t pattern[512], copy[512];
    uint32_t pd, rkey;
    uint16_t lid;

    /* The verbs backend relays SRQs, UD and atomics too. */
    g_assert_cmphex(dev->vib.vdev->features & ((1ull << VMMBIB_F_SRQ) |
                                               (1ull << VMMBIB_F_UD) |
                                               (1ull << VMMBIB_F_ATOMIC)),
                    ==, (1ull << VMMBIB_F_SRQ) | (1ull << VMMBIB_F_UD) |
                        (1ull << VMMBIB_F_ATOMIC));
    l.pdev = dev->pci_vdev.pdev;
    l.uar = qpci_iomap(l.pdev, 2, NULL);
    l.buf = vmmbib_guest_pages(alloc, 2);
    vmmbib_objs_init(o, &dev->vib, alloc);
    l.db_page = (uint64_t)o->slot * VMMBIB_UAR_SLOT_SIZE;
    g_assert_cmpint(vmmbib_cmd(o->vib, VMMBIB_CMD_QUERY_PORT, 0, &port,
                               sizeof(port), &r, alloc), ==,
                    VMMBIB_STATUS_OK);
    lid = le16_to_cpu(r.port.lid);
    pd = vmmbib_handle(o, VMMBIB_CMD_CREATE_PD, NULL, 0);
    mr.pd_handle = cpu_to_le32(pd);
    mr.iova = cpu_to_le64(l.buf);
    mr.pages = vmmbib_list(alloc, l.buf, 2);
    g_assert_cmpint(vmmbib_obj_cmd(o, VMMBIB_CMD_REG_MR, &mr, sizeof(mr),
                                   &r), ==, VMMBIB_STATUS_OK);
    l.key = ldl_le_p(r.raw + 4);
    rkey = ldl_le_p(r.raw + 8);     /* the host MR's, for the HCA */
    vmmbib_verbs_qp_create(&l, pd, &a);
    vmmbib_verbs_qp_create(&l, pd, &b);
    g_assert_cmpuint(a.qpn, !=, b.qpn);
    vmmbib_qp_connect_rc(o, a.qp, b.qpn, lid, VMMBIB_ACCESS_REMOTE_WRITE |
                         VMMBIB_ACCESS_REMOTE_READ, 7);
    vmmbib_qp_connect_rc(o, b.qp, a.qpn, lid, VMMBIB_ACCESS_REMOTE_WRITE |
                         VMMBIB_ACCESS_REMOTE_READ, 7);

    /* RDMA WRITE across the MR's page boundary. */
    vmmbib_fill(pattern, sizeof(pattern), 7);
    qtest_memwrite(global_qtest, l.buf + VMMBIB_PAGE_SIZE - 256, pattern,
                   sizeof(pattern));
    vmmbib_verbs_post_send(&l, &a, VMMBIB_WR_RDMA_WRITE, 0x1001,
                           l.buf + VMMBIB_PAGE_SIZE - 256, sizeof(pattern),
                           l.buf + 64, rkey);
    vmmbib_verbs_check_cqe(&a, VMMBIB_WC_RDMA_WRITE, 0x1001);
    qtest_memread(global_qtest, l.buf + 64, copy, sizeof(copy));
    g_assert_cmpmem(copy, sizeof(copy), pattern, sizeof(pattern));

    /* SEND to a receive posted on the other QP. */
    vmmbib_fill(pattern, sizeof(pattern), 13);
    qtest_memwrite(global_qtest, l.buf + 3000, pattern, 300);
    vmmbib_verbs_post_recv(&l, &b, 0x2002, l.buf + VMMBIB_PAGE_SIZE + 64,
                           1024);
    vmmbib_verbs_post_send(&l, &a, VMMBIB_WR_SEND, 0x1002, l.buf + 3000,
                           300, 0, 0);
    cqe = vmmbib_verbs_next_cqe(&b);
    g_assert_cmpuint(cqe.status, ==, VMMBIB_WC_SUCCESS);
    g_assert_cmpuint(cqe.opcode, ==, VMMBIB_WC_RECV);
    g_assert_cmphex(le64_to_cpu(cqe.wr_id), ==, 0x2002);
    g_assert_cmpuint(le32_to_cpu(cqe.byte_len), ==, 300);
    g_assert_cmpuint(le32_to_cpu(cqe.qpn), ==, b.qpn);
    g_assert_cmpuint(le32_to_cpu(cqe.src_qp), ==, a.qpn);
    vmmbib_verbs_check_cqe(&a, VMMBIB_WC_SEND, 0x1002);
    qtest_memread(global_qtest, l.buf + VMMBIB_PAGE_SIZE + 64, copy, 300);
    g_assert_cmpmem(copy, 300, pattern, 300);

    /* RDMA READ by the other QP. */
    vmmbib_fill(pattern, sizeof(pattern), 29);
    qtest_memwrite(global_qtest, l.buf + VMMBIB_PAGE_SIZE + 2048, pattern,
                   200);
    vmmbib_verbs_post_send(&l, &b, VMMBIB_WR_RDMA_READ, 0x2003,
                           l.buf + VMMBIB_PAGE_SIZE + 3000, 200,
                           l.buf + VMMBIB_PAGE_SIZE + 2048, rkey);
    vmmbib_verbs_check_cqe(&b, VMMBIB_WC_RDMA_READ, 0x2003);
    qtest_memread(global_qtest, l.buf + VMMBIB_PAGE_SIZE + 3000, copy, 200);
    g_assert_cmpmem(copy, 200, pattern, 200);

    g_assert_cmpuint(vmmbib_stat("stats-qps"), ==, 2);
    /* three send WQEs and the receive */
    g_assert_cmpuint(vmmbib_stat("stats-wqes"), ==, 4);
    /* A reset destroys the guest's objects, and so the host's. */
    qvirtio_reset(dev->vib.vdev);
    g_assert_cmpuint(vmmbib_stat("stats-qps"), ==, 0);
    g_assert_cmpuint(vmmbib_stat("stats-mrs"), ==, 0);
    qpci_iounmap(l.pdev, l.uar);
}

static void register_vmmbib_tests(void)
{
    QOSGraphTestOptions max_qp_opts = {
        .edge.extra_device_opts = "max-qp=77",
    };
    QOSGraphTestOptions odd_slots_opts = {
        .edge.extra_device_opts = "uar-slots=3",
    };
    QOSGraphTestOptions bad_counts_opts = {
        .edge.extra_device_opts = "max-cqe=64,max-qp-wr=64,max-srq-wr=64,"
                                  "max-sge=4,max-mr-pages=16",
    };
    QOSGraphTestOptions reset_cycles_opts = {
        .edge.extra_device_opts = "uar-slots=2",
    };
    /* tests/guest/qemu-verbs.sh: a host with this RDMA device */
    const char *verbs_device = getenv("VMMBIB_QTEST_VERBS_DEVICE");
    const char *verbs_gid = getenv("VMMBIB_QTEST_VERBS_GID_INDEX");
    QOSGraphTestOptions verbs_opts = { 0 };
    QOSGraphTestOptions quota_opts = {
        .edge.extra_device_opts = "max-pd=2,max-cq=1,max-mr=1,max-srq=1,"
                                  "max-qp=1,max-ah=1,uar-slots=2,"
                                  "max-pinned-mb=1",
    };

    qos_add_test("pci-identity", "vmmbypass-ib", test_pci_identity, NULL);
    qos_add_test("config", "vmmbypass-ib-dev", test_config, NULL);
    qos_add_test("query-device", "vmmbypass-ib-dev", test_query_device,
                 &max_qp_opts);
    qos_add_test("malformed", "vmmbypass-ib-dev", test_malformed, NULL);
    qos_add_test("uar-window", "vmmbypass-ib", test_uar_window, NULL);
    qos_add_test("reset", "vmmbypass-ib-dev", test_reset, NULL);
    qos_add_test("before-driver-ok", "vmmbypass-ib-dev",
                 test_before_driver_ok, NULL);
    qos_add_test("object-errors", "vmmbypass-ib-dev", test_object_errors,
                 NULL);
    qos_add_test("rdma-write-loopback", "vmmbypass-ib",
                 test_rdma_write_loopback, NULL);
    qos_add_test("every-command", "vmmbypass-ib-dev", test_every_command,
                 NULL);
    qos_add_test("odd-uar-slots", "vmmbypass-ib", test_odd_uar_slots,
                 &odd_slots_opts);
    qos_add_test("reset-cycles", "vmmbypass-ib", test_reset_cycles,
                 &reset_cycles_opts);
    qos_add_test("features", "vmmbypass-ib-dev", test_features, NULL);
    qos_add_test("gid-pkey", "vmmbypass-ib-dev", test_gid_pkey, NULL);
    qos_add_test("bad-counts", "vmmbypass-ib-dev", test_bad_counts,
                 &bad_counts_opts);
    qos_add_test("bad-ring-pages", "vmmbypass-ib", test_bad_ring_pages, NULL);
    qos_add_test("quotas", "vmmbypass-ib-dev", test_quotas, &quota_opts);
    qos_add_test("eventq", "vmmbypass-ib", test_eventq, NULL);
    qos_add_test("kick-wakes-engine", "vmmbypass-ib", test_kick_wakes_engine,
                 NULL);
    qtest_add_func("/vmmbypass-ib/backend-errors", test_backend_errors);
    if (verbs_device) {
        verbs_opts.edge.extra_device_opts =
            g_strdup_printf("backend=verbs,verbs-device=%s,"
                            "verbs-gid-index=%s", verbs_device,
                            verbs_gid ? verbs_gid : "0");
        qos_add_test("verbs-rc", "vmmbypass-ib", test_verbs_rc, &verbs_opts);
    }
}

libqos_init(register_vmmbib_tests);
