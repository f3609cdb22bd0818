/*
 * Tests of the command decoder and the commands of the skeleton device:
 * framing errors, queries, contexts, reset.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <endian.h>
#include <string.h>

#include "vmmbib.h"
#include "tap.h"

struct reply {
    struct vmmbib_resp_hdr hdr;
    union {
        struct vmmbib_resp_query_device dev;
        struct vmmbib_resp_query_port port;
        struct vmmbib_resp_query_gid gid;
        struct vmmbib_resp_query_pkey pkey;
        struct vmmbib_resp_create_ucontext uctx;
        struct vmmbib_resp_create_pd pd;
        uint8_t raw[256];
    };
};

struct host_log {
    int maps;
    int unmaps;
    void *pages[8];
};

static void log_map(void *opaque, uint32_t slot, void *page)
{
    struct host_log *log = opaque;

    log->maps++;
    if (slot < 8) {
        log->pages[slot] = page;
    }
}

static void log_unmap(void *opaque, uint32_t slot)
{
    struct host_log *log = opaque;

    log->unmaps++;
    if (slot < 8) {
        log->pages[slot] = NULL;
    }
}

static const struct vmmbib_host_ops log_ops = {
    .uar_map = log_map,
    .uar_unmap = log_unmap,
};

/* Send opcode with @body; returns the reply status, or -1 for no reply. */
static int run(struct vmmbib_dev *dev, uint16_t opcode, uint32_t ctx,
               const void *body, size_t body_len, struct reply *r)
{
    uint8_t req[512];
    struct vmmbib_cmd_hdr hdr = {
        .opcode = htole16(opcode),
        .ctx_handle = htole32(ctx),
    };
    size_t n;

    memcpy(req, &hdr, sizeof(hdr));
    if (body_len) {
        memcpy(req + sizeof(hdr), body, body_len);
    }
    memset(r, 0xa5, sizeof(*r));
    n = vmmbib_dev_execute(dev, req, sizeof(hdr) + body_len, r, sizeof(*r));
    if (n < sizeof(r->hdr) ||
        n != sizeof(r->hdr) + le32toh(r->hdr.length)) {
        return -1;
    }
    return le16toh(r->hdr.status);
}

static struct vmmbib_dev *new_dev_restarting(uint32_t uar_slots,
                                             struct host_log *log,
                                             bool restart_handles)
{
    struct vmmbib_dev_config cfg = {
        .uar_slots = uar_slots,
        .restart_handles = restart_handles,
    };
    char err[128];

    vmmbib_limits_default(&cfg.limits);
    cfg.limits.max_qp = 123;    /* not the default, so it must come from here */
    return vmmbib_dev_new(&cfg, NULL, &log_ops, log, err, sizeof(err));
}

static struct vmmbib_dev *new_dev(uint32_t uar_slots, struct host_log *log)
{
    return new_dev_restarting(uar_slots, log, false);
}

static void test_config_errors(void)
{
    struct vmmbib_dev_config cfg = { .uar_slots = 0 };
    char err[128] = "";

    vmmbib_limits_default(&cfg.limits);
    TAP_CHECK(!vmmbib_dev_new(&cfg, NULL, NULL, NULL, err, sizeof(err)) &&
              strstr(err, "uar-slots"), "uar-slots=0 is refused with a reason");
    cfg.uar_slots = 4;
    cfg.limits.max_cq = 0;
    err[0] = 0;
    TAP_CHECK(!vmmbib_dev_new(&cfg, NULL, NULL, NULL, err, sizeof(err)) &&
              strstr(err, "max-cq"), "max-cq=0 is refused with a reason");
    cfg.limits.max_cq = 16;
    cfg.doorbell_mode = 7;
    TAP_CHECK(!vmmbib_dev_new(&cfg, NULL, NULL, NULL, err, sizeof(err)) &&
              strstr(err, "doorbell"), "unknown doorbell mode is refused");
}

/*
 * Creation errors found late (pvrdma leaked on realize and creation
 * error paths): a LID or node GUID that another device of the engine
 * holds is only found after the tables and doorbell pages exist.  Each
 * refusal names the property, takes no LID, and frees what it allocated;
 * the sanitizers suite runs this with leak detection, so one leaked
 * allocation per refusal fails it.
 */
