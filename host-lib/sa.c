/*
 * The engine's subnet administrator: the engine is the subnet manager of
 * its virtual subnet (there is no SMI and no QP0), and answers the
 * SubnAdm MADs a port's GSI QP sends to its SM LID (its own LID) on QP1.
 * It knows two attributes: ClassPortInfo (Get) and PathRecord (Get and
 * GetTable) between ports of the engine; every other request gets a
 * response with an error status, and what is not a request is dropped.
 *
 * The formats are those of IBA vol. 1: the MAD common header (13.4.2),
 * the RMPP header (13.6.2.1), the SA header (15.2.1.1), ClassPortInfo
 * (13.4.8.1) and PathRecord (15.2.5.16), all big-endian.  Every field
 * comes from the guest: the request is a copy, read only at fixed offsets
 * inside its 256 bytes.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <endian.h>
#include <string.h>

#include "sa.h"

/* The MAD common header. */
#define MAD_BASE_VERSION    0
#define MAD_MGMT_CLASS      1
#define MAD_CLASS_VERSION   2
#define MAD_METHOD          3
#define MAD_STATUS          4
#define MAD_ATTR_ID         16
#define MAD_ATTR_MOD        20
/* The RMPP header, then the SA header. */
#define RMPP_VERSION        24
#define RMPP_TYPE           25
#define RMPP_RTIME_FLAGS    26
#define RMPP_STATUS         27
#define RMPP_SEG_NUM        28
#define RMPP_PAYLEN         32
#define SA_SM_KEY           36
#define SA_ATTR_OFFSET      44
#define SA_COMP_MASK        48
#define SA_DATA             56
#define SA_DATA_SIZE        (VMMBIB_MAD_SIZE - SA_DATA)
#define RMPP_DATA_SIZE      (VMMBIB_MAD_SIZE - SA_SM_KEY)
#define SA_HDR_SIZE         (SA_DATA - SA_SM_KEY)

#define BASE_VERSION_IB     1
#define SA_CLASS_VERSION    2

#define METHOD_GET          0x01
#define METHOD_SET          0x02
#define METHOD_GET_TABLE    0x12
#define METHOD_GET_TRACE    0x13
#define METHOD_GET_MULTI    0x14
#define METHOD_DELETE       0x15
#define METHOD_RESP         0x80

#define ATTR_CLASS_PORT_INFO 0x0001
#define ATTR_PATH_RECORD     0x0035

/* MAD status: the common "invalid field" codes (13.4.7), SA's (15.2.1.1). */
#define STATUS_BAD_VERSION      0x0004
#define STATUS_METHOD           0x0008
#define STATUS_METHOD_ATTR      0x000c
#define STATUS_SA_NO_RECORDS    0x0300
#define STATUS_SA_INSUFFICIENT  0x0600

#define RMPP_TYPE_DATA      1
#define RMPP_FLAGS_SINGLE   0x07    /* Active, First, Last */
#define RMPP_NO_RTIME       (0x1f << 3)

/* ClassPortInfo: RespTimeValue in the low 5 bits of the word at 4. */
#define CPI_SIZE            72
#define SA_RESP_TIME        18

/* PathRecord offsets and component mask bits. */
#define PR_SIZE             64
#define PR_SERVICE_ID       0
#define PR_DGID             8
#define PR_SGID             24
#define PR_DLID             40
#define PR_SLID             42
#define PR_FLOW_HOP         44      /* RawTraffic:1 rsvd:3 Flow:20 Hop:8 */
#define PR_TCLASS           48
#define PR_REV_NUMB         49      /* Reversible:1 NumbPath:7 */
#define PR_PKEY             50
#define PR_QOS_SL           52      /* QoSClass:12 SL:4 */
#define PR_MTU              54      /* selector:2 value:6, the same */
#define PR_RATE             55
#define PR_LIFE             56
#define PR_PREFERENCE       57

