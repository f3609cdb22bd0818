/*
 * Handle tables.  A handle's low 24 bits index the table and its high 8
 * bits are a generation that changes whenever a slot is reused, so a stale
 * handle (or key) names nothing instead of the slot's next object.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define GEN_SHIFT 24

bool vmmbib_table_init(struct vmmbib_table *t, uint32_t size)
{
    if (size == 0 || size > VMMBIB_HANDLE_INDEX_MASK) {
        return false;
    }
    t->objs = calloc((size_t)size + 1, sizeof(*t->objs));
    t->gens = calloc((size_t)size + 1, sizeof(*t->gens));
    if (!t->objs || !t->gens) {
        vmmbib_table_fini(t);
        return false;
    }
    t->size = size;
    t->used = 0;
    t->hint = 1;
    return true;
}

void vmmbib_table_fini(struct vmmbib_table *t)
{
    free(t->objs);
    free(t->gens);
    t->objs = NULL;
    t->gens = NULL;
    t->size = 0;
    t->used = 0;
}

uint32_t vmmbib_table_insert(struct vmmbib_table *t, void *obj)
{
    uint32_t n, i = t->hint;

    if (t->used == t->size) {
        return VMMBIB_HANDLE_NONE;
    }
    /* Start after the last insert: amortised O(1) while the table fills. */
    for (n = 0; n < t->size; n++, i = i == t->size ? 1 : i + 1) {
        if (!t->objs[i]) {
            t->objs[i] = obj;
            t->used++;
            t->hint = i == t->size ? 1 : i + 1;
            return ((uint32_t)t->gens[i] << GEN_SHIFT) | i;
        }
    }
    return VMMBIB_HANDLE_NONE;
}

uint8_t vmmbib_table_gen(const struct vmmbib_table *t, uint32_t index)
{
    return t->gens[index];
}

void *vmmbib_table_at(const struct vmmbib_table *t, uint32_t index)
{
    if (index == 0 || index > t->size) {
        return NULL;
    }
    return t->objs[index];
}

void *vmmbib_table_lookup(const struct vmmbib_table *t, uint32_t handle)
{
    uint32_t index = VMMBIB_HANDLE_INDEX(handle);

    if (!vmmbib_table_at(t, index) ||
        t->gens[index] != (uint8_t)(handle >> GEN_SHIFT)) {
        return NULL;
    }
    return t->objs[index];
}

void vmmbib_table_restart(struct vmmbib_table *t)
{
    if (t->used == 0) {
        memset(t->gens, 0, (size_t)t->size + 1);
        t->hint = 1;
    }
}

void *vmmbib_table_remove(struct vmmbib_table *t, uint32_t handle)
{
    void *obj = vmmbib_table_lookup(t, handle);
    uint32_t index = VMMBIB_HANDLE_INDEX(handle);

    if (obj) {
        t->objs[index] = NULL;
        t->gens[index]++;
        t->used--;
    }
    return obj;
}
