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
#include <linux/xarray.h>
#include <rdma/ib_umem.h>
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

/* The kernel context's UAR slot: its doorbell page and its kick page. */
struct vmmbib_uar {
	phys_addr_t base;		/* the UAR window (BAR 2) */
	u64 len;
	void *db;			/* doorbell page, cacheable shared memory */
	void __iomem *kick;		/* kick page: trapped registers */
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
	struct vmmbib_uar uar;
	/* Objects by device handle, for events; IRQ-safe locks. */
	struct xarray cqs;
	struct xarray qps;
	struct xarray srqs;
	/* Kernel QPs by QPN, for poll_cq; changed under their CQs' locks. */
	struct xarray kqps;
	/* PortInfo:CapabilityMask bits set by modify_port (ib_cm: CM_SUP). */
	u32 port_cap_flags;
};

/* A page list being built; its directory pages live until freed. */
struct vmmbib_pgdir {
	struct device *dma_dev;
	unsigned int ndirs;
	void **dir_va;
	dma_addr_t *dir_dma;
	u32 npages;			/* pages to list */
	u32 filled;			/* pages listed so far */
	struct vmmbib_page_list list;	/* valid after vmmbib_pgdir_finish */
};

/* A ring the driver allocates for a kernel object: contiguous, zeroed. */
struct vmmbib_kbuf {
	void *va;
	dma_addr_t dma;
	size_t size;			/* whole pages */
};

struct vmmbib_user_mmap_entry {
	struct rdma_user_mmap_entry rdma_entry;
	u64 pfn;
};

struct vmmbib_pd {
	struct ib_pd ibpd;
	u32 handle;
	u32 ctx_handle;
};

struct vmmbib_mr {
	struct ib_mr ibmr;
	struct ib_umem *umem;
	u32 handle;
	u32 ctx_handle;
};

struct vmmbib_cq {
	struct ib_cq ibcq;
	u32 handle;
	u32 ctx_handle;
	u32 cqe;
	struct ib_umem *umem;		/* user ring */
	struct vmmbib_kbuf kbuf;	/* kernel ring */
	/* Kernel CQs: protects cons and the ring. */
	spinlock_t lock;
	u32 cons;			/* free-running consumer index */
};

/* A kernel work queue: SQ, RQ or SRQ ring. */
struct vmmbib_wq {
	void *buf;
	u32 entries;			/* power of two */
	u8 shift;			/* log2 of the stride */
	u32 max_sge;
	u32 head;			/* free-running producer index */
	u32 tail;			/* WQEs completed, free-running */
	spinlock_t lock;		/* serialises posters */
};

struct vmmbib_srq {
	struct ib_srq ibsrq;
	u32 handle;
	u32 ctx_handle;
	u32 srqn;
	struct ib_umem *umem;
	struct vmmbib_kbuf kbuf;
	struct vmmbib_wq rq;
	atomic_t done;			/* kernel SRQ: WQEs completed */
};

struct vmmbib_qp {
	struct ib_qp ibqp;
	u32 handle;
	u32 ctx_handle;
	struct vmmbib_qp_caps caps;	/* granted, wire format */
	u8 sq_sig_all;
	struct ib_umem *sq_umem;
	struct ib_umem *rq_umem;
	struct vmmbib_kbuf kbuf;	/* kernel QP: SQ then RQ */
	struct vmmbib_wq sq;
	struct vmmbib_wq rq;
	u32 max_inline;
};

struct vmmbib_ah {
	struct ib_ah ibah;
	u32 handle;
	u32 ctx_handle;
	struct vmmbib_ah_attr attr;	/* as created, for query_ah */
};

struct vmmbib_ucontext {
	struct ib_ucontext ibucontext;
	u32 ctx_handle;
	u32 uar_slot;
	struct rdma_user_mmap_entry *uar_entry;
};

static inline struct vmmbib_dev *to_vmmbib_dev(struct ib_device *ibdev)
{
	return container_of(ibdev, struct vmmbib_dev, ibdev);
}

static inline struct vmmbib_pd *to_vmmbib_pd(struct ib_pd *ibpd)
{
	return container_of(ibpd, struct vmmbib_pd, ibpd);
}

static inline struct vmmbib_mr *to_vmmbib_mr(struct ib_mr *ibmr)
{
	return container_of(ibmr, struct vmmbib_mr, ibmr);
}

static inline struct vmmbib_cq *to_vmmbib_cq(struct ib_cq *ibcq)
{
	return container_of(ibcq, struct vmmbib_cq, ibcq);
}

static inline struct vmmbib_qp *to_vmmbib_qp(struct ib_qp *ibqp)
{
	return container_of(ibqp, struct vmmbib_qp, ibqp);
}