#define CM(bit)             (1ull << (bit))
#define PR_CM_SERVICE_ID_HI CM(0)
#define PR_CM_SERVICE_ID_LO CM(1)
#define PR_CM_DGID          CM(2)
#define PR_CM_SGID          CM(3)
#define PR_CM_DLID          CM(4)
#define PR_CM_SLID          CM(5)
#define PR_CM_RAW           CM(6)
#define PR_CM_FLOW_LABEL    CM(8)
#define PR_CM_HOP_LIMIT     CM(9)
#define PR_CM_TCLASS        CM(10)
#define PR_CM_REVERSIBLE    CM(11)
#define PR_CM_PKEY          CM(13)
#define PR_CM_QOS_CLASS     CM(14)
#define PR_CM_SL            CM(15)
#define PR_CM_MTU_SEL       CM(16)
#define PR_CM_MTU           CM(17)
#define PR_CM_RATE_SEL      CM(18)
#define PR_CM_RATE          CM(19)
#define PR_CM_LIFE_SEL      CM(20)
#define PR_CM_LIFE          CM(21)

/* Selectors of MTU, rate and packet lifetime (15.2.5.16). */
enum { SEL_GT, SEL_LT, SEL_EQ, SEL_BEST };

/* What every path of the subnet offers. */
#define PATH_PKEY           0xffff
#define PATH_MTU            VMMBIB_MTU_4096
#define PATH_RATE           16      /* 100 Gb/s: 4x EDR, as QUERY_PORT */
#define PATH_LIFE           14      /* 4.096 us * 2^14 = 67 ms */

static uint16_t get16(const uint8_t *p)
{
    uint16_t v;

    memcpy(&v, p, sizeof(v));
    return be16toh(v);
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v;

    memcpy(&v, p, sizeof(v));
    return be64toh(v);
}

static void put16(uint8_t *p, uint16_t v)
{
    v = htobe16(v);
    memcpy(p, &v, sizeof(v));
}

static void put32(uint8_t *p, uint32_t v)
{
    v = htobe32(v);
    memcpy(p, &v, sizeof(v));
}

/* Rate codes (IBA table 224 and its extensions) in units of 0.5 Gb/s. */
static unsigned int rate_units(uint8_t rate)
{
    static const uint16_t units[] = {
        [2] = 5, [3] = 20, [4] = 60, [5] = 10, [6] = 40, [7] = 80,
        [8] = 120, [9] = 160, [10] = 240, [11] = 28, [12] = 112,
        [13] = 224, [14] = 336, [15] = 50, [16] = 200,
    };

    return rate < sizeof(units) / sizeof(units[0]) ? units[rate] : 0;
}

/*
 * The best MTU the path offers under the request's selector and value;
 * 0 if none.  A path of MTU 4096 carries any smaller MTU too.
 */
static uint8_t pick_mtu(unsigned int sel, uint8_t want)
{
    uint8_t mtu;

    for (mtu = PATH_MTU; mtu >= VMMBIB_MTU_256; mtu--) {
        if (sel == SEL_BEST || (sel == SEL_GT && mtu > want) ||
            (sel == SEL_LT && mtu < want) || (sel == SEL_EQ && mtu == want)) {
            return mtu;
        }
    }
    return 0;
}

/* The same for rates, which are codes and not in order of speed. */
static uint8_t pick_rate(unsigned int sel, uint8_t want)
{
    unsigned int w = rate_units(want), best = 0;
    uint8_t rate, found = 0;

    if (sel != SEL_BEST && !w) {
        return 0;
    }
    for (rate = 2; rate <= PATH_RATE; rate++) {
        unsigned int u = rate_units(rate);

        if (!u || u > rate_units(PATH_RATE) || u <= best) {
            continue;
        }
        if (sel == SEL_BEST || (sel == SEL_GT && u > w) ||
            (sel == SEL_LT && u < w) || (sel == SEL_EQ && u == w)) {
            best = u;
            found = rate;
        }
    }
    return found;
}

/* The path's lifetime is what it is: the selector only accepts it. */
static bool life_ok(unsigned int sel, uint8_t want)
{
    return sel == SEL_BEST || (sel == SEL_GT && PATH_LIFE > want) ||
           (sel == SEL_LT && PATH_LIFE < want) ||
           (sel == SEL_EQ && PATH_LIFE == want);
}

/*
 * A port named by a GID and/or a LID of the request, or @dflt if neither
 * is in the mask.  NULL: no such port, or the two name different ports.
 */
