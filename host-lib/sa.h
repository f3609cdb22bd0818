/*
 * The engine's subnet administrator (sa.c) and where the data path meets
 * it (requester.c): SubnAdm MADs a port sends to its SM, LID and QP1.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef VMMBIB_SA_H
#define VMMBIB_SA_H

#include "internal.h"

#define VMMBIB_MAD_SIZE             256
#define VMMBIB_MAD_HDR_SIZE         24
#define VMMBIB_MGMT_CLASS_SUBN_ADM  0x03

/*
 * The response to the SubnAdm MAD @req (VMMBIB_MAD_SIZE bytes, a copy)
 * that port @dev sent, into @resp (as many bytes).  Returns 0 if @resp is
 * to be sent back, -1 if the request is dropped.  Engine lock held.
 */
int vmmbib_sa_answer(struct vmmbib_dev *dev, const uint8_t *req,
                     uint8_t *resp);

#endif /* VMMBIB_SA_H */
