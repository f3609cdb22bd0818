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
    g_assert_cmpuint(qpci_io_readl(pdev, uar, db + VMMBIB_DB_ENGINE_STATE),
                     ==, VMMBIB_ENGINE_AWAKE);
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

static void register_vmmbib_tests(void)
{
    QOSGraphTestOptions max_qp_opts = {
        .edge.extra_device_opts = "max-qp=77",
    };

    qos_add_test("pci-identity", "vmmbypass-ib", test_pci_identity, NULL);
    qos_add_test("config", "vmmbypass-ib-dev", test_config, NULL);
    qos_add_test("query-device", "vmmbypass-ib-dev", test_query_device,
                 &max_qp_opts);
    qos_add_test("malformed", "vmmbypass-ib-dev", test_malformed, NULL);
    qos_add_test("uar-window", "vmmbypass-ib", test_uar_window, NULL);
    qos_add_test("reset", "vmmbypass-ib-dev", test_reset, NULL);
}

libqos_init(register_vmmbib_tests);