static struct vmmbib_dev *pr_port(struct vmmbib_dev *req_dev, uint64_t mask,
                                  uint64_t gid_bit, const uint8_t *gid,
                                  uint64_t lid_bit, uint16_t lid,
                                  struct vmmbib_dev *dflt)
{
    struct vmmbib_dev *by_gid = NULL, *by_lid = NULL;

    if (mask & gid_bit) {
        by_gid = vmmbib_engine_find_gid(req_dev->engine, gid);
        if (!by_gid) {
            return NULL;
        }
    }
    if (mask & lid_bit) {
        by_lid = vmmbib_engine_find_lid(req_dev->engine, lid);
        if (!by_lid || (by_gid && by_gid != by_lid)) {
            return NULL;
        }
    }
    return by_gid ? by_gid : by_lid ? by_lid : dflt;
}

/*
 * The PathRecord @req asks for, from the requester @dev's point of view,
 * into @out.  Returns 1 with a record, 0 if no path matches, or a status.
 */
static int path_record(struct vmmbib_dev *dev, const uint8_t *req,
                       uint64_t mask, uint8_t *out)
{
    struct vmmbib_dev *src, *dst;
    uint8_t mtu = PATH_MTU, rate = PATH_RATE;
    uint32_t flow_hop;

    if (!(mask & (PR_CM_DGID | PR_CM_DLID))) {
        return -STATUS_SA_INSUFFICIENT;
    }
    src = pr_port(dev, mask, PR_CM_SGID, req + PR_SGID, PR_CM_SLID,
                  get16(req + PR_SLID), dev);
    dst = pr_port(dev, mask, PR_CM_DGID, req + PR_DGID, PR_CM_DLID,
                  get16(req + PR_DLID), NULL);
    if (!src || !dst) {
        return 0;
    }
    /* No raw packets; the default P_Key; SL 0, QoS class 0 only. */
    if (((mask & PR_CM_RAW) && (req[PR_FLOW_HOP] & 0x80)) ||
        ((mask & PR_CM_PKEY) &&
         (get16(req + PR_PKEY) & 0x7fff) != (PATH_PKEY & 0x7fff)) ||
        ((mask & PR_CM_SL) && (req[PR_QOS_SL + 1] & 0xf)) ||
        ((mask & PR_CM_QOS_CLASS) && (get16(req + PR_QOS_SL) >> 4))) {
        return 0;
    }
    if (mask & PR_CM_MTU) {
        mtu = pick_mtu(mask & PR_CM_MTU_SEL ? req[PR_MTU] >> 6 : SEL_EQ,
                       req[PR_MTU] & 0x3f);
    }
    if (mask & PR_CM_RATE) {
        rate = pick_rate(mask & PR_CM_RATE_SEL ? req[PR_RATE] >> 6 : SEL_EQ,
                         req[PR_RATE] & 0x3f);
    }
    if (!mtu || !rate ||
        ((mask & PR_CM_LIFE) &&
         !life_ok(mask & PR_CM_LIFE_SEL ? req[PR_LIFE] >> 6 : SEL_EQ,
                  req[PR_LIFE] & 0x3f))) {
        return 0;
    }

    memset(out, 0, PR_SIZE);
    /* The service ID, flow label, hop limit and class are the asker's. */
    if (mask & PR_CM_SERVICE_ID_HI) {
        out[PR_SERVICE_ID] = req[PR_SERVICE_ID];
    }
    if (mask & PR_CM_SERVICE_ID_LO) {
        memcpy(out + PR_SERVICE_ID + 1, req + PR_SERVICE_ID + 1, 7);
    }
    vmmbib_port_gid(dst, out + PR_DGID);
    vmmbib_port_gid(src, out + PR_SGID);
    put16(out + PR_DLID, dst->lid);
    put16(out + PR_SLID, src->lid);
    flow_hop = (uint32_t)get16(req + PR_FLOW_HOP) << 16 |
               get16(req + PR_FLOW_HOP + 2);
    put32(out + PR_FLOW_HOP,
          ((mask & PR_CM_FLOW_LABEL) ? flow_hop & 0x0fffff00u : 0) |
          ((mask & PR_CM_HOP_LIMIT) ? flow_hop & 0xffu : 0));
    out[PR_TCLASS] = mask & PR_CM_TCLASS ? req[PR_TCLASS] : 0;
    out[PR_REV_NUMB] = 0x80;        /* every path is reversible */
    put16(out + PR_PKEY, PATH_PKEY);
    out[PR_MTU] = SEL_EQ << 6 | mtu;
    out[PR_RATE] = SEL_EQ << 6 | rate;
    out[PR_LIFE] = SEL_EQ << 6 | PATH_LIFE;
    return 1;
}

