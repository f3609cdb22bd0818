// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * vmmbypass-ib: a virtio RDMA device whose data path bypasses the VMM.
 *
 * This file is the virtio driver: it checks the device's identity,
 * sets up the controlq and the eventq, creates the kernel's own device
 * context and registers the ib_device "vmmbib%d" with ib_core.
 */

#include <linux/io.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/version.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <rdma/ib_verbs.h>

#include "vmmbib.h"

/* The largest command of ABI version 1; every device must accept it. */
#define VMMBIB_MIN_CMD_SIZE \
	(sizeof(struct vmmbib_cmd_hdr) + sizeof(struct vmmbib_cmd_modify_qp))

static const struct virtio_device_id vmmbib_id_table[] = {
	{ VMMBIB_VIRTIO_ID, VIRTIO_DEV_ANY_ID },
	{ 0 },
};

/*
 * Negotiated so that query_device reports only what both sides do; the
 * verbs that use them come with QPs and SRQs.
 */
static const unsigned int vmmbib_features[] = {
	VMMBIB_F_SRQ,
	VMMBIB_F_ATOMIC,
	VMMBIB_F_UD,
};

/*
 * Refuses anything but a vmmbypass-ib device of our ABI version: virtio
 * ID 42 is only reserved for "RDMA device", and its config is ours to
 * define.  Keeps what the driver needs from the config in @dev.
 */
static int vmmbib_check_config(struct vmmbib_dev *dev, u32 *max_cmd_size)
{
	struct virtio_device *vdev = dev->vdev;
	u32 magic, uar_slot_size, event_size;
	u16 abi_version;

	virtio_cread_le(vdev, struct vmmbib_config, magic, &magic);
	if (magic != VMMBIB_MAGIC) {
		dev_err(&vdev->dev,
			"not a vmmbypass-ib device: config magic %#x, expected %#x\n",
			magic, VMMBIB_MAGIC);
		return -ENODEV;
	}

	virtio_cread_le(vdev, struct vmmbib_config, abi_version, &abi_version);
	if (abi_version != VMMBIB_ABI_VERSION) {
		dev_err(&vdev->dev,
			"device ABI version %u, this driver speaks version %u: use a matching driver\n",
			abi_version, VMMBIB_ABI_VERSION);
		return -ENODEV;
	}

	virtio_cread_le(vdev, struct vmmbib_config, num_ports, &dev->num_ports);
	virtio_cread_le(vdev, struct vmmbib_config, uar_slots, &dev->uar_slots);
	virtio_cread_le(vdev, struct vmmbib_config, uar_slot_size,
			&uar_slot_size);
	virtio_cread_le(vdev, struct vmmbib_config, max_cmd_size, max_cmd_size);
	virtio_cread_le(vdev, struct vmmbib_config, event_size, &event_size);

	if (dev->num_ports != 1 || !dev->uar_slots ||
	    uar_slot_size != VMMBIB_UAR_SLOT_SIZE ||
	    *max_cmd_size < VMMBIB_MIN_CMD_SIZE ||
	    event_size != sizeof(struct vmmbib_event)) {
		dev_err(&vdev->dev,
			"bad device config: %u ports (need 1), %u UAR slots of %u bytes (need >= 1 of %u), %u-byte commands (need >= %zu), %u-byte events (need %zu)\n",
			dev->num_ports, dev->uar_slots, uar_slot_size,
			VMMBIB_UAR_SLOT_SIZE, *max_cmd_size, VMMBIB_MIN_CMD_SIZE,
			event_size, sizeof(struct vmmbib_event));
		return -EINVAL;
	}
	return 0;
}

static int vmmbib_find_vqs(struct virtio_device *vdev,
			   struct virtqueue *vqs[VMMBIB_NUM_VQS])
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 11, 0)
	struct virtqueue_info vqs_info[VMMBIB_NUM_VQS] = {
		[VMMBIB_VQ_CONTROL] = { "control", vmmbib_ctrlq_done },
		[VMMBIB_VQ_EVENT] = { "event", vmmbib_eventq_done },
	};

	return virtio_find_vqs(vdev, VMMBIB_NUM_VQS, vqs, vqs_info, NULL);
#else
	/* Before 6.11, find_vqs took parallel arrays. */
	vq_callback_t *callbacks[VMMBIB_NUM_VQS] = {
		[VMMBIB_VQ_CONTROL] = vmmbib_ctrlq_done,
		[VMMBIB_VQ_EVENT] = vmmbib_eventq_done,
	};
	static const char * const names[VMMBIB_NUM_VQS] = {
		[VMMBIB_VQ_CONTROL] = "control",
		[VMMBIB_VQ_EVENT] = "event",
	};

	return virtio_find_vqs(vdev, VMMBIB_NUM_VQS, vqs, callbacks, names,
			       NULL);
#endif
}

