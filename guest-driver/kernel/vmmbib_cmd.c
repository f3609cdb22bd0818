// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Device commands: one function per controlq command.  Each builds the
 * little-endian request, runs it and returns the reply in CPU byte order.
 * What the values mean to ib_core is vmmbib_verbs.c's business.
 *
 * The queries and CREATE_UCONTEXT name no context (ctx_handle 0, as the
 * device requires); commands on objects name the context that owns them.
 */

#include <linux/string.h>

#include "vmmbib.h"

int vmmbib_cmd_query_device(struct vmmbib_dev *dev,
			    struct vmmbib_dev_attr *attr)
{
	struct vmmbib_resp_query_device resp;
	int err;

	err = vmmbib_ctrlq_exec(dev, VMMBIB_CMD_QUERY_DEVICE, VMMBIB_HANDLE_NONE,
				NULL, 0, &resp, sizeof(resp));
	if (err)
		return err;

	attr->fw_ver = le64_to_cpu(resp.fw_ver);
	attr->node_guid = resp.node_guid;
	attr->sys_image_guid = resp.sys_image_guid;
	attr->max_mr_size = le64_to_cpu(resp.max_mr_size);
	attr->page_size_cap = le64_to_cpu(resp.page_size_cap);
	attr->vendor_id = le32_to_cpu(resp.vendor_id);
	attr->vendor_part_id = le32_to_cpu(resp.vendor_part_id);
	attr->hw_ver = le32_to_cpu(resp.hw_ver);
	attr->max_qp = le32_to_cpu(resp.max_qp);
	attr->max_qp_wr = le32_to_cpu(resp.max_qp_wr);
	attr->device_cap_flags = le32_to_cpu(resp.device_cap_flags);
	attr->max_send_sge = le32_to_cpu(resp.max_send_sge);
	attr->max_recv_sge = le32_to_cpu(resp.max_recv_sge);
	attr->max_sge_rd = le32_to_cpu(resp.max_sge_rd);
	attr->max_cq = le32_to_cpu(resp.max_cq);
	attr->max_cqe = le32_to_cpu(resp.max_cqe);
	attr->max_mr = le32_to_cpu(resp.max_mr);
	attr->max_pd = le32_to_cpu(resp.max_pd);
	attr->max_qp_rd_atom = le32_to_cpu(resp.max_qp_rd_atom);
	attr->max_qp_init_rd_atom = le32_to_cpu(resp.max_qp_init_rd_atom);
	attr->max_srq = le32_to_cpu(resp.max_srq);
	attr->max_srq_wr = le32_to_cpu(resp.max_srq_wr);
	attr->max_srq_sge = le32_to_cpu(resp.max_srq_sge);
	attr->max_ah = le32_to_cpu(resp.max_ah);
	attr->max_inline_data = le32_to_cpu(resp.max_inline_data);
	attr->max_mr_pages = le32_to_cpu(resp.max_mr_pages);
	attr->max_pinned_pages = le32_to_cpu(resp.max_pinned_pages);
	attr->max_ucontext = le32_to_cpu(resp.max_ucontext);
	attr->max_pkeys = le16_to_cpu(resp.max_pkeys);
	attr->atomic_cap = resp.atomic_cap;
	attr->local_ca_ack_delay = resp.local_ca_ack_delay;
	attr->phys_port_cnt = resp.phys_port_cnt;
	return 0;
}

/* Port numbers travel in a u8; ib_core has checked them against ours. */
static int vmmbib_cmd_check_port(struct vmmbib_dev *dev, u32 port)
{
	if (WARN_ON_ONCE(port < 1 || port > dev->num_ports))
		return -EINVAL;
	return 0;
}

int vmmbib_cmd_query_port(struct vmmbib_dev *dev, u32 port,
			  struct vmmbib_port_attr *attr)
{
	struct vmmbib_cmd_query_port cmd = { .port_num = port };
	struct vmmbib_resp_query_port resp;
	int err;

	err = vmmbib_cmd_check_port(dev, port);
	if (err)
		return err;

	err = vmmbib_ctrlq_exec(dev, VMMBIB_CMD_QUERY_PORT, VMMBIB_HANDLE_NONE,
				&cmd, sizeof(cmd), &resp, sizeof(resp));
	if (err)
		return err;

