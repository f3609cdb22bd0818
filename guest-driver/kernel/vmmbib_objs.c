// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The object verbs: PDs, MRs, CQs, QPs, SRQs and AHs.  Each is one device
 * command (vmmbib_cmd.c); rings and memory regions travel as page lists
 * (vmmbib_pages.c).  Objects of a user context carry that context's
 * handle, kernel objects the kernel context's.  User rings come from the
 * provider through the driver-private udata structs of the ABI header.
 */

#include <linux/log2.h>
#include <linux/minmax.h>
#include <linux/overflow.h>
#include <linux/slab.h>
#include <linux/stddef.h>
#include <linux/version.h>
#include <linux/virtio_config.h>
#include <rdma/ib_umem.h>
#include <rdma/ib_verbs.h>
#include <rdma/uverbs_ioctl.h>

#include "vmmbib.h"

#define VMMBIB_SEND_WQE_HDR	sizeof(struct vmmbib_send_wqe)
#define VMMBIB_RECV_WQE_HDR	sizeof(struct vmmbib_recv_wqe)
#define VMMBIB_SGE_SIZE		sizeof(struct vmmbib_sge)
#define VMMBIB_CQE_SIZE		sizeof(struct vmmbib_cqe)
#define VMMBIB_CQ_HDR_SIZE	sizeof(struct vmmbib_cq_header)

static struct vmmbib_ucontext *vmmbib_udata_uctx(struct ib_udata *udata)
{
	return rdma_udata_to_drv_context(udata, struct vmmbib_ucontext,
					 ibucontext);
}

static u32 vmmbib_udata_ctx(struct vmmbib_dev *dev, struct ib_udata *udata)
{
	struct vmmbib_ucontext *uctx = vmmbib_udata_uctx(udata);

	return uctx ? uctx->ctx_handle : dev->kctx_handle;
}

/*
 * Copies the provider's request: at least @min bytes of @size; anything
 * past what this driver knows must be zero (a newer provider's fields).
 */
static int vmmbib_udata_in(struct vmmbib_dev *dev, struct ib_udata *udata,
			   void *cmd, size_t size, size_t min)
{
	if (udata->inlen < min) {
		ibdev_dbg(&dev->ibdev, "request data of %zu bytes, need %zu\n",
			  udata->inlen, min);
		return -EINVAL;
	}
	if (udata->inlen > size &&
	    !ib_is_udata_cleared(udata, size, udata->inlen - size)) {
		ibdev_dbg(&dev->ibdev, "unknown request data\n");
		return -EOPNOTSUPP;
	}
	return ib_copy_from_udata(cmd, udata, min(size, udata->inlen));
}

/* No request data is defined for this verb. */
static int vmmbib_udata_none(struct vmmbib_dev *dev, struct ib_udata *udata)
{
	if (udata && udata->inlen &&
	    !ib_is_udata_cleared(udata, 0, udata->inlen)) {
		ibdev_dbg(&dev->ibdev, "unknown request data\n");
		return -EOPNOTSUPP;
	}
	return 0;
}

static int vmmbib_udata_out(struct ib_udata *udata, void *resp, size_t size)
{
	/* An older provider may know a shorter reply. */
	return ib_copy_to_udata(udata, resp, min(size, udata->outlen));
}

/*
 * Destroys a device object.  Only BUSY is worth reporting to ib_core; a
 * device that failed has been (or will be) reset, which frees everything.
 */
static int vmmbib_destroy_obj(struct vmmbib_dev *dev, u16 opcode, u32 ctx,
			      u32 handle)
{
	int err = vmmbib_cmd_destroy(dev, opcode, ctx, handle);

	if (err == -EBUSY)
		return err;
	if (err)
		ibdev_err_ratelimited(&dev->ibdev,
				      "command %u: object %#x not destroyed: %d\n",
				      opcode, handle, err);
	return 0;
}

/* Pins a user ring of @size bytes at @addr, page aligned. */
static struct ib_umem *vmmbib_umem_ring(struct vmmbib_dev *dev, u64 addr,
					u64 size)
{
	if (!size || !PAGE_ALIGNED(addr))
		return ERR_PTR(-EINVAL);
	return ib_umem_get(&dev->ibdev, addr, PAGE_ALIGN(size),
			   IB_ACCESS_LOCAL_WRITE);
}

/* ---- PD ---- */

static int vmmbib_alloc_pd(struct ib_pd *ibpd, struct ib_udata *udata)
{
	struct vmmbib_dev *dev = to_vmmbib_dev(ibpd->device);
	struct vmmbib_pd *pd = to_vmmbib_pd(ibpd);
	int err;

	err = vmmbib_udata_none(dev, udata);
	if (err)
		return err;
	pd->ctx_handle = vmmbib_udata_ctx(dev, udata);
	return vmmbib_cmd_create_pd(dev, pd->ctx_handle, &pd->handle);
}

static int vmmbib_dealloc_pd(struct ib_pd *ibpd, struct ib_udata *udata)
{
	struct vmmbib_pd *pd = to_vmmbib_pd(ibpd);

	return vmmbib_destroy_obj(to_vmmbib_dev(ibpd->device),
				  VMMBIB_CMD_DESTROY_PD, pd->ctx_handle,
				  pd->handle);
}

/* ---- MR ---- */

static int vmmbib_mr_access(int access, u32 *dev_access)
{
	/* Optional flags are hints a device may ignore. */
	if (access & ~(VMMBIB_ACCESS_ALL | IB_ACCESS_OPTIONAL))
		return -EOPNOTSUPP;
	*dev_access = access & VMMBIB_ACCESS_ALL;
	return 0;
}

static void vmmbib_mr_done(struct vmmbib_mr *mr, u32 ctx,
			   const struct vmmbib_resp_mr *resp)
{
	mr->ctx_handle = ctx;
	mr->handle = le32_to_cpu(resp->mr_handle);
	mr->ibmr.lkey = le32_to_cpu(resp->lkey);
	mr->ibmr.rkey = le32_to_cpu(resp->rkey);
}

static struct ib_mr *vmmbib_get_dma_mr(struct ib_pd *ibpd, int access)
{
	struct vmmbib_dev *dev = to_vmmbib_dev(ibpd->device);
	struct vmmbib_pd *pd = to_vmmbib_pd(ibpd);
	struct vmmbib_resp_mr resp;
	struct vmmbib_mr *mr;
	u32 dev_access;
	int err;