static int vmmbib_init_vqs(struct vmmbib_dev *dev, u32 max_cmd_size)
{
	struct virtio_device *vdev = dev->vdev;
	struct virtqueue *vqs[VMMBIB_NUM_VQS];
	int err;

	err = vmmbib_find_vqs(vdev, vqs);
	if (err) {
		dev_err(&vdev->dev, "cannot set up the virtqueues: %d\n", err);
		return err;
	}

	vmmbib_ctrlq_init(dev, vqs[VMMBIB_VQ_CONTROL], max_cmd_size);
	err = vmmbib_eventq_init(dev, vqs[VMMBIB_VQ_EVENT]);
	if (err) {
		/* The device has the queues enabled: only a reset undoes that. */
		virtio_reset_device(vdev);
		vdev->config->del_vqs(vdev);
		return err;
	}
	return 0;
}

/* After virtio_reset_device(): nothing runs on the queues any more. */
static void vmmbib_del_vqs(struct vmmbib_dev *dev)
{
	vmmbib_ctrlq_cleanup(dev);
	vmmbib_eventq_cleanup(dev);
	dev->vdev->config->del_vqs(dev->vdev);
}

/* The device's limits, less what the negotiated features leave out. */
static int vmmbib_query_device_attr(struct vmmbib_dev *dev)
{
	struct vmmbib_dev_attr *attr = &dev->attr;
	int err;

	err = vmmbib_cmd_query_device(dev, attr);
	if (err) {
		dev_err(&dev->vdev->dev, "QUERY_DEVICE failed: %d\n", err);
		return err;
	}

	if (attr->phys_port_cnt != dev->num_ports) {
		dev_err(&dev->vdev->dev,
			"QUERY_DEVICE reports %u ports, the config %u\n",
			attr->phys_port_cnt, dev->num_ports);
		return -EPROTO;
	}

	if (!virtio_has_feature(dev->vdev, VMMBIB_F_SRQ)) {
		attr->max_srq = 0;
		attr->max_srq_wr = 0;
		attr->max_srq_sge = 0;
	}
	if (!virtio_has_feature(dev->vdev, VMMBIB_F_ATOMIC))
		attr->atomic_cap = VMMBIB_ATOMIC_NONE;
	return 0;
}

/*
 * Maps the kernel context's UAR slot: its doorbell page as memory shared
 * with the engine (cacheable, as docs/spec.md allows), its kick page
 * uncached.  The window itself is found by its shared memory capability.
 */
static int vmmbib_map_uar(struct vmmbib_dev *dev)
{
	struct virtio_shm_region shm;
	phys_addr_t slot;
	u32 ring_size;

	if (!virtio_get_shm_region(dev->vdev, &shm, VMMBIB_SHM_ID_UAR)) {
		dev_err(&dev->vdev->dev,
			"the device has no UAR window (shared memory region %u)\n",
			VMMBIB_SHM_ID_UAR);
		return -ENODEV;
	}
	if (shm.len < (u64)dev->uar_slots * VMMBIB_UAR_SLOT_SIZE) {
		dev_err(&dev->vdev->dev,
			"UAR window of %llu bytes is too small for %u slots\n",
			shm.len, dev->uar_slots);
		return -EINVAL;
	}
	dev->uar.base = shm.addr;
	dev->uar.len = shm.len;

	slot = shm.addr + (phys_addr_t)dev->kctx_uar_slot * VMMBIB_UAR_SLOT_SIZE;
	dev->uar.db = memremap(slot + VMMBIB_UAR_DB_PAGE_OFFSET,
			       VMMBIB_PAGE_SIZE, MEMREMAP_WB);
	if (!dev->uar.db)
		return -ENOMEM;
	dev->uar.kick = ioremap(slot + VMMBIB_UAR_KICK_PAGE_OFFSET,
				VMMBIB_PAGE_SIZE);
	if (!dev->uar.kick) {
		memunmap(dev->uar.db);
		dev->uar.db = NULL;
		return -ENOMEM;
	}

	ring_size = le32_to_cpu(READ_ONCE(*(__le32 *)(dev->uar.db +
						      VMMBIB_DB_RING_SIZE)));
	if (ring_size != VMMBIB_DB_RING_ENTRIES) {
		dev_err(&dev->vdev->dev,
			"doorbell ring of %u entries, expected %u\n",
			ring_size, VMMBIB_DB_RING_ENTRIES);
		iounmap(dev->uar.kick);
		memunmap(dev->uar.db);
		dev->uar.db = NULL;
		dev->uar.kick = NULL;
		return -EPROTO;
	}
	return 0;
}

static void vmmbib_unmap_uar(struct vmmbib_dev *dev)
{
	if (dev->uar.kick)
		iounmap(dev->uar.kick);
	if (dev->uar.db)
		memunmap(dev->uar.db);
	dev->uar.kick = NULL;
	dev->uar.db = NULL;
}