	attr->port_cap_flags = le32_to_cpu(resp.port_cap_flags);
	attr->max_msg_sz = le32_to_cpu(resp.max_msg_sz);
	attr->bad_pkey_cntr = le32_to_cpu(resp.bad_pkey_cntr);
	attr->qkey_viol_cntr = le32_to_cpu(resp.qkey_viol_cntr);
	attr->gid_tbl_len = le16_to_cpu(resp.gid_tbl_len);
	attr->pkey_tbl_len = le16_to_cpu(resp.pkey_tbl_len);
	attr->lid = le16_to_cpu(resp.lid);
	attr->sm_lid = le16_to_cpu(resp.sm_lid);
	attr->state = resp.state;
	attr->max_mtu = resp.max_mtu;
	attr->active_mtu = resp.active_mtu;
	attr->lmc = resp.lmc;
	attr->max_vl_num = resp.max_vl_num;
	attr->sm_sl = resp.sm_sl;
	attr->subnet_timeout = resp.subnet_timeout;
	attr->init_type_reply = resp.init_type_reply;
	attr->active_width = resp.active_width;
	attr->active_speed = resp.active_speed;
	attr->phys_state = resp.phys_state;
	attr->link_layer = resp.link_layer;
	return 0;
}

int vmmbib_cmd_query_gid(struct vmmbib_dev *dev, u32 port, u32 index,
			 union ib_gid *gid)
{
	struct vmmbib_cmd_query_gid cmd = {
		.port_num = port,
		.index = cpu_to_le32(index),
	};
	struct vmmbib_resp_query_gid resp;
	int err;

	BUILD_BUG_ON(sizeof(resp.gid) != sizeof(gid->raw));

	err = vmmbib_cmd_check_port(dev, port);
	if (err)
		return err;

	err = vmmbib_ctrlq_exec(dev, VMMBIB_CMD_QUERY_GID, VMMBIB_HANDLE_NONE,
				&cmd, sizeof(cmd), &resp, sizeof(resp));
	if (err)
		return err;

	memcpy(gid->raw, resp.gid, sizeof(gid->raw));
	return 0;
}

int vmmbib_cmd_query_pkey(struct vmmbib_dev *dev, u32 port, u32 index,
			  u16 *pkey)
{
	struct vmmbib_cmd_query_pkey cmd = {
		.port_num = port,
		.index = cpu_to_le32(index),
	};
	struct vmmbib_resp_query_pkey resp;
	int err;

	err = vmmbib_cmd_check_port(dev, port);
	if (err)
		return err;

	err = vmmbib_ctrlq_exec(dev, VMMBIB_CMD_QUERY_PKEY, VMMBIB_HANDLE_NONE,
				&cmd, sizeof(cmd), &resp, sizeof(resp));
	if (err)
		return err;

	*pkey = le16_to_cpu(resp.pkey);
	return 0;
}

int vmmbib_cmd_destroy_ucontext(struct vmmbib_dev *dev, u32 ctx_handle)
{
	return vmmbib_ctrlq_exec(dev, VMMBIB_CMD_DESTROY_UCONTEXT, ctx_handle,
				 NULL, 0, NULL, 0);
}

int vmmbib_cmd_create_ucontext(struct vmmbib_dev *dev, u32 *ctx_handle,
			       u32 *uar_slot)
{
	struct vmmbib_resp_create_ucontext resp;
	u32 handle, slot;
	int err;

	err = vmmbib_ctrlq_exec(dev, VMMBIB_CMD_CREATE_UCONTEXT,
				VMMBIB_HANDLE_NONE, NULL, 0,
				&resp, sizeof(resp));
	if (err)
		return err;

	handle = le32_to_cpu(resp.ctx_handle);
	slot = le32_to_cpu(resp.uar_slot);
	/* Caught here, a bad slot cannot reach an mmap of the UAR window. */
	if (handle == VMMBIB_HANDLE_NONE || slot >= dev->uar_slots) {
		dev_err_ratelimited(&dev->vdev->dev,
				    "CREATE_UCONTEXT returned context %#x with UAR slot %u of %u\n",
				    handle, slot, dev->uar_slots);
		if (handle != VMMBIB_HANDLE_NONE)
			vmmbib_cmd_destroy_ucontext(dev, handle);
		return -EPROTO;
	}

	*ctx_handle = handle;
	*uar_slot = slot;
	return 0;
}

/* A reply handle of 0 would name nothing: a device bug, caught here. */
static int vmmbib_cmd_check_handle(struct vmmbib_dev *dev, u16 opcode,
				   u32 handle)
{
	if (handle != VMMBIB_HANDLE_NONE)
		return 0;
	dev_err_ratelimited(&dev->vdev->dev,
			    "command %u returned handle 0\n", opcode);
	return -EPROTO;
}