	err = vmmbib_mr_access(access, &dev_access);
	if (err)
		return ERR_PTR(err);
	mr = kzalloc(sizeof(*mr), GFP_KERNEL);
	if (!mr)
		return ERR_PTR(-ENOMEM);
	err = vmmbib_cmd_create_dma_mr(dev, pd->ctx_handle, pd->handle,
				       dev_access, &resp);
	if (err) {
		kfree(mr);
		return ERR_PTR(err);
	}
	vmmbib_mr_done(mr, pd->ctx_handle, &resp);
	return &mr->ibmr;
}

static struct ib_mr *vmmbib_reg_user_mr(struct ib_pd *ibpd, u64 start,
					u64 length, u64 virt_addr, int access,
					struct ib_udata *udata)
{
	struct vmmbib_dev *dev = to_vmmbib_dev(ibpd->device);
	struct vmmbib_pd *pd = to_vmmbib_pd(ibpd);
	struct vmmbib_pgdir pgdir;
	struct vmmbib_resp_mr resp;
	struct vmmbib_mr *mr;
	u32 dev_access;
	int err;

	err = vmmbib_udata_none(dev, udata);
	if (!err)
		err = vmmbib_mr_access(access, &dev_access);
	if (err)
		return ERR_PTR(err);
	if (!length || length > dev->attr.max_mr_size)
		return ERR_PTR(-EINVAL);

	mr = kzalloc(sizeof(*mr), GFP_KERNEL);
	if (!mr)
		return ERR_PTR(-ENOMEM);
	mr->umem = ib_umem_get(ibpd->device, start, length, access);
	if (IS_ERR(mr->umem)) {
		err = PTR_ERR(mr->umem);
		goto err_free;
	}
	err = vmmbib_pgdir_umem(dev, &pgdir, mr->umem);
	if (err)
		goto err_release;
	err = vmmbib_cmd_reg_mr(dev, pd->ctx_handle, pd->handle, dev_access,
				virt_addr, length, ib_umem_offset(mr->umem),
				&pgdir.list, &resp);
	vmmbib_pgdir_free(&pgdir);
	if (err)
		goto err_release;
	vmmbib_mr_done(mr, pd->ctx_handle, &resp);
	return &mr->ibmr;

err_release:
	ib_umem_release(mr->umem);
err_free:
	kfree(mr);
	return ERR_PTR(err);
}

static int vmmbib_dereg_mr(struct ib_mr *ibmr, struct ib_udata *udata)
{
	struct vmmbib_dev *dev = to_vmmbib_dev(ibmr->device);
	struct vmmbib_mr *mr = to_vmmbib_mr(ibmr);
	int err;

	err = vmmbib_destroy_obj(dev, VMMBIB_CMD_DEREG_MR, mr->ctx_handle,
				 mr->handle);
	if (err)
		return err;
	ib_umem_release(mr->umem);
	kfree(mr);
	return 0;
}

/* ---- CQ ---- */

static u64 vmmbib_cq_bytes(u32 cqe)
{
	return VMMBIB_CQ_HDR_SIZE + (u64)cqe * VMMBIB_CQE_SIZE;
}

static int vmmbib_cq_entries(struct vmmbib_dev *dev, int entries, u32 *cqe)
{
	if (entries < 1 || entries > dev->attr.max_cqe)
		return -EINVAL;
	*cqe = roundup_pow_of_two(entries);
	return *cqe > dev->attr.max_cqe ? -EINVAL : 0;
}

/* Pins the user ring named by @addr, @size for @cqe entries. */
static int vmmbib_cq_user_ring(struct vmmbib_dev *dev, u64 addr, u32 size,
			       u32 cqe, struct ib_umem **umem,
			       struct vmmbib_pgdir *pgdir)
{
	int err;

	if (size < vmmbib_cq_bytes(cqe)) {
		ibdev_dbg(&dev->ibdev, "CQ ring of %u bytes for %u CQEs\n",
			  size, cqe);
		return -EINVAL;
	}
	*umem = vmmbib_umem_ring(dev, addr, size);
	if (IS_ERR(*umem))
		return PTR_ERR(*umem);
	err = vmmbib_pgdir_umem(dev, pgdir, *umem);
	if (err) {
		ib_umem_release(*umem);
		*umem = NULL;
	}
	return err;
}

static int vmmbib_do_create_cq(struct ib_cq *ibcq,
			       const struct ib_cq_init_attr *attr,
			       struct ib_udata *udata)
{
	struct vmmbib_dev *dev = to_vmmbib_dev(ibcq->device);
	struct vmmbib_ucreate_cq_resp resp = {};
	struct vmmbib_cq *cq = to_vmmbib_cq(ibcq);
	struct vmmbib_ucreate_cq ucmd = {};
	struct vmmbib_pgdir pgdir;
	u32 cqe, granted;
	int err;

	if (attr->flags)
		return -EOPNOTSUPP;
	err = vmmbib_cq_entries(dev, attr->cqe, &cqe);
	if (err)
		return err;
	cq->ctx_handle = vmmbib_udata_ctx(dev, udata);
	spin_lock_init(&cq->lock);

	if (udata) {
		err = vmmbib_udata_in(dev, udata, &ucmd, sizeof(ucmd),
				      offsetofend(typeof(ucmd), comp_mask));
		if (err)
			return err;
		if (ucmd.comp_mask)
			return -EOPNOTSUPP;
		err = vmmbib_cq_user_ring(dev, ucmd.ring_addr, ucmd.ring_size,
					  cqe, &cq->umem, &pgdir);
	} else {
		err = vmmbib_kbuf_alloc(dev, &cq->kbuf, vmmbib_cq_bytes(cqe));
		if (!err) {
			err = vmmbib_pgdir_kbuf(dev, &pgdir, &cq->kbuf);
			if (err)
				vmmbib_kbuf_free(dev, &cq->kbuf);
		}
	}
	if (err)
		return err;

