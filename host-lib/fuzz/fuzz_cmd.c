/*
 * libFuzzer target: the control-command decoder and every command handler.
 *
 * An input is a sequence of records, each [reply size: 1 byte]
 * [request length: 1 byte][request bytes].  Before them, the input's first
 * 4 KiB (if that long) become a guest page at GUEST_RAM_BASE, so page lists
 * and page directories the fuzzer invents can point at data it controls.
 * The device is reset before each input.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <stdlib.h>
#include <string.h>

#include "../tests/guest.h"

static struct guest g;
static struct vmmbib_dev *dev;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct vmmbib_dev_config cfg;

    (void)argc;
    (void)argv;
    guest_init(&g, 1u << 20);
    guest_dev_config(&cfg);
    /* Small quotas: exhausting them is one of the paths to cover. */
    cfg.limits.max_pd = 8;
    cfg.limits.max_mr = 8;
    cfg.limits.max_cq = 8;
    cfg.limits.max_qp = 8;
    cfg.limits.max_pinned_pages = 64;
    dev = guest_dev_new(&g, NULL, &cfg);
    return dev ? 0 : 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t reply[512];
    size_t page = size < VMMBIB_PAGE_SIZE ? size : VMMBIB_PAGE_SIZE;

    vmmbib_dev_reset(dev);
    memset(g.ram, 0, VMMBIB_PAGE_SIZE);
    memcpy(g.ram, data, page);

    while (size >= 2) {
        size_t reply_cap = data[0] * 2;
        size_t len = data[1];
        uint8_t req[256];
        size_t n;

        data += 2;
        size -= 2;
        if (len > size) {
            len = size;
        }
        /* A copy: the library may assume nothing about the caller's buffer. */
        memcpy(req, data, len);
        n = vmmbib_dev_execute(dev, req, len, reply, reply_cap);
        if (n > reply_cap || (n && n < sizeof(struct vmmbib_resp_hdr))) {
            abort();    /* a reply longer than its buffer, or cut short */
        }
        data += len;
        size -= len;
    }
    return 0;
}