int vmmbib_cmd_create_pd(struct vmmbib_dev *dev, u32 ctx, u32 *handle)
{
	struct vmmbib_resp_create_pd resp;
	int err;

	err = vmmbib_ctrlq_exec(dev, VMMBIB_CMD_CREATE_PD, ctx, NULL, 0,
				&resp, sizeof(resp));
	if (err)
		return err;
	*handle = le32_to_cpu(resp.pd_handle);
	return vmmbib_cmd_check_handle(dev, VMMBIB_CMD_CREATE_PD, *handle);
}

/* DESTROY_PD, DEREG_MR, DESTROY_CQ/QP/SRQ/AH: the same body. */
int vmmbib_cmd_destroy(struct vmmbib_dev *dev, u16 opcode, u32 ctx,
		       u32 handle)
{
	struct vmmbib_cmd_destroy cmd = { .handle = cpu_to_le32(handle) };

	return vmmbib_ctrlq_exec(dev, opcode, ctx, &cmd, sizeof(cmd), NULL, 0);
}

int vmmbib_cmd_create_dma_mr(struct vmmbib_dev *dev, u32 ctx, u32 pd,
			     u32 access, struct vmmbib_resp_mr *resp)
{
	struct vmmbib_cmd_create_dma_mr cmd = {
		.pd_handle = cpu_to_le32(pd),
		.access = cpu_to_le32(access),
	};
	int err;

	err = vmmbib_ctrlq_exec(dev, VMMBIB_CMD_CREATE_DMA_MR, ctx,
				&cmd, sizeof(cmd), resp, sizeof(*resp));
	if (err)
		return err;
	return vmmbib_cmd_check_handle(dev, VMMBIB_CMD_CREATE_DMA_MR,
				       le32_to_cpu(resp->mr_handle));
}

int vmmbib_cmd_reg_mr(struct vmmbib_dev *dev, u32 ctx, u32 pd, u32 access,
		      u64 iova, u64 length, u32 first_page_offset,
		      const struct vmmbib_page_list *pages,
		      struct vmmbib_resp_mr *resp)
{
	struct vmmbib_cmd_reg_mr cmd = {
		.pd_handle = cpu_to_le32(pd),
		.access = cpu_to_le32(access),
		.iova = cpu_to_le64(iova),
		.length = cpu_to_le64(length),
		.first_page_offset = cpu_to_le32(first_page_offset),
		.pages = *pages,
	};
	int err;

	err = vmmbib_ctrlq_exec(dev, VMMBIB_CMD_REG_MR, ctx,
				&cmd, sizeof(cmd), resp, sizeof(*resp));
	if (err)
		return err;
	return vmmbib_cmd_check_handle(dev, VMMBIB_CMD_REG_MR,
				       le32_to_cpu(resp->mr_handle));
}

int vmmbib_cmd_create_cq(struct vmmbib_dev *dev, u32 ctx, u32 cqe,
			 const struct vmmbib_page_list *pages, u32 *handle,
			 u32 *granted)
{
	struct vmmbib_cmd_create_cq cmd = {
		.cqe = cpu_to_le32(cqe),
		.pages = *pages,
	};
	struct vmmbib_resp_create_cq resp;
	int err;

	err = vmmbib_ctrlq_exec(dev, VMMBIB_CMD_CREATE_CQ, ctx,
				&cmd, sizeof(cmd), &resp, sizeof(resp));
	if (err)
		return err;
	*handle = le32_to_cpu(resp.cq_handle);
	*granted = le32_to_cpu(resp.cqe);
	return vmmbib_cmd_check_handle(dev, VMMBIB_CMD_CREATE_CQ, *handle);
}

int vmmbib_cmd_resize_cq(struct vmmbib_dev *dev, u32 ctx, u32 handle,
			 u32 cqe, const struct vmmbib_page_list *pages,
			 u32 *granted, u32 *moved)
{
	struct vmmbib_cmd_resize_cq cmd = {
		.cq_handle = cpu_to_le32(handle),
		.cqe = cpu_to_le32(cqe),
		.pages = *pages,
	};
	struct vmmbib_resp_resize_cq resp;
	int err;

	err = vmmbib_ctrlq_exec(dev, VMMBIB_CMD_RESIZE_CQ, ctx,
				&cmd, sizeof(cmd), &resp, sizeof(resp));
	if (err)
		return err;
	*granted = le32_to_cpu(resp.cqe);
	*moved = le32_to_cpu(resp.moved);
	return 0;
}

/* The QP commands carry the wire structs the verbs layer builds. */
int vmmbib_cmd_create_qp(struct vmmbib_dev *dev, u32 ctx,
			 const struct vmmbib_cmd_create_qp *cmd,
			 struct vmmbib_resp_create_qp *resp)
{
	int err;