	err = vmmbib_cmd_create_cq(dev, cq->ctx_handle, cqe, &pgdir.list,
				   &cq->handle, &granted);
	vmmbib_pgdir_free(&pgdir);
	if (err)
		goto err_free_ring;
	if (granted != cqe) {
		ibdev_err_ratelimited(&dev->ibdev,
				      "CREATE_CQ granted %u CQEs of %u\n",
				      granted, cqe);
		err = -EPROTO;
		goto err_destroy;
	}
	cq->cqe = cqe;
	ibcq->cqe = cqe;

	err = xa_insert_irq(&dev->cqs, cq->handle, cq, GFP_KERNEL);
	if (err)
		goto err_destroy;

	if (udata) {
		resp.cq_handle = cq->handle;
		resp.cqe = cqe;
		err = vmmbib_udata_out(udata, &resp, sizeof(resp));
		if (err)
			goto err_erase;
	}
	return 0;

err_erase:
	xa_erase_irq(&dev->cqs, cq->handle);
err_destroy:
	vmmbib_destroy_obj(dev, VMMBIB_CMD_DESTROY_CQ, cq->ctx_handle,
			   cq->handle);
err_free_ring:
	ib_umem_release(cq->umem);
	vmmbib_kbuf_free(dev, &cq->kbuf);
	return err;
}

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 11, 0)
static int vmmbib_create_cq(struct ib_cq *ibcq,
			    const struct ib_cq_init_attr *attr,
			    struct uverbs_attr_bundle *attrs)
{
	return vmmbib_do_create_cq(ibcq, attr,
				   attrs ? &attrs->driver_udata : NULL);
}
#else
static int vmmbib_create_cq(struct ib_cq *ibcq,
			    const struct ib_cq_init_attr *attr,
			    struct ib_udata *udata)
{
	return vmmbib_do_create_cq(ibcq, attr, udata);
}
#endif

/*
 * User CQs only: the device moves the unconsumed CQEs to the new ring,
 * which the provider then reads from index 0.  A kernel CQ would need its
 * poller stopped meanwhile, and no kernel consumer resizes.
 */
static int vmmbib_resize_cq(struct ib_cq *ibcq, int entries,
			    struct ib_udata *udata)
{
	struct vmmbib_dev *dev = to_vmmbib_dev(ibcq->device);
	struct vmmbib_cq *cq = to_vmmbib_cq(ibcq);
	struct vmmbib_uresize_cq_resp resp = {};
	struct vmmbib_uresize_cq ucmd = {};
	struct vmmbib_pgdir pgdir;
	struct ib_umem *umem;
	u32 cqe, granted, moved;
	int err;

	if (!udata || !cq->umem)
		return -EOPNOTSUPP;
	err = vmmbib_cq_entries(dev, entries, &cqe);
	if (err)
		return err;
	err = vmmbib_udata_in(dev, udata, &ucmd, sizeof(ucmd),
			      offsetofend(typeof(ucmd), comp_mask));
	if (err)
		return err;
	if (ucmd.comp_mask)
		return -EOPNOTSUPP;
	err = vmmbib_cq_user_ring(dev, ucmd.ring_addr, ucmd.ring_size, cqe,
				  &umem, &pgdir);
	if (err)
		return err;

	err = vmmbib_cmd_resize_cq(dev, cq->ctx_handle, cq->handle, cqe,
				   &pgdir.list, &granted, &moved);
	vmmbib_pgdir_free(&pgdir);
	if (err) {
		ib_umem_release(umem);
		return err;
	}
	/* The device now uses the new ring only. */
	ib_umem_release(cq->umem);
	cq->umem = umem;
	cq->cqe = granted;
	ibcq->cqe = granted;

	resp.cqe = granted;
	resp.moved = moved;
	return vmmbib_udata_out(udata, &resp, sizeof(resp));
}

/*
 * Destroys an object that device events name through @events: out of the
 * table first, so that no event handler sees it go; back in if the device
 * refuses (-EBUSY: still in use).
 */
static int vmmbib_destroy_evented(struct vmmbib_dev *dev,
				  struct xarray *events, void *obj,
				  const char *what, u16 opcode, u32 ctx,
				  u32 handle)
{
	int err;

	xa_erase_irq(events, handle);
	err = vmmbib_destroy_obj(dev, opcode, ctx, handle);
	if (err && xa_insert_irq(events, handle, obj, GFP_KERNEL))
		ibdev_warn(&dev->ibdev, "%s %#x gets no more events\n", what,
			   handle);
	return err;
}

static int vmmbib_destroy_cq(struct ib_cq *ibcq, struct ib_udata *udata)
{
	struct vmmbib_dev *dev = to_vmmbib_dev(ibcq->device);
	struct vmmbib_cq *cq = to_vmmbib_cq(ibcq);
	int err;

	err = vmmbib_destroy_evented(dev, &dev->cqs, cq, "CQ",
				     VMMBIB_CMD_DESTROY_CQ, cq->ctx_handle,
				     cq->handle);
	if (err)
		return err;
	ib_umem_release(cq->umem);
	vmmbib_kbuf_free(dev, &cq->kbuf);
	return 0;
}

/* ---- AH (also used by QPs) ---- */

static void vmmbib_ah_from_ib(const struct rdma_ah_attr *ah,
			      struct vmmbib_ah_attr *a)
{
	const struct ib_global_route *grh;

	memset(a, 0, sizeof(*a));
	a->dlid = cpu_to_le16(rdma_ah_get_dlid(ah));
	a->sl = rdma_ah_get_sl(ah);
	a->src_path_bits = rdma_ah_get_path_bits(ah);
	a->static_rate = rdma_ah_get_static_rate(ah);
	a->port_num = rdma_ah_get_port_num(ah);
	if (rdma_ah_get_ah_flags(ah) & IB_AH_GRH) {
		grh = rdma_ah_read_grh(ah);
		memcpy(a->dgid, grh->dgid.raw, sizeof(a->dgid));
		a->flow_label = cpu_to_le32(grh->flow_label);
		a->sgid_index = grh->sgid_index;
		a->hop_limit = grh->hop_limit;
		a->traffic_class = grh->traffic_class;
		a->ah_flags = VMMBIB_AH_GRH;
	}
}