static void test_late_create_errors(void)
{
    struct vmmbib_engine_config ecfg = { .idle_poll_us = 50 };
    struct vmmbib_dev_config cfg = { .uar_slots = 8 };
    struct vmmbib_engine *eng;
    struct vmmbib_dev *a, *c;
    char err[160] = "";
    int i, lid_refused = 0, guid_refused = 0;

    eng = vmmbib_engine_new(&ecfg, err, sizeof(err));
    vmmbib_limits_default(&cfg.limits);
    cfg.lid = 5;
    cfg.node_guid = 0x0211223344556677ull;
    a = eng ? vmmbib_dev_new(&cfg, eng, NULL, NULL, err, sizeof(err)) : NULL;
    TAP_CHECK(a != NULL, "late errors: device A with LID 5 on an engine");
    for (i = 0; a && i < 50; i++) {
        err[0] = 0;
        lid_refused += !vmmbib_dev_new(&cfg, eng, NULL, NULL, err,
                                       sizeof(err)) &&
                       strstr(err, "lid=5") != NULL;
    }
    TAP_CHECK(lid_refused == 50, "a second LID 5, 50 times: refused, named");
    cfg.lid = 6;
    for (i = 0; a && i < 50; i++) {
        err[0] = 0;
        guid_refused += !vmmbib_dev_new(&cfg, eng, NULL, NULL, err,
                                        sizeof(err)) &&
                        strstr(err, "node-guid") != NULL;
    }
    TAP_CHECK(guid_refused == 50,
              "A's node GUID again, 50 times: refused, named");
    cfg.node_guid = 0;
    c = a ? vmmbib_dev_new(&cfg, eng, NULL, NULL, err, sizeof(err)) : NULL;
    TAP_CHECK(c && vmmbib_dev_lid(c) == 6,
              "the refusals took nothing: LID 6 is still free");
    if (c) {
        vmmbib_dev_free(c);
    }
    if (a) {
        vmmbib_dev_free(a);
    }
    if (eng) {
        vmmbib_engine_free(eng);
    }
}

static void test_framing(struct vmmbib_dev *dev)
{
    struct reply r;
    uint8_t big[64] = { 0 };
    struct vmmbib_cmd_hdr hdr = { .opcode = htole16(VMMBIB_CMD_QUERY_DEVICE) };
    struct vmmbib_dev_stats before, after;
    size_t n;

    vmmbib_dev_get_stats(dev, &before);
    n = vmmbib_dev_execute(dev, &hdr, 3, &r, sizeof(r));
    TAP_CHECK(n == sizeof(r.hdr) &&
              le16toh(r.hdr.status) == VMMBIB_STATUS_BAD_LENGTH,
              "short request: BAD_LENGTH");
    TAP_CHECK(run(dev, VMMBIB_CMD_QUERY_DEVICE, 0, big, 8, &r) ==
              VMMBIB_STATUS_BAD_LENGTH, "oversized request: BAD_LENGTH");
    TAP_CHECK(run(dev, 0, 0, NULL, 0, &r) == VMMBIB_STATUS_BAD_OPCODE,
              "opcode 0: BAD_OPCODE");
    TAP_CHECK(run(dev, VMMBIB_CMD_MAX + 1, 0, NULL, 0, &r) ==
              VMMBIB_STATUS_BAD_OPCODE, "opcode past the last: BAD_OPCODE");
    TAP_CHECK(run(dev, 0xffff, 0, NULL, 0, &r) == VMMBIB_STATUS_BAD_OPCODE,
              "opcode 0xffff: BAD_OPCODE");
    TAP_CHECK(le32toh(r.hdr.length) == 0, "error replies carry no body");

    hdr.flags = htole16(1);
    n = vmmbib_dev_execute(dev, &hdr, sizeof(hdr), &r, sizeof(r));
    TAP_CHECK(n == sizeof(r.hdr) &&
              le16toh(r.hdr.status) == VMMBIB_STATUS_INVALID,
              "unknown flag bits: INVALID");

    hdr.flags = 0;
    TAP_CHECK(vmmbib_dev_execute(dev, &hdr, sizeof(hdr), &r, 4) == 0,
              "reply buffer smaller than its header: no reply");
    n = vmmbib_dev_execute(dev, &hdr, sizeof(hdr), &r, sizeof(r.hdr) + 8);
    TAP_CHECK(n == sizeof(r.hdr) &&
              le16toh(r.hdr.status) == VMMBIB_STATUS_BAD_LENGTH,
              "reply buffer too small for the body: BAD_LENGTH");
    TAP_CHECK(run(dev, VMMBIB_CMD_QUERY_DEVICE, 77, NULL, 0, &r) ==
              VMMBIB_STATUS_INVALID, "context on a query: INVALID");

    vmmbib_dev_get_stats(dev, &after);
    TAP_CHECK(after.command_errors - before.command_errors == 9,
              "each refused request is counted as an error");
    TAP_CHECK(run(dev, VMMBIB_CMD_QUERY_DEVICE, 0, NULL, 0, &r) ==
              VMMBIB_STATUS_OK, "the device answers after bad requests");
}

