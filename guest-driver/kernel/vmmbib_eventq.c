// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The eventq: the device's way to tell the driver about completions and
 * asynchronous events.  The driver keeps every ring entry filled with a
 * writable struct vmmbib_event; the device fills one per event and the
 * callback hands it on and posts the buffer again.
 *
 * Events reach ib_core only while the ib_device is registered: before,
 * ib_core could not take them; after ib_unregister_device() has begun,
 * they would race with the device's teardown.
 */

#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/virtio.h>

#include "vmmbib.h"

static struct device *vmmbib_eventq_dev(struct vmmbib_dev *dev)
{
	return &dev->vdev->dev;
}

int vmmbib_eventq_init(struct vmmbib_dev *dev, struct virtqueue *vq)
{
	struct vmmbib_eventq *eq = &dev->eventq;

	eq->vq = vq;
	spin_lock_init(&eq->lock);
	eq->num_bufs = virtqueue_get_vring_size(vq);
	eq->bufs = kcalloc(eq->num_bufs, sizeof(*eq->bufs), GFP_KERNEL);
	if (!eq->bufs)
		return -ENOMEM;
	return 0;
}

static int vmmbib_eventq_post(struct vmmbib_eventq *eq,
			      struct vmmbib_event *ev)
{
	struct scatterlist sg;

	sg_init_one(&sg, ev, sizeof(*ev));
	return virtqueue_add_inbuf(eq->vq, &sg, 1, ev, GFP_ATOMIC);
}

/* Fills the ring; after virtio_device_ready(). */
int vmmbib_eventq_start(struct vmmbib_dev *dev)
{
	struct vmmbib_eventq *eq = &dev->eventq;
	unsigned long flags;
	unsigned int i;
	int err = 0;

	spin_lock_irqsave(&eq->lock, flags);
	for (i = 0; i < eq->num_bufs; i++) {
		err = vmmbib_eventq_post(eq, &eq->bufs[i]);
		if (err)
			break;
	}
	spin_unlock_irqrestore(&eq->lock, flags);
	if (err) {
		dev_err(vmmbib_eventq_dev(dev),
			"cannot post event buffer %u of %u: %d\n",
			i, eq->num_bufs, err);
		return err;
	}

	virtqueue_kick(eq->vq);
	return 0;
}

void vmmbib_eventq_set_dispatch(struct vmmbib_dev *dev, bool dispatch)
{
	struct vmmbib_eventq *eq = &dev->eventq;
	unsigned long flags;

	spin_lock_irqsave(&eq->lock, flags);
	eq->dispatch = dispatch;
	spin_unlock_irqrestore(&eq->lock, flags);
}

/* Called with eq->lock held, which keeps the ib_device registered. */
static void vmmbib_dispatch(struct vmmbib_dev *dev, enum ib_event_type type,
			    u32 port)
{
	struct ib_event event = {
		.device = &dev->ibdev,
		.event = type,
		.element.port_num = port,
	};

	if (!dev->eventq.dispatch) {
		dev_dbg(vmmbib_eventq_dev(dev),
			"%s on port %u while not registered: dropped\n",
			ib_event_msg(type), port);
		return;
	}
	/* Allocates atomically and defers to a workqueue: fine in an IRQ. */
	ib_dispatch_event(&event);
}

static void vmmbib_port_event(struct vmmbib_dev *dev, u32 port,
			      enum ib_event_type type)
{
	if (port < 1 || port > dev->num_ports) {
		dev_err_ratelimited(vmmbib_eventq_dev(dev),
				    "%s for port %u, which does not exist\n",
				    ib_event_msg(type), port);
		return;
	}
	dev_info(vmmbib_eventq_dev(dev), "port %u: %s\n", port,
		 ib_event_msg(type));
	vmmbib_dispatch(dev, type, port);
}

/*
 * An event naming no object of its context: one destroyed while its event
 * was on the way, or a device that names objects the driver never made.
 */
