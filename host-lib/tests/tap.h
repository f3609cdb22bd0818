/*
 * A minimal TAP producer for the host-lib tests (meson protocol: tap).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef VMMBIB_TEST_TAP_H
#define VMMBIB_TEST_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int tap_count;
static int tap_failed;

#define TAP_CHECK(cond, ...)                                           \
    tap_check(!!(cond), #cond, __FILE__, __LINE__, __VA_ARGS__)

static inline void __attribute__((format(printf, 5, 6)))
tap_check(int ok, const char *expr, const char *file, int line,
          const char *name, ...)
{
    va_list ap;

    tap_count++;
    printf("%sok %d - ", ok ? "" : "not ", tap_count);
    va_start(ap, name);
    vprintf(name, ap);
    va_end(ap);
    putchar('\n');
    if (!ok) {
        tap_failed++;
        printf("# failed: %s at %s:%d\n", expr, file, line);
    }
}

static inline int tap_done(void)
{
    printf("1..%d\n", tap_count);
    return tap_failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif /* VMMBIB_TEST_TAP_H */