static void test_names(void)
{
    unsigned int op;
    int named = 0;

    for (op = 1; op <= VMMBIB_CMD_MAX; op++) {
        named += strcmp(vmmbib_cmd_name(op), "UNKNOWN") != 0;
    }
    TAP_CHECK(named == VMMBIB_CMD_MAX, "every opcode has a table entry");
    TAP_CHECK(!strcmp(vmmbib_cmd_name(VMMBIB_CMD_CREATE_QP), "CREATE_QP") &&
              !strcmp(vmmbib_cmd_name(VMMBIB_CMD_MAX + 1), "UNKNOWN"),
              "command names match their opcodes");
    TAP_CHECK(!strcmp(vmmbib_status_name(VMMBIB_STATUS_BAD_ADDRESS),
                      "BAD_ADDRESS") &&
              !strcmp(vmmbib_status_name(VMMBIB_STATUS_MAX + 1), "UNKNOWN"),
              "status names match their codes");
}

/*
 * What the ABI says of each opcode, written out here from the wire
 * structs and not from cmd.c's table: a dispatch table out of step with
 * the enum (pvrdma's class) would pair an opcode with another command's
 * lengths, name or handler.
 */
struct op_spec {
    const char *name;
    size_t req, resp;
    bool ctx;
};

#define OP(op, req, resp, ctx) [VMMBIB_CMD_##op] = { #op, req, resp, ctx }