static void vmmbib_event_no_object(struct vmmbib_dev *dev, const char *kind,
				   u32 handle, u32 ctx)
{
	dev_warn_ratelimited(vmmbib_eventq_dev(dev),
			     "event for %s %#x of context %#x, which does not exist (destroyed, or never created): ignored\n",
			     kind, handle, ctx);
}

/*
 * Events of CQs, QPs and SRQs go to the object's own handlers.  The
 * object is looked up by handle under its table's lock, which its destroy
 * verb takes to remove it: it cannot go away while its handler runs.  The
 * handlers ib_core and ib_uverbs install run in any context.
 */
static void vmmbib_cq_event(struct vmmbib_dev *dev, u32 handle, u32 ctx,
			    int type)
{
	struct ib_event event = { .device = &dev->ibdev, .event = type };
	struct vmmbib_cq *cq;
	unsigned long flags;
	bool found;

	xa_lock_irqsave(&dev->cqs, flags);
	cq = xa_load(&dev->cqs, handle);
	found = cq && cq->ctx_handle == ctx;
	if (found) {
		if (type < 0) {
			if (cq->ibcq.comp_handler)
				cq->ibcq.comp_handler(&cq->ibcq,
						      cq->ibcq.cq_context);
		} else if (cq->ibcq.event_handler) {
			event.element.cq = &cq->ibcq;
			cq->ibcq.event_handler(&event, cq->ibcq.cq_context);
		}
	}
	xa_unlock_irqrestore(&dev->cqs, flags);
	if (!found)
		vmmbib_event_no_object(dev, "CQ", handle, ctx);
}

static void vmmbib_qp_event(struct vmmbib_dev *dev, u32 handle, u32 ctx,
			    enum ib_event_type type)
{
	struct ib_event event = { .device = &dev->ibdev, .event = type };
	struct vmmbib_qp *qp;
	unsigned long flags;
	bool found;

	xa_lock_irqsave(&dev->qps, flags);
	qp = xa_load(&dev->qps, handle);
	found = qp && qp->ctx_handle == ctx;
	if (found && qp->ibqp.event_handler) {
		event.element.qp = &qp->ibqp;
		qp->ibqp.event_handler(&event, qp->ibqp.qp_context);
	}
	xa_unlock_irqrestore(&dev->qps, flags);
	if (!found)
		vmmbib_event_no_object(dev, "QP", handle, ctx);
}

static void vmmbib_srq_event(struct vmmbib_dev *dev, u32 handle, u32 ctx,
			     enum ib_event_type type)
{
	struct ib_event event = { .device = &dev->ibdev, .event = type };
	struct vmmbib_srq *srq;
	unsigned long flags;
	bool found;

	xa_lock_irqsave(&dev->srqs, flags);
	srq = xa_load(&dev->srqs, handle);
	found = srq && srq->ctx_handle == ctx;
	if (found && srq->ibsrq.event_handler) {
		event.element.srq = &srq->ibsrq;
		srq->ibsrq.event_handler(&event, srq->ibsrq.srq_context);
	}
	xa_unlock_irqrestore(&dev->srqs, flags);
	if (!found)
		vmmbib_event_no_object(dev, "SRQ", handle, ctx);
}

