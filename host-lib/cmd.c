/*
 * The controlq command decoder: checks the framing of a request, finds its
 * handler and its context, and frames the reply.  Handlers see a copy of
 * the request body that is aligned and exactly as long as they expect, so
 * nothing is read twice from the guest and nothing past the end.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <endian.h>
#include <stddef.h>
#include <string.h>

#include "internal.h"

/* Largest request or reply body of any command, with room to spare. */
#define CMD_BODY_MAX 256

struct cmd_desc {
    const char *name;
    int (*handler)(struct vmmbib_cmd_ctx *c);
    uint16_t req_len;       /* exact body length of the request */
    uint16_t resp_len;      /* body length of a successful reply */
    bool needs_ctx;         /* ctx_handle must name a live context */
};

#define CMD(op, fn, req, resp, ctx) \
    [VMMBIB_CMD_##op] = { #op, fn, req, resp, ctx }

/* Indexed by opcode; a test checks that every opcode has its entry. */
static const struct cmd_desc cmd_table[VMMBIB_CMD_MAX + 1] = {
    CMD(QUERY_DEVICE, vmmbib_cmd_query_device, 0,
        sizeof(struct vmmbib_resp_query_device), false),
    CMD(QUERY_PORT, vmmbib_cmd_query_port,
        sizeof(struct vmmbib_cmd_query_port),
        sizeof(struct vmmbib_resp_query_port), false),
    CMD(QUERY_GID, vmmbib_cmd_query_gid,
        sizeof(struct vmmbib_cmd_query_gid),
        sizeof(struct vmmbib_resp_query_gid), false),
    CMD(QUERY_PKEY, vmmbib_cmd_query_pkey,
        sizeof(struct vmmbib_cmd_query_pkey),
        sizeof(struct vmmbib_resp_query_pkey), false),
    CMD(CREATE_UCONTEXT, vmmbib_cmd_create_ucontext, 0,
        sizeof(struct vmmbib_resp_create_ucontext), false),
    CMD(DESTROY_UCONTEXT, vmmbib_cmd_destroy_ucontext, 0, 0, true),
    CMD(CREATE_PD, vmmbib_cmd_create_pd, 0, sizeof(struct vmmbib_resp_create_pd), true),
    CMD(DESTROY_PD, vmmbib_cmd_destroy_pd, sizeof(struct vmmbib_cmd_destroy), 0, true),
    CMD(CREATE_DMA_MR, vmmbib_cmd_create_dma_mr, sizeof(struct vmmbib_cmd_create_dma_mr),
        sizeof(struct vmmbib_resp_mr), true),
    CMD(REG_MR, vmmbib_cmd_reg_mr, sizeof(struct vmmbib_cmd_reg_mr),
        sizeof(struct vmmbib_resp_mr), true),
    CMD(DEREG_MR, vmmbib_cmd_dereg_mr, sizeof(struct vmmbib_cmd_destroy), 0, true),
    CMD(CREATE_CQ, vmmbib_cmd_create_cq, sizeof(struct vmmbib_cmd_create_cq),
        sizeof(struct vmmbib_resp_create_cq), true),
    CMD(RESIZE_CQ, vmmbib_cmd_resize_cq, sizeof(struct vmmbib_cmd_resize_cq),
        sizeof(struct vmmbib_resp_resize_cq), true),
    CMD(DESTROY_CQ, vmmbib_cmd_destroy_cq, sizeof(struct vmmbib_cmd_destroy), 0, true),
    CMD(CREATE_QP, vmmbib_cmd_create_qp, sizeof(struct vmmbib_cmd_create_qp),
        sizeof(struct vmmbib_resp_create_qp), true),
    CMD(MODIFY_QP, vmmbib_cmd_modify_qp, sizeof(struct vmmbib_cmd_modify_qp), 0, true),
    CMD(QUERY_QP, vmmbib_cmd_query_qp, sizeof(struct vmmbib_cmd_query_qp),
        sizeof(struct vmmbib_resp_query_qp), true),
    CMD(DESTROY_QP, vmmbib_cmd_destroy_qp, sizeof(struct vmmbib_cmd_destroy), 0, true),
    CMD(CREATE_SRQ, vmmbib_cmd_create_srq, sizeof(struct vmmbib_cmd_create_srq),
        sizeof(struct vmmbib_resp_create_srq), true),
    CMD(MODIFY_SRQ, vmmbib_cmd_modify_srq, sizeof(struct vmmbib_cmd_modify_srq), 0, true),
    CMD(QUERY_SRQ, vmmbib_cmd_query_srq, sizeof(struct vmmbib_cmd_query_srq),
        sizeof(struct vmmbib_resp_query_srq), true),
    CMD(DESTROY_SRQ, vmmbib_cmd_destroy_srq, sizeof(struct vmmbib_cmd_destroy), 0, true),
    CMD(CREATE_AH, vmmbib_cmd_create_ah, sizeof(struct vmmbib_cmd_create_ah),
        sizeof(struct vmmbib_resp_create_ah), true),
    CMD(DESTROY_AH, vmmbib_cmd_destroy_ah, sizeof(struct vmmbib_cmd_destroy), 0, true),
};

static const char *const status_names[VMMBIB_STATUS_MAX + 1] = {
    [VMMBIB_STATUS_OK] = "OK",
    [VMMBIB_STATUS_BAD_OPCODE] = "BAD_OPCODE",
    [VMMBIB_STATUS_BAD_LENGTH] = "BAD_LENGTH",
    [VMMBIB_STATUS_INVALID] = "INVALID",
    [VMMBIB_STATUS_BAD_HANDLE] = "BAD_HANDLE",
    [VMMBIB_STATUS_NOT_OWNER] = "NOT_OWNER",
    [VMMBIB_STATUS_BUSY] = "BUSY",
    [VMMBIB_STATUS_NO_RESOURCES] = "NO_RESOURCES",
    [VMMBIB_STATUS_BAD_ADDRESS] = "BAD_ADDRESS",
    [VMMBIB_STATUS_BAD_STATE] = "BAD_STATE",
    [VMMBIB_STATUS_NOT_SUPPORTED] = "NOT_SUPPORTED",
    [VMMBIB_STATUS_DEVICE_ERROR] = "DEVICE_ERROR",
};

const char *vmmbib_cmd_name(unsigned int opcode)
{
    if (opcode > VMMBIB_CMD_MAX || !cmd_table[opcode].name) {
        return "UNKNOWN";
    }
    return cmd_table[opcode].name;
}

const char *vmmbib_status_name(unsigned int status)
{
    if (status > VMMBIB_STATUS_MAX || !status_names[status]) {
        return "UNKNOWN";
    }
    return status_names[status];
}

static int dispatch(struct vmmbib_dev *dev, const uint8_t *req,
                    size_t req_len, void *resp_body, size_t resp_cap,
                    size_t *resp_len)
{
    struct vmmbib_cmd_hdr hdr;
    const struct cmd_desc *desc;
    uint64_t body[CMD_BODY_MAX / sizeof(uint64_t)];
    struct vmmbib_cmd_ctx c = { .dev = dev, .req = body, .resp = resp_body };
    uint16_t opcode;
    uint32_t ctx_handle;
    int status;

    if (req_len < sizeof(hdr)) {
        return VMMBIB_STATUS_BAD_LENGTH;
    }
    memcpy(&hdr, req, sizeof(hdr));
    opcode = vmmbib_le16(hdr.opcode);
    ctx_handle = vmmbib_le32(hdr.ctx_handle);

    if (opcode == 0 || opcode > VMMBIB_CMD_MAX || !cmd_table[opcode].name) {
        return VMMBIB_STATUS_BAD_OPCODE;
    }
    desc = &cmd_table[opcode];
    if (req_len - sizeof(hdr) != desc->req_len) {
        return VMMBIB_STATUS_BAD_LENGTH;
    }
    if (resp_cap < desc->resp_len) {
        return VMMBIB_STATUS_BAD_LENGTH;
    }
    if (hdr.flags) {
        return VMMBIB_STATUS_INVALID;
    }

    if (desc->needs_ctx) {
        c.uctx = vmmbib_table_lookup(&dev->ucontexts, ctx_handle);
        if (!c.uctx) {
            return VMMBIB_STATUS_BAD_HANDLE;
        }
    } else if (ctx_handle != VMMBIB_HANDLE_NONE) {
        /* Commands without a context take none: a value is a bug. */
        return VMMBIB_STATUS_INVALID;
    }

    if (c.uctx) {
        vmmbib_engine_drain_context(dev, c.uctx);
    }
    memset(body, 0, sizeof(body));
    memcpy(body, req + sizeof(hdr), desc->req_len);
    memset(resp_body, 0, desc->resp_len);
    status = desc->handler(&c);
    if (status == VMMBIB_STATUS_OK) {
        *resp_len = desc->resp_len;
    }
    return status;
}

size_t vmmbib_dev_execute(struct vmmbib_dev *dev,
                          const void *req, size_t req_len,
                          void *reply, size_t reply_cap)
{
    struct vmmbib_resp_hdr hdr = { 0 };
    size_t body_len = 0;
    int status;

    /* No copy without the lock may use what the command changes. */
    vmmbib_engine_enter_dev(dev);
    dev->stats.commands++;
    if (reply_cap < sizeof(hdr)) {
        dev->stats.command_errors++;
        vmmbib_engine_leave(dev->engine);
        return 0;
    }
    status = dispatch(dev, req, req_len, (uint8_t *)reply + sizeof(hdr),
                      reply_cap - sizeof(hdr), &body_len);
    if (status != VMMBIB_STATUS_OK) {
        dev->stats.command_errors++;
        body_len = 0;
    }
    vmmbib_engine_leave(dev->engine);
    hdr.status = htole16(status);
    hdr.length = htole32(body_len);
    memcpy(reply, &hdr, sizeof(hdr));
    return sizeof(hdr) + body_len;
}

/* Every request and reply body must fit the decoder's buffer. */
_Static_assert(sizeof(struct vmmbib_cmd_modify_qp) <= CMD_BODY_MAX,
               "CMD_BODY_MAX too small");
_Static_assert(sizeof(struct vmmbib_resp_query_device) <= CMD_BODY_MAX,
               "CMD_BODY_MAX too small");

void *vmmbib_lookup(struct vmmbib_cmd_ctx *c, struct vmmbib_table *t,
                    uint32_t handle, int *status)
{
    /* Every object starts with its handle and its context. */
    struct {
        uint32_t handle;
        struct vmmbib_ucontext *uctx;
    } *obj = vmmbib_table_lookup(t, handle);

    if (!obj) {
        *status = VMMBIB_STATUS_BAD_HANDLE;
        return NULL;
    }
    if (obj->uctx != c->uctx) {
        *status = VMMBIB_STATUS_NOT_OWNER;
        return NULL;
    }
    return obj;
}

#define SAME_HEAD(type)                                                 \
    _Static_assert(offsetof(struct type, handle) == 0 &&               \
                   offsetof(struct type, uctx) ==                      \
                   offsetof(struct vmmbib_pd, uctx), #type " head")
SAME_HEAD(vmmbib_mr);
SAME_HEAD(vmmbib_cq);
SAME_HEAD(vmmbib_qp);
SAME_HEAD(vmmbib_srq);
SAME_HEAD(vmmbib_ah);