static void vmmbib_ah_to_ib(struct vmmbib_ah_attr *a,
			    struct rdma_ah_attr *ah)
{
	memset(ah, 0, sizeof(*ah));
	ah->type = RDMA_AH_ATTR_TYPE_IB;
	rdma_ah_set_dlid(ah, le16_to_cpu(a->dlid));
	rdma_ah_set_sl(ah, a->sl);
	rdma_ah_set_path_bits(ah, a->src_path_bits);
	rdma_ah_set_static_rate(ah, a->static_rate);
	rdma_ah_set_port_num(ah, a->port_num);
	if (a->ah_flags & VMMBIB_AH_GRH)
		rdma_ah_set_grh(ah, (union ib_gid *)a->dgid,
				le32_to_cpu(a->flow_label), a->sgid_index,
				a->hop_limit, a->traffic_class);
}

static int vmmbib_create_ah(struct ib_ah *ibah,
			    struct rdma_ah_init_attr *init_attr,
			    struct ib_udata *udata)
{
	struct vmmbib_dev *dev = to_vmmbib_dev(ibah->device);
	struct vmmbib_pd *pd = to_vmmbib_pd(ibah->pd);
	struct vmmbib_ucreate_ah_resp resp = {};
	struct vmmbib_ah *ah = to_vmmbib_ah(ibah);
	struct vmmbib_ah_attr attr;
	int err;

	if (init_attr->ah_attr->type != RDMA_AH_ATTR_TYPE_IB)
		return -EINVAL;
	err = vmmbib_udata_none(dev, udata);
	if (err)
		return err;

	vmmbib_ah_from_ib(init_attr->ah_attr, &attr);
	ah->attr = attr;
	ah->ctx_handle = pd->ctx_handle;
	err = vmmbib_cmd_create_ah(dev, pd->ctx_handle, pd->handle, &attr,
				   &ah->handle,
				   init_attr->flags & RDMA_CREATE_AH_SLEEPABLE);
	if (err)
		return err;

	if (udata) {
		resp.ah_handle = ah->handle;
		err = vmmbib_udata_out(udata, &resp, sizeof(resp));
		if (err) {
			vmmbib_destroy_obj(dev, VMMBIB_CMD_DESTROY_AH,
					   ah->ctx_handle, ah->handle);
			return err;
		}
	}
	return 0;
}

static int vmmbib_destroy_ah(struct ib_ah *ibah, u32 flags)
{
	struct vmmbib_dev *dev = to_vmmbib_dev(ibah->device);
	struct vmmbib_ah *ah = to_vmmbib_ah(ibah);
	int err;

	/* Kernel AHs must go: failure is only logged, as for the others. */
	err = vmmbib_cmd_destroy_ah(dev, ah->ctx_handle, ah->handle,
				    flags & RDMA_DESTROY_AH_SLEEPABLE);
	if (err)
		ibdev_err_ratelimited(&dev->ibdev, "AH %#x not destroyed: %d\n",
				      ah->handle, err);
	return 0;
}

/* ib_mad matches a response to its request by the request's AH. */
static int vmmbib_query_ah(struct ib_ah *ibah, struct rdma_ah_attr *ah_attr)
{
	vmmbib_ah_to_ib(&to_vmmbib_ah(ibah)->attr, ah_attr);
	return 0;
}

/* ---- QP ---- */

/* A kernel work queue's ring inside the QP's or SRQ's buffer. */
static void vmmbib_wq_init(struct vmmbib_wq *wq, void *buf, u32 entries,
			   u8 shift, u32 max_sge)
{
	wq->buf = buf;
	wq->entries = entries;
	wq->shift = shift;
	wq->max_sge = max_sge;
	wq->head = 0;
	wq->tail = 0;
	spin_lock_init(&wq->lock);
}

static u8 vmmbib_stride_shift(u32 bytes, u8 min_shift)
{
	return max_t(u8, order_base_2(bytes), min_shift);
}

/* Page list of part of a kernel buffer. */
static int vmmbib_pgdir_kpart(struct vmmbib_dev *dev,
			      struct vmmbib_pgdir *pgdir,
			      const struct vmmbib_kbuf *kbuf, size_t off,
			      size_t size)
{
	struct vmmbib_kbuf part = {
		.va = kbuf->va + off,
		.dma = kbuf->dma + off,
		.size = PAGE_ALIGN(size),
	};

	return vmmbib_pgdir_kbuf(dev, pgdir, &part);
}

static int vmmbib_qp_user_rings(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
				struct ib_qp_init_attr *init,
				struct ib_udata *udata,
				struct vmmbib_cmd_create_qp *cmd,
				struct vmmbib_pgdir *sq_dir,
				struct vmmbib_pgdir *rq_dir)
{
	struct vmmbib_ucreate_qp ucmd = {};
	u32 sq_wr, rq_wr = 0;
	int err;

	err = vmmbib_udata_in(dev, udata, &ucmd, sizeof(ucmd),
			      offsetofend(typeof(ucmd), comp_mask));
	if (err)
		return err;
	if (ucmd.comp_mask || ucmd.reserved[0] || ucmd.reserved[1])
		return -EOPNOTSUPP;
	/* Ring sizes are entries << shift: the entries follow from them. */
	if (ucmd.sq_wqe_shift > VMMBIB_PAGE_SHIFT ||
	    ucmd.rq_wqe_shift > VMMBIB_PAGE_SHIFT)
		return -EINVAL;
	sq_wr = ucmd.sq_size >> ucmd.sq_wqe_shift;
	if (init->srq) {
		if (ucmd.rq_size || ucmd.rq_addr)
			return -EINVAL;
	} else {
		rq_wr = ucmd.rq_size >> ucmd.rq_wqe_shift;
		if (!is_power_of_2(rq_wr) ||
		    (u64)rq_wr << ucmd.rq_wqe_shift != ucmd.rq_size)
			return -EINVAL;
	}
	if (!is_power_of_2(sq_wr) ||
	    (u64)sq_wr << ucmd.sq_wqe_shift != ucmd.sq_size)
		return -EINVAL;

	cmd->caps.max_send_wr = cpu_to_le32(sq_wr);
	cmd->caps.max_recv_wr = cpu_to_le32(rq_wr);
	cmd->caps.sq_wqe_shift = ucmd.sq_wqe_shift;
	cmd->caps.rq_wqe_shift = init->srq ? 0 : ucmd.rq_wqe_shift;