static const struct op_spec op_specs[] = {
    OP(QUERY_DEVICE, 0, sizeof(struct vmmbib_resp_query_device), false),
    OP(QUERY_PORT, sizeof(struct vmmbib_cmd_query_port),
       sizeof(struct vmmbib_resp_query_port), false),
    OP(QUERY_GID, sizeof(struct vmmbib_cmd_query_gid),
       sizeof(struct vmmbib_resp_query_gid), false),
    OP(QUERY_PKEY, sizeof(struct vmmbib_cmd_query_pkey),
       sizeof(struct vmmbib_resp_query_pkey), false),
    OP(CREATE_UCONTEXT, 0, sizeof(struct vmmbib_resp_create_ucontext), false),
    OP(DESTROY_UCONTEXT, 0, 0, true),
    OP(CREATE_PD, 0, sizeof(struct vmmbib_resp_create_pd), true),
    OP(DESTROY_PD, sizeof(struct vmmbib_cmd_destroy), 0, true),
    OP(CREATE_DMA_MR, sizeof(struct vmmbib_cmd_create_dma_mr),
       sizeof(struct vmmbib_resp_mr), true),
    OP(REG_MR, sizeof(struct vmmbib_cmd_reg_mr),
       sizeof(struct vmmbib_resp_mr), true),
    OP(DEREG_MR, sizeof(struct vmmbib_cmd_destroy), 0, true),
    OP(CREATE_CQ, sizeof(struct vmmbib_cmd_create_cq),
       sizeof(struct vmmbib_resp_create_cq), true),
    OP(RESIZE_CQ, sizeof(struct vmmbib_cmd_resize_cq),
       sizeof(struct vmmbib_resp_resize_cq), true),
    OP(DESTROY_CQ, sizeof(struct vmmbib_cmd_destroy), 0, true),
    OP(CREATE_QP, sizeof(struct vmmbib_cmd_create_qp),
       sizeof(struct vmmbib_resp_create_qp), true),
    OP(MODIFY_QP, sizeof(struct vmmbib_cmd_modify_qp), 0, true),
    OP(QUERY_QP, sizeof(struct vmmbib_cmd_query_qp),
       sizeof(struct vmmbib_resp_query_qp), true),
    OP(DESTROY_QP, sizeof(struct vmmbib_cmd_destroy), 0, true),
    OP(CREATE_SRQ, sizeof(struct vmmbib_cmd_create_srq),
       sizeof(struct vmmbib_resp_create_srq), true),
    OP(MODIFY_SRQ, sizeof(struct vmmbib_cmd_modify_srq), 0, true),
    OP(QUERY_SRQ, sizeof(struct vmmbib_cmd_query_srq),
       sizeof(struct vmmbib_resp_query_srq), true),
    OP(DESTROY_SRQ, sizeof(struct vmmbib_cmd_destroy), 0, true),
    OP(CREATE_AH, sizeof(struct vmmbib_cmd_create_ah),
       sizeof(struct vmmbib_resp_create_ah), true),
    OP(DESTROY_AH, sizeof(struct vmmbib_cmd_destroy), 0, true),
};

_Static_assert(sizeof(op_specs) / sizeof(op_specs[0]) == VMMBIB_CMD_MAX + 1,
               "a new opcode needs its line in op_specs");

/* Raw execute of @opcode with @body_len zero bytes, reply cap @cap. */
static size_t exec_zero(struct vmmbib_dev *dev, uint16_t opcode, uint32_t ctx,
                        size_t body_len, struct reply *r, size_t cap)
{
    uint8_t req[512] = { 0 };
    struct vmmbib_cmd_hdr hdr = {
        .opcode = htole16(opcode),
        .ctx_handle = htole32(ctx),
    };

    memcpy(req, &hdr, sizeof(hdr));
    memset(r, 0xa5, sizeof(*r));
    return vmmbib_dev_execute(dev, req, sizeof(hdr) + body_len, r, cap);
}

/*
 * Every opcode from 0 to VMMBIB_CMD_MAX + 1: the ends are BAD_OPCODE;
 * each real one is dispatched with exactly its ABI request length (one
 * byte more is BAD_LENGTH), needs exactly its reply length (one byte less
 * is BAD_LENGTH), answers with that length, and has its own name.
 */
