/* SPDX-License-Identifier: ((GPL-2.0 WITH Linux-syscall-note) OR BSD-2-Clause) */
/*
 * vmmbypass-ib guest <-> device ABI, version 1.
 *
 * The one definition of everything the guest and the device exchange:
 * virtio identity, device configuration, controlq commands and replies,
 * eventq entries, the UAR (doorbell) page, and the WQE and CQE formats
 * of the rings that live in guest memory.  docs/spec.md explains it.
 *
 * Every multi-byte field is little-endian unless its type says __be.
 * Every structure is naturally aligned, a multiple of 8 bytes, and
 * checked by the static assertions at the end of this file.  Fields named
 * reserved must be zero when written and are ignored when read.
 *
 * Used unchanged by the host library, the QEMU device, the Linux guest
 * driver and the rdma-core provider.
 */
#ifndef VMMBYPASS_IB_ABI_H
#define VMMBYPASS_IB_ABI_H

#include <linux/types.h>

/* Virtio identity. */
#define VMMBIB_VIRTIO_ID		42	/* "RDMA device" in the virtio spec */
#define VMMBIB_PCI_VENDOR_ID		0x1af4
#define VMMBIB_PCI_DEVICE_ID		(0x1040 + VMMBIB_VIRTIO_ID)
#define VMMBIB_PCI_CLASS		0x0c06	/* serial bus: InfiniBand */

#define VMMBIB_MAGIC			0x42494d56	/* "VMIB" */
#define VMMBIB_ABI_VERSION		1

/* Device feature bits (virtio device-specific range, 0..23). */
#define VMMBIB_F_SRQ			0	/* shared receive queues */
#define VMMBIB_F_ATOMIC			1	/* 8-byte atomics */
#define VMMBIB_F_UD			2	/* unreliable datagram QPs */

/* Virtqueues. */
#define VMMBIB_VQ_CONTROL		0
#define VMMBIB_VQ_EVENT			1
#define VMMBIB_NUM_VQS			2

/* Virtio shared memory region id of the UAR window. */
#define VMMBIB_SHM_ID_UAR		0

/* Device configuration space. */
struct vmmbib_config {
	__le32 magic;		/* VMMBIB_MAGIC */
	__le16 abi_version;	/* VMMBIB_ABI_VERSION */
	__le16 num_ports;	/* 1 in version 1 */
	__le32 uar_slots;	/* UAR slots in the UAR window */
	__le32 uar_slot_size;	/* bytes per slot: VMMBIB_UAR_SLOT_SIZE */
	__le32 max_cmd_size;	/* largest request the controlq accepts */
	__le32 event_size;	/* sizeof(struct vmmbib_event) */
	__le64 reserved;
};

/*
 * UAR window: slot i occupies [i * uar_slot_size, (i + 1) * uar_slot_size).
 * Page 0 of a slot is the doorbell page, host memory shared with the engine
 * and mapped without traps.  Page 1 is the kick page: trapped registers.
 * Slot 0 belongs to the kernel driver's own context; each user context gets
 * its own slot when it is created.
 */
#define VMMBIB_PAGE_SHIFT		12
#define VMMBIB_PAGE_SIZE		(1u << VMMBIB_PAGE_SHIFT)
#define VMMBIB_UAR_SLOT_SIZE		(2 * VMMBIB_PAGE_SIZE)
#define VMMBIB_UAR_DB_PAGE_OFFSET	0
#define VMMBIB_UAR_KICK_PAGE_OFFSET	VMMBIB_PAGE_SIZE

/* Doorbell page layout (offsets within page 0 of a slot). */
#define VMMBIB_DB_ENGINE_STATE		0x000	/* __le32, device writes */
#define VMMBIB_DB_MODE			0x004	/* __le32, device writes */
#define VMMBIB_DB_RING_SIZE		0x008	/* __le32, device writes */
#define VMMBIB_DB_PRODUCER		0x040	/* __le32, driver writes */
#define VMMBIB_DB_CONSUMER		0x080	/* __le32, device writes */
#define VMMBIB_DB_RING			0x800	/* __le64 entries[256] */
#define VMMBIB_DB_RING_ENTRIES		256

/* Values of the engine state word. */
#define VMMBIB_ENGINE_AWAKE		0
#define VMMBIB_ENGINE_ASLEEP		1

/* Values of the mode word. */
#define VMMBIB_DB_MODE_RING		0	/* exitless ring, kick on sleep */
#define VMMBIB_DB_MODE_MMIO		1	/* every doorbell is trapped */

/* Kick page registers (offsets within page 1 of a slot). */
#define VMMBIB_KICK			0x000	/* 32-bit write: wake the engine */
#define VMMBIB_DOORBELL			0x008	/* 64-bit write: one doorbell */

/*
 * A doorbell: 64 bits, the same value whether it goes into the ring or to
 * the DOORBELL register.
 *   bit 63      VALID (always set by the driver)
 *   bits 56..59 kind (VMMBIB_DB_KIND_*)
 *   bits 32..55 queue: the handle index (low 24 bits of a QP, SRQ or CQ
 *               handle) of an object of the slot's context
 *   bits 0..31  value: the new free-running producer index of the SQ, RQ
 *               or SRQ; for CQ_ARM, VMMBIB_DB_ARM_* flags
 */
#define VMMBIB_DB_VALID			(1ull << 63)
#define VMMBIB_DB_KIND_SHIFT		56
#define VMMBIB_DB_KIND_MASK		0xfull
#define VMMBIB_DB_QUEUE_SHIFT		32
#define VMMBIB_DB_QUEUE_MASK		0xffffffull
#define VMMBIB_DB_VALUE_MASK		0xffffffffull

#define VMMBIB_DB_KIND_SQ		1
#define VMMBIB_DB_KIND_RQ		2
#define VMMBIB_DB_KIND_SRQ		3
#define VMMBIB_DB_KIND_CQ_ARM		4