	qp->sq_umem = vmmbib_umem_ring(dev, ucmd.sq_addr, ucmd.sq_size);
	if (IS_ERR(qp->sq_umem)) {
		err = PTR_ERR(qp->sq_umem);
		qp->sq_umem = NULL;
		return err;
	}
	err = vmmbib_pgdir_umem(dev, sq_dir, qp->sq_umem);
	if (err)
		return err;
	if (init->srq)
		return 0;
	qp->rq_umem = vmmbib_umem_ring(dev, ucmd.rq_addr, ucmd.rq_size);
	if (IS_ERR(qp->rq_umem)) {
		err = PTR_ERR(qp->rq_umem);
		qp->rq_umem = NULL;
		return err;
	}
	return vmmbib_pgdir_umem(dev, rq_dir, qp->rq_umem);
}

static int vmmbib_qp_kernel_rings(struct vmmbib_dev *dev,
				  struct vmmbib_qp *qp,
				  struct ib_qp_init_attr *init,
				  struct vmmbib_cmd_create_qp *cmd,
				  struct vmmbib_pgdir *sq_dir,
				  struct vmmbib_pgdir *rq_dir)
{
	struct ib_qp_cap *cap = &init->cap;
	u32 sq_wr, rq_wr = 0, rq_sge = 0;
	size_t sq_bytes, rq_bytes = 0;
	u8 sq_shift, rq_shift = 0;
	int err;

	sq_wr = roundup_pow_of_two(max(cap->max_send_wr, 1U));
	sq_shift = vmmbib_stride_shift(VMMBIB_SEND_WQE_HDR +
				       max(cap->max_send_sge * VMMBIB_SGE_SIZE,
					   cap->max_inline_data), 6);
	if (!init->srq) {
		rq_wr = roundup_pow_of_two(max(cap->max_recv_wr, 1U));
		rq_sge = max(cap->max_recv_sge, 1U);
		rq_shift = vmmbib_stride_shift(VMMBIB_RECV_WQE_HDR +
					       rq_sge * VMMBIB_SGE_SIZE, 4);
	}
	if (sq_wr > dev->attr.max_qp_wr || rq_wr > dev->attr.max_qp_wr ||
	    sq_shift > VMMBIB_PAGE_SHIFT || rq_shift > VMMBIB_PAGE_SHIFT)
		return -EINVAL;
	cmd->caps.max_send_wr = cpu_to_le32(sq_wr);
	cmd->caps.max_recv_wr = cpu_to_le32(rq_wr);
	cmd->caps.max_recv_sge = cpu_to_le32(rq_sge);
	cmd->caps.sq_wqe_shift = sq_shift;
	cmd->caps.rq_wqe_shift = rq_shift;

	sq_bytes = PAGE_ALIGN((size_t)sq_wr << sq_shift);
	if (rq_wr)
		rq_bytes = PAGE_ALIGN((size_t)rq_wr << rq_shift);
	err = vmmbib_kbuf_alloc(dev, &qp->kbuf, sq_bytes + rq_bytes);
	if (err)
		return err;
	vmmbib_wq_init(&qp->sq, qp->kbuf.va, sq_wr, sq_shift,
		       cap->max_send_sge);
	vmmbib_wq_init(&qp->rq, qp->kbuf.va + sq_bytes, rq_wr, rq_shift,
		       rq_sge);
	err = vmmbib_pgdir_kpart(dev, sq_dir, &qp->kbuf, 0, sq_bytes);
	if (err || !rq_wr)
		return err;
	return vmmbib_pgdir_kpart(dev, rq_dir, &qp->kbuf, sq_bytes, rq_bytes);
}

static void vmmbib_qp_free_rings(struct vmmbib_dev *dev, struct vmmbib_qp *qp)
{
	ib_umem_release(qp->sq_umem);
	ib_umem_release(qp->rq_umem);
	qp->sq_umem = NULL;
	qp->rq_umem = NULL;
	vmmbib_kbuf_free(dev, &qp->kbuf);
}

/* Takes a kernel QP off the lookup of both its CQs' pollers. */
static void vmmbib_kqp_unlink(struct vmmbib_dev *dev, struct vmmbib_qp *qp)
{
	struct vmmbib_cq *scq = to_vmmbib_cq(qp->ibqp.send_cq);
	struct vmmbib_cq *rcq = to_vmmbib_cq(qp->ibqp.recv_cq);
	unsigned long flags;

	spin_lock_irqsave(&scq->lock, flags);
	if (rcq != scq)
		spin_lock_nested(&rcq->lock, SINGLE_DEPTH_NESTING);
	/* Interrupts are off already: the plain lock, not xa_erase_irq(). */
	xa_lock(&dev->kqps);
	__xa_erase(&dev->kqps, qp->ibqp.qp_num);
	xa_unlock(&dev->kqps);
	if (rcq != scq)
		spin_unlock(&rcq->lock);
	spin_unlock_irqrestore(&scq->lock, flags);
}

static int vmmbib_create_qp(struct ib_qp *ibqp, struct ib_qp_init_attr *init,
			    struct ib_udata *udata)
{
	struct vmmbib_dev *dev = to_vmmbib_dev(ibqp->device);
	struct vmmbib_pd *pd = to_vmmbib_pd(ibqp->pd);
	struct vmmbib_qp *qp = to_vmmbib_qp(ibqp);
	struct vmmbib_ucreate_qp_resp uresp = {};
	struct vmmbib_cmd_create_qp cmd = {};
	struct vmmbib_resp_create_qp resp;
	struct ib_qp_cap *cap = &init->cap;
	struct vmmbib_pgdir sq_dir = {}, rq_dir = {};
	int err;

	switch (init->qp_type) {
	case IB_QPT_RC:
		break;
	case IB_QPT_GSI:
		/* ib_mad's QP1: a kernel UD QP with QP number 1. */
		if (udata)
			return -EOPNOTSUPP;
		fallthrough;
	case IB_QPT_UD:
		if (virtio_has_feature(dev->vdev, VMMBIB_F_UD))
			break;
		fallthrough;
	default:
		ibdev_dbg(&dev->ibdev, "QP type %d not supported\n",
			  init->qp_type);
		return -EOPNOTSUPP;
	}
	if (init->create_flags)
		return -EOPNOTSUPP;
	if (cap->max_send_wr > dev->attr.max_qp_wr ||
	    cap->max_recv_wr > dev->attr.max_qp_wr ||
	    cap->max_send_sge > dev->attr.max_send_sge ||
	    cap->max_recv_sge > dev->attr.max_recv_sge ||
	    cap->max_inline_data > dev->attr.max_inline_data)
		return -EINVAL;

