// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The verbs ib_core calls: device and port queries and user contexts.
 * Everything privileged goes to the device as a command (vmmbib_cmd.c);
 * this file translates between the device's values and ib_core's.
 */

#include <linux/kernel.h>
#include <linux/log2.h>
#include <linux/minmax.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <rdma/ib_mad.h>
#include <rdma/ib_user_ioctl_verbs.h>
#include <rdma/ib_verbs.h>

#include "vmmbib.h"

/* ib_device_attr counts are int; the device's are u32. */
static int vmmbib_to_int(u32 val)
{
	return min_t(u32, val, INT_MAX);
}

/*
 * The largest ring a verb may ask for: rings are powers of two
 * (docs/spec.md), so a request is rounded up and must still fit the
 * device's limit.
 */
static int vmmbib_ring_max(u32 limit)
{
	return limit ? vmmbib_to_int(rounddown_pow_of_two(limit)) : 0;
}

static u64 vmmbib_dev_cap_flags(u32 flags)
{
	u64 ib_flags = 0;

	if (flags & VMMBIB_DEV_CAP_RC_RNR_NAK_GEN)
		ib_flags |= IB_DEVICE_RC_RNR_NAK_GEN;
	if (flags & VMMBIB_DEV_CAP_SRQ_RESIZE)
		ib_flags |= IB_DEVICE_SRQ_RESIZE;
	if (flags & VMMBIB_DEV_CAP_PORT_ACTIVE_EVENT)
		ib_flags |= IB_DEVICE_PORT_ACTIVE_EVENT;
	return ib_flags;
}

static enum ib_atomic_cap vmmbib_atomic_cap(u8 cap)
{
	switch (cap) {
	case VMMBIB_ATOMIC_HCA:
		return IB_ATOMIC_HCA;
	case VMMBIB_ATOMIC_GLOB:
		return IB_ATOMIC_GLOB;
	default:
		return IB_ATOMIC_NONE;
	}
}

static int vmmbib_query_device(struct ib_device *ibdev,
			       struct ib_device_attr *props,
			       struct ib_udata *udata)
{
	struct vmmbib_dev *dev = to_vmmbib_dev(ibdev);
	const struct vmmbib_dev_attr *attr = &dev->attr;

	/* No driver-specific query data is defined. */
	if (udata && udata->inlen &&
	    !ib_is_udata_cleared(udata, 0, udata->inlen)) {
		ibdev_dbg(ibdev, "query_device: unknown request data\n");
		return -EINVAL;
	}

	props->fw_ver = attr->fw_ver;
	props->sys_image_guid = attr->sys_image_guid;
	props->max_mr_size = attr->max_mr_size;
	props->page_size_cap = attr->page_size_cap;
	props->vendor_id = attr->vendor_id;
	props->vendor_part_id = attr->vendor_part_id;
	props->hw_ver = attr->hw_ver;
	props->max_qp = vmmbib_to_int(attr->max_qp);
	props->max_qp_wr = vmmbib_ring_max(attr->max_qp_wr);
	props->device_cap_flags = vmmbib_dev_cap_flags(attr->device_cap_flags);
	props->max_send_sge = vmmbib_to_int(attr->max_send_sge);
	props->max_recv_sge = vmmbib_to_int(attr->max_recv_sge);
	props->max_sge_rd = vmmbib_to_int(attr->max_sge_rd);
	props->max_cq = vmmbib_to_int(attr->max_cq);
	/* The provider's CQ rings hold one CQE more than asked for. */
	props->max_cqe = max(vmmbib_ring_max(attr->max_cqe) - 1, 0);
	props->max_mr = vmmbib_to_int(attr->max_mr);
	props->max_pd = vmmbib_to_int(attr->max_pd);
	props->max_qp_rd_atom = vmmbib_to_int(attr->max_qp_rd_atom);
	props->max_qp_init_rd_atom = vmmbib_to_int(attr->max_qp_init_rd_atom);
	props->max_srq = vmmbib_to_int(attr->max_srq);
	props->max_srq_wr = vmmbib_ring_max(attr->max_srq_wr);
	props->max_srq_sge = vmmbib_to_int(attr->max_srq_sge);
	props->max_ah = vmmbib_to_int(attr->max_ah);
	props->max_pkeys = attr->max_pkeys;
	props->atomic_cap = vmmbib_atomic_cap(attr->atomic_cap);
	props->masked_atomic_cap = IB_ATOMIC_NONE;
	props->local_ca_ack_delay = attr->local_ca_ack_delay;
	return 0;
}

