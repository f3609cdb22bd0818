/*
 * The QP state machine of IBA vol. 1 section 10.3 (figure 124) with the
 * attributes table 93 requires and allows for each RC and UD transition,
 * in the modify-QP attribute mask encoding.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <string.h>

#include "internal.h"

enum { TYPE_RC, TYPE_UD, NUM_TYPES };

struct transition {
    bool valid;
    uint32_t required[NUM_TYPES];
    uint32_t optional[NUM_TYPES];
};

#define S(x) VMMBIB_QPS_##x
#define M(x) VMMBIB_QP_##x

static const struct transition transitions[S(ERR) + 1][S(ERR) + 1] = {
    [S(RESET)][S(INIT)] = {
        .valid = true,
        .required = {
            [TYPE_RC] = M(PKEY_INDEX) | M(PORT) | M(ACCESS_FLAGS),
            [TYPE_UD] = M(PKEY_INDEX) | M(PORT) | M(QKEY),
        },
    },
    [S(INIT)][S(INIT)] = {
        .valid = true,
        .optional = {
            [TYPE_RC] = M(PKEY_INDEX) | M(PORT) | M(ACCESS_FLAGS),
            [TYPE_UD] = M(PKEY_INDEX) | M(PORT) | M(QKEY),
        },
    },
    [S(INIT)][S(RTR)] = {
        .valid = true,
        .required = {
            [TYPE_RC] = M(AV) | M(PATH_MTU) | M(DEST_QPN) | M(RQ_PSN) |
                        M(MAX_DEST_RD_ATOMIC) | M(MIN_RNR_TIMER),
        },
        .optional = {
            [TYPE_RC] = M(ALT_PATH) | M(ACCESS_FLAGS) | M(PKEY_INDEX),
            [TYPE_UD] = M(PKEY_INDEX) | M(QKEY),
        },
    },
    [S(RTR)][S(RTS)] = {
        .valid = true,
        .required = {
            [TYPE_RC] = M(SQ_PSN) | M(TIMEOUT) | M(RETRY_CNT) |
                        M(RNR_RETRY) | M(MAX_QP_RD_ATOMIC),
            [TYPE_UD] = M(SQ_PSN),
        },
        .optional = {
            [TYPE_RC] = M(CUR_STATE) | M(ALT_PATH) | M(ACCESS_FLAGS) |
                        M(MIN_RNR_TIMER) | M(PATH_MIG_STATE),
            [TYPE_UD] = M(CUR_STATE) | M(QKEY),
        },
    },
    [S(RTS)][S(RTS)] = {
        .valid = true,
        .optional = {
            [TYPE_RC] = M(CUR_STATE) | M(ACCESS_FLAGS) | M(ALT_PATH) |
                        M(PATH_MIG_STATE) | M(MIN_RNR_TIMER),
            [TYPE_UD] = M(CUR_STATE) | M(QKEY),
        },
    },
    [S(RTS)][S(SQD)] = {
        .valid = true,
        .optional = {
            [TYPE_RC] = M(EN_SQD_ASYNC_NOTIFY),
            [TYPE_UD] = M(EN_SQD_ASYNC_NOTIFY),
        },
    },
    [S(SQD)][S(RTS)] = {
        .valid = true,
        .optional = {
            [TYPE_RC] = M(CUR_STATE) | M(ALT_PATH) | M(ACCESS_FLAGS) |
                        M(MIN_RNR_TIMER) | M(PATH_MIG_STATE),
            [TYPE_UD] = M(CUR_STATE) | M(QKEY),
        },
    },
    [S(SQD)][S(SQD)] = {
        .valid = true,
        .optional = {
            [TYPE_RC] = M(PORT) | M(AV) | M(TIMEOUT) | M(RETRY_CNT) |
                        M(RNR_RETRY) | M(MAX_QP_RD_ATOMIC) |
                        M(MAX_DEST_RD_ATOMIC) | M(ALT_PATH) |
                        M(ACCESS_FLAGS) | M(PKEY_INDEX) | M(MIN_RNR_TIMER) |
                        M(PATH_MIG_STATE),
            [TYPE_UD] = M(PKEY_INDEX) | M(QKEY),
        },
    },
    [S(SQE)][S(RTS)] = {
        .valid = true,
        .optional = {
            [TYPE_UD] = M(CUR_STATE) | M(QKEY),
        },
    },
};

/* Values each attribute may take, whatever the transition. */
static int check_values(const struct vmmbib_qp *qp, uint32_t mask,
                        const struct vmmbib_qp_attr *a)
{
    static const uint8_t zero[sizeof(a->reserved)];

    if (memcmp(a->reserved, zero, sizeof(zero))) {
        return VMMBIB_STATUS_INVALID;
    }
    if ((mask & M(EN_SQD_ASYNC_NOTIFY)) && a->en_sqd_async_notify > 1) {
        return VMMBIB_STATUS_INVALID;
    }
    /* QP1's Q_Key is 0x80010000 (IBA 10.2.5): it cannot change. */
    if ((mask & M(QKEY)) && qp->type == VMMBIB_QPT_GSI &&
        vmmbib_le32(a->qkey) != VMMBIB_GSI_QKEY) {
        return VMMBIB_STATUS_INVALID;
    }
    if ((mask & M(PKEY_INDEX)) && vmmbib_le16(a->pkey_index) != 0) {
        return VMMBIB_STATUS_INVALID;
    }
    if ((mask & M(PORT)) && a->port_num != 1) {
        return VMMBIB_STATUS_INVALID;
    }
    if ((mask & M(ACCESS_FLAGS)) &&
        (vmmbib_le32(a->qp_access_flags) & ~VMMBIB_ACCESS_ALL)) {
        return VMMBIB_STATUS_INVALID;
    }
    if ((mask & M(PATH_MTU)) &&
        (a->path_mtu < VMMBIB_MTU_256 || a->path_mtu > VMMBIB_MTU_4096)) {
        return VMMBIB_STATUS_INVALID;
    }
    if (((mask & M(DEST_QPN)) && vmmbib_le32(a->dest_qp_num) > VMMBIB_MAX_QPN) ||
        ((mask & M(RQ_PSN)) && vmmbib_le32(a->rq_psn) > 0xffffff) ||
        ((mask & M(SQ_PSN)) && vmmbib_le32(a->sq_psn) > 0xffffff)) {
        return VMMBIB_STATUS_INVALID;
    }
    if (((mask & M(TIMEOUT)) && a->timeout > 31) ||
        ((mask & M(RETRY_CNT)) && a->retry_cnt > 7) ||
        ((mask & M(RNR_RETRY)) && a->rnr_retry > 7) ||
        ((mask & M(MIN_RNR_TIMER)) && a->min_rnr_timer > 31) ||
        ((mask & M(PATH_MIG_STATE)) && a->path_mig_state > 2)) {
        return VMMBIB_STATUS_INVALID;
    }
    if ((mask & M(AV)) && vmmbib_check_ah_attr(&a->ah_attr)) {
        return VMMBIB_STATUS_INVALID;
    }
    /* No alternate paths and no resizing through modify in version 1. */
    if (mask & (M(ALT_PATH) | M(CAP))) {
        return VMMBIB_STATUS_NOT_SUPPORTED;
    }
    return VMMBIB_STATUS_OK;
}