#define VMMBIB_DB_ARM_NEXT		0
#define VMMBIB_DB_ARM_SOLICITED		1

#define VMMBIB_DB(kind, queue, value)					\
	(VMMBIB_DB_VALID |						\
	 ((__u64)((kind) & VMMBIB_DB_KIND_MASK) << VMMBIB_DB_KIND_SHIFT) | \
	 ((__u64)((queue) & VMMBIB_DB_QUEUE_MASK) << VMMBIB_DB_QUEUE_SHIFT) | \
	 ((__u64)(value) & VMMBIB_DB_VALUE_MASK))

/* Handles: low 24 bits index a table, high 8 bits change on reuse. */
#define VMMBIB_HANDLE_INDEX_MASK	0xffffffu
#define VMMBIB_HANDLE_INDEX(h)		((h) & VMMBIB_HANDLE_INDEX_MASK)
#define VMMBIB_HANDLE_NONE		0	/* never a valid handle */

/*
 * Guest page lists: rings and memory regions are described by the guest
 * physical (DMA) addresses of 4 KiB pages.
 *   levels 0: addr is the only page (npages == 1)
 *   levels 1: addr is a page holding npages __le64 page addresses (<= 512)
 *   levels 2: addr is a page of up to 512 addresses of level-1 pages
 *   levels 3: one more level of the same
 * The device reads the directory once, when the command executes.
 */
#define VMMBIB_PAGE_LIST_MAX_LEVELS	3
#define VMMBIB_PAGE_LIST_FANOUT		(VMMBIB_PAGE_SIZE / 8)

struct vmmbib_page_list {
	__le64 addr;
	__le32 npages;
	__u8 levels;
	__u8 page_shift;	/* VMMBIB_PAGE_SHIFT in version 1 */
	__le16 reserved;
};

/* Controlq: a request is one device-readable buffer, its reply one writable. */
enum vmmbib_cmd_opcode {
	VMMBIB_CMD_QUERY_DEVICE = 1,
	VMMBIB_CMD_QUERY_PORT,
	VMMBIB_CMD_QUERY_GID,
	VMMBIB_CMD_QUERY_PKEY,
	VMMBIB_CMD_CREATE_UCONTEXT,
	VMMBIB_CMD_DESTROY_UCONTEXT,
	VMMBIB_CMD_CREATE_PD,
	VMMBIB_CMD_DESTROY_PD,
	VMMBIB_CMD_CREATE_DMA_MR,
	VMMBIB_CMD_REG_MR,
	VMMBIB_CMD_DEREG_MR,
	VMMBIB_CMD_CREATE_CQ,
	VMMBIB_CMD_RESIZE_CQ,
	VMMBIB_CMD_DESTROY_CQ,
	VMMBIB_CMD_CREATE_QP,
	VMMBIB_CMD_MODIFY_QP,
	VMMBIB_CMD_QUERY_QP,
	VMMBIB_CMD_DESTROY_QP,
	VMMBIB_CMD_CREATE_SRQ,
	VMMBIB_CMD_MODIFY_SRQ,
	VMMBIB_CMD_QUERY_SRQ,
	VMMBIB_CMD_DESTROY_SRQ,
	VMMBIB_CMD_CREATE_AH,
	VMMBIB_CMD_DESTROY_AH,
	VMMBIB_CMD_MAX = VMMBIB_CMD_DESTROY_AH,
};

enum vmmbib_status {
	VMMBIB_STATUS_OK = 0,
	VMMBIB_STATUS_BAD_OPCODE,	/* unknown command */
	VMMBIB_STATUS_BAD_LENGTH,	/* request or reply buffer size */
	VMMBIB_STATUS_INVALID,		/* a field's value or reserved bits */
	VMMBIB_STATUS_BAD_HANDLE,	/* no such object */
	VMMBIB_STATUS_NOT_OWNER,	/* object of another context or PD */
	VMMBIB_STATUS_BUSY,		/* object still in use */
	VMMBIB_STATUS_NO_RESOURCES,	/* quota or table full */
	VMMBIB_STATUS_BAD_ADDRESS,	/* page outside guest memory */
	VMMBIB_STATUS_BAD_STATE,	/* QP state transition not allowed */
	VMMBIB_STATUS_NOT_SUPPORTED,	/* valid, but not offered */
	VMMBIB_STATUS_DEVICE_ERROR,	/* the backend failed */
	VMMBIB_STATUS_MAX = VMMBIB_STATUS_DEVICE_ERROR,
};

struct vmmbib_cmd_hdr {
	__le16 opcode;		/* enum vmmbib_cmd_opcode */
	__le16 flags;		/* none defined: 0 */
	__le32 ctx_handle;	/* issuing context (from CREATE_UCONTEXT) */
};

struct vmmbib_resp_hdr {
	__le16 status;		/* enum vmmbib_status */
	__le16 reserved;
	__le32 length;		/* bytes of reply body that follow */
};

/* QUERY_DEVICE: no body.  Queries and CREATE_UCONTEXT take ctx_handle 0. */
struct vmmbib_resp_query_device {
	__le64 fw_ver;
	__be64 node_guid;
	__be64 sys_image_guid;
	__le64 max_mr_size;
	__le64 page_size_cap;
	__le32 vendor_id;
	__le32 vendor_part_id;
	__le32 hw_ver;
	__le32 max_qp;
	__le32 max_qp_wr;
	__le32 device_cap_flags;	/* VMMBIB_DEV_CAP_* */
	__le32 max_send_sge;
	__le32 max_recv_sge;
	__le32 max_sge_rd;
	__le32 max_cq;
	__le32 max_cqe;
	__le32 max_mr;
	__le32 max_pd;
	__le32 max_qp_rd_atom;
	__le32 max_qp_init_rd_atom;
	__le32 max_srq;
	__le32 max_srq_wr;
	__le32 max_srq_sge;
	__le32 max_ah;
	__le32 max_inline_data;
	__le32 max_mr_pages;		/* pages in one page list */
	__le32 max_pinned_pages;	/* quota over all MRs and rings */
	__le32 max_ucontext;
	__le16 max_pkeys;
	__u8 atomic_cap;		/* VMMBIB_ATOMIC_* */
	__u8 local_ca_ack_delay;
	__u8 phys_port_cnt;
	__u8 reserved[7];
};