/* fw_ver holds major, minor and sub-minor in bits 47-32, 31-16 and 15-0. */
static void vmmbib_get_dev_fw_str(struct ib_device *ibdev, char *str)
{
	u64 fw_ver = to_vmmbib_dev(ibdev)->attr.fw_ver;

	snprintf(str, IB_FW_VERSION_NAME_MAX, "%u.%u.%u",
		 (u16)(fw_ver >> 32), (u16)(fw_ver >> 16), (u16)fw_ver);
}

static int vmmbib_port_state(u8 state, enum ib_port_state *ib_state)
{
	switch (state) {
	case VMMBIB_PORT_DOWN:
		*ib_state = IB_PORT_DOWN;
		return 0;
	case VMMBIB_PORT_INIT:
		*ib_state = IB_PORT_INIT;
		return 0;
	case VMMBIB_PORT_ARMED:
		*ib_state = IB_PORT_ARMED;
		return 0;
	case VMMBIB_PORT_ACTIVE:
		*ib_state = IB_PORT_ACTIVE;
		return 0;
	default:
		return -EPROTO;
	}
}

static int vmmbib_mtu(u8 mtu, enum ib_mtu *ib_mtu)
{
	switch (mtu) {
	case VMMBIB_MTU_256:
		*ib_mtu = IB_MTU_256;
		return 0;
	case VMMBIB_MTU_512:
		*ib_mtu = IB_MTU_512;
		return 0;
	case VMMBIB_MTU_1024:
		*ib_mtu = IB_MTU_1024;
		return 0;
	case VMMBIB_MTU_2048:
		*ib_mtu = IB_MTU_2048;
		return 0;
	case VMMBIB_MTU_4096:
		*ib_mtu = IB_MTU_4096;
		return 0;
	default:
		return -EPROTO;
	}
}

/* ib_core has zeroed @props and checked @port. */
static int vmmbib_query_port(struct ib_device *ibdev, u32 port,
			     struct ib_port_attr *props)
{
	struct vmmbib_dev *dev = to_vmmbib_dev(ibdev);
	struct vmmbib_port_attr attr;
	int err;

	err = vmmbib_cmd_query_port(dev, port, &attr);
	if (err)
		return err;

	if (vmmbib_port_state(attr.state, &props->state) ||
	    vmmbib_mtu(attr.max_mtu, &props->max_mtu) ||
	    vmmbib_mtu(attr.active_mtu, &props->active_mtu) ||
	    attr.link_layer != VMMBIB_LINK_LAYER_INFINIBAND) {
		ibdev_err_ratelimited(ibdev,
				      "port %u: device reports state %u, MTUs %u/%u, link layer %u\n",
				      port, attr.state, attr.max_mtu,
				      attr.active_mtu, attr.link_layer);
		return -EPROTO;
	}

	props->phys_mtu = ib_mtu_enum_to_int(props->max_mtu);
	props->gid_tbl_len = attr.gid_tbl_len;
	props->port_cap_flags = attr.port_cap_flags |
				READ_ONCE(dev->port_cap_flags);
	props->max_msg_sz = attr.max_msg_sz;
	props->bad_pkey_cntr = attr.bad_pkey_cntr;
	props->qkey_viol_cntr = attr.qkey_viol_cntr;
	props->pkey_tbl_len = attr.pkey_tbl_len;
	props->lid = attr.lid;
	props->sm_lid = attr.sm_lid;
	props->lmc = attr.lmc;
	props->max_vl_num = attr.max_vl_num;
	props->sm_sl = attr.sm_sl;
	props->subnet_timeout = attr.subnet_timeout;
	props->init_type_reply = attr.init_type_reply;
	props->active_width = attr.active_width;
	props->active_speed = attr.active_speed;
	props->phys_state = attr.phys_state;
	return 0;
}