	qp->ctx_handle = pd->ctx_handle;
	cmd.pd_handle = cpu_to_le32(pd->handle);
	cmd.send_cq_handle = cpu_to_le32(to_vmmbib_cq(init->send_cq)->handle);
	cmd.recv_cq_handle = cpu_to_le32(to_vmmbib_cq(init->recv_cq)->handle);
	cmd.srq_handle = cpu_to_le32(init->srq ?
				     to_vmmbib_srq(init->srq)->handle :
				     VMMBIB_HANDLE_NONE);
	BUILD_BUG_ON(IB_QPT_GSI != VMMBIB_QPT_GSI ||
		     IB_QPT_RC != VMMBIB_QPT_RC || IB_QPT_UD != VMMBIB_QPT_UD);
	cmd.qp_type = init->qp_type;
	cmd.sq_sig_all = init->sq_sig_type == IB_SIGNAL_ALL_WR;
	cmd.caps.max_send_sge = cpu_to_le32(cap->max_send_sge);
	cmd.caps.max_recv_sge = cpu_to_le32(init->srq ? 0 :
					    cap->max_recv_sge);
	cmd.caps.max_inline_data = cpu_to_le32(cap->max_inline_data);

	if (udata)
		err = vmmbib_qp_user_rings(dev, qp, init, udata, &cmd,
					   &sq_dir, &rq_dir);
	else
		err = vmmbib_qp_kernel_rings(dev, qp, init, &cmd, &sq_dir,
					     &rq_dir);
	if (err)
		goto err_free;
	cmd.sq_pages = sq_dir.list;
	cmd.rq_pages = rq_dir.list;

	err = vmmbib_cmd_create_qp(dev, qp->ctx_handle, &cmd, &resp);
	vmmbib_pgdir_free(&sq_dir);
	vmmbib_pgdir_free(&rq_dir);
	if (err)
		goto err_free;
	qp->handle = le32_to_cpu(resp.qp_handle);
	qp->caps = resp.caps;
	qp->sq_sig_all = cmd.sq_sig_all;
	qp->max_inline = le32_to_cpu(resp.caps.max_inline_data);
	ibqp->qp_num = le32_to_cpu(resp.qpn);

	cap->max_send_wr = le32_to_cpu(resp.caps.max_send_wr);
	cap->max_recv_wr = le32_to_cpu(resp.caps.max_recv_wr);
	cap->max_send_sge = le32_to_cpu(resp.caps.max_send_sge);
	cap->max_recv_sge = le32_to_cpu(resp.caps.max_recv_sge);
	cap->max_inline_data = qp->max_inline;

	err = xa_insert_irq(&dev->qps, qp->handle, qp, GFP_KERNEL);
	if (err)
		goto err_destroy;
	if (!udata) {
		err = xa_insert_irq(&dev->kqps, ibqp->qp_num, qp, GFP_KERNEL);
		if (err)
			goto err_erase;
		return 0;
	}

	uresp.qp_handle = qp->handle;
	uresp.qpn = ibqp->qp_num;
	uresp.max_send_wr = cap->max_send_wr;
	uresp.max_recv_wr = cap->max_recv_wr;
	uresp.max_send_sge = cap->max_send_sge;
	uresp.max_recv_sge = cap->max_recv_sge;
	uresp.max_inline_data = cap->max_inline_data;
	err = vmmbib_udata_out(udata, &uresp, sizeof(uresp));
	if (err)
		goto err_erase;
	return 0;

err_erase:
	xa_erase_irq(&dev->qps, qp->handle);
err_destroy:
	vmmbib_destroy_obj(dev, VMMBIB_CMD_DESTROY_QP, qp->ctx_handle,
			   qp->handle);
err_free:
	vmmbib_pgdir_free(&sq_dir);
	vmmbib_pgdir_free(&rq_dir);
	vmmbib_qp_free_rings(dev, qp);
	return err;
}

static int vmmbib_modify_qp(struct ib_qp *ibqp, struct ib_qp_attr *attr,
			    int mask, struct ib_udata *udata)
{
	struct vmmbib_dev *dev = to_vmmbib_dev(ibqp->device);
	struct vmmbib_qp *qp = to_vmmbib_qp(ibqp);
	struct vmmbib_cmd_modify_qp cmd = {};
	struct vmmbib_qp_attr *a = &cmd.attr;
	int err;

	err = vmmbib_udata_none(dev, udata);
	if (err)
		return err;
	/* The wire attributes have no alternate path and no capabilities. */
	if (mask & ~IB_QP_ATTR_STANDARD_BITS ||
	    mask & (IB_QP_ALT_PATH | IB_QP_CAP))
		return -EOPNOTSUPP;
	BUILD_BUG_ON(IB_QP_DEST_QPN != VMMBIB_QP_DEST_QPN ||
		     IB_QP_AV != VMMBIB_QP_AV ||
		     IB_QP_STATE != VMMBIB_QP_STATE);

	cmd.qp_handle = cpu_to_le32(qp->handle);
	cmd.attr_mask = cpu_to_le32(mask);
	a->qkey = cpu_to_le32(attr->qkey);
	a->rq_psn = cpu_to_le32(attr->rq_psn);
	a->sq_psn = cpu_to_le32(attr->sq_psn);
	a->dest_qp_num = cpu_to_le32(attr->dest_qp_num);
	a->qp_access_flags = cpu_to_le32(attr->qp_access_flags);
	a->pkey_index = cpu_to_le16(attr->pkey_index);
	a->qp_state = attr->qp_state;
	a->cur_qp_state = attr->cur_qp_state;
	a->path_mtu = attr->path_mtu;
	a->path_mig_state = attr->path_mig_state;
	a->en_sqd_async_notify = attr->en_sqd_async_notify;
	a->max_rd_atomic = attr->max_rd_atomic;
	a->max_dest_rd_atomic = attr->max_dest_rd_atomic;
	a->min_rnr_timer = attr->min_rnr_timer;
	a->port_num = attr->port_num;
	a->timeout = attr->timeout;
	a->retry_cnt = attr->retry_cnt;
	a->rnr_retry = attr->rnr_retry;
	if (mask & IB_QP_AV)
		vmmbib_ah_from_ib(&attr->ah_attr, &a->ah_attr);
	/* Fields outside the mask go as zero, as the device wants. */
	if (!(mask & IB_QP_STATE))
		a->qp_state = 0;
	if (!(mask & IB_QP_CUR_STATE))
		a->cur_qp_state = 0;

	return vmmbib_cmd_modify_qp(dev, qp->ctx_handle, &cmd);
}