#define VMMBIB_DEV_CAP_RC_RNR_NAK_GEN	(1u << 0)
#define VMMBIB_DEV_CAP_SRQ_RESIZE	(1u << 1)
#define VMMBIB_DEV_CAP_PORT_ACTIVE_EVENT (1u << 2)

#define VMMBIB_ATOMIC_NONE		0
#define VMMBIB_ATOMIC_HCA		1
#define VMMBIB_ATOMIC_GLOB		2

/* QUERY_PORT */
struct vmmbib_cmd_query_port {
	__u8 port_num;		/* 1 */
	__u8 reserved[7];
};

struct vmmbib_resp_query_port {
	__le32 port_cap_flags;	/* IB PortInfo:CapabilityMask */
	__le32 max_msg_sz;
	__le32 bad_pkey_cntr;
	__le32 qkey_viol_cntr;
	__le16 gid_tbl_len;
	__le16 pkey_tbl_len;
	__le16 lid;
	__le16 sm_lid;
	__u8 state;		/* VMMBIB_PORT_* */
	__u8 max_mtu;		/* VMMBIB_MTU_* */
	__u8 active_mtu;
	__u8 lmc;
	__u8 max_vl_num;
	__u8 sm_sl;
	__u8 subnet_timeout;
	__u8 init_type_reply;
	__u8 active_width;	/* IB encoding: 1 = 1x, 2 = 4x, ... */
	__u8 active_speed;	/* IB encoding: 1 = SDR ... */
	__u8 phys_state;	/* 5 = LinkUp */
	__u8 link_layer;	/* VMMBIB_LINK_LAYER_* */
	__u8 reserved[4];
};

#define VMMBIB_PORT_DOWN		1
#define VMMBIB_PORT_INIT		2
#define VMMBIB_PORT_ARMED		3
#define VMMBIB_PORT_ACTIVE		4

#define VMMBIB_MTU_256			1
#define VMMBIB_MTU_512			2
#define VMMBIB_MTU_1024			3
#define VMMBIB_MTU_2048			4
#define VMMBIB_MTU_4096			5

#define VMMBIB_LINK_LAYER_INFINIBAND	1

/* QUERY_GID */
struct vmmbib_cmd_query_gid {
	__u8 port_num;
	__u8 reserved[3];
	__le32 index;
};

struct vmmbib_resp_query_gid {
	__u8 gid[16];		/* subnet prefix, then port GUID */
};

/* QUERY_PKEY */
struct vmmbib_cmd_query_pkey {
	__u8 port_num;
	__u8 reserved[3];
	__le32 index;
};

struct vmmbib_resp_query_pkey {
	__le16 pkey;
	__u8 reserved[6];
};

/*
 * CREATE_UCONTEXT: no body; ctx_handle must be 0.  The reply names the new
 * context and its UAR slot.  The kernel driver creates the first context
 * at probe time and uses its slot for kernel-owned queues.
 */
struct vmmbib_resp_create_ucontext {
	__le32 ctx_handle;
	__le32 uar_slot;
};

/* DESTROY_UCONTEXT: no body; destroys ctx_handle and all its objects. */

/* CREATE_PD: no body. */
struct vmmbib_resp_create_pd {
	__le32 pd_handle;
	__le32 reserved;
};

/* DESTROY_PD, DEREG_MR, DESTROY_CQ, DESTROY_QP, DESTROY_SRQ, DESTROY_AH */
struct vmmbib_cmd_destroy {
	__le32 handle;
	__le32 reserved;
};

/* Access flags (same values as IB verbs). */
#define VMMBIB_ACCESS_LOCAL_WRITE	(1u << 0)
#define VMMBIB_ACCESS_REMOTE_WRITE	(1u << 1)
#define VMMBIB_ACCESS_REMOTE_READ	(1u << 2)
#define VMMBIB_ACCESS_REMOTE_ATOMIC	(1u << 3)
#define VMMBIB_ACCESS_ALL		0xfu

/* CREATE_DMA_MR: an MR whose addresses are guest physical addresses. */
struct vmmbib_cmd_create_dma_mr {
	__le32 pd_handle;
	__le32 access;
};

/* REG_MR: the MR covers [iova, iova + length) of the pages listed. */
struct vmmbib_cmd_reg_mr {
	__le32 pd_handle;
	__le32 access;
	__le64 iova;
	__le64 length;
	__le32 first_page_offset;	/* byte offset of iova in page 0 */
	__le32 reserved;
	struct vmmbib_page_list pages;
};

struct vmmbib_resp_mr {
	__le32 mr_handle;
	__le32 lkey;
	__le32 rkey;
	__le32 reserved;
};

/*
 * CREATE_CQ: the ring is a 64-byte header (struct vmmbib_cq_header) and
 * then cqe entries of 64 bytes; cqe is a power of two.
 */
struct vmmbib_cmd_create_cq {
	__le32 cqe;
	__le32 comp_vector;
	struct vmmbib_page_list pages;
};

struct vmmbib_resp_create_cq {
	__le32 cq_handle;
	__le32 cqe;
};

/*
 * RESIZE_CQ: the device moves the CQEs not yet consumed to the start of the
 * new ring, in order, as lap 0 entries; the driver continues consuming at
 * index 0 of the new ring.
 */
