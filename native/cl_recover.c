/* native/cl_recover.c: helper section cl-recovery (see mqstore_native.h, section "cl-recovery").
 *
 * The record-CRC rule of commitlog recovery, over the messages the native scan accepted
 * (reference: mqstore/_purepy_cl_recover.py first_missing_record_crc). */
#include "mqstore_internal.h"

#include <string.h>

/* "__CRC32#" then the name/value separator 0x01 open the property; 0x02 ends it. */
static const uint8_t CRC_NAME[8] = {'_', '_', 'C', 'R', 'C', '3', '2', '#'};

static int has_record_crc(const uint8_t *buf, int64_t pos, int64_t size, int64_t min_size,
                          int64_t reserved)
{
    if (size < min_size)
        return 0;
    const uint8_t *tail = buf + pos + size - reserved;
    return buf[pos + size - 1] == 2 && memcmp(tail, CRC_NAME, 8) == 0 && tail[8] == 1;
}

int64_t mq_cl_record_crc_rule(const uint8_t *buf, size_t buf_len, const int64_t *positions,
                              const int64_t *sizes, int64_t n, int64_t min_size,
                              int64_t reserved, int64_t *required, int64_t *first)
{
    if (n < 0 || reserved < 9 || min_size < reserved || required == NULL || first == NULL)
        return MQ_ERR_ARG;
    for (int64_t i = 0; i < n; i++) {  /* every message inside buf, before reading any */
        int64_t p = positions[i], s = sizes[i];
        if (p < 0 || s < 1 || s > (int64_t)buf_len || p > (int64_t)buf_len - s)
            return MQ_ERR_RANGE;
    }
    int64_t i = 0;
    if (!*required) {
        while (i < n && !has_record_crc(buf, positions[i], sizes[i], min_size, reserved))
            i++;
        if (i == n)
            return -1;
        *required = 1;
        *first = i;
    }
    for (; i < n; i++)
        if (!has_record_crc(buf, positions[i], sizes[i], min_size, reserved))
            return i;
    return -1;
}
