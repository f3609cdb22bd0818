/*
 * The verbs backend (docs/design-verbs.md): guest objects get host
 * libibverbs objects, the engine relays WQEs to host QPs, and a
 * completion thread turns host completions into guest CQEs.
 *
 * The soft engine's command handlers call these hooks only when
 * dev->verbs is set, after their own checks passed; each returns a
 * VMMBIB_STATUS_* and leaves the host side unchanged when it fails.
 * Engine lock held in every hook but open and close.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef VMMBIB_VERBS_H
#define VMMBIB_VERBS_H

#include "internal.h"

/*
 * Weak: the backend is in libvmmbib-verbs (host-lib/meson.build), which a
 * program links whole or not at all, so libvmmbib itself never needs
 * libibverbs.  Without it the hooks are NULL and never called: no device
 * gets dev->verbs.
 */
#define VMMBIB_VERBS_HOOK __attribute__((weak))

/* Open the host device @dev->cfg names; false with a sentence in @err. */
VMMBIB_VERBS_HOOK
bool vmmbib_verbs_open(struct vmmbib_dev *dev, char *err, size_t err_len);
/* Stop the completion thread, close the device; host objects are gone. */
VMMBIB_VERBS_HOOK
void vmmbib_verbs_close(struct vmmbib_dev *dev);

VMMBIB_VERBS_HOOK
int vmmbib_verbs_pd_create(struct vmmbib_dev *dev, struct vmmbib_pd *pd);
VMMBIB_VERBS_HOOK
void vmmbib_verbs_pd_destroy(struct vmmbib_dev *dev, struct vmmbib_pd *pd);
/* Register @mr with the host; writes the host rkey into the reply. */
VMMBIB_VERBS_HOOK
int vmmbib_verbs_mr_reg(struct vmmbib_cmd_ctx *c, struct vmmbib_mr *mr);
VMMBIB_VERBS_HOOK
void vmmbib_verbs_mr_dereg(struct vmmbib_dev *dev, struct vmmbib_mr *mr);
VMMBIB_VERBS_HOOK
int vmmbib_verbs_cq_create(struct vmmbib_dev *dev, struct vmmbib_cq *cq);
VMMBIB_VERBS_HOOK
int vmmbib_verbs_cq_resize(struct vmmbib_dev *dev, struct vmmbib_cq *cq,
                           uint32_t cqe);
VMMBIB_VERBS_HOOK
void vmmbib_verbs_cq_destroy(struct vmmbib_dev *dev, struct vmmbib_cq *cq);
/* Sets qp->qpn to the host QPN. */
VMMBIB_VERBS_HOOK
int vmmbib_verbs_qp_create(struct vmmbib_dev *dev, struct vmmbib_qp *qp);
/* Before the guest QP changes: the same modify on the host QP. */
VMMBIB_VERBS_HOOK
int vmmbib_verbs_qp_modify(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                           uint32_t mask, const struct vmmbib_qp_attr *attr);
VMMBIB_VERBS_HOOK
void vmmbib_verbs_qp_destroy(struct vmmbib_dev *dev, struct vmmbib_qp *qp);

VMMBIB_VERBS_HOOK
int vmmbib_verbs_srq_create(struct vmmbib_dev *dev, struct vmmbib_srq *srq);
/* SRQ_LIMIT: arm the host SRQ's limit event. */
VMMBIB_VERBS_HOOK
int vmmbib_verbs_srq_modify(struct vmmbib_dev *dev, struct vmmbib_srq *srq,
                            uint32_t limit);
VMMBIB_VERBS_HOOK
void vmmbib_verbs_srq_destroy(struct vmmbib_dev *dev, struct vmmbib_srq *srq);
/* The guest's SRQ producer moved: post the new receives. */
VMMBIB_VERBS_HOOK
void vmmbib_verbs_post_srq_recvs(struct vmmbib_dev *dev,
                                 struct vmmbib_srq *srq);
/* A host AH for the guest's address vector, resolved to the host port. */
VMMBIB_VERBS_HOOK
int vmmbib_verbs_ah_create(struct vmmbib_dev *dev, struct vmmbib_ah *ah);
VMMBIB_VERBS_HOOK
void vmmbib_verbs_ah_destroy(struct vmmbib_dev *dev, struct vmmbib_ah *ah);

/* Data path: relay up to @budget send WQEs of @qp (in RTS). */
VMMBIB_VERBS_HOOK
unsigned int vmmbib_verbs_run_sq(struct vmmbib_dev *dev, struct vmmbib_qp *qp,
                                 unsigned int budget);
/* The guest's RQ producer moved: post the new receives. */
VMMBIB_VERBS_HOOK
void vmmbib_verbs_post_recvs(struct vmmbib_dev *dev, struct vmmbib_qp *qp);
/* @qp goes to ERR: the host QP too, and what it holds completes first. */
VMMBIB_VERBS_HOOK
void vmmbib_verbs_qp_to_error(struct vmmbib_dev *dev, struct vmmbib_qp *qp);

/* Whether this program has the verbs backend. */
static inline bool vmmbib_verbs_built(void)
{
    return vmmbib_verbs_open != NULL;
}

#endif /* VMMBIB_VERBS_H */