struct vmmbib_cmd_resize_cq {
	__le32 cq_handle;
	__le32 cqe;
	struct vmmbib_page_list pages;
};

struct vmmbib_resp_resize_cq {
	__le32 cqe;
	__le32 moved;		/* CQEs moved to the new ring */
};

/*
 * QP types (same values as IB verbs).  GSI is the general services QP:
 * a UD QP with the fixed QP number 1 and Q_Key 0x80010000, one per device
 * (docs/spec.md section 3.6).  There is no SMI QP (QP0): the device is its
 * own subnet manager.
 */
#define VMMBIB_QPT_GSI			1
#define VMMBIB_QPT_RC			2
#define VMMBIB_QPT_UD			4

#define VMMBIB_GSI_QPN			1
#define VMMBIB_GSI_QKEY			0x80010000u

/* QP states (same values as IB verbs). */
enum vmmbib_qp_state {
	VMMBIB_QPS_RESET,
	VMMBIB_QPS_INIT,
	VMMBIB_QPS_RTR,
	VMMBIB_QPS_RTS,
	VMMBIB_QPS_SQD,
	VMMBIB_QPS_SQE,
	VMMBIB_QPS_ERR,
};

struct vmmbib_qp_caps {
	__le32 max_send_wr;	/* SQ entries, power of two */
	__le32 max_recv_wr;	/* RQ entries, power of two; 0 with an SRQ */
	__le32 max_send_sge;
	__le32 max_recv_sge;
	__le32 max_inline_data;
	__u8 sq_wqe_shift;	/* log2 of the SQ WQE stride */
	__u8 rq_wqe_shift;	/* log2 of the RQ WQE stride */
	__u8 reserved[2];
};

struct vmmbib_cmd_create_qp {
	__le32 pd_handle;
	__le32 send_cq_handle;
	__le32 recv_cq_handle;
	__le32 srq_handle;	/* VMMBIB_HANDLE_NONE for none */
	__u8 qp_type;		/* VMMBIB_QPT_* */
	__u8 sq_sig_all;
	__u8 reserved[6];
	struct vmmbib_qp_caps caps;
	struct vmmbib_page_list sq_pages;
	struct vmmbib_page_list rq_pages;	/* npages 0 with an SRQ */
};

struct vmmbib_resp_create_qp {
	__le32 qp_handle;
	__le32 qpn;
	struct vmmbib_qp_caps caps;	/* what the device granted */
};

/* Address vector, as in an IB address handle. */
struct vmmbib_ah_attr {
	__u8 dgid[16];
	__le32 flow_label;
	__le16 dlid;
	__u8 sgid_index;
	__u8 hop_limit;
	__u8 traffic_class;
	__u8 sl;
	__u8 src_path_bits;
	__u8 static_rate;
	__u8 port_num;
	__u8 ah_flags;		/* VMMBIB_AH_GRH */
	__u8 reserved[10];
};

#define VMMBIB_AH_GRH			(1u << 0)

/* MODIFY_QP attribute mask bits (same values as IB verbs). */
#define VMMBIB_QP_STATE			(1u << 0)
#define VMMBIB_QP_CUR_STATE		(1u << 1)
#define VMMBIB_QP_EN_SQD_ASYNC_NOTIFY	(1u << 2)
#define VMMBIB_QP_ACCESS_FLAGS		(1u << 3)
#define VMMBIB_QP_PKEY_INDEX		(1u << 4)
#define VMMBIB_QP_PORT			(1u << 5)
#define VMMBIB_QP_QKEY			(1u << 6)
#define VMMBIB_QP_AV			(1u << 7)
#define VMMBIB_QP_PATH_MTU		(1u << 8)
#define VMMBIB_QP_TIMEOUT		(1u << 9)
#define VMMBIB_QP_RETRY_CNT		(1u << 10)
#define VMMBIB_QP_RNR_RETRY		(1u << 11)
#define VMMBIB_QP_RQ_PSN		(1u << 12)
#define VMMBIB_QP_MAX_QP_RD_ATOMIC	(1u << 13)
#define VMMBIB_QP_ALT_PATH		(1u << 14)
#define VMMBIB_QP_MIN_RNR_TIMER		(1u << 15)
#define VMMBIB_QP_SQ_PSN		(1u << 16)
#define VMMBIB_QP_MAX_DEST_RD_ATOMIC	(1u << 17)
#define VMMBIB_QP_PATH_MIG_STATE	(1u << 18)
#define VMMBIB_QP_CAP			(1u << 19)
#define VMMBIB_QP_DEST_QPN		(1u << 20)
#define VMMBIB_QP_ATTR_MASK_SUPPORTED	0x1fffffu

struct vmmbib_qp_attr {
	__le32 qkey;
	__le32 rq_psn;
	__le32 sq_psn;
	__le32 dest_qp_num;
	__le32 qp_access_flags;
	__le16 pkey_index;
	__u8 qp_state;
	__u8 cur_qp_state;
	__u8 path_mtu;
	__u8 path_mig_state;
	__u8 en_sqd_async_notify;
	__u8 sq_draining;	/* QUERY_QP only */
	__u8 max_rd_atomic;
	__u8 max_dest_rd_atomic;
	__u8 min_rnr_timer;
	__u8 port_num;
	__u8 timeout;
	__u8 retry_cnt;
	__u8 rnr_retry;
	__u8 reserved[5];
	struct vmmbib_ah_attr ah_attr;
};

struct vmmbib_cmd_modify_qp {
	__le32 qp_handle;
	__le32 attr_mask;	/* VMMBIB_QP_* */
	struct vmmbib_qp_attr attr;
};

struct vmmbib_cmd_query_qp {
	__le32 qp_handle;
	__le32 reserved;
};

struct vmmbib_resp_query_qp {
	struct vmmbib_qp_attr attr;
	struct vmmbib_qp_caps caps;
};

