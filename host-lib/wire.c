/*
 * The vmmbibd protocol's send side, shared by the daemon and the client
 * (vmmbib_daemon.h).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "vmmbib_daemon.h"

int vmmbibd_send(int sock, const struct vmmbibd_hdr *hdr,
                 const void *payload, const int *fds, unsigned int nfds)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * VMMBIBD_MAX_FDS)];
        struct cmsghdr align;
    } control;
    struct iovec iov[2] = {
        { .iov_base = (void *)hdr, .iov_len = sizeof(*hdr) },
        { .iov_base = (void *)payload, .iov_len = hdr->size },
    };
    struct msghdr msg = {
        .msg_iov = iov,
        .msg_iovlen = hdr->size ? 2 : 1,
    };
    size_t left = sizeof(*hdr) + hdr->size;

    if (nfds > VMMBIBD_MAX_FDS || hdr->size > VMMBIBD_MAX_PAYLOAD) {
        return -EINVAL;
    }
    if (nfds) {
        struct cmsghdr *cmsg;

        memset(&control, 0, sizeof(control));
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);
    }
    while (left) {
        ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        left -= n;
        /* The fds went with the first byte; skip what was sent. */
        msg.msg_control = NULL;
        msg.msg_controllen = 0;
        while (n > 0 && msg.msg_iovlen) {
            size_t step = (size_t)n < msg.msg_iov->iov_len ?
                          (size_t)n : msg.msg_iov->iov_len;

            msg.msg_iov->iov_base = (char *)msg.msg_iov->iov_base + step;
            msg.msg_iov->iov_len -= step;
            n -= step;
            if (!msg.msg_iov->iov_len) {
                msg.msg_iov++;
                msg.msg_iovlen--;
            }
        }
    }
    return 0;
}
