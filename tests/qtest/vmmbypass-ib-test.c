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

    /* The device still serves valid requests. */
    g_assert_cmpint(vmmbib_cmd(vib, VMMBIB_CMD_QUERY_DEVICE, 0, NULL, 0, &r,
                               alloc), ==, VMMBIB_STATUS_OK);
}

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

    g_assert_cmpuint(bar_size, ==, 64 * VMMBIB_UAR_SLOT_SIZE);
    /* No context yet: slot 0 has no doorbell page. */
    g_assert_cmpuint(qpci_io_readl(pdev, uar, VMMBIB_DB_RING_SIZE), ==, 0);

    g_assert_cmpint(vmmbib_cmd(vib, VMMBIB_CMD_CREATE_UCONTEXT, 0, NULL, 0,
                               &r, alloc), ==, VMMBIB_STATUS_OK);
    ctx = le32_to_cpu(r.uctx.ctx_handle);
    slot = le32_to_cpu(r.uctx.uar_slot);
    g_assert_cmpuint(slot, ==, 0);
    db = (uint64_t)slot * VMMBIB_UAR_SLOT_SIZE;
    g_assert_cmpuint(qpci_io_readl(pdev, uar, db + VMMBIB_DB_RING_SIZE), ==,
                     VMMBIB_DB_RING_ENTRIES);
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

    g_assert_cmpint(vmmbib_cmd(vib, VMMBIB_CMD_DESTROY_UCONTEXT, ctx, NULL, 0,
                               &r, alloc), ==, VMMBIB_STATUS_OK);
    g_assert_cmpuint(qpci_io_readl(pdev, uar, db + VMMBIB_DB_RING_SIZE), ==,
                     0);
    g_assert_cmpuint(vmmbib_stat("stats-ucontexts"), ==, 0);
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
 * The whole path in one device: an RC QP connected to itself, an RDMA
 * WRITE posted in guest memory, its doorbell stored in the UAR page (no
 * trap unless the engine sleeps), the CQE read back from guest memory.
 */
