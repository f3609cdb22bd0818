#!/usr/bin/python3
"""Writes seed inputs for QEMU's generic-fuzz on vmmbypass-ib.

    scripts/fuzz-qemu-seeds.py CORPUS_DIR

From an empty corpus, libFuzzer needs a long time to find a whole virtio
setup (status bits, features, queue addresses, DRIVER_OK, a notify) and a
descriptor chain that holds a controlq request.  Each seed here does that
and sends one request, so the fuzzer starts at the commands and mutates
from there.  The seeds are written in generic-fuzz's input language
(tests/qtest/fuzz/generic_fuzz.c in the QEMU tree): operations separated by
"FUZZ", MMIO addresses named by (index of a fuzzable region, offset), and
DMA patterns that fill guest RAM, one pattern per device read in turn.

The region indexes depend on the device's BAR layout and on QEMU_FUZZ_ARGS
in scripts/fuzz.sh; docs/security.md says how to check them (trace
memory_region_ops_write) when either changes.
"""

import os
import struct
import sys

SEPARATOR = b"FUZZ"
OP_WRITE = 3
OP_ADD_DMA_PATTERN = 7
OP_CLEAR_DMA_PATTERNS = 8
SIZE_BYTE, SIZE_WORD, SIZE_LONG, SIZE_QUAD = range(4)

# Index of each fuzzable region in generic-fuzz's walk of the address space
# (ascending addresses) with the device as scripts/fuzz.sh configures it.
REGION_COMMON = 4       # virtio-pci-common-vmmbypass-ib (BAR 4)
REGION_NOTIFY = 7       # virtio-pci-notify-vmmbypass-ib (BAR 4)
REGION_KICK0 = 2        # vmmbypass-ib-kick-page, UAR slot 0 (BAR 2)
DOORBELL = 0x008        # its trapped DOORBELL register

# Guest-physical layout of the controlq in the seed.
DESC, AVAIL, USED = 0x100000, 0x101000, 0x102000
REQUEST, REPLY, CQ_PAGE = 0x103000, 0x104000, 0x105000
MR_PAGE, SQ_PAGE, RQ_PAGE = 0x106000, 0x107000, 0x108000

# virtio 1.2, 4.1.4.3: struct virtio_pci_common_cfg
DRIVER_FEATURE_SELECT, DRIVER_FEATURE = 8, 12
DEVICE_STATUS, QUEUE_SELECT, QUEUE_ENABLE = 20, 22, 28
QUEUE_DESC, QUEUE_DRIVER, QUEUE_DEVICE = 32, 40, 48
ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK = 1, 2, 4, 8
VRING_DESC_F_NEXT, VRING_DESC_F_WRITE = 1, 2


def write(region, offset, size, value):
    # struct { uint8_t size, base; uint32_t offset; uint64_t value; },
    # with the two padding bytes of its natural alignment.
    return bytes([OP_WRITE]) + struct.pack("<BBxxIQ", size, region, offset,
                                           value)


def common(offset, size, value):
    return write(REGION_COMMON, offset, size, value)


def dma_pattern(data):
    # index 0, stride 0: the same bytes on every repeat.
    return bytes([OP_ADD_DMA_PATTERN, 0, 0]) + data


def controlq_up():
    ops = [
        common(DEVICE_STATUS, SIZE_BYTE, ACKNOWLEDGE),
        common(DEVICE_STATUS, SIZE_BYTE, ACKNOWLEDGE | DRIVER),
        common(DRIVER_FEATURE_SELECT, SIZE_LONG, 1),
        common(DRIVER_FEATURE, SIZE_LONG, 1),       # VIRTIO_F_VERSION_1
        common(DEVICE_STATUS, SIZE_BYTE, ACKNOWLEDGE | DRIVER | FEATURES_OK),
        common(QUEUE_SELECT, SIZE_WORD, 0),
        common(QUEUE_DESC, SIZE_QUAD, DESC),
        common(QUEUE_DRIVER, SIZE_QUAD, AVAIL),
        common(QUEUE_DEVICE, SIZE_QUAD, USED),
        common(QUEUE_ENABLE, SIZE_WORD, 1),
        # At DRIVER_OK the device takes the requests already queued: guest
        # RAM is not cleared between inputs, so without a pattern it would
        # find the ring an earlier input left.  Zeros: avail->idx 0, empty.
        dma_pattern(b"\0\0"),
        common(DEVICE_STATUS, SIZE_BYTE,
               ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK),
    ]
    return ops