static int vmmbib_get_port_immutable(struct ib_device *ibdev, u32 port,
				     struct ib_port_immutable *immutable)
{
	struct ib_port_attr attr;
	int err;

	err = ib_query_port(ibdev, port, &attr);
	if (err)
		return err;

	immutable->pkey_tbl_len = attr.pkey_tbl_len;
	immutable->gid_tbl_len = attr.gid_tbl_len;
	/*
	 * An IB port: without CAP_PROT_IB, ib_core drops LIDs from AHs.  The
	 * device is its own subnet manager: GSI (QP1) for ib_mad, ib_cm and
	 * ib_sa, but no SMI (QP0), so not RDMA_CORE_PORT_IBA_IB.
	 */
	immutable->core_cap_flags = RDMA_CORE_CAP_PROT_IB |
				    RDMA_CORE_CAP_IB_MAD |
				    RDMA_CORE_CAP_IB_CM |
				    RDMA_CORE_CAP_IB_SA |
				    RDMA_CORE_CAP_AF_IB;
	immutable->max_mad_size = IB_MGMT_MAD_SIZE;
	return 0;
}

/*
 * ib_cm announces itself with IB_PORT_CM_SUP, and gives up on the port if
 * this fails.  The bits are the driver's: the device's subnet manager
 * needs none of them.
 */
static int vmmbib_modify_port(struct ib_device *ibdev, u32 port, int mask,
			      struct ib_port_modify *props)
{
	struct vmmbib_dev *dev = to_vmmbib_dev(ibdev);
	u32 old, new;

	if (mask & ~IB_PORT_RESET_QKEY_CNTR)
		return -EOPNOTSUPP;
	do {
		old = READ_ONCE(dev->port_cap_flags);
		new = (old | props->set_port_cap_mask) &
		      ~props->clr_port_cap_mask;
	} while (cmpxchg(&dev->port_cap_flags, old, new) != old);
	return 0;
}

static enum rdma_link_layer vmmbib_get_link_layer(struct ib_device *ibdev,
						  u32 port)
{
	return IB_LINK_LAYER_INFINIBAND;
}

static int vmmbib_query_gid(struct ib_device *ibdev, u32 port, int index,
			    union ib_gid *gid)
{
	if (index < 0)
		return -EINVAL;
	return vmmbib_cmd_query_gid(to_vmmbib_dev(ibdev), port, index, gid);
}

static int vmmbib_query_pkey(struct ib_device *ibdev, u32 port, u16 index,
			     u16 *pkey)
{
	return vmmbib_cmd_query_pkey(to_vmmbib_dev(ibdev), port, index, pkey);
}

static int vmmbib_alloc_ucontext(struct ib_ucontext *ibucontext,
				 struct ib_udata *udata)
{
	struct vmmbib_ucontext *uctx = to_vmmbib_ucontext(ibucontext);
	struct vmmbib_dev *dev = to_vmmbib_dev(ibucontext->device);
	struct vmmbib_ualloc_ucontext_resp resp = {};
	struct vmmbib_user_mmap_entry *entry;
	int err;

	/* Version 1 of the provider ABI defines no request data. */
	if (udata->inlen && !ib_is_udata_cleared(udata, 0, udata->inlen)) {
		ibdev_dbg(&dev->ibdev, "alloc_ucontext: unknown request data\n");
		return -EINVAL;
	}

	err = vmmbib_cmd_create_ucontext(dev, &uctx->ctx_handle,
					 &uctx->uar_slot);
	if (err)
		return err;

	/* The slot's two pages, offered to the provider's mmap. */
	entry = kzalloc(sizeof(*entry), GFP_KERNEL);
	if (!entry) {
		err = -ENOMEM;
		goto err_destroy_ucontext;
	}
	entry->pfn = PHYS_PFN(dev->uar.base +
			      (phys_addr_t)uctx->uar_slot * VMMBIB_UAR_SLOT_SIZE);
	err = rdma_user_mmap_entry_insert(ibucontext, &entry->rdma_entry,
					  VMMBIB_UAR_SLOT_SIZE);
	if (err) {
		kfree(entry);
		goto err_destroy_ucontext;
	}
	uctx->uar_entry = &entry->rdma_entry;

