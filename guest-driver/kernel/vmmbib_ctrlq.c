// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The controlq engine.
 *
 * Every privileged verb is one controlq request: a device-readable buffer
 * (struct vmmbib_cmd_hdr, then the command's body) and a device-writable
 * one (struct vmmbib_resp_hdr, then the reply's body).  The device may
 * complete requests in any order, so each request carries its own
 * completion and any number of callers may wait at once.
 *
 * A request that is not answered in time marks the queue failed: nothing
 * is posted any more and every waiter gets an error.  Requests still in
 * the ring then belong to the device until it is reset, so a request is
 * reference counted (its waiter, and the device while posted) and freed by
 * whichever lets go last.
 */

#include <linux/completion.h>
#include <linux/delay.h>
#include <linux/jiffies.h>
#include <linux/ktime.h>
#include <linux/moduleparam.h>
#include <linux/refcount.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/virtio.h>

#include "vmmbib.h"

/* Generous: a TCG-emulated host can take seconds for a large registration. */
static unsigned int cmd_timeout_ms = 30000;
module_param(cmd_timeout_ms, uint, 0644);
MODULE_PARM_DESC(cmd_timeout_ms,
		 "Time a controlq command may take before the device is considered failed, in ms (default 30000)");

/* A request unanswered this long gets its queue polled and re-notified. */
#define VMMBIB_CTRLQ_NUDGE_JIFFIES	HZ

struct vmmbib_ctrlq_req {
	struct list_head node;		/* on ctrlq->inflight while posted */
	refcount_t ref;			/* the waiter's; the device's if posted */
	struct completion done;
	int result;			/* 0: the device replied; else -errno */
	unsigned int used_len;		/* bytes the device wrote to resp */
	/*
	 * The two DMA buffers are allocations of their own: DMA-safe, and
	 * sharing no cache line with the fields above, which the CPU writes
	 * while the device owns the buffers.
	 */
	struct vmmbib_cmd_hdr *cmd;
	size_t cmd_size;
	struct vmmbib_resp_hdr *resp;
	size_t resp_size;
};

static struct device *vmmbib_ctrlq_dev(struct vmmbib_dev *dev)
{
	return &dev->vdev->dev;
}

void vmmbib_ctrlq_init(struct vmmbib_dev *dev, struct virtqueue *vq,
		       u32 max_cmd_size)
{
	struct vmmbib_ctrlq *cq = &dev->ctrlq;

	cq->vq = vq;
	spin_lock_init(&cq->lock);
	INIT_LIST_HEAD(&cq->inflight);
	init_waitqueue_head(&cq->space_wait);
	cq->max_cmd_size = max_cmd_size;
	/*
	 * Two descriptors per request when the ring has no indirect
	 * descriptors; with them we could post more, but the control path
	 * does not need the depth.
	 */
	cq->max_inflight = virtqueue_get_vring_size(vq) / 2;
}

static void vmmbib_ctrlq_req_free(struct vmmbib_ctrlq_req *req)
{
	kfree(req->resp);
	kfree(req->cmd);
	kfree(req);
}

static void vmmbib_ctrlq_req_put(struct vmmbib_ctrlq_req *req)
{
	if (refcount_dec_and_test(&req->ref))
		vmmbib_ctrlq_req_free(req);
}

static struct vmmbib_ctrlq_req *
vmmbib_ctrlq_req_alloc(u16 opcode, u32 ctx_handle, const void *body,
		       size_t body_len, size_t reply_len, gfp_t gfp)
{
	struct vmmbib_ctrlq_req *req;

	req = kzalloc(sizeof(*req), gfp);
	if (!req)
		return NULL;

	req->cmd_size = sizeof(*req->cmd) + body_len;
	req->cmd = kmalloc(req->cmd_size, gfp);
	req->resp_size = sizeof(*req->resp) + reply_len;
	req->resp = kzalloc(req->resp_size, gfp);
	if (!req->cmd || !req->resp) {
		vmmbib_ctrlq_req_free(req);
		return NULL;
	}

	req->cmd->opcode = cpu_to_le16(opcode);
	req->cmd->flags = 0;
	req->cmd->ctx_handle = cpu_to_le32(ctx_handle);
	if (body_len)
		memcpy(req->cmd + 1, body, body_len);

	INIT_LIST_HEAD(&req->node);
	refcount_set(&req->ref, 1);
	init_completion(&req->done);
	return req;
}

/* Jiffies left until @deadline, 0 once it has passed. */
static unsigned long vmmbib_ctrlq_time_left(unsigned long deadline)
{
	return time_before(jiffies, deadline) ? deadline - jiffies : 0;
}

static bool vmmbib_ctrlq_has_room(struct vmmbib_ctrlq *cq)
{
	unsigned long flags;
	bool room;

	spin_lock_irqsave(&cq->lock, flags);
	room = cq->failed || cq->num_inflight < cq->max_inflight;
	spin_unlock_irqrestore(&cq->lock, flags);
	return room;
}

/*
 * Hands @req to the device, waiting for ring space until @deadline; with
 * @atomic, a full ring is -EAGAIN instead.
 */
static int vmmbib_ctrlq_post(struct vmmbib_dev *dev,
			     struct vmmbib_ctrlq_req *req,
			     unsigned long deadline, bool atomic)
{
	struct vmmbib_ctrlq *cq = &dev->ctrlq;
	struct scatterlist cmd_sg, resp_sg;
	struct scatterlist *sgs[] = { &cmd_sg, &resp_sg };
	unsigned long flags;
	bool kick = false;
	int err;

	sg_init_one(&cmd_sg, req->cmd, req->cmd_size);
	sg_init_one(&resp_sg, req->resp, req->resp_size);

	spin_lock_irqsave(&cq->lock, flags);
	while (!cq->failed && cq->num_inflight >= cq->max_inflight) {
		if (atomic) {
			err = -EAGAIN;
			goto out_unlock;
		}
		spin_unlock_irqrestore(&cq->lock, flags);
		if (!wait_event_timeout(cq->space_wait,
					vmmbib_ctrlq_has_room(cq),
					vmmbib_ctrlq_time_left(deadline))) {
			vmmbib_ctrlq_fail(dev, "no request completed in time");
			return -ETIMEDOUT;
		}
		spin_lock_irqsave(&cq->lock, flags);
	}

	if (cq->failed) {
		err = -EIO;
		goto out_unlock;
	}

	/* Under a spinlock: an indirect table, if any, is GFP_ATOMIC. */
	err = virtqueue_add_sgs(cq->vq, sgs, 1, 1, req, GFP_ATOMIC);
	if (err) {
		dev_err_ratelimited(vmmbib_ctrlq_dev(dev),
				    "controlq: cannot post a request: %d\n",
				    err);
		goto out_unlock;
	}
	list_add_tail(&req->node, &cq->inflight);
	cq->num_inflight++;
	refcount_inc(&req->ref);	/* the device's reference */
	kick = virtqueue_kick_prepare(cq->vq);

out_unlock:
	spin_unlock_irqrestore(&cq->lock, flags);
	/* The notification may trap to the host: not under the lock. */
	if (kick)
		virtqueue_notify(cq->vq);
	return err;
}

/* Completes what the device has answered; returns how many requests. */
static unsigned int vmmbib_ctrlq_reap(struct virtqueue *vq)
{
	struct vmmbib_dev *dev = vq->vdev->priv;
	struct vmmbib_ctrlq *cq = &dev->ctrlq;
	struct vmmbib_ctrlq_req *req;
	unsigned int len, reaped = 0;
	unsigned long flags;

	spin_lock_irqsave(&cq->lock, flags);
	do {
		virtqueue_disable_cb(vq);
		while ((req = virtqueue_get_buf(vq, &len))) {
			list_del_init(&req->node);
			cq->num_inflight--;
			/* After a failure the waiter has been answered. */
			if (!cq->failed) {
				req->used_len = len;
				req->result = 0;
				complete(&req->done);
			}
			vmmbib_ctrlq_req_put(req);
			reaped++;
		}
	} while (!virtqueue_enable_cb(vq));
	spin_unlock_irqrestore(&cq->lock, flags);

	wake_up(&cq->space_wait);
	return reaped;
}

/* The virtqueue callback; runs in interrupt context. */
void vmmbib_ctrlq_done(struct virtqueue *vq)
{
	vmmbib_ctrlq_reap(vq);
}

/*
 * A request without a reply for a while: take any reply that came without
 * its interrupt, and notify the device again in case our notification was
 * lost.  Both are harmless when nothing was lost, and either one found
 * missing is worth a line in the log: the guest suite once saw a command
 * go unanswered although the device had served every request it popped.
 */
static void vmmbib_ctrlq_nudge(struct vmmbib_dev *dev, u16 opcode)
{
	struct vmmbib_ctrlq *cq = &dev->ctrlq;

	/*
	 * The virtio core found the ring corrupt (a used id naming no
	 * request, say): no reply can come any more.
	 */
	if (virtqueue_is_broken(cq->vq)) {
		vmmbib_ctrlq_fail(dev, "the device corrupted the ring");
		return;
	}
	if (vmmbib_ctrlq_reap(cq->vq))
		dev_warn_ratelimited(vmmbib_ctrlq_dev(dev),
				     "command %u: its reply came without an interrupt\n",
				     opcode);
	else
		virtqueue_notify(cq->vq);
}

/*
 * Marks the queue failed and answers every waiter with -EIO.  The requests
 * stay in the ring, owned by the device, until vmmbib_ctrlq_cleanup().
 */
void vmmbib_ctrlq_fail(struct vmmbib_dev *dev, const char *reason)
{
	struct vmmbib_ctrlq *cq = &dev->ctrlq;
	struct vmmbib_ctrlq_req *req;
	unsigned long flags;

	spin_lock_irqsave(&cq->lock, flags);
	if (!cq->failed) {
		cq->failed = true;
		dev_err(vmmbib_ctrlq_dev(dev),
			"controlq failed (%s): the device is unusable until it is reset\n",
			reason);
		list_for_each_entry(req, &cq->inflight, node) {
			req->result = -EIO;
			complete(&req->done);
		}
	}
	spin_unlock_irqrestore(&cq->lock, flags);

	wake_up_all(&cq->space_wait);
}

/* The device's status as -errno (docs/spec.md): the only such mapping. */
static int vmmbib_status_to_errno(u16 status)
{
	switch (status) {
	case VMMBIB_STATUS_OK:
		return 0;
	case VMMBIB_STATUS_BAD_OPCODE:
	case VMMBIB_STATUS_NOT_SUPPORTED:
		return -EOPNOTSUPP;
	case VMMBIB_STATUS_BAD_LENGTH:
	case VMMBIB_STATUS_INVALID:
	case VMMBIB_STATUS_BAD_HANDLE:
	case VMMBIB_STATUS_BAD_STATE:
		return -EINVAL;
	case VMMBIB_STATUS_NOT_OWNER:
		return -EPERM;
	case VMMBIB_STATUS_BUSY:
		return -EBUSY;
	case VMMBIB_STATUS_NO_RESOURCES:
		return -ENOMEM;
	case VMMBIB_STATUS_BAD_ADDRESS:
		return -EFAULT;
	case VMMBIB_STATUS_DEVICE_ERROR:
	default:
		return -EIO;
	}
}

/* Checks the reply to a completed @req that should carry @reply_len bytes. */
/* Checks the device's reply and copies its body to @reply (if any). */
static int vmmbib_ctrlq_take_reply(struct vmmbib_dev *dev,
				   const struct vmmbib_ctrlq_req *req,
				   u16 opcode, void *reply, size_t reply_len)
{
	u16 status;
	u32 length;
	int err;

	if (req->used_len < sizeof(*req->resp)) {
		dev_err_ratelimited(vmmbib_ctrlq_dev(dev),
				    "command %u: reply of %u bytes has no header\n",
				    opcode, req->used_len);
		return -EPROTO;
	}

	status = le16_to_cpu(req->resp->status);
	err = vmmbib_status_to_errno(status);
	/* BAD_LENGTH: this driver and the device disagree on the ABI. */
	if (err == -EIO || status == VMMBIB_STATUS_BAD_LENGTH)
		dev_err_ratelimited(vmmbib_ctrlq_dev(dev),
				    "command %u failed with device status %u\n",
				    opcode, status);
	else if (err)
		dev_dbg(vmmbib_ctrlq_dev(dev),
			"command %u: device status %u\n", opcode, status);
	if (err)
		return err;

	/* Version 1 replies have one size per command. */
	length = le32_to_cpu(req->resp->length);
	if (length != reply_len ||
	    length > req->used_len - sizeof(*req->resp)) {
		dev_err_ratelimited(vmmbib_ctrlq_dev(dev),
				    "command %u: reply body of %u bytes (%u written), expected %zu\n",
				    opcode, length, req->used_len, reply_len);
		return -EPROTO;
	}
	if (reply_len)
		memcpy(reply, req->resp + 1, reply_len);
	return 0;
}

/**
 * vmmbib_ctrlq_exec - run one device command and wait for its reply
 * @dev: the device
 * @opcode: enum vmmbib_cmd_opcode
 * @ctx_handle: the issuing context, 0 for none
 * @body: the command body after struct vmmbib_cmd_hdr, or NULL
 * @body_len: its size
 * @reply: receives the reply body after struct vmmbib_resp_hdr, or NULL
 * @reply_len: its size; a successful reply must have exactly this size
 *
 * Sleeps.  Safe to call concurrently.  Buffers may live on the stack: the
 * device only sees copies.
 *
 * Return: 0, the device status as -errno, -EPROTO for a malformed reply,
 * -ETIMEDOUT if the device did not answer in time, -EIO once the queue
 * has failed, or -ENOMEM.
 */
int vmmbib_ctrlq_exec(struct vmmbib_dev *dev, u16 opcode, u32 ctx_handle,
		      const void *body, size_t body_len,
		      void *reply, size_t reply_len)
{
	unsigned long timeout = msecs_to_jiffies(READ_ONCE(cmd_timeout_ms));
	unsigned long deadline = jiffies + timeout;
	struct vmmbib_ctrlq *cq = &dev->ctrlq;
	struct vmmbib_ctrlq_req *req;
	bool timed_out = false;
	int err;

	might_sleep();

	if (body_len > cq->max_cmd_size - sizeof(struct vmmbib_cmd_hdr)) {
		dev_err(vmmbib_ctrlq_dev(dev),
			"command %u: %zu bytes of body exceed the device's %u-byte requests\n",
			opcode, body_len, cq->max_cmd_size);
		return -EINVAL;
	}

	req = vmmbib_ctrlq_req_alloc(opcode, ctx_handle, body, body_len,
				     reply_len, GFP_KERNEL);
	if (!req)
		return -ENOMEM;

	err = vmmbib_ctrlq_post(dev, req, deadline, false);
	if (err)
		goto out_put;

	/* In slices: a lost notification is retried, not waited out. */
	while (!wait_for_completion_timeout(&req->done,
					    min(vmmbib_ctrlq_time_left(deadline),
						VMMBIB_CTRLQ_NUDGE_JIFFIES))) {
		if (time_before(jiffies, deadline)) {
			vmmbib_ctrlq_nudge(dev, opcode);
			continue;
		}
		timed_out = true;
		/* Completes this request too, unless it just made it. */
		vmmbib_ctrlq_fail(dev, "a command timed out");
		wait_for_completion(&req->done);
		break;
	}

	err = req->result;
	if (err) {
		if (timed_out) {
			dev_err_ratelimited(vmmbib_ctrlq_dev(dev),
					    "command %u: no reply within %u ms\n",
					    opcode, jiffies_to_msecs(timeout));
			err = -ETIMEDOUT;
		}
		goto out_put;
	}

	err = vmmbib_ctrlq_take_reply(dev, req, opcode, reply, reply_len);

out_put:
	vmmbib_ctrlq_req_put(req);
	return err;
}

/**
 * vmmbib_ctrlq_exec_atomic - vmmbib_ctrlq_exec for a caller that cannot sleep
 * @dev: the device
 * @opcode: enum vmmbib_cmd_opcode
 * @ctx_handle: the issuing context
 * @body: the command body, or NULL
 * @body_len: its size
 * @reply: receives the reply body, or NULL
 * @reply_len: its size
 *
 * ib_cm creates and destroys its address handles under a spinlock.  The
 * request is posted only if the ring has room (-EAGAIN otherwise), and the
 * reply is polled for: the device executes commands on a host thread of
 * its own, so it progresses while this CPU spins.
 *
 * Return: as vmmbib_ctrlq_exec().
 */
int vmmbib_ctrlq_exec_atomic(struct vmmbib_dev *dev, u16 opcode,
			     u32 ctx_handle, const void *body, size_t body_len,
			     void *reply, size_t reply_len)
{
	u64 deadline = ktime_get_ns() +
		       (u64)READ_ONCE(cmd_timeout_ms) * NSEC_PER_MSEC;
	struct vmmbib_ctrlq *cq = &dev->ctrlq;
	struct vmmbib_ctrlq_req *req;
	int err;

	if (body_len > cq->max_cmd_size - sizeof(struct vmmbib_cmd_hdr))
		return -EINVAL;
	req = vmmbib_ctrlq_req_alloc(opcode, ctx_handle, body, body_len,
				     reply_len, GFP_ATOMIC);
	if (!req)
		return -ENOMEM;

	err = vmmbib_ctrlq_post(dev, req, 0, true);
	if (err)
		goto out_put;
	while (!completion_done(&req->done)) {
		if (ktime_get_ns() > deadline) {
			/* Completes this request too, unless it just made it. */
			vmmbib_ctrlq_fail(dev, "a command timed out");
			break;
		}
		/* No reply can come: do not spin until the deadline. */
		if (virtqueue_is_broken(cq->vq)) {
			vmmbib_ctrlq_fail(dev, "the device corrupted the ring");
			break;
		}
		/* Reaps completed requests, ours included, as the callback. */
		vmmbib_ctrlq_reap(cq->vq);
		udelay(1);
	}
	err = req->result;
	if (!err)
		err = vmmbib_ctrlq_take_reply(dev, req, opcode, reply, reply_len);

out_put:
	vmmbib_ctrlq_req_put(req);
	return err;
}

/*
 * Takes back what the device still holds.  Only after virtio_reset_device(),
 * which also waits for running callbacks, and before the vq is deleted.
 */
void vmmbib_ctrlq_cleanup(struct vmmbib_dev *dev)
{
	struct vmmbib_ctrlq *cq = &dev->ctrlq;
	struct vmmbib_ctrlq_req *req;
	unsigned long flags;

	spin_lock_irqsave(&cq->lock, flags);
	while ((req = virtqueue_detach_unused_buf(cq->vq))) {
		list_del_init(&req->node);
		cq->num_inflight--;
		if (!cq->failed) {
			req->result = -EIO;
			complete(&req->done);
		}
		vmmbib_ctrlq_req_put(req);
	}
	cq->failed = true;
	WARN_ON(!list_empty(&cq->inflight));
	spin_unlock_irqrestore(&cq->lock, flags);

	wake_up_all(&cq->space_wait);
}
