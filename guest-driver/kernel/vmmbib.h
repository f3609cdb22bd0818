/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * vmmbypass-ib guest driver: driver objects and internal interfaces.
 *
 * The driver is layered by distance from the device:
 *   vmmbib_ctrlq.c   the controlq engine: post a request, wait for its reply
 *   vmmbib_eventq.c  the eventq: buffers for device events, their dispatch
 *   vmmbib_cmd.c     one function per device command, wire format <-> CPU
 *   vmmbib_verbs.c   the ib_device_ops that ib_core calls
 *   vmmbib_main.c    the virtio driver: probe, remove, ib_device registration
 * The wire format itself is include/vmmbypass_ib_abi.h, shared with the
 * device and the rdma-core provider.
 */
#ifndef VMMBIB_H
#define VMMBIB_H

#include <linux/list.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/virtio.h>
#include <linux/wait.h>
#include <rdma/ib_verbs.h>

#include "vmmbypass_ib_abi.h"

struct vmmbib_ctrlq {
	struct virtqueue *vq;
	/* Protects vq, inflight, num_inflight and failed. */
	spinlock_t lock;
	struct list_head inflight;	/* requests the device owns */
	unsigned int num_inflight;
	unsigned int max_inflight;	/* what fits in the ring */
	wait_queue_head_t space_wait;	/* for num_inflight < max_inflight */
	u32 max_cmd_size;		/* device config: largest request */
	bool failed;			/* sticky: nothing is posted any more */
};

struct vmmbib_eventq {
	struct virtqueue *vq;
	/* Protects vq and dispatch. */
	spinlock_t lock;
	struct vmmbib_event *bufs;	/* device-writable, one per ring entry */
	unsigned int num_bufs;
	bool dispatch;			/* the ib_device is registered */
};

/* QUERY_DEVICE in CPU byte order; GUIDs stay big-endian, as in ib_core. */
struct vmmbib_dev_attr {
	u64 fw_ver;
	__be64 node_guid;
	__be64 sys_image_guid;
	u64 max_mr_size;
	u64 page_size_cap;
	u32 vendor_id;
	u32 vendor_part_id;
	u32 hw_ver;
	u32 max_qp;
	u32 max_qp_wr;
	u32 device_cap_flags;		/* VMMBIB_DEV_CAP_* */
	u32 max_send_sge;
	u32 max_recv_sge;
	u32 max_sge_rd;
	u32 max_cq;
	u32 max_cqe;
	u32 max_mr;
	u32 max_pd;
	u32 max_qp_rd_atom;
	u32 max_qp_init_rd_atom;
	u32 max_srq;
	u32 max_srq_wr;
	u32 max_srq_sge;
	u32 max_ah;
	u32 max_inline_data;
	u32 max_mr_pages;
	u32 max_pinned_pages;
	u32 max_ucontext;
	u16 max_pkeys;
	u8 atomic_cap;			/* VMMBIB_ATOMIC_* */
	u8 local_ca_ack_delay;
	u8 phys_port_cnt;
};

/* QUERY_PORT in CPU byte order, still in the device's encodings. */
struct vmmbib_port_attr {
	u32 port_cap_flags;
	u32 max_msg_sz;
	u32 bad_pkey_cntr;
	u32 qkey_viol_cntr;
	u16 gid_tbl_len;
	u16 pkey_tbl_len;
	u16 lid;
	u16 sm_lid;
	u8 state;			/* VMMBIB_PORT_* */
	u8 max_mtu;			/* VMMBIB_MTU_* */
	u8 active_mtu;
	u8 lmc;
	u8 max_vl_num;
	u8 sm_sl;
	u8 subnet_timeout;
	u8 init_type_reply;
	u8 active_width;
	u8 active_speed;
	u8 phys_state;
	u8 link_layer;			/* VMMBIB_LINK_LAYER_* */
};

struct vmmbib_dev {
	struct ib_device ibdev;
	struct virtio_device *vdev;
	struct vmmbib_ctrlq ctrlq;
	struct vmmbib_eventq eventq;
	struct vmmbib_dev_attr attr;	/* read once at probe: never changes */
	u16 num_ports;			/* device config */
	u32 uar_slots;			/* device config */
	u32 kctx_handle;		/* the kernel's own context; 0 before */
	u32 kctx_uar_slot;
};

struct vmmbib_ucontext {
	struct ib_ucontext ibucontext;
	u32 ctx_handle;
	u32 uar_slot;
};

static inline struct vmmbib_dev *to_vmmbib_dev(struct ib_device *ibdev)
{
	return container_of(ibdev, struct vmmbib_dev, ibdev);
}

static inline struct vmmbib_ucontext *
to_vmmbib_ucontext(struct ib_ucontext *ibucontext)
{
	return container_of(ibucontext, struct vmmbib_ucontext, ibucontext);
}

/* vmmbib_ctrlq.c */
void vmmbib_ctrlq_init(struct vmmbib_dev *dev, struct virtqueue *vq,
		       u32 max_cmd_size);
void vmmbib_ctrlq_done(struct virtqueue *vq);
int vmmbib_ctrlq_exec(struct vmmbib_dev *dev, u16 opcode, u32 ctx_handle,
		      const void *body, size_t body_len,
		      void *reply, size_t reply_len);
void vmmbib_ctrlq_fail(struct vmmbib_dev *dev, const char *reason);
void vmmbib_ctrlq_cleanup(struct vmmbib_dev *dev);

/* vmmbib_eventq.c */
int vmmbib_eventq_init(struct vmmbib_dev *dev, struct virtqueue *vq);
int vmmbib_eventq_start(struct vmmbib_dev *dev);
void vmmbib_eventq_done(struct virtqueue *vq);
void vmmbib_eventq_set_dispatch(struct vmmbib_dev *dev, bool dispatch);
void vmmbib_eventq_cleanup(struct vmmbib_dev *dev);

/* vmmbib_cmd.c */
int vmmbib_cmd_query_device(struct vmmbib_dev *dev,
			    struct vmmbib_dev_attr *attr);
int vmmbib_cmd_query_port(struct vmmbib_dev *dev, u32 port,
			  struct vmmbib_port_attr *attr);
int vmmbib_cmd_query_gid(struct vmmbib_dev *dev, u32 port, u32 index,
			 union ib_gid *gid);
int vmmbib_cmd_query_pkey(struct vmmbib_dev *dev, u32 port, u32 index,
			  u16 *pkey);
int vmmbib_cmd_create_ucontext(struct vmmbib_dev *dev, u32 *ctx_handle,
			       u32 *uar_slot);
int vmmbib_cmd_destroy_ucontext(struct vmmbib_dev *dev, u32 ctx_handle);

/* vmmbib_verbs.c */
extern const struct ib_device_ops vmmbib_dev_ops;

#endif /* VMMBIB_H */