	err = vmmbib_ctrlq_exec(dev, VMMBIB_CMD_CREATE_QP, ctx,
				cmd, sizeof(*cmd), resp, sizeof(*resp));
	if (err)
		return err;
	return vmmbib_cmd_check_handle(dev, VMMBIB_CMD_CREATE_QP,
				       le32_to_cpu(resp->qp_handle));
}

int vmmbib_cmd_modify_qp(struct vmmbib_dev *dev, u32 ctx,
			 const struct vmmbib_cmd_modify_qp *cmd)
{
	return vmmbib_ctrlq_exec(dev, VMMBIB_CMD_MODIFY_QP, ctx,
				 cmd, sizeof(*cmd), NULL, 0);
}

int vmmbib_cmd_query_qp(struct vmmbib_dev *dev, u32 ctx, u32 handle,
			struct vmmbib_resp_query_qp *resp)
{
	struct vmmbib_cmd_query_qp cmd = { .qp_handle = cpu_to_le32(handle) };

	return vmmbib_ctrlq_exec(dev, VMMBIB_CMD_QUERY_QP, ctx,
				 &cmd, sizeof(cmd), resp, sizeof(*resp));
}

int vmmbib_cmd_create_srq(struct vmmbib_dev *dev, u32 ctx,
			  const struct vmmbib_cmd_create_srq *cmd,
			  struct vmmbib_resp_create_srq *resp)
{
	int err;

	err = vmmbib_ctrlq_exec(dev, VMMBIB_CMD_CREATE_SRQ, ctx,
				cmd, sizeof(*cmd), resp, sizeof(*resp));
	if (err)
		return err;
	return vmmbib_cmd_check_handle(dev, VMMBIB_CMD_CREATE_SRQ,
				       le32_to_cpu(resp->srq_handle));
}

int vmmbib_cmd_modify_srq(struct vmmbib_dev *dev, u32 ctx, u32 handle,
			  u32 mask, u32 max_wr, u32 limit)
{
	struct vmmbib_cmd_modify_srq cmd = {
		.srq_handle = cpu_to_le32(handle),
		.attr_mask = cpu_to_le32(mask),
		.max_wr = cpu_to_le32(max_wr),
		.srq_limit = cpu_to_le32(limit),
	};

	return vmmbib_ctrlq_exec(dev, VMMBIB_CMD_MODIFY_SRQ, ctx,
				 &cmd, sizeof(cmd), NULL, 0);
}

int vmmbib_cmd_query_srq(struct vmmbib_dev *dev, u32 ctx, u32 handle,
			 struct vmmbib_resp_query_srq *resp)
{
	struct vmmbib_cmd_query_srq cmd = { .srq_handle = cpu_to_le32(handle) };

	return vmmbib_ctrlq_exec(dev, VMMBIB_CMD_QUERY_SRQ, ctx,
				 &cmd, sizeof(cmd), resp, sizeof(*resp));
}

/* ib_cm's AHs come and go under a spinlock: @can_sleep false. */
int vmmbib_cmd_create_ah(struct vmmbib_dev *dev, u32 ctx, u32 pd,
			 const struct vmmbib_ah_attr *attr, u32 *handle,
			 bool can_sleep)
{
	struct vmmbib_cmd_create_ah cmd = {
		.pd_handle = cpu_to_le32(pd),
		.attr = *attr,
	};
	struct vmmbib_resp_create_ah resp;
	int err;

	if (can_sleep)
		err = vmmbib_ctrlq_exec(dev, VMMBIB_CMD_CREATE_AH, ctx,
					&cmd, sizeof(cmd), &resp, sizeof(resp));
	else
		err = vmmbib_ctrlq_exec_atomic(dev, VMMBIB_CMD_CREATE_AH, ctx,
					       &cmd, sizeof(cmd),
					       &resp, sizeof(resp));
	if (err)
		return err;
	*handle = le32_to_cpu(resp.ah_handle);
	return vmmbib_cmd_check_handle(dev, VMMBIB_CMD_CREATE_AH, *handle);
}

int vmmbib_cmd_destroy_ah(struct vmmbib_dev *dev, u32 ctx, u32 handle,
			  bool can_sleep)
{
	struct vmmbib_cmd_destroy cmd = { .handle = cpu_to_le32(handle) };

	if (can_sleep)
		return vmmbib_ctrlq_exec(dev, VMMBIB_CMD_DESTROY_AH, ctx,
					 &cmd, sizeof(cmd), NULL, 0);
	return vmmbib_ctrlq_exec_atomic(dev, VMMBIB_CMD_DESTROY_AH, ctx,
					&cmd, sizeof(cmd), NULL, 0);
}