/* CREATE_SRQ: WQEs use the receive WQE format. */
struct vmmbib_cmd_create_srq {
	__le32 pd_handle;
	__le32 max_wr;		/* entries, power of two */
	__le32 max_sge;
	__le32 srq_limit;
	__u8 wqe_shift;
	__u8 reserved[7];
	struct vmmbib_page_list pages;
};

struct vmmbib_resp_create_srq {
	__le32 srq_handle;
	__le32 srqn;
	__le32 max_wr;
	__le32 max_sge;
};

#define VMMBIB_SRQ_MAX_WR		(1u << 0)
#define VMMBIB_SRQ_LIMIT		(1u << 1)

struct vmmbib_cmd_modify_srq {
	__le32 srq_handle;
	__le32 attr_mask;	/* VMMBIB_SRQ_LIMIT; MAX_WR is not supported */
	__le32 max_wr;
	__le32 srq_limit;
};

struct vmmbib_cmd_query_srq {
	__le32 srq_handle;
	__le32 reserved;
};

struct vmmbib_resp_query_srq {
	__le32 max_wr;
	__le32 max_sge;
	__le32 srq_limit;
	__le32 reserved;
};

struct vmmbib_cmd_create_ah {
	__le32 pd_handle;
	__le32 reserved;
	struct vmmbib_ah_attr attr;
};

struct vmmbib_resp_create_ah {
	__le32 ah_handle;
	__le32 reserved;
};

/* Eventq: the driver posts writable buffers; the device fills one each. */
enum vmmbib_event_type {
	VMMBIB_EVENT_COMP = 1,		/* handle: CQ */
	VMMBIB_EVENT_CQ_ERR,		/* handle: CQ (overflow, bad ring) */
	VMMBIB_EVENT_QP_FATAL,		/* handle: QP */
	VMMBIB_EVENT_QP_REQ_ERR,
	VMMBIB_EVENT_QP_ACCESS_ERR,
	VMMBIB_EVENT_COMM_EST,
	VMMBIB_EVENT_SQ_DRAINED,
	VMMBIB_EVENT_QP_LAST_WQE_REACHED,
	VMMBIB_EVENT_SRQ_LIMIT_REACHED,	/* handle: SRQ */
	VMMBIB_EVENT_SRQ_ERR,
	VMMBIB_EVENT_PORT_ACTIVE,	/* handle: port number */
	VMMBIB_EVENT_PORT_ERR,
	VMMBIB_EVENT_DEVICE_FATAL,	/* handle: 0 */
	VMMBIB_EVENT_MAX = VMMBIB_EVENT_DEVICE_FATAL,
};

struct vmmbib_event {
	__le16 type;		/* enum vmmbib_event_type */
	__le16 reserved;
	__le32 handle;
	__le32 ctx_handle;	/* context owning the object, 0 for ports */
	__le32 reserved2;
};

/* Send WQE opcodes (same values as IB verbs). */
enum vmmbib_wr_opcode {
	VMMBIB_WR_RDMA_WRITE,
	VMMBIB_WR_RDMA_WRITE_WITH_IMM,
	VMMBIB_WR_SEND,
	VMMBIB_WR_SEND_WITH_IMM,
	VMMBIB_WR_RDMA_READ,
	VMMBIB_WR_ATOMIC_CMP_AND_SWP,
	VMMBIB_WR_ATOMIC_FETCH_AND_ADD,
};

#define VMMBIB_WQE_SIGNALED		(1u << 0)
#define VMMBIB_WQE_SOLICITED		(1u << 1)
#define VMMBIB_WQE_INLINE		(1u << 2)
#define VMMBIB_WQE_FENCE		(1u << 3)

struct vmmbib_sge {
	__le64 addr;
	__le32 length;
	__le32 lkey;
};

/*
 * Send WQE: a 64-byte header, then num_sge SGEs or, with VMMBIB_WQE_INLINE,
 * inline_len bytes of data.  The stride is 1 << sq_wqe_shift.
 */
struct vmmbib_send_wqe {
	__le64 wr_id;
	__u8 opcode;		/* enum vmmbib_wr_opcode */
	__u8 flags;		/* VMMBIB_WQE_* */
	__u8 num_sge;
	__u8 reserved;
	__be32 imm_data;
	__le32 inline_len;
	__le32 reserved2;
	union {
		struct {
			__le64 remote_addr;
			__le32 rkey;
			__le32 reserved;
		} rdma;
		struct {
			__le64 remote_addr;
			__le32 rkey;
			__le32 reserved;
			__le64 compare_add;
			__le64 swap;
		} atomic;
		struct {
			__le32 ah_handle;
			__le32 remote_qpn;
			__le32 remote_qkey;
			__le32 reserved;
		} ud;
		__u8 raw[40];
	};
};

/* Receive WQE: a 16-byte header, then num_sge SGEs. */
struct vmmbib_recv_wqe {
	__le64 wr_id;
	__le32 num_sge;
	__le32 reserved;
};

/* Completion opcodes and statuses (same values as IB verbs). */
enum vmmbib_wc_opcode {
	VMMBIB_WC_SEND,
	VMMBIB_WC_RDMA_WRITE,
	VMMBIB_WC_RDMA_READ,
	VMMBIB_WC_COMP_SWAP,
	VMMBIB_WC_FETCH_ADD,
	VMMBIB_WC_RECV = 128,
	VMMBIB_WC_RECV_RDMA_WITH_IMM,
};