int vmmbib_qp_check_modify(const struct vmmbib_qp *qp, uint32_t mask,
                           const struct vmmbib_qp_attr *attr)
{
    unsigned int type = qp->type == VMMBIB_QPT_RC ? TYPE_RC : TYPE_UD;
    unsigned int cur = qp->state, next = qp->state;
    const struct transition *t;
    uint32_t required, optional;

    if (mask & ~VMMBIB_QP_ATTR_MASK_SUPPORTED) {
        return VMMBIB_STATUS_INVALID;
    }
    if (mask & M(CUR_STATE)) {
        if (attr->cur_qp_state != qp->state) {
            return VMMBIB_STATUS_BAD_STATE;
        }
    }
    if (mask & M(STATE)) {
        if (attr->qp_state > S(ERR)) {
            return VMMBIB_STATUS_INVALID;
        }
        next = attr->qp_state;
    }
    /* Any state may go to RESET or ERR, with no other attribute. */
    if (next == S(RESET) || next == S(ERR)) {
        return mask & ~(M(STATE) | M(CUR_STATE)) ?
               VMMBIB_STATUS_BAD_STATE : VMMBIB_STATUS_OK;
    }
    t = &transitions[cur][next];
    if (!t->valid || (type == TYPE_RC && cur == S(SQE))) {
        return VMMBIB_STATUS_BAD_STATE;
    }
    /* IBA 10.3.1.5: SQD attributes change only once the SQ drained. */
    if (cur == S(SQD) && next == S(SQD) && qp->sq_draining) {
        return VMMBIB_STATUS_BAD_STATE;
    }
    required = t->required[type];
    optional = t->optional[type];
    /* The GSI QP is a UD QP whose port is its own (IBA table 93). */
    if (qp->type == VMMBIB_QPT_GSI && cur == S(RESET)) {
        required &= ~M(PORT);
        optional |= M(PORT);
    }
    if ((mask & required) != required ||
        (mask & ~(M(STATE) | required | optional))) {
        return VMMBIB_STATUS_BAD_STATE;
    }
    return check_values(qp, mask, attr);
}