static int vmmbib_register_ibdev(struct vmmbib_dev *dev)
{
	struct ib_device *ibdev = &dev->ibdev;
	/*
	 * The PCI function: ib_core maps DMA through it, and it is the
	 * parent, so the ib_device's sysfs "device" has the PCI modalias by
	 * which the rdma-core provider finds us.
	 */
	struct device *parent = dev->vdev->dev.parent;
	int err;

	ibdev->node_type = RDMA_NODE_IB_CA;
	ibdev->node_guid = dev->attr.node_guid;
	ibdev->phys_port_cnt = dev->num_ports;
	ibdev->num_comp_vectors = 1;
	ibdev->dev.parent = parent;
	strscpy(ibdev->node_desc, "vmmbypass-ib", sizeof(ibdev->node_desc));
	/* ib_mad, ib_cm, rdma_cm and ULPs use the kernel verbs too. */
	ibdev->kverbs_provider = true;
	ib_set_device_ops(ibdev, &vmmbib_dev_ops);
	ib_set_device_ops(ibdev, &vmmbib_obj_ops);
	ib_set_device_ops(ibdev, &vmmbib_kverbs_ops);

	err = ib_register_device(ibdev, "vmmbib%d", parent);
	if (err) {
		dev_err(&dev->vdev->dev, "cannot register the ib_device: %d\n",
			err);
		return err;
	}

	vmmbib_eventq_set_dispatch(dev, true);
	return 0;
}

static void vmmbib_unregister_ibdev(struct vmmbib_dev *dev)
{
	/* No more events for ib_core; unregistering flushes those queued. */
	vmmbib_eventq_set_dispatch(dev, false);
	ib_unregister_device(&dev->ibdev);
}

static int vmmbib_probe(struct virtio_device *vdev)
{
	struct vmmbib_dev *dev;
	u32 max_cmd_size;
	int err;

	/* The provider matches the PCI ID: other transports cannot work. */
	if (!vdev->dev.parent || !dev_is_pci(vdev->dev.parent)) {
		dev_err(&vdev->dev, "needs the virtio-pci transport\n");
		return -ENODEV;
	}

	dev = ib_alloc_device(vmmbib_dev, ibdev);
	if (!dev)
		return -ENOMEM;
	dev->vdev = vdev;
	vdev->priv = dev;
	xa_init_flags(&dev->cqs, XA_FLAGS_LOCK_IRQ);
	xa_init_flags(&dev->qps, XA_FLAGS_LOCK_IRQ);
	xa_init_flags(&dev->srqs, XA_FLAGS_LOCK_IRQ);
	xa_init_flags(&dev->kqps, XA_FLAGS_LOCK_IRQ);

	err = vmmbib_check_config(dev, &max_cmd_size);
	if (err)
		goto err_dealloc;

	err = vmmbib_init_vqs(dev, max_cmd_size);
	if (err)
		goto err_dealloc;

	virtio_device_ready(vdev);

	err = vmmbib_eventq_start(dev);
	if (err)
		goto err_reset;

	err = vmmbib_query_device_attr(dev);
	if (err)
		goto err_reset;

	err = vmmbib_cmd_create_ucontext(dev, &dev->kctx_handle,
					 &dev->kctx_uar_slot);
	if (err) {
		dev_err(&vdev->dev, "cannot create the kernel context: %d\n",
			err);
		goto err_reset;
	}

	err = vmmbib_map_uar(dev);
	if (err)
		goto err_destroy_kctx;

	err = vmmbib_register_ibdev(dev);
	if (err)
		goto err_unmap_uar;

	dev_info(&vdev->dev, "%s: node GUID %016llx, UAR slots %u\n",
		 dev_name(&dev->ibdev.dev), be64_to_cpu(dev->attr.node_guid),
		 dev->uar_slots);
	return 0;

err_unmap_uar:
	vmmbib_unmap_uar(dev);
err_destroy_kctx:
	vmmbib_cmd_destroy_ucontext(dev, dev->kctx_handle);
err_reset:
	virtio_reset_device(vdev);
	vmmbib_del_vqs(dev);
err_dealloc:
	vdev->priv = NULL;
	ib_dealloc_device(&dev->ibdev);
	return err;
}

static void vmmbib_remove(struct virtio_device *vdev)
{
	struct vmmbib_dev *dev = vdev->priv;
	int err;

	vmmbib_unregister_ibdev(dev);

	/* A failed device is reset below; that destroys the context too. */
	err = vmmbib_cmd_destroy_ucontext(dev, dev->kctx_handle);
	if (err)
		dev_warn(&vdev->dev, "kernel context not destroyed: %d\n",
			 err);

	virtio_reset_device(vdev);
	vmmbib_unmap_uar(dev);
	vmmbib_del_vqs(dev);
	vdev->priv = NULL;
	ib_dealloc_device(&dev->ibdev);
}

static struct virtio_driver vmmbib_driver = {
	.driver.name = KBUILD_MODNAME,
	.id_table = vmmbib_id_table,
	.feature_table = vmmbib_features,
	.feature_table_size = ARRAY_SIZE(vmmbib_features),
	.probe = vmmbib_probe,
	.remove = vmmbib_remove,
};

module_virtio_driver(vmmbib_driver);

MODULE_DEVICE_TABLE(virtio, vmmbib_id_table);
MODULE_DESCRIPTION("vmmbypass-ib virtio RDMA device driver");
MODULE_LICENSE("Dual BSD/GPL");
/* Without ib_uverbs there is no /dev/infiniband/uverbs* for user space. */
MODULE_SOFTDEP("pre: ib_uverbs");