static void test_every_opcode(struct vmmbib_dev *dev)
{
    unsigned int op;
    int good = 0;
    struct reply r, cr;
    size_t n;

    for (op = 0; op <= VMMBIB_CMD_MAX + 1; op++) {
        const struct op_spec *sp = op <= VMMBIB_CMD_MAX ? &op_specs[op] : NULL;
        uint32_t ctx = 0;
        int st, st_long, st_short = VMMBIB_STATUS_BAD_LENGTH;
        bool ok;

        if (!sp || !sp->name) {
            n = exec_zero(dev, op, 0, 0, &r, sizeof(r));
            ok = n == sizeof(r.hdr) &&
                 le16toh(r.hdr.status) == VMMBIB_STATUS_BAD_OPCODE &&
                 !strcmp(vmmbib_cmd_name(op), "UNKNOWN");
            good += ok;
            if (!ok) {
                printf("# opcode %u: not refused as BAD_OPCODE\n", op);
            }
            continue;
        }
        if (sp->ctx) {
            if (run(dev, VMMBIB_CMD_CREATE_UCONTEXT, 0, NULL, 0, &cr) !=
                VMMBIB_STATUS_OK) {
                printf("# opcode %u: no context\n", op);
                continue;
            }
            ctx = le32toh(cr.uctx.ctx_handle);
        }
        n = exec_zero(dev, op, ctx, sp->req + 1, &r, sizeof(r));
        st_long = n == sizeof(r.hdr) ? le16toh(r.hdr.status) : -1;
        if (sp->resp) {
            n = exec_zero(dev, op, ctx, sp->req, &r,
                          sizeof(r.hdr) + sp->resp - 1);
            st_short = n == sizeof(r.hdr) ? le16toh(r.hdr.status) : -1;
        }
        n = exec_zero(dev, op, ctx, sp->req, &r, sizeof(r));
        st = n >= sizeof(r.hdr) ? le16toh(r.hdr.status) : -1;
        ok = st_long == VMMBIB_STATUS_BAD_LENGTH &&
             st_short == VMMBIB_STATUS_BAD_LENGTH &&
             st >= 0 && st != VMMBIB_STATUS_BAD_OPCODE &&
             st != VMMBIB_STATUS_BAD_LENGTH &&
             n == sizeof(r.hdr) + le32toh(r.hdr.length) &&
             (st != VMMBIB_STATUS_OK || le32toh(r.hdr.length) == sp->resp) &&
             !strcmp(vmmbib_cmd_name(op), sp->name);
        if (!ok) {
            printf("# opcode %u (%s): long %d short %d status %d len %zu\n",
                   op, sp->name, st_long, st_short, st, n);
        }
        good += ok;
        if (ctx) {
            run(dev, VMMBIB_CMD_DESTROY_UCONTEXT, ctx, NULL, 0, &cr);
        }
    }
    TAP_CHECK(good == VMMBIB_CMD_MAX + 2,
              "every opcode 0..MAX+1 is dispatched with its own ABI lengths "
              "and name; 0 and MAX+1 are BAD_OPCODE");
}

static void test_queries(struct vmmbib_dev *dev)
{
    struct reply r;
    struct vmmbib_cmd_query_port qp = { .port_num = 1 };
    struct vmmbib_cmd_query_gid qg = { .port_num = 1 };
    struct vmmbib_cmd_query_pkey qk = { .port_num = 1 };
    static const uint8_t prefix[8] = { 0xfe, 0x80 };
    uint64_t guid;

    TAP_CHECK(run(dev, VMMBIB_CMD_QUERY_DEVICE, 0, NULL, 0, &r) ==
              VMMBIB_STATUS_OK &&
              le32toh(r.hdr.length) == sizeof(r.dev),
              "QUERY_DEVICE succeeds with a full body");
    TAP_CHECK(le32toh(r.dev.max_qp) == 123, "max_qp comes from the config");
    TAP_CHECK(le32toh(r.dev.vendor_id) == VMMBIB_PCI_VENDOR_ID &&
              le32toh(r.dev.vendor_part_id) == VMMBIB_PCI_DEVICE_ID &&
              r.dev.phys_port_cnt == 1, "vendor, part and port count");
    guid = be64toh(r.dev.node_guid);
    TAP_CHECK(guid != 0, "node GUID is set");

    TAP_CHECK(run(dev, VMMBIB_CMD_QUERY_PORT, 0, &qp, sizeof(qp), &r) ==
              VMMBIB_STATUS_OK && r.port.state == VMMBIB_PORT_ACTIVE &&
              le16toh(r.port.lid) != 0 &&
              r.port.link_layer == VMMBIB_LINK_LAYER_INFINIBAND,
              "port 1 is an active IB port with a LID");
    qp.port_num = 2;
    TAP_CHECK(run(dev, VMMBIB_CMD_QUERY_PORT, 0, &qp, sizeof(qp), &r) ==
              VMMBIB_STATUS_INVALID, "port 2: INVALID");

    TAP_CHECK(run(dev, VMMBIB_CMD_QUERY_GID, 0, &qg, sizeof(qg), &r) ==
              VMMBIB_STATUS_OK && !memcmp(r.gid.gid, prefix, 8) &&
              be64toh(*(uint64_t *)(r.gid.gid + 8)) == guid,
              "GID 0 is the link-local prefix and the port GUID");
    qg.index = htole32(1);
    TAP_CHECK(run(dev, VMMBIB_CMD_QUERY_GID, 0, &qg, sizeof(qg), &r) ==
              VMMBIB_STATUS_INVALID, "GID index 1: INVALID");
    TAP_CHECK(run(dev, VMMBIB_CMD_QUERY_PKEY, 0, &qk, sizeof(qk), &r) ==
              VMMBIB_STATUS_OK && le16toh(r.pkey.pkey) == 0xffff,
              "P_Key 0 is the default full-member key");
    qk.index = htole32(0x80000000u);
    TAP_CHECK(run(dev, VMMBIB_CMD_QUERY_PKEY, 0, &qk, sizeof(qk), &r) ==
              VMMBIB_STATUS_INVALID, "P_Key index 2^31: INVALID");
}

