/*
 * QUERY_DEVICE, QUERY_PORT, QUERY_GID and QUERY_PKEY: answered from the
 * device model.  The port is an InfiniBand port that is always active
 * (PORT_ACTIVE is raised with the first context: cmd_ucontext.c).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <endian.h>
#include <string.h>

#include "internal.h"

/* major.minor.sub in bits 47..32, 31..16, 15..0 (docs/spec.md) */
#define FW_VERSION          0x0000000100000000ull   /* 1.0.0 */
#define PORT_NUM            1
#define GID_TABLE_LEN       1
#define PKEY_TABLE_LEN      1
#define DEFAULT_PKEY        0xffff
#define MAX_MSG_SIZE        (1u << 31)

/* IB PortInfo:CapabilityMask bits we report. */
#define IB_PORT_DEVICE_MGMT_SUP       (1u << 19)

int vmmbib_cmd_query_device(struct vmmbib_cmd_ctx *c)
{
    const struct vmmbib_limits *l = &c->dev->cfg.limits;
    struct vmmbib_resp_query_device *r = c->resp;

    r->fw_ver = htole64(FW_VERSION);
    r->node_guid = htobe64(c->dev->node_guid);
    r->sys_image_guid = htobe64(c->dev->node_guid);
    /* An MR larger than the pinning quota could never be registered. */
    r->max_mr_size = htole64((uint64_t)(l->max_mr_pages < l->max_pinned_pages ?
                                        l->max_mr_pages : l->max_pinned_pages)
                             << VMMBIB_PAGE_SHIFT);
    r->page_size_cap = htole64(VMMBIB_PAGE_SIZE);
    r->vendor_id = htole32(VMMBIB_PCI_VENDOR_ID);
    r->vendor_part_id = htole32(VMMBIB_PCI_DEVICE_ID);
    r->hw_ver = htole32(VMMBIB_ABI_VERSION);
    r->max_qp = htole32(l->max_qp);
    r->max_qp_wr = htole32(l->max_qp_wr);
    r->device_cap_flags = htole32(VMMBIB_DEV_CAP_RC_RNR_NAK_GEN |
                                  VMMBIB_DEV_CAP_PORT_ACTIVE_EVENT);
    r->max_send_sge = htole32(l->max_send_sge);
    r->max_recv_sge = htole32(l->max_recv_sge);
    r->max_sge_rd = htole32(l->max_send_sge);
    r->max_cq = htole32(l->max_cq);
    r->max_cqe = htole32(l->max_cqe);
    r->max_mr = htole32(l->max_mr);
    r->max_pd = htole32(l->max_pd);
    r->max_qp_rd_atom = htole32(l->max_qp_rd_atom);
    r->max_qp_init_rd_atom = htole32(l->max_qp_rd_atom);
    r->max_srq = htole32(l->max_srq);
    r->max_srq_wr = htole32(l->max_srq_wr);
    r->max_srq_sge = htole32(l->max_srq_sge);
    r->max_ah = htole32(l->max_ah);
    r->max_inline_data = htole32(l->max_inline_data);
    r->max_mr_pages = htole32(l->max_mr_pages);
    r->max_pinned_pages = htole32(l->max_pinned_pages);
    r->max_ucontext = htole32(l->max_ucontext);
    r->max_pkeys = htole16(PKEY_TABLE_LEN);
    r->atomic_cap = VMMBIB_ATOMIC_HCA;
    r->local_ca_ack_delay = 15;
    r->phys_port_cnt = 1;
    return VMMBIB_STATUS_OK;
}

int vmmbib_cmd_query_port(struct vmmbib_cmd_ctx *c)
{
    const struct vmmbib_cmd_query_port *q = c->req;
    struct vmmbib_resp_query_port *r = c->resp;

    if (q->port_num != PORT_NUM) {
        return VMMBIB_STATUS_INVALID;
    }
    r->port_cap_flags = htole32(IB_PORT_DEVICE_MGMT_SUP);
    r->max_msg_sz = htole32(MAX_MSG_SIZE);
    r->gid_tbl_len = htole16(GID_TABLE_LEN);
    r->pkey_tbl_len = htole16(PKEY_TABLE_LEN);
    r->lid = htole16(c->dev->lid);
    r->sm_lid = htole16(c->dev->lid);
    r->state = VMMBIB_PORT_ACTIVE;
    r->max_mtu = VMMBIB_MTU_4096;
    r->active_mtu = VMMBIB_MTU_4096;
    r->max_vl_num = 1;
    r->subnet_timeout = 18;
    r->active_width = 2;        /* 4x */
    r->active_speed = 32;       /* EDR (25 Gb/s per lane) */
    r->phys_state = 5;          /* LinkUp */
    r->link_layer = VMMBIB_LINK_LAYER_INFINIBAND;
    return VMMBIB_STATUS_OK;
}

/* The port GUID is the node GUID: the device has one port. */
void vmmbib_port_gid(const struct vmmbib_dev *dev, uint8_t *gid)
{
    uint64_t prefix = htobe64(VMMBIB_SUBNET_PREFIX);
    uint64_t guid = htobe64(dev->node_guid);

    memcpy(gid, &prefix, sizeof(prefix));
    memcpy(gid + sizeof(prefix), &guid, sizeof(guid));
}

int vmmbib_cmd_query_gid(struct vmmbib_cmd_ctx *c)
{
    const struct vmmbib_cmd_query_gid *q = c->req;
    struct vmmbib_resp_query_gid *r = c->resp;

    if (q->port_num != PORT_NUM || vmmbib_le32(q->index) >= GID_TABLE_LEN) {
        return VMMBIB_STATUS_INVALID;
    }
    vmmbib_port_gid(c->dev, r->gid);
    return VMMBIB_STATUS_OK;
}

int vmmbib_cmd_query_pkey(struct vmmbib_cmd_ctx *c)
{
    const struct vmmbib_cmd_query_pkey *q = c->req;
    struct vmmbib_resp_query_pkey *r = c->resp;

    if (q->port_num != PORT_NUM || vmmbib_le32(q->index) >= PKEY_TABLE_LEN) {
        return VMMBIB_STATUS_INVALID;
    }
    r->pkey = htole16(DEFAULT_PKEY);
    return VMMBIB_STATUS_OK;
}