def request_ops(request, nth):
    """DMA patterns for the reads a notify of queue 0 makes, in order:
    the nth request (from 1) makes avail->idx nth.  The device first turns
    notifications off (virtio_queue_set_notification), which reads
    used->flags.  After the request the patterns start over: the 16-bit
    ones are all nth, so that the next reads of avail->idx find no more
    requests."""
    return [
        bytes([OP_CLEAR_DMA_PATTERNS]),
        dma_pattern(struct.pack("<H", nth)),            # used->flags
        dma_pattern(struct.pack("<H", nth)),            # avail->idx
        dma_pattern(struct.pack("<H", nth)),            # avail->ring[]
        # virtqueue_pop maps each buffer (a read the fuzzer fills too)
        # before it reads the next descriptor.
        dma_pattern(struct.pack("<QIHH", REQUEST, len(request),
                                VRING_DESC_F_NEXT, 1)),
        dma_pattern(request),
        dma_pattern(struct.pack("<QIHH", REPLY, 512, VRING_DESC_F_WRITE, 0)),
        dma_pattern(b"\0"),                             # the reply buffer
        write(REGION_NOTIFY, 0, SIZE_WORD, 0),
    ]


def cmd(opcode, ctx=0, body=b""):
    return struct.pack("<HHI", opcode, 0, ctx) + body


def page_list(addr):
    """struct vmmbib_page_list: one page at addr, level 0, 4 KiB pages."""
    return struct.pack("<QIBBH", addr, 1, 0, 12, 0)


def qp_attr(state, port=0, access=0, dest_qpn=0, dlid=0, path_mtu=0,
            rd_atomic=0, min_rnr_timer=0, timeout=0, retry=0):
    """struct vmmbib_qp_attr; of the address vector only dlid and port."""
    attr = struct.pack("<5IHBBBBBBBBBBBBB5x", 0, 0, 0, dest_qpn, access, 0,
                       state, 0, path_mtu, 0, 0, 0, rd_atomic, rd_atomic,
                       min_rnr_timer, port, timeout, retry, retry)
    av = struct.pack("<16sIHBBBBBBBB10x", bytes(16), 0, dlid, 0, 0, 0, 0, 0,
                     0, port, 0)
    return attr + av