static void test_ucontexts(void)
{
    struct host_log log = { 0 };
    struct vmmbib_dev *dev = new_dev(2, &log);
    struct vmmbib_dev_stats stats;
    struct reply r;
    uint32_t a, b, c;
    uint32_t *db_words;

    TAP_CHECK(run(dev, VMMBIB_CMD_CREATE_UCONTEXT, 0, NULL, 0, &r) ==
              VMMBIB_STATUS_OK && le32toh(r.uctx.uar_slot) == 0,
              "first context gets UAR slot 0");
    a = le32toh(r.uctx.ctx_handle);
    db_words = log.pages[0];
    /*
     * The state word shows whatever the engine is doing now: a new device's
     * engine may already have gone to sleep (test_engine checks which).
     */
    TAP_CHECK(log.maps == 1 && db_words &&
              le32toh(db_words[VMMBIB_DB_RING_SIZE / 4]) ==
              VMMBIB_DB_RING_ENTRIES &&
              (le32toh(db_words[VMMBIB_DB_ENGINE_STATE / 4]) ==
               VMMBIB_ENGINE_AWAKE ||
               le32toh(db_words[VMMBIB_DB_ENGINE_STATE / 4]) ==
               VMMBIB_ENGINE_ASLEEP),
              "its doorbell page is mapped and initialised");
    TAP_CHECK(run(dev, VMMBIB_CMD_CREATE_UCONTEXT, 0, NULL, 0, &r) ==
              VMMBIB_STATUS_OK && le32toh(r.uctx.uar_slot) == 1,
              "second context gets UAR slot 1");
    b = le32toh(r.uctx.ctx_handle);
    TAP_CHECK(run(dev, VMMBIB_CMD_CREATE_UCONTEXT, 0, NULL, 0, &r) ==
              VMMBIB_STATUS_NO_RESOURCES, "no free slot: NO_RESOURCES");

    TAP_CHECK(run(dev, VMMBIB_CMD_DESTROY_UCONTEXT, 0, NULL, 0, &r) ==
              VMMBIB_STATUS_BAD_HANDLE, "destroy without a context: BAD_HANDLE");
    TAP_CHECK(run(dev, VMMBIB_CMD_DESTROY_UCONTEXT, a, NULL, 0, &r) ==
              VMMBIB_STATUS_OK && log.unmaps == 1 && !log.pages[0],
              "destroy unmaps the slot");
    TAP_CHECK(run(dev, VMMBIB_CMD_DESTROY_UCONTEXT, a, NULL, 0, &r) ==
              VMMBIB_STATUS_BAD_HANDLE, "destroy twice: BAD_HANDLE");
    TAP_CHECK(run(dev, VMMBIB_CMD_CREATE_UCONTEXT, 0, NULL, 0, &r) ==
              VMMBIB_STATUS_OK && le32toh(r.uctx.uar_slot) == 0,
              "a freed slot is reused");
    c = le32toh(r.uctx.ctx_handle);
    TAP_CHECK(c != a, "a reused table entry gets a new handle");
    TAP_CHECK(run(dev, VMMBIB_CMD_CREATE_PD, c, NULL, 0, &r) ==
              VMMBIB_STATUS_OK, "a PD of the new context");
    TAP_CHECK(run(dev, VMMBIB_CMD_CREATE_PD, 0, NULL, 0, &r) ==
              VMMBIB_STATUS_BAD_HANDLE, "a PD without a context: BAD_HANDLE");

    vmmbib_dev_reset(dev);
    vmmbib_dev_get_stats(dev, &stats);
    TAP_CHECK(stats.ucontexts == 0 && stats.pds == 0 && log.unmaps == 3,
              "reset destroys every context, its objects, and unmaps");
    TAP_CHECK(run(dev, VMMBIB_CMD_DESTROY_UCONTEXT, b, NULL, 0, &r) ==
              VMMBIB_STATUS_BAD_HANDLE, "handles do not survive a reset");
    vmmbib_dev_free(dev);
}