static int vmmbib_query_qp(struct ib_qp *ibqp, struct ib_qp_attr *attr,
			   int mask, struct ib_qp_init_attr *init)
{
	struct vmmbib_dev *dev = to_vmmbib_dev(ibqp->device);
	struct vmmbib_qp *qp = to_vmmbib_qp(ibqp);
	struct vmmbib_resp_query_qp resp;
	struct vmmbib_qp_attr *a = &resp.attr;
	int err;

	err = vmmbib_cmd_query_qp(dev, qp->ctx_handle, qp->handle, &resp);
	if (err)
		return err;

	memset(attr, 0, sizeof(*attr));
	attr->qp_state = a->qp_state;
	attr->cur_qp_state = a->cur_qp_state;
	attr->path_mtu = a->path_mtu;
	attr->path_mig_state = a->path_mig_state;
	attr->qkey = le32_to_cpu(a->qkey);
	attr->rq_psn = le32_to_cpu(a->rq_psn);
	attr->sq_psn = le32_to_cpu(a->sq_psn);
	attr->dest_qp_num = le32_to_cpu(a->dest_qp_num);
	attr->qp_access_flags = le32_to_cpu(a->qp_access_flags);
	attr->pkey_index = le16_to_cpu(a->pkey_index);
	attr->en_sqd_async_notify = a->en_sqd_async_notify;
	attr->sq_draining = a->sq_draining;
	attr->max_rd_atomic = a->max_rd_atomic;
	attr->max_dest_rd_atomic = a->max_dest_rd_atomic;
	attr->min_rnr_timer = a->min_rnr_timer;
	attr->port_num = a->port_num;
	attr->timeout = a->timeout;
	attr->retry_cnt = a->retry_cnt;
	attr->rnr_retry = a->rnr_retry;
	vmmbib_ah_to_ib(&a->ah_attr, &attr->ah_attr);
	attr->cap.max_send_wr = le32_to_cpu(resp.caps.max_send_wr);
	attr->cap.max_recv_wr = le32_to_cpu(resp.caps.max_recv_wr);
	attr->cap.max_send_sge = le32_to_cpu(resp.caps.max_send_sge);
	attr->cap.max_recv_sge = le32_to_cpu(resp.caps.max_recv_sge);
	attr->cap.max_inline_data = le32_to_cpu(resp.caps.max_inline_data);

	memset(init, 0, sizeof(*init));
	init->qp_type = ibqp->qp_type;
	init->send_cq = ibqp->send_cq;
	init->recv_cq = ibqp->recv_cq;
	init->srq = ibqp->srq;
	init->cap = attr->cap;
	init->sq_sig_type = qp->sq_sig_all ? IB_SIGNAL_ALL_WR :
					     IB_SIGNAL_REQ_WR;
	return 0;
}

static int vmmbib_destroy_qp(struct ib_qp *ibqp, struct ib_udata *udata)
{
	struct vmmbib_dev *dev = to_vmmbib_dev(ibqp->device);
	struct vmmbib_qp *qp = to_vmmbib_qp(ibqp);
	int err;

	err = vmmbib_destroy_obj(dev, VMMBIB_CMD_DESTROY_QP, qp->ctx_handle,
				 qp->handle);
	if (err)
		return err;
	xa_erase_irq(&dev->qps, qp->handle);
	if (qp->kbuf.va)
		vmmbib_kqp_unlink(dev, qp);
	vmmbib_qp_free_rings(dev, qp);
	return 0;
}

/* ---- SRQ ---- */

static int vmmbib_create_srq(struct ib_srq *ibsrq,
			     struct ib_srq_init_attr *init,
			     struct ib_udata *udata)
{
	struct vmmbib_dev *dev = to_vmmbib_dev(ibsrq->device);
	struct vmmbib_pd *pd = to_vmmbib_pd(ibsrq->pd);
	struct vmmbib_srq *srq = to_vmmbib_srq(ibsrq);
	struct vmmbib_ucreate_srq_resp uresp = {};
	struct vmmbib_cmd_create_srq cmd = {};
	struct vmmbib_ucreate_srq ucmd = {};
	struct ib_srq_attr *attr = &init->attr;
	struct vmmbib_resp_create_srq resp;
	struct vmmbib_pgdir pgdir;
	u32 entries;
	u8 shift;
	int err;

	if (!virtio_has_feature(dev->vdev, VMMBIB_F_SRQ) ||
	    init->srq_type != IB_SRQT_BASIC)
		return -EOPNOTSUPP;
	if (!attr->max_wr || attr->max_wr > dev->attr.max_srq_wr ||
	    !attr->max_sge || attr->max_sge > dev->attr.max_srq_sge)
		return -EINVAL;
	srq->ctx_handle = pd->ctx_handle;