# Opcodes and request bodies of include/vmmbypass_ib_abi.h.  Handles are
# those of a new device (index 1, generation 0): scripts/fuzz.sh sets
# x-restart-handles, so they are the same after generic-fuzz's resets.
QUERY_DEVICE, QUERY_PORT, CREATE_UCONTEXT, CREATE_PD = 1, 2, 5, 7
REG_MR, CREATE_CQ, CREATE_QP, MODIFY_QP = 10, 12, 15, 16
QPT_RC, QPS_INIT, QPS_RTR, QPS_RTS, MTU_1024 = 2, 1, 2, 3, 3
ACCESS_LOCAL_WRITE, ACCESS_REMOTE_WRITE = 1, 2
QP_STATE, QP_ACCESS_FLAGS, QP_PKEY_INDEX, QP_PORT = 1, 8, 16, 32
QP_AV, QP_PATH_MTU, QP_TIMEOUT, QP_RETRY_CNT = 1 << 7, 1 << 8, 1 << 9, 1 << 10
QP_RNR_RETRY, QP_RQ_PSN, QP_MAX_QP_RD_ATOMIC = 1 << 11, 1 << 12, 1 << 13
QP_MIN_RNR_TIMER, QP_SQ_PSN, QP_MAX_DEST_RD_ATOMIC = 1 << 15, 1 << 16, 1 << 17
QP_DEST_QPN = 1 << 20
# The device's LID on a new embedded engine, and the QP's number
# (handle index + 1): the QP is connected to itself.
LID, QPN = 1, 2
DB_VALID, DB_KIND_SQ = 1 << 63, 1
OBJECTS = [
    cmd(CREATE_UCONTEXT),
    cmd(CREATE_PD, ctx=1),
    # 32 CQEs of 64 bytes and the CQ header in one level-0 page
    # (struct vmmbib_page_list)
    cmd(CREATE_CQ, ctx=1, body=struct.pack("<II", 32, 0) + page_list(CQ_PAGE)),
]
SEEDS = {
    "query-device": [cmd(QUERY_DEVICE)],
    "query-port": [cmd(QUERY_PORT, body=struct.pack("<B7x", 1))],
    "objects": OBJECTS,
}
# One page registered; an RC QP of 8 + 8 WQEs (128- and 32-byte strides)
# on the CQ, taken to INIT.
SEEDS["qp"] = OBJECTS + [
    cmd(REG_MR, ctx=1,
        body=struct.pack("<IIQQII", 1, ACCESS_LOCAL_WRITE | ACCESS_REMOTE_WRITE,
                         MR_PAGE, 4096, 0, 0) + page_list(MR_PAGE)),
    cmd(CREATE_QP, ctx=1,
        body=struct.pack("<IIIIBB6x5IBB2x", 1, 1, 1, 0, QPT_RC, 0,
                         8, 8, 1, 1, 0, 7, 5) +
        page_list(SQ_PAGE) + page_list(RQ_PAGE)),
    cmd(MODIFY_QP, ctx=1,
        body=struct.pack("<II", 1, QP_STATE | QP_PKEY_INDEX | QP_PORT |
                         QP_ACCESS_FLAGS) +
        qp_attr(QPS_INIT, port=1, access=ACCESS_REMOTE_WRITE)),
]
# That QP connected to itself (RTR, RTS); after the commands a trapped SQ
# doorbell (SEED_TAILS) runs the WQE that the SQ page holds.  The command
# thread runs the commands asynchronously, so the doorbell may come before
# RTS (then it completes in error): coverage depends on timing a little.
SEEDS["wqe"] = SEEDS["qp"] + [
    cmd(MODIFY_QP, ctx=1,
        body=struct.pack("<II", 1, QP_STATE | QP_AV | QP_PATH_MTU |
                         QP_DEST_QPN | QP_RQ_PSN | QP_MAX_DEST_RD_ATOMIC |
                         QP_MIN_RNR_TIMER) +
        qp_attr(QPS_RTR, port=1, dest_qpn=QPN, dlid=LID, path_mtu=MTU_1024,
                rd_atomic=1, min_rnr_timer=1)),
    cmd(MODIFY_QP, ctx=1,
        body=struct.pack("<II", 1, QP_STATE | QP_SQ_PSN | QP_TIMEOUT |
                         QP_RETRY_CNT | QP_RNR_RETRY | QP_MAX_QP_RD_ATOMIC) +
        qp_attr(QPS_RTS, timeout=14, retry=1, rd_atomic=1)),
]
SEED_TAILS = {
    "wqe": [write(REGION_KICK0, DOORBELL, SIZE_QUAD,
                  DB_VALID | DB_KIND_SQ << 56 | 1 << 32 | 1)],
}


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, requests in SEEDS.items():
        ops = controlq_up()
        for nth, request in enumerate(requests, 1):
            ops += request_ops(request, nth)
        ops += SEED_TAILS.get(name, [])
        with open(os.path.join(out, "seed-" + name), "wb") as f:
            f.write(SEPARATOR.join(ops))


if __name__ == "__main__":
    main()