static inline struct vmmbib_srq *to_vmmbib_srq(struct ib_srq *ibsrq)
{
	return container_of(ibsrq, struct vmmbib_srq, ibsrq);
}

static inline struct vmmbib_ah *to_vmmbib_ah(struct ib_ah *ibah)
{
	return container_of(ibah, struct vmmbib_ah, ibah);
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
int vmmbib_ctrlq_exec_atomic(struct vmmbib_dev *dev, u16 opcode,
			     u32 ctx_handle, const void *body, size_t body_len,
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

int vmmbib_cmd_create_pd(struct vmmbib_dev *dev, u32 ctx, u32 *handle);
int vmmbib_cmd_destroy(struct vmmbib_dev *dev, u16 opcode, u32 ctx,
		       u32 handle);
int vmmbib_cmd_create_dma_mr(struct vmmbib_dev *dev, u32 ctx, u32 pd,
			     u32 access, struct vmmbib_resp_mr *resp);
int vmmbib_cmd_reg_mr(struct vmmbib_dev *dev, u32 ctx, u32 pd, u32 access,
		      u64 iova, u64 length, u32 first_page_offset,
		      const struct vmmbib_page_list *pages,
		      struct vmmbib_resp_mr *resp);
int vmmbib_cmd_create_cq(struct vmmbib_dev *dev, u32 ctx, u32 cqe,
			 const struct vmmbib_page_list *pages, u32 *handle,
			 u32 *granted);
int vmmbib_cmd_resize_cq(struct vmmbib_dev *dev, u32 ctx, u32 handle,
			 u32 cqe, const struct vmmbib_page_list *pages,
			 u32 *granted, u32 *moved);
int vmmbib_cmd_create_qp(struct vmmbib_dev *dev, u32 ctx,
			 const struct vmmbib_cmd_create_qp *cmd,
			 struct vmmbib_resp_create_qp *resp);
int vmmbib_cmd_modify_qp(struct vmmbib_dev *dev, u32 ctx,
			 const struct vmmbib_cmd_modify_qp *cmd);
int vmmbib_cmd_query_qp(struct vmmbib_dev *dev, u32 ctx, u32 handle,
			struct vmmbib_resp_query_qp *resp);
int vmmbib_cmd_create_srq(struct vmmbib_dev *dev, u32 ctx,
			  const struct vmmbib_cmd_create_srq *cmd,
			  struct vmmbib_resp_create_srq *resp);
int vmmbib_cmd_modify_srq(struct vmmbib_dev *dev, u32 ctx, u32 handle,
			  u32 mask, u32 max_wr, u32 limit);
int vmmbib_cmd_query_srq(struct vmmbib_dev *dev, u32 ctx, u32 handle,
			 struct vmmbib_resp_query_srq *resp);
int vmmbib_cmd_create_ah(struct vmmbib_dev *dev, u32 ctx, u32 pd,
			 const struct vmmbib_ah_attr *attr, u32 *handle,
			 bool can_sleep);
int vmmbib_cmd_destroy_ah(struct vmmbib_dev *dev, u32 ctx, u32 handle,
			  bool can_sleep);

/* vmmbib_pages.c */
int vmmbib_pgdir_init(struct vmmbib_dev *dev, struct vmmbib_pgdir *pd,
		      u64 npages);
void vmmbib_pgdir_add(struct vmmbib_pgdir *pd, dma_addr_t page);
void vmmbib_pgdir_finish(struct vmmbib_pgdir *pd);
void vmmbib_pgdir_free(struct vmmbib_pgdir *pd);
int vmmbib_pgdir_umem(struct vmmbib_dev *dev, struct vmmbib_pgdir *pd,
		      struct ib_umem *umem);
int vmmbib_pgdir_kbuf(struct vmmbib_dev *dev, struct vmmbib_pgdir *pd,
		      const struct vmmbib_kbuf *kbuf);
int vmmbib_kbuf_alloc(struct vmmbib_dev *dev, struct vmmbib_kbuf *kbuf,
		      size_t size);
void vmmbib_kbuf_free(struct vmmbib_dev *dev, struct vmmbib_kbuf *kbuf);
struct device *vmmbib_dma_dev(struct vmmbib_dev *dev);

/* vmmbib_verbs.c */
extern const struct ib_device_ops vmmbib_dev_ops;

/* vmmbib_objs.c: PD, MR, CQ, QP, SRQ and AH verbs */
extern const struct ib_device_ops vmmbib_obj_ops;

/* vmmbib_kverbs.c: the data path of kernel-owned queues */
extern const struct ib_device_ops vmmbib_kverbs_ops;

#endif /* VMMBIB_H */