static void vmmbib_handle_event(struct vmmbib_dev *dev,
				const struct vmmbib_event *ev)
{
	u16 type = le16_to_cpu(ev->type);
	u32 handle = le32_to_cpu(ev->handle);
	u32 ctx = le32_to_cpu(ev->ctx_handle);

	/* Objects exist only while registered; ports need ib_core too. */
	if (!dev->eventq.dispatch && type != VMMBIB_EVENT_DEVICE_FATAL) {
		dev_dbg(vmmbib_eventq_dev(dev),
			"event %u while not registered: dropped\n", type);
		return;
	}

	switch (type) {
	case VMMBIB_EVENT_COMP:
		vmmbib_cq_event(dev, handle, ctx, -1);
		break;
	case VMMBIB_EVENT_CQ_ERR:
		vmmbib_cq_event(dev, handle, ctx, IB_EVENT_CQ_ERR);
		break;
	case VMMBIB_EVENT_QP_FATAL:
		vmmbib_qp_event(dev, handle, ctx, IB_EVENT_QP_FATAL);
		break;
	case VMMBIB_EVENT_QP_REQ_ERR:
		vmmbib_qp_event(dev, handle, ctx, IB_EVENT_QP_REQ_ERR);
		break;
	case VMMBIB_EVENT_QP_ACCESS_ERR:
		vmmbib_qp_event(dev, handle, ctx, IB_EVENT_QP_ACCESS_ERR);
		break;
	case VMMBIB_EVENT_COMM_EST:
		vmmbib_qp_event(dev, handle, ctx, IB_EVENT_COMM_EST);
		break;
	case VMMBIB_EVENT_SQ_DRAINED:
		vmmbib_qp_event(dev, handle, ctx, IB_EVENT_SQ_DRAINED);
		break;
	case VMMBIB_EVENT_QP_LAST_WQE_REACHED:
		vmmbib_qp_event(dev, handle, ctx, IB_EVENT_QP_LAST_WQE_REACHED);
		break;
	case VMMBIB_EVENT_SRQ_LIMIT_REACHED:
		vmmbib_srq_event(dev, handle, ctx, IB_EVENT_SRQ_LIMIT_REACHED);
		break;
	case VMMBIB_EVENT_SRQ_ERR:
		vmmbib_srq_event(dev, handle, ctx, IB_EVENT_SRQ_ERR);
		break;
	case VMMBIB_EVENT_PORT_ACTIVE:
		vmmbib_port_event(dev, handle, IB_EVENT_PORT_ACTIVE);
		break;
	case VMMBIB_EVENT_PORT_ERR:
		vmmbib_port_event(dev, handle, IB_EVENT_PORT_ERR);
		break;
	case VMMBIB_EVENT_DEVICE_FATAL:
		vmmbib_ctrlq_fail(dev, "the device reported a fatal error");
		vmmbib_dispatch(dev, IB_EVENT_DEVICE_FATAL, 1);
		break;
	default:
		/* Newer devices may know more: ignored, as the spec says. */
		dev_warn_ratelimited(vmmbib_eventq_dev(dev),
				     "unknown event type %u (handle %#x): ignored\n",
				     type, handle);
		break;
	}
}

/* The virtqueue callback; runs in interrupt context. */
void vmmbib_eventq_done(struct virtqueue *vq)
{
	struct vmmbib_dev *dev = vq->vdev->priv;
	struct vmmbib_eventq *eq = &dev->eventq;
	struct vmmbib_event *ev;
	unsigned long flags;
	unsigned int len;
	bool kick;

	spin_lock_irqsave(&eq->lock, flags);
	do {
		virtqueue_disable_cb(vq);
		while ((ev = virtqueue_get_buf(vq, &len))) {
			if (len < sizeof(*ev))
				dev_err_ratelimited(vmmbib_eventq_dev(dev),
						    "event of %u bytes ignored\n",
						    len);
			else
				vmmbib_handle_event(dev, ev);

			/* Cannot fail: the ring just gave this entry back. */
			if (vmmbib_eventq_post(eq, ev))
				dev_err_ratelimited(vmmbib_eventq_dev(dev),
						    "cannot repost an event buffer\n");
		}
	} while (!virtqueue_enable_cb(vq));
	kick = virtqueue_kick_prepare(vq);
	spin_unlock_irqrestore(&eq->lock, flags);

	if (kick)
		virtqueue_notify(vq);
}

/* After virtio_reset_device(), before the vq is deleted. */
void vmmbib_eventq_cleanup(struct vmmbib_dev *dev)
{
	struct vmmbib_eventq *eq = &dev->eventq;

	/* Unmaps the buffers; they are all part of eq->bufs. */
	while (virtqueue_detach_unused_buf(eq->vq))
		;
	kfree(eq->bufs);
	eq->bufs = NULL;
}