enum vmmbib_wc_status {
	VMMBIB_WC_SUCCESS,
	VMMBIB_WC_LOC_LEN_ERR,
	VMMBIB_WC_LOC_QP_OP_ERR,
	VMMBIB_WC_LOC_EEC_OP_ERR,
	VMMBIB_WC_LOC_PROT_ERR,
	VMMBIB_WC_WR_FLUSH_ERR,
	VMMBIB_WC_MW_BIND_ERR,
	VMMBIB_WC_BAD_RESP_ERR,
	VMMBIB_WC_LOC_ACCESS_ERR,
	VMMBIB_WC_REM_INV_REQ_ERR,
	VMMBIB_WC_REM_ACCESS_ERR,
	VMMBIB_WC_REM_OP_ERR,
	VMMBIB_WC_RETRY_EXC_ERR,
	VMMBIB_WC_RNR_RETRY_EXC_ERR,
	VMMBIB_WC_LOC_RDD_VIOL_ERR,
	VMMBIB_WC_REM_INV_RD_REQ_ERR,
	VMMBIB_WC_REM_ABORT_ERR,
	VMMBIB_WC_INV_EECN_ERR,
	VMMBIB_WC_INV_EEC_STATE_ERR,
	VMMBIB_WC_FATAL_ERR,
	VMMBIB_WC_RESP_TIMEOUT_ERR,
	VMMBIB_WC_GENERAL_ERR,
};

#define VMMBIB_WC_F_GRH			(1u << 0)
#define VMMBIB_WC_F_WITH_IMM		(1u << 1)

/* The device sets owner to 1 on even laps of the ring and to 0 on odd. */
#define VMMBIB_CQE_OWNER		(1u << 7)

struct vmmbib_cqe {
	__le64 wr_id;
	__le32 qpn;
	__le32 byte_len;
	__be32 imm_data;
	__le32 src_qp;
	__le32 wqe_index;	/* free-running index of the completed WQE */
	__le16 slid;
	__le16 pkey_index;
	__u8 opcode;		/* enum vmmbib_wc_opcode */
	__u8 status;		/* enum vmmbib_wc_status */
	__u8 wc_flags;		/* VMMBIB_WC_F_* */
	__u8 sl;
	__u8 dlid_path_bits;
	__u8 vendor_err;
	__u8 reserved[24];
	__u8 reserved2;
	__u8 owner;		/* written last: VMMBIB_CQE_OWNER or 0 */
};

/* First 64 bytes of a CQ ring; the CQEs follow it. */
struct vmmbib_cq_header {
	__le32 consumer_index;	/* free-running, written by the driver */
	__le32 reserved[15];
};

#define VMMBIB_GRH_SIZE			40	/* UD receive: GRH area first */


/*
 * Driver-private uverbs data between the guest kernel driver and the
 * rdma-core provider (udata of the uverbs commands), uverbs ABI version 1.
 *
 * User rings (CQ, SQ, RQ, SRQ) are allocated by the provider, page aligned,
 * zeroed, a whole number of pages; the kernel driver pins them (ib_umem),
 * builds their page lists and passes them to the device.  The doorbell
 * "queue" of a QP, SRQ or CQ is the handle index of the object
 * (VMMBIB_HANDLE_INDEX of the handle returned here).
 */
#define VMMBIB_UVERBS_ABI_VERSION	1

struct vmmbib_ualloc_ucontext_resp {
	__u32 comp_mask;
	__u32 uar_slot;		/* slot in the UAR window */
	__aligned_u64 uar_mmap_key;	/* mmap offset of the slot's two pages */
	__u32 uar_size;		/* VMMBIB_UAR_SLOT_SIZE */
	__u32 db_ring_entries;
};

struct vmmbib_ucreate_cq {
	__aligned_u64 ring_addr;	/* user address of the ring */
	__u32 ring_size;	/* bytes: 64 + 64 * cqe, rounded up to pages */
	__u32 comp_mask;
};

struct vmmbib_ucreate_cq_resp {
	__u32 comp_mask;
	__u32 cq_handle;
	__u32 cqe;		/* entries of the ring */
	__u32 reserved;
};

/* ibv_resize_cq: the new ring; unconsumed CQEs move to its start. */
struct vmmbib_uresize_cq {
	__aligned_u64 ring_addr;
	__u32 ring_size;
	__u32 comp_mask;
};

struct vmmbib_uresize_cq_resp {
	__u32 comp_mask;
	__u32 cqe;
	__u32 moved;
	__u32 reserved;
};

struct vmmbib_ucreate_qp {
	__aligned_u64 sq_addr;
	__aligned_u64 rq_addr;	/* 0 with an SRQ */
	__u32 sq_size;		/* bytes: max_send_wr << sq_wqe_shift */
	__u32 rq_size;
	__u8 sq_wqe_shift;
	__u8 rq_wqe_shift;
	__u8 reserved[2];
	__u32 comp_mask;
};

struct vmmbib_ucreate_qp_resp {
	__u32 comp_mask;
	__u32 qp_handle;
	__u32 qpn;
	__u32 max_send_wr;	/* ring entries granted */
	__u32 max_recv_wr;
	__u32 max_send_sge;
	__u32 max_recv_sge;
	__u32 max_inline_data;
};

struct vmmbib_ucreate_srq {
	__aligned_u64 ring_addr;
	__u32 ring_size;	/* bytes: max_wr << wqe_shift */
	__u8 wqe_shift;
	__u8 reserved[3];
};

struct vmmbib_ucreate_srq_resp {
	__u32 comp_mask;
	__u32 srq_handle;
	__u32 max_wr;
	__u32 max_sge;
};

struct vmmbib_ucreate_ah_resp {
	__u32 comp_mask;
	__u32 ah_handle;	/* goes into UD send WQEs */
};

/*
 * Layout checks.  C11 _Static_assert works in every consumer: the kernel,
 * QEMU, rdma-core and host-lib all build as C11 or later.
 */