/*
 * A context and a PD, another PD after the first is destroyed, a reset:
 * the handles of the context and the first PD that follow.
 */
static void handles_around_reset(bool restart, uint32_t *before,
                                 uint32_t *after)
{
    struct host_log log = { 0 };
    struct vmmbib_dev *dev = new_dev_restarting(2, &log, restart);
    struct reply r;
    uint32_t ctx;

    memset(before, 0, 3 * sizeof(*before));
    memset(after, 0, 2 * sizeof(*after));
    if (!dev) {
        return;
    }
    if (run(dev, VMMBIB_CMD_CREATE_UCONTEXT, 0, NULL, 0, &r) ==
        VMMBIB_STATUS_OK) {
        ctx = le32toh(r.uctx.ctx_handle);
        before[0] = ctx;
        if (run(dev, VMMBIB_CMD_CREATE_PD, ctx, NULL, 0, &r) ==
            VMMBIB_STATUS_OK) {
            struct vmmbib_cmd_destroy destroy = { .handle = r.pd.pd_handle };

            before[1] = le32toh(r.pd.pd_handle);
            if (run(dev, VMMBIB_CMD_DESTROY_PD, ctx, &destroy,
                    sizeof(destroy), &r) == VMMBIB_STATUS_OK &&
                run(dev, VMMBIB_CMD_CREATE_PD, ctx, NULL, 0, &r) ==
                VMMBIB_STATUS_OK) {
                before[2] = le32toh(r.pd.pd_handle);
            }
        }
    }
    vmmbib_dev_reset(dev);
    if (run(dev, VMMBIB_CMD_CREATE_UCONTEXT, 0, NULL, 0, &r) ==
        VMMBIB_STATUS_OK) {
        after[0] = le32toh(r.uctx.ctx_handle);
        if (run(dev, VMMBIB_CMD_CREATE_PD, after[0], NULL, 0, &r) ==
            VMMBIB_STATUS_OK) {
            after[1] = le32toh(r.pd.pd_handle);
        }
    }
    vmmbib_dev_free(dev);
}

/*
 * x-restart-handles (tests only): QEMU's generic-fuzz replays inputs
 * after a reset, and only handles that start over let them name what
 * they create.  Without it a reset keeps the generations.
 */
static void test_restart_handles(void)
{
    uint32_t before[3], after[2];

    handles_around_reset(false, before, after);
    TAP_CHECK(before[0] && before[1] && before[2] &&
              before[2] != before[1] && after[0] && after[1] &&
              after[0] != before[0] && after[1] != before[1],
              "without restart_handles a reset hands out new handles "
              "(context %#x, then %#x; PD %#x, then %#x)",
              before[0], after[0], before[1], after[1]);
    handles_around_reset(true, before, after);
    TAP_CHECK(before[0] && before[1] && before[2] &&
              before[2] != before[1] && after[0] == before[0] &&
              after[1] == before[1],
              "with restart_handles the context and PD after a reset get "
              "a new device's handles (%#x, %#x)", after[0], after[1]);
}

int main(void)
{
    struct host_log log = { 0 };
    struct vmmbib_dev *dev;

    test_config_errors();
    test_late_create_errors();
    dev = new_dev(4, &log);
    TAP_CHECK(dev != NULL, "a device with default limits is created");
    test_framing(dev);
    test_names();
    test_every_opcode(dev);
    test_queries(dev);
    vmmbib_dev_free(dev);
    test_ucontexts();
    test_restart_handles();
    return tap_done();
}