/* The response MAD: the request's header with the answer's fields. */
static void respond(const uint8_t *req, uint8_t *resp, uint16_t status)
{
    memcpy(resp, req, SA_DATA);
    memset(resp + SA_DATA, 0, SA_DATA_SIZE);
    resp[MAD_METHOD] = req[MAD_METHOD] | METHOD_RESP;
    put16(resp + MAD_STATUS, status);
    /*
     * The class-specific word, the RMPP header, the SM_Key, the attribute
     * offset: zero.  The component mask stays the request's.
     */
    memset(resp + MAD_STATUS + 2, 0, 2);
    memset(resp + RMPP_VERSION, 0, SA_COMP_MASK - RMPP_VERSION);
}

/* GetTableResp goes out as one RMPP DATA segment (13.6.2.1). */
static void single_segment(uint8_t *resp, unsigned int data_bytes)
{
    resp[RMPP_VERSION] = 1;
    resp[RMPP_TYPE] = RMPP_TYPE_DATA;
    resp[RMPP_RTIME_FLAGS] = RMPP_NO_RTIME | RMPP_FLAGS_SINGLE;
    resp[RMPP_STATUS] = 0;
    put32(resp + RMPP_SEG_NUM, 1);
    put32(resp + RMPP_PAYLEN, SA_HDR_SIZE + data_bytes);
}

int vmmbib_sa_answer(struct vmmbib_dev *dev, const uint8_t *req,
                     uint8_t *resp)
{
    uint8_t method = req[MAD_METHOD];
    uint16_t attr = get16(req + MAD_ATTR_ID);
    uint64_t mask = get64(req + SA_COMP_MASK);
    int found;

    if (req[MAD_BASE_VERSION] != BASE_VERSION_IB ||
        req[MAD_MGMT_CLASS] != VMMBIB_MGMT_CLASS_SUBN_ADM) {
        return -1;
    }
    /* Only requests that want a response get one (13.4.5). */
    switch (method) {
    case METHOD_GET:
    case METHOD_SET:
    case METHOD_GET_TABLE:
    case METHOD_GET_TRACE:
    case METHOD_GET_MULTI:
    case METHOD_DELETE:
        break;
    default:
        return -1;
    }
    if (req[MAD_CLASS_VERSION] != SA_CLASS_VERSION) {
        respond(req, resp, STATUS_BAD_VERSION);
        return 0;
    }
    if (method != METHOD_GET && method != METHOD_GET_TABLE) {
        respond(req, resp, STATUS_METHOD);
        return 0;
    }
    if (attr == ATTR_CLASS_PORT_INFO && method == METHOD_GET) {
        respond(req, resp, 0);
        resp[SA_DATA] = BASE_VERSION_IB;
        resp[SA_DATA + 1] = SA_CLASS_VERSION;
        put32(resp + SA_DATA + 4, SA_RESP_TIME);
        return 0;
    }
    if (attr != ATTR_PATH_RECORD) {
        respond(req, resp, STATUS_METHOD_ATTR);
        return 0;
    }

    respond(req, resp, 0);
    put16(resp + SA_ATTR_OFFSET, PR_SIZE / 8);
    found = path_record(dev, req + SA_DATA, mask, resp + SA_DATA);
    if (found < 0) {
        put16(resp + MAD_STATUS, -found);
        memset(resp + SA_DATA, 0, SA_DATA_SIZE);
    }
    if (method == METHOD_GET_TABLE) {
        /* A table of zero or one record: one segment holds it. */
        single_segment(resp, found > 0 ? PR_SIZE : 0);
    } else if (found == 0) {
        put16(resp + MAD_STATUS, STATUS_SA_NO_RECORDS);
    }
    return 0;
}
