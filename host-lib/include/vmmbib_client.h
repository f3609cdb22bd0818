/*
 * libvmmbib's client of the vmmbibd daemon: the device of one VM, served by
 * the daemon's engine instead of one inside the VMM.  Each call mirrors the
 * embedded device's (vmmbib.h), so that a VMM switches between the two by
 * choosing which to call:
 *
 *   vmmbib_dev_new        vmmbib_client_connect / vmmbib_client_new
 *   vmmbib_dev_execute    vmmbib_client_execute
 *   vmmbib_dev_db_pages   vmmbib_client_db_pages (vmmbib_client_db_fd)
 *   vmmbib_dev_kick       vmmbib_client_kick (vmmbib_client_kick_fd)
 *   vmmbib_dev_doorbell   vmmbib_client_doorbell
 *   vmmbib_dev_reset      vmmbib_client_reset
 *   vmmbib_dev_get_stats  vmmbib_client_get_stats
 *   vmmbib_dev_free       vmmbib_client_free
 *
 * Differences: guest memory is not reached through ops->guest_ptr but
 * described once (and again when it changes) with vmmbib_client_set_memory;
 * events wait in a ring until vmmbib_client_process_events, which the VMM
 * calls when vmmbib_client_event_fd becomes readable.  uar_map/uar_unmap
 * are called as the embedded device calls them, from the thread that
 * executes the command.
 *
 * All functions are thread-safe.  The protocol is in vmmbib_daemon.h.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef VMMBIB_CLIENT_H
#define VMMBIB_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmmbib.h"

#ifdef __cplusplus
extern "C" {
#endif

struct vmmbib_client;

/*
 * Join the daemon listening on @path as the VM named @vm_id, with the
 * limits, uar_slots and doorbell_mode of @cfg (lid, node_guid and
 * idle_poll_us must be 0: the daemon chooses them).  The same @vm_id gets
 * the same LID and GUID again.  On failure returns NULL and writes a
 * sentence saying what is wrong into @err.
 */
struct vmmbib_client *vmmbib_client_connect(const char *path,
                                            const char *vm_id,
                                            const struct vmmbib_dev_config *cfg,
                                            const struct vmmbib_host_ops *ops,
                                            void *opaque,
                                            char *err, size_t err_len);
/* The same on a connected socket @fd, which the client owns from now on. */
struct vmmbib_client *vmmbib_client_new(int fd, const char *vm_id,
                                        const struct vmmbib_dev_config *cfg,
                                        const struct vmmbib_host_ops *ops,
                                        void *opaque,
                                        char *err, size_t err_len);
/* Leave the daemon: it destroys every object of this VM. */
void vmmbib_client_free(struct vmmbib_client *c);

uint16_t vmmbib_client_lid(struct vmmbib_client *c);
uint64_t vmmbib_client_node_guid(struct vmmbib_client *c);

/* One piece of guest RAM: [gpa, gpa + size) is @fd from @offset. */
struct vmmbib_client_region {
    uint64_t gpa;
    uint64_t size;
    int fd;                     /* a sealed memfd; the caller keeps it */
    uint64_t offset;
};

/*
 * Describe all of guest RAM, replacing the previous description.  Returns
 * false with a sentence in @err if the daemon refused it (the old one
 * stays) or is gone.
 */
bool vmmbib_client_set_memory(struct vmmbib_client *c,
                              const struct vmmbib_client_region *regions,
                              unsigned int nregions,
                              char *err, size_t err_len);

/*
 * As vmmbib_dev_execute.  If the daemon is gone the reply says
 * DEVICE_ERROR (and the event callback got DEVICE_FATAL).
 */
size_t vmmbib_client_execute(struct vmmbib_client *c,
                             const void *req, size_t req_len,
                             void *reply, size_t reply_cap);

/*
 * The doorbell pages (uar_slots pages, slot i at i * 4 KiB), shared with
 * the daemon: mapped once, valid until vmmbib_client_free.  The fd is for
 * a VMM that maps them itself (QEMU: memory_region_init_ram_from_fd).
 */
void *vmmbib_client_db_pages(struct vmmbib_client *c);
int vmmbib_client_db_fd(struct vmmbib_client *c);

/*
 * Wake the engine: a write to the KICK eventfd, which the daemon made
 * (HELLO reply) and its engine thread waits on while it sleeps and reads
 * to count kicks.  A VMM should rather make the eventfd an ioeventfd on
 * the KICK register (QEMU does), so that the hypervisor writes it and no
 * VMM code runs for a kick.  Valid until vmmbib_client_free.
 */
void vmmbib_client_kick(struct vmmbib_client *c);
int vmmbib_client_kick_fd(struct vmmbib_client *c);

void vmmbib_client_doorbell(struct vmmbib_client *c, uint32_t slot,
                            uint64_t doorbell);
void vmmbib_client_reset(struct vmmbib_client *c);
void vmmbib_client_get_stats(struct vmmbib_client *c,
                             struct vmmbib_dev_stats *stats);

/*
 * vmmbib_client_event_fd (the read end of the daemon's CALL pipe) or
 * vmmbib_client_socket_fd is readable when events wait or the daemon went
 * away: then call vmmbib_client_process_events, which empties the pipe,
 * hands each event to ops->event (and DEVICE_FATAL once if the daemon is
 * gone).  Returns false once the daemon is gone.  Watch the fd for
 * readability only: it is a pipe, not an eventfd.
 */
int vmmbib_client_event_fd(struct vmmbib_client *c);
int vmmbib_client_socket_fd(struct vmmbib_client *c);
bool vmmbib_client_process_events(struct vmmbib_client *c);

/* Whether the daemon still serves this client. */
bool vmmbib_client_connected(struct vmmbib_client *c);

#ifdef __cplusplus
}
#endif

#endif /* VMMBIB_CLIENT_H */
