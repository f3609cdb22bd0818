/*
 * libvmmbib internals shared between its source files.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef VMMBIB_INTERNAL_H
#define VMMBIB_INTERNAL_H

#include <endian.h>

#include "vmmbib.h"

/* table.c: handle tables; a handle is (generation << 24) | index. */
struct vmmbib_table {
    void **objs;            /* objs[1..size]; index 0 is never used */
    uint8_t *gens;
    uint32_t size;
    uint32_t used;
};

bool vmmbib_table_init(struct vmmbib_table *t, uint32_t size);
void vmmbib_table_fini(struct vmmbib_table *t);
uint32_t vmmbib_table_insert(struct vmmbib_table *t, void *obj);
void *vmmbib_table_lookup(const struct vmmbib_table *t, uint32_t handle);
void *vmmbib_table_remove(struct vmmbib_table *t, uint32_t handle);
/* The object at @index whatever its generation, for reset and doorbells. */
void *vmmbib_table_at(const struct vmmbib_table *t, uint32_t index);

/* device.c */
struct vmmbib_ucontext {
    uint32_t handle;
    uint32_t uar_slot;
    void *db_page;          /* VMMBIB_PAGE_SIZE bytes, shared with the guest */
};

struct vmmbib_dev {
    struct vmmbib_dev_config cfg;
    struct vmmbib_host_ops ops;
    void *opaque;
    uint64_t node_guid;
    uint16_t lid;
    struct vmmbib_table ucontexts;
    bool *uar_slot_busy;    /* [cfg.uar_slots] */
    uint8_t *db_pages;      /* [cfg.uar_slots] pages */
    struct vmmbib_dev_stats stats;
};

struct vmmbib_ucontext *vmmbib_ucontext_create(struct vmmbib_dev *dev,
                                               int *status);
void vmmbib_ucontext_destroy(struct vmmbib_dev *dev,
                             struct vmmbib_ucontext *uctx);

/* cmd_query.c and cmd_ucontext.c: one handler per command. */
struct vmmbib_cmd_ctx {
    struct vmmbib_dev *dev;
    struct vmmbib_ucontext *uctx;   /* NULL for commands without one */
    const void *req;                /* body, copied and aligned */
    void *resp;                     /* body, zeroed */
};

int vmmbib_cmd_query_device(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_query_port(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_query_gid(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_query_pkey(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_create_ucontext(struct vmmbib_cmd_ctx *c);
int vmmbib_cmd_destroy_ucontext(struct vmmbib_cmd_ctx *c);

/* Little-endian helpers: the ABI is little-endian on every host. */
static inline uint16_t vmmbib_le16(uint16_t v) { return le16toh(v); }
static inline uint32_t vmmbib_le32(uint32_t v) { return le32toh(v); }
static inline uint64_t vmmbib_le64(uint64_t v) { return le64toh(v); }

#endif /* VMMBIB_INTERNAL_H */