	resp.uar_slot = uctx->uar_slot;
	resp.uar_mmap_key = rdma_user_mmap_get_offset(uctx->uar_entry);
	resp.uar_size = VMMBIB_UAR_SLOT_SIZE;
	resp.db_ring_entries = VMMBIB_DB_RING_ENTRIES;

	/* An older provider may know a shorter reply. */
	err = ib_copy_to_udata(udata, &resp, min(sizeof(resp), udata->outlen));
	if (err)
		goto err_remove_entry;
	return 0;

err_remove_entry:
	rdma_user_mmap_entry_remove(uctx->uar_entry);
err_destroy_ucontext:
	vmmbib_cmd_destroy_ucontext(dev, uctx->ctx_handle);
	return err;
}

static void vmmbib_dealloc_ucontext(struct ib_ucontext *ibucontext)
{
	struct vmmbib_ucontext *uctx = to_vmmbib_ucontext(ibucontext);
	struct vmmbib_dev *dev = to_vmmbib_dev(ibucontext->device);
	int err;

	rdma_user_mmap_entry_remove(uctx->uar_entry);
	err = vmmbib_cmd_destroy_ucontext(dev, uctx->ctx_handle);
	if (err)
		ibdev_err_ratelimited(&dev->ibdev,
				      "context %#x not destroyed: %d\n",
				      uctx->ctx_handle, err);
}

/* Maps the UAR slot: both pages uncached (the kick page must be). */
static int vmmbib_mmap(struct ib_ucontext *ibucontext,
		       struct vm_area_struct *vma)
{
	struct vmmbib_user_mmap_entry *entry;
	struct rdma_user_mmap_entry *rdma_entry;
	int err;

	rdma_entry = rdma_user_mmap_entry_get(ibucontext, vma);
	if (!rdma_entry)
		return -EINVAL;
	entry = container_of(rdma_entry, struct vmmbib_user_mmap_entry,
			     rdma_entry);
	err = rdma_user_mmap_io(ibucontext, vma, entry->pfn,
				rdma_entry->npages * PAGE_SIZE,
				pgprot_noncached(vma->vm_page_prot),
				rdma_entry);
	rdma_user_mmap_entry_put(rdma_entry);
	return err;
}

static void vmmbib_mmap_free(struct rdma_user_mmap_entry *rdma_entry)
{
	kfree(container_of(rdma_entry, struct vmmbib_user_mmap_entry,
			   rdma_entry));
}

/*
 * On device removal ib_uverbs zaps every mapping made through
 * rdma_user_mmap_io() before it calls this, and frees the objects
 * afterwards: nothing is left for the driver to do.  Having the op is what
 * lets removal go ahead while user processes still hold the device.
 */
static void vmmbib_disassociate_ucontext(struct ib_ucontext *ibucontext)
{
}

const struct ib_device_ops vmmbib_dev_ops = {
	.owner = THIS_MODULE,
	/* Out of tree: the provider matches the PCI ID, not a driver id. */
	.driver_id = RDMA_DRIVER_UNKNOWN,
	.uverbs_abi_ver = VMMBIB_UVERBS_ABI_VERSION,

	.alloc_ucontext = vmmbib_alloc_ucontext,
	.dealloc_ucontext = vmmbib_dealloc_ucontext,
	.disassociate_ucontext = vmmbib_disassociate_ucontext,
	.get_dev_fw_str = vmmbib_get_dev_fw_str,
	.get_link_layer = vmmbib_get_link_layer,
	.get_port_immutable = vmmbib_get_port_immutable,
	.mmap = vmmbib_mmap,
	.mmap_free = vmmbib_mmap_free,
	.modify_port = vmmbib_modify_port,
	.query_device = vmmbib_query_device,
	.query_gid = vmmbib_query_gid,
	.query_pkey = vmmbib_query_pkey,
	.query_port = vmmbib_query_port,

	INIT_RDMA_OBJ_SIZE(ib_ucontext, vmmbib_ucontext, ibucontext),
};