	if (udata) {
		err = vmmbib_udata_in(dev, udata, &ucmd, sizeof(ucmd),
				      offsetofend(typeof(ucmd), wqe_shift));
		if (err)
			return err;
		if (memchr_inv(ucmd.reserved, 0, sizeof(ucmd.reserved)))
			return -EOPNOTSUPP;
		shift = ucmd.wqe_shift;
		if (shift > VMMBIB_PAGE_SHIFT)
			return -EINVAL;
		entries = ucmd.ring_size >> shift;
		if (!is_power_of_2(entries) ||
		    (u64)entries << shift != ucmd.ring_size)
			return -EINVAL;
		srq->umem = vmmbib_umem_ring(dev, ucmd.ring_addr,
					     ucmd.ring_size);
		if (IS_ERR(srq->umem)) {
			err = PTR_ERR(srq->umem);
			srq->umem = NULL;
			return err;
		}
		err = vmmbib_pgdir_umem(dev, &pgdir, srq->umem);
	} else {
		entries = roundup_pow_of_two(attr->max_wr);
		shift = vmmbib_stride_shift(VMMBIB_RECV_WQE_HDR +
					    attr->max_sge * VMMBIB_SGE_SIZE, 4);
		if (entries > dev->attr.max_srq_wr || shift > VMMBIB_PAGE_SHIFT)
			return -EINVAL;
		err = vmmbib_kbuf_alloc(dev, &srq->kbuf,
					(size_t)entries << shift);
		if (!err) {
			vmmbib_wq_init(&srq->rq, srq->kbuf.va, entries, shift,
				       attr->max_sge);
			atomic_set(&srq->done, 0);
			err = vmmbib_pgdir_kbuf(dev, &pgdir, &srq->kbuf);
		}
	}
	if (err)
		goto err_free;

	cmd.pd_handle = cpu_to_le32(pd->handle);
	cmd.max_wr = cpu_to_le32(entries);
	cmd.max_sge = cpu_to_le32(attr->max_sge);
	cmd.srq_limit = cpu_to_le32(attr->srq_limit);
	cmd.wqe_shift = shift;
	cmd.pages = pgdir.list;
	err = vmmbib_cmd_create_srq(dev, srq->ctx_handle, &cmd, &resp);
	vmmbib_pgdir_free(&pgdir);
	if (err)
		goto err_free;
	srq->handle = le32_to_cpu(resp.srq_handle);
	srq->srqn = le32_to_cpu(resp.srqn);
	attr->max_wr = le32_to_cpu(resp.max_wr);
	attr->max_sge = le32_to_cpu(resp.max_sge);

	err = xa_insert_irq(&dev->srqs, srq->handle, srq, GFP_KERNEL);
	if (err)
		goto err_destroy;
	if (udata) {
		uresp.srq_handle = srq->handle;
		uresp.max_wr = attr->max_wr;
		uresp.max_sge = attr->max_sge;
		err = vmmbib_udata_out(udata, &uresp, sizeof(uresp));
		if (err)
			goto err_erase;
	}
	return 0;

err_erase:
	xa_erase_irq(&dev->srqs, srq->handle);
err_destroy:
	vmmbib_destroy_obj(dev, VMMBIB_CMD_DESTROY_SRQ, srq->ctx_handle,
			   srq->handle);
err_free:
	ib_umem_release(srq->umem);
	vmmbib_kbuf_free(dev, &srq->kbuf);
	return err;
}

static int vmmbib_modify_srq(struct ib_srq *ibsrq, struct ib_srq_attr *attr,
			     enum ib_srq_attr_mask mask,
			     struct ib_udata *udata)
{
	struct vmmbib_dev *dev = to_vmmbib_dev(ibsrq->device);
	struct vmmbib_srq *srq = to_vmmbib_srq(ibsrq);
	int err;

	err = vmmbib_udata_none(dev, udata);
	if (err)
		return err;
	/* The device cannot resize an SRQ. */
	if (mask & ~IB_SRQ_LIMIT)
		return -EOPNOTSUPP;
	return vmmbib_cmd_modify_srq(dev, srq->ctx_handle, srq->handle,
				     VMMBIB_SRQ_LIMIT, 0, attr->srq_limit);
}

static int vmmbib_query_srq(struct ib_srq *ibsrq, struct ib_srq_attr *attr)
{
	struct vmmbib_srq *srq = to_vmmbib_srq(ibsrq);
	struct vmmbib_resp_query_srq resp;
	int err;

	err = vmmbib_cmd_query_srq(to_vmmbib_dev(ibsrq->device),
				   srq->ctx_handle, srq->handle, &resp);
	if (err)
		return err;
	attr->max_wr = le32_to_cpu(resp.max_wr);
	attr->max_sge = le32_to_cpu(resp.max_sge);
	attr->srq_limit = le32_to_cpu(resp.srq_limit);
	return 0;
}

static int vmmbib_destroy_srq(struct ib_srq *ibsrq, struct ib_udata *udata)
{
	struct vmmbib_dev *dev = to_vmmbib_dev(ibsrq->device);
	struct vmmbib_srq *srq = to_vmmbib_srq(ibsrq);
	int err;

	err = vmmbib_destroy_evented(dev, &dev->srqs, srq, "SRQ",
				     VMMBIB_CMD_DESTROY_SRQ, srq->ctx_handle,
				     srq->handle);
	if (err)
		return err;
	ib_umem_release(srq->umem);
	vmmbib_kbuf_free(dev, &srq->kbuf);
	return 0;
}

const struct ib_device_ops vmmbib_obj_ops = {
	.alloc_pd = vmmbib_alloc_pd,
	.dealloc_pd = vmmbib_dealloc_pd,
	.get_dma_mr = vmmbib_get_dma_mr,
	.reg_user_mr = vmmbib_reg_user_mr,
	.dereg_mr = vmmbib_dereg_mr,
	.create_cq = vmmbib_create_cq,
	.resize_cq = vmmbib_resize_cq,
	.destroy_cq = vmmbib_destroy_cq,
	.create_qp = vmmbib_create_qp,
	.modify_qp = vmmbib_modify_qp,
	.query_qp = vmmbib_query_qp,
	.destroy_qp = vmmbib_destroy_qp,
	.create_srq = vmmbib_create_srq,
	.modify_srq = vmmbib_modify_srq,
	.query_srq = vmmbib_query_srq,
	.destroy_srq = vmmbib_destroy_srq,
	.create_ah = vmmbib_create_ah,
	.create_user_ah = vmmbib_create_ah,
	.destroy_ah = vmmbib_destroy_ah,
	.query_ah = vmmbib_query_ah,

	INIT_RDMA_OBJ_SIZE(ib_pd, vmmbib_pd, ibpd),
	INIT_RDMA_OBJ_SIZE(ib_cq, vmmbib_cq, ibcq),
	INIT_RDMA_OBJ_SIZE(ib_qp, vmmbib_qp, ibqp),
	INIT_RDMA_OBJ_SIZE(ib_srq, vmmbib_srq, ibsrq),
	INIT_RDMA_OBJ_SIZE(ib_ah, vmmbib_ah, ibah),
};