static void test_rdma_write_loopback(void *obj, void *data,
                                     QGuestAllocator *alloc)
{
    QVmmbibPCI *dev = obj;
    QVmmbib *vib = &dev->vib;
    QPCIDevice *pdev = dev->pci_vdev.pdev;
    QPCIBar uar = qpci_iomap(pdev, 2, NULL);
    VmmbibObjs o;
    VmmbibReply r;
    uint64_t buf = vmmbib_guest_pages(alloc, 2);
    uint64_t cq_ring = vmmbib_guest_pages(alloc, 1);
    uint64_t sq = vmmbib_guest_pages(alloc, 1);
    uint64_t rq = vmmbib_guest_pages(alloc, 1);
    uint64_t db_page;
    uint32_t pd, key, cq, qp, qpn, producer;
    uint16_t lid;
    struct vmmbib_cmd_query_port port = { .port_num = 1 };
    struct vmmbib_cmd_reg_mr mr = {
        .access = cpu_to_le32(VMMBIB_ACCESS_LOCAL_WRITE |
                              VMMBIB_ACCESS_REMOTE_WRITE),
        .iova = cpu_to_le64(buf),
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
    struct vmmbib_send_wqe wqe = { 0 };
    struct vmmbib_sge sge;
    struct vmmbib_cqe cqe;
    uint8_t pattern[512], copy[512];
    unsigned int i, tries;

    vmmbib_objs_init(&o, vib, alloc);
    db_page = (uint64_t)o.slot * VMMBIB_UAR_SLOT_SIZE;
    g_assert_cmpint(vmmbib_cmd(vib, VMMBIB_CMD_QUERY_PORT, 0, &port,
                               sizeof(port), &r, alloc), ==,
                    VMMBIB_STATUS_OK);
    lid = le16_to_cpu(r.port.lid);
    pd = vmmbib_handle(&o, VMMBIB_CMD_CREATE_PD, NULL, 0);
    mr.pd_handle = cpu_to_le32(pd);
    mr.pages = vmmbib_list(alloc, buf, 2);
    g_assert_cmpint(vmmbib_obj_cmd(&o, VMMBIB_CMD_REG_MR, &mr, sizeof(mr),
                                   &r), ==, VMMBIB_STATUS_OK);
    key = ldl_le_p(r.raw + 4);
    ccq.pages = vmmbib_list(alloc, cq_ring, 1);
    cq = vmmbib_handle(&o, VMMBIB_CMD_CREATE_CQ, &ccq, sizeof(ccq));
    cqp.pd_handle = cpu_to_le32(pd);
    cqp.send_cq_handle = cpu_to_le32(cq);
    cqp.recv_cq_handle = cpu_to_le32(cq);
    cqp.sq_pages = vmmbib_list(alloc, sq, 1);
    cqp.rq_pages = vmmbib_list(alloc, rq, 1);
    g_assert_cmpint(vmmbib_obj_cmd(&o, VMMBIB_CMD_CREATE_QP, &cqp,
                                   sizeof(cqp), &r), ==, VMMBIB_STATUS_OK);
    qp = ldl_le_p(r.raw);
    qpn = ldl_le_p(r.raw + 4);

    /* RESET -> RTR skips INIT: the spec's state machine refuses it. */
    attr.qp_state = VMMBIB_QPS_RTR;
    g_assert_cmpint(vmmbib_modify(&o, qp, VMMBIB_QP_STATE, &attr), ==,
                    VMMBIB_STATUS_BAD_STATE);
    attr.qp_state = VMMBIB_QPS_INIT;
    attr.port_num = 1;
    attr.qp_access_flags = cpu_to_le32(VMMBIB_ACCESS_REMOTE_WRITE);
    g_assert_cmpint(vmmbib_modify(&o, qp, VMMBIB_QP_STATE |
                                  VMMBIB_QP_PKEY_INDEX | VMMBIB_QP_PORT |
                                  VMMBIB_QP_ACCESS_FLAGS, &attr), ==,
                    VMMBIB_STATUS_OK);
    attr.qp_state = VMMBIB_QPS_RTR;
    attr.path_mtu = VMMBIB_MTU_1024;
    attr.dest_qp_num = cpu_to_le32(qpn);
    attr.max_dest_rd_atomic = 1;
    attr.min_rnr_timer = 1;
    attr.ah_attr.dlid = cpu_to_le16(lid);
    attr.ah_attr.port_num = 1;
    g_assert_cmpint(vmmbib_modify(&o, qp, VMMBIB_QP_STATE | VMMBIB_QP_AV |
                                  VMMBIB_QP_PATH_MTU | VMMBIB_QP_DEST_QPN |
                                  VMMBIB_QP_RQ_PSN |
                                  VMMBIB_QP_MAX_DEST_RD_ATOMIC |
                                  VMMBIB_QP_MIN_RNR_TIMER, &attr), ==,
                    VMMBIB_STATUS_OK);
    attr.qp_state = VMMBIB_QPS_RTS;
    attr.timeout = 14;
    attr.retry_cnt = 1;
    attr.rnr_retry = 1;
    attr.max_rd_atomic = 1;
    g_assert_cmpint(vmmbib_modify(&o, qp, VMMBIB_QP_STATE | VMMBIB_QP_SQ_PSN |
                                  VMMBIB_QP_TIMEOUT | VMMBIB_QP_RETRY_CNT |
                                  VMMBIB_QP_RNR_RETRY |
                                  VMMBIB_QP_MAX_QP_RD_ATOMIC, &attr), ==,
                    VMMBIB_STATUS_OK);

    /* 512 bytes that straddle the MR's two pages, written to page 0. */
    for (i = 0; i < sizeof(pattern); i++) {
        pattern[i] = i * 7 + 3;
    }
    qtest_memwrite(global_qtest, buf + VMMBIB_PAGE_SIZE - 256, pattern,
                   sizeof(pattern));
    wqe.wr_id = cpu_to_le64(0x1234);
    wqe.opcode = VMMBIB_WR_RDMA_WRITE;
    wqe.flags = VMMBIB_WQE_SIGNALED;
    wqe.num_sge = 1;
    wqe.rdma.remote_addr = cpu_to_le64(buf + 64);
    wqe.rdma.rkey = cpu_to_le32(key);
    sge.addr = cpu_to_le64(buf + VMMBIB_PAGE_SIZE - 256);
    sge.length = cpu_to_le32(sizeof(pattern));
    sge.lkey = cpu_to_le32(key);
    qtest_memwrite(global_qtest, sq, &wqe, sizeof(wqe));
    qtest_memwrite(global_qtest, sq + sizeof(wqe), &sge, sizeof(sge));

    /* The doorbell, as a guest stores it: entry first, then producer. */
    producer = qpci_io_readl(pdev, uar, db_page + VMMBIB_DB_PRODUCER);
    qpci_io_writeq(pdev, uar, db_page + VMMBIB_DB_RING +
                   8 * (producer % VMMBIB_DB_RING_ENTRIES),
                   VMMBIB_DB(VMMBIB_DB_KIND_SQ, VMMBIB_HANDLE_INDEX(qp), 1));
    qpci_io_writel(pdev, uar, db_page + VMMBIB_DB_PRODUCER, producer + 1);
    if (qpci_io_readl(pdev, uar, db_page + VMMBIB_DB_ENGINE_STATE) ==
        VMMBIB_ENGINE_ASLEEP) {
        qpci_io_writel(pdev, uar, db_page + VMMBIB_UAR_KICK_PAGE_OFFSET +
                       VMMBIB_KICK, 1);
    }

    for (tries = 0; tries < 2000; tries++) {
        qtest_memread(global_qtest, cq_ring + sizeof(struct vmmbib_cq_header),
                      &cqe, sizeof(cqe));
        if (cqe.owner == VMMBIB_CQE_OWNER) {
            break;
        }
        g_usleep(1000);
    }
    g_assert_cmpuint(cqe.owner, ==, VMMBIB_CQE_OWNER);
    g_assert_cmpuint(cqe.status, ==, VMMBIB_WC_SUCCESS);
    g_assert_cmpuint(cqe.opcode, ==, VMMBIB_WC_RDMA_WRITE);
    g_assert_cmphex(le64_to_cpu(cqe.wr_id), ==, 0x1234);
    g_assert_cmpuint(le32_to_cpu(cqe.qpn), ==, qpn);
    qtest_memread(global_qtest, buf + 64, copy, sizeof(copy));
    g_assert_cmpmem(copy, sizeof(copy), pattern, sizeof(pattern));
    g_assert_cmpuint(vmmbib_stat("stats-wqes"), ==, 1);
    g_assert_cmpuint(vmmbib_stat("stats-cqes"), ==, 1);
    g_assert_cmpuint(vmmbib_stat("stats-doorbell-writes"), ==, 0);

    /* A reset with all of it live leaves nothing behind. */
    qvirtio_reset(vib->vdev);
    g_assert_cmpuint(vmmbib_stat("stats-qps"), ==, 0);
    g_assert_cmpuint(vmmbib_stat("stats-cqs"), ==, 0);
    g_assert_cmpuint(vmmbib_stat("stats-pinned-pages"), ==, 0);
    qpci_iounmap(pdev, uar);
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

static void register_vmmbib_tests(void)
{
    QOSGraphTestOptions max_qp_opts = {
        .edge.extra_device_opts = "max-qp=77",
    };
    QOSGraphTestOptions odd_slots_opts = {
        .edge.extra_device_opts = "uar-slots=3",
    };

    qos_add_test("pci-identity", "vmmbypass-ib", test_pci_identity, NULL);
    qos_add_test("config", "vmmbypass-ib-dev", test_config, NULL);
    qos_add_test("query-device", "vmmbypass-ib-dev", test_query_device,
                 &max_qp_opts);
    qos_add_test("malformed", "vmmbypass-ib-dev", test_malformed, NULL);
    qos_add_test("uar-window", "vmmbypass-ib", test_uar_window, NULL);
    qos_add_test("reset", "vmmbypass-ib-dev", test_reset, NULL);
    qos_add_test("object-errors", "vmmbypass-ib-dev", test_object_errors,
                 NULL);
    qos_add_test("rdma-write-loopback", "vmmbypass-ib",
                 test_rdma_write_loopback, NULL);
    qos_add_test("every-command", "vmmbypass-ib-dev", test_every_command,
                 NULL);
    qos_add_test("odd-uar-slots", "vmmbypass-ib", test_odd_uar_slots,
                 &odd_slots_opts);
}

libqos_init(register_vmmbib_tests);