#define VMMBIB_ABI_ASSERT_SIZE(type, size) \
	_Static_assert(sizeof(struct type) == (size), #type " size")
#define VMMBIB_ABI_ASSERT_OFFSET(type, field, off) \
	_Static_assert(__builtin_offsetof(struct type, field) == (off), \
		       #type "." #field " offset")

/* Every struct: its size and the offset of every field. */
VMMBIB_ABI_ASSERT_SIZE(vmmbib_config, 32);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_config, magic, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_config, abi_version, 4);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_config, num_ports, 6);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_config, uar_slots, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_config, uar_slot_size, 12);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_config, max_cmd_size, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_config, event_size, 20);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_config, reserved, 24);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_page_list, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_page_list, addr, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_page_list, npages, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_page_list, levels, 12);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_page_list, page_shift, 13);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_page_list, reserved, 14);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_cmd_hdr, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_hdr, opcode, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_hdr, flags, 2);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_hdr, ctx_handle, 4);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_resp_hdr, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_hdr, status, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_hdr, reserved, 2);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_hdr, length, 4);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_resp_query_device, 144);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, fw_ver, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, node_guid, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, sys_image_guid, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, max_mr_size, 24);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, page_size_cap, 32);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, vendor_id, 40);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, vendor_part_id, 44);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, hw_ver, 48);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, max_qp, 52);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, max_qp_wr, 56);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, device_cap_flags, 60);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, max_send_sge, 64);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, max_recv_sge, 68);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, max_sge_rd, 72);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, max_cq, 76);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, max_cqe, 80);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, max_mr, 84);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, max_pd, 88);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, max_qp_rd_atom, 92);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, max_qp_init_rd_atom, 96);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, max_srq, 100);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, max_srq_wr, 104);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, max_srq_sge, 108);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, max_ah, 112);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, max_inline_data, 116);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, max_mr_pages, 120);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, max_pinned_pages, 124);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, max_ucontext, 128);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, max_pkeys, 132);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, atomic_cap, 134);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, local_ca_ack_delay, 135);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, phys_port_cnt, 136);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_device, reserved, 137);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_cmd_query_port, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_query_port, port_num, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_query_port, reserved, 1);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_resp_query_port, 40);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_port, port_cap_flags, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_port, max_msg_sz, 4);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_port, bad_pkey_cntr, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_port, qkey_viol_cntr, 12);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_port, gid_tbl_len, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_port, pkey_tbl_len, 18);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_port, lid, 20);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_port, sm_lid, 22);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_port, state, 24);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_port, max_mtu, 25);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_port, active_mtu, 26);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_port, lmc, 27);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_port, max_vl_num, 28);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_port, sm_sl, 29);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_port, subnet_timeout, 30);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_port, init_type_reply, 31);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_port, active_width, 32);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_port, active_speed, 33);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_port, phys_state, 34);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_port, link_layer, 35);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_port, reserved, 36);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_cmd_query_gid, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_query_gid, port_num, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_query_gid, reserved, 1);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_query_gid, index, 4);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_resp_query_gid, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_gid, gid, 0);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_cmd_query_pkey, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_query_pkey, port_num, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_query_pkey, reserved, 1);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_query_pkey, index, 4);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_resp_query_pkey, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_pkey, pkey, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_pkey, reserved, 2);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_resp_create_ucontext, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_create_ucontext, ctx_handle, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_create_ucontext, uar_slot, 4);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_resp_create_pd, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_create_pd, pd_handle, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_create_pd, reserved, 4);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_cmd_destroy, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_destroy, handle, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_destroy, reserved, 4);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_cmd_create_dma_mr, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_create_dma_mr, pd_handle, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_create_dma_mr, access, 4);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_cmd_reg_mr, 48);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_reg_mr, pd_handle, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_reg_mr, access, 4);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_reg_mr, iova, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_reg_mr, length, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_reg_mr, first_page_offset, 24);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_reg_mr, reserved, 28);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_reg_mr, pages, 32);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_resp_mr, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_mr, mr_handle, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_mr, lkey, 4);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_mr, rkey, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_mr, reserved, 12);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_cmd_create_cq, 24);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_create_cq, cqe, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_create_cq, comp_vector, 4);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_create_cq, pages, 8);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_resp_create_cq, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_create_cq, cq_handle, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_create_cq, cqe, 4);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_cmd_resize_cq, 24);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_resize_cq, cq_handle, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_resize_cq, cqe, 4);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_resize_cq, pages, 8);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_resp_resize_cq, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_resize_cq, cqe, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_resize_cq, moved, 4);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_qp_caps, 24);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_caps, max_send_wr, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_caps, max_recv_wr, 4);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_caps, max_send_sge, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_caps, max_recv_sge, 12);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_caps, max_inline_data, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_caps, sq_wqe_shift, 20);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_caps, rq_wqe_shift, 21);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_caps, reserved, 22);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_cmd_create_qp, 80);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_create_qp, pd_handle, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_create_qp, send_cq_handle, 4);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_create_qp, recv_cq_handle, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_create_qp, srq_handle, 12);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_create_qp, qp_type, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_create_qp, sq_sig_all, 17);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_create_qp, reserved, 18);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_create_qp, caps, 24);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_create_qp, sq_pages, 48);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_create_qp, rq_pages, 64);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_resp_create_qp, 32);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_create_qp, qp_handle, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_create_qp, qpn, 4);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_create_qp, caps, 8);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_ah_attr, 40);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ah_attr, dgid, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ah_attr, flow_label, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ah_attr, dlid, 20);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ah_attr, sgid_index, 22);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ah_attr, hop_limit, 23);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ah_attr, traffic_class, 24);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ah_attr, sl, 25);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ah_attr, src_path_bits, 26);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ah_attr, static_rate, 27);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ah_attr, port_num, 28);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ah_attr, ah_flags, 29);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ah_attr, reserved, 30);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_qp_attr, 80);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_attr, qkey, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_attr, rq_psn, 4);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_attr, sq_psn, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_attr, dest_qp_num, 12);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_attr, qp_access_flags, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_attr, pkey_index, 20);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_attr, qp_state, 22);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_attr, cur_qp_state, 23);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_attr, path_mtu, 24);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_attr, path_mig_state, 25);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_attr, en_sqd_async_notify, 26);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_attr, sq_draining, 27);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_attr, max_rd_atomic, 28);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_attr, max_dest_rd_atomic, 29);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_attr, min_rnr_timer, 30);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_attr, port_num, 31);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_attr, timeout, 32);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_attr, retry_cnt, 33);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_attr, rnr_retry, 34);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_attr, reserved, 35);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_qp_attr, ah_attr, 40);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_cmd_modify_qp, 88);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_modify_qp, qp_handle, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_modify_qp, attr_mask, 4);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_modify_qp, attr, 8);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_cmd_query_qp, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_query_qp, qp_handle, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_query_qp, reserved, 4);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_resp_query_qp, 104);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_qp, attr, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_qp, caps, 80);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_cmd_create_srq, 40);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_create_srq, pd_handle, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_create_srq, max_wr, 4);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_create_srq, max_sge, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_create_srq, srq_limit, 12);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_create_srq, wqe_shift, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_create_srq, reserved, 17);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_create_srq, pages, 24);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_resp_create_srq, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_create_srq, srq_handle, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_create_srq, srqn, 4);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_create_srq, max_wr, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_create_srq, max_sge, 12);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_cmd_modify_srq, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_modify_srq, srq_handle, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_modify_srq, attr_mask, 4);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_modify_srq, max_wr, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_modify_srq, srq_limit, 12);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_cmd_query_srq, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_query_srq, srq_handle, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_query_srq, reserved, 4);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_resp_query_srq, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_srq, max_wr, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_srq, max_sge, 4);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_srq, srq_limit, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_query_srq, reserved, 12);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_cmd_create_ah, 48);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_create_ah, pd_handle, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_create_ah, reserved, 4);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cmd_create_ah, attr, 8);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_resp_create_ah, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_create_ah, ah_handle, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_resp_create_ah, reserved, 4);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_event, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_event, type, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_event, reserved, 2);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_event, handle, 4);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_event, ctx_handle, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_event, reserved2, 12);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_sge, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_sge, addr, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_sge, length, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_sge, lkey, 12);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_send_wqe, 64);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_send_wqe, wr_id, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_send_wqe, opcode, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_send_wqe, flags, 9);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_send_wqe, num_sge, 10);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_send_wqe, reserved, 11);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_send_wqe, imm_data, 12);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_send_wqe, inline_len, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_send_wqe, reserved2, 20);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_send_wqe, rdma, 24);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_send_wqe, atomic, 24);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_send_wqe, ud, 24);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_send_wqe, raw, 24);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_recv_wqe, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_recv_wqe, wr_id, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_recv_wqe, num_sge, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_recv_wqe, reserved, 12);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_cqe, 64);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cqe, wr_id, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cqe, qpn, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cqe, byte_len, 12);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cqe, imm_data, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cqe, src_qp, 20);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cqe, wqe_index, 24);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cqe, slid, 28);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cqe, pkey_index, 30);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cqe, opcode, 32);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cqe, status, 33);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cqe, wc_flags, 34);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cqe, sl, 35);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cqe, dlid_path_bits, 36);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cqe, vendor_err, 37);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cqe, reserved, 38);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cqe, reserved2, 62);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cqe, owner, 63);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_cq_header, 64);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cq_header, consumer_index, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_cq_header, reserved, 4);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_ualloc_ucontext_resp, 24);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ualloc_ucontext_resp, comp_mask, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ualloc_ucontext_resp, uar_slot, 4);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ualloc_ucontext_resp, uar_mmap_key, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ualloc_ucontext_resp, uar_size, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ualloc_ucontext_resp, db_ring_entries, 20);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_ucreate_cq, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_cq, ring_addr, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_cq, ring_size, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_cq, comp_mask, 12);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_ucreate_cq_resp, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_cq_resp, comp_mask, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_cq_resp, cq_handle, 4);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_cq_resp, cqe, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_cq_resp, reserved, 12);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_uresize_cq, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_uresize_cq, ring_addr, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_uresize_cq, ring_size, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_uresize_cq, comp_mask, 12);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_uresize_cq_resp, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_uresize_cq_resp, comp_mask, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_uresize_cq_resp, cqe, 4);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_uresize_cq_resp, moved, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_uresize_cq_resp, reserved, 12);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_ucreate_qp, 32);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_qp, sq_addr, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_qp, rq_addr, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_qp, sq_size, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_qp, rq_size, 20);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_qp, sq_wqe_shift, 24);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_qp, rq_wqe_shift, 25);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_qp, reserved, 26);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_qp, comp_mask, 28);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_ucreate_qp_resp, 32);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_qp_resp, comp_mask, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_qp_resp, qp_handle, 4);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_qp_resp, qpn, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_qp_resp, max_send_wr, 12);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_qp_resp, max_recv_wr, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_qp_resp, max_send_sge, 20);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_qp_resp, max_recv_sge, 24);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_qp_resp, max_inline_data, 28);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_ucreate_srq, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_srq, ring_addr, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_srq, ring_size, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_srq, wqe_shift, 12);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_srq, reserved, 13);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_ucreate_srq_resp, 16);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_srq_resp, comp_mask, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_srq_resp, srq_handle, 4);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_srq_resp, max_wr, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_srq_resp, max_sge, 12);
VMMBIB_ABI_ASSERT_SIZE(vmmbib_ucreate_ah_resp, 8);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_ah_resp, comp_mask, 0);
VMMBIB_ABI_ASSERT_OFFSET(vmmbib_ucreate_ah_resp, ah_handle, 4);

#endif /* VMMBYPASS_IB_ABI_H */
