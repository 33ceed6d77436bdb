/* Kafka index floor searches and RocketMQ ConsumeQueue tag scans over mapped buffers.
 *
 * The floor search follows Kafka's AbstractIndex.indexSlotRangeFor: the last 8192 bytes of
 * entries are the "warm" section, searched alone when its first entry is <= target, so that
 * tail lookups touch only a few pages. The bisection is numpy's searchsorted(side="right")
 * step for step, so that even a damaged (unsorted) index gives the same slot as the
 * pure-Python reference. Pure functions, thread-safe.
 */
#include "mqstore_internal.h"

#define WARM_BYTES 8192

/* First slot in [lo, hi) whose key > target (numpy's bisection), keys as int64. */
#define UPPER_BOUND(KEY)                                                                      \
    while (lo < hi) {                                                                         \
        int64_t mid = lo + ((hi - lo) >> 1);                                                  \
        if ((KEY) <= target)                                                                  \
            lo = mid + 1;                                                                     \
        else                                                                                  \
            hi = mid;                                                                         \
    }                                                                                         \
    return lo;

static int64_t upper_bound_offset(const uint8_t *buf, int64_t lo, int64_t hi, int64_t target)
{
    UPPER_BOUND((int64_t)mq_load_be_i32(buf + 8 * mid))
}

static int64_t upper_bound_time(const uint8_t *buf, int64_t lo, int64_t hi, int64_t target)
{
    UPPER_BOUND(mq_load_be_i64(buf + 12 * mid))
}

int64_t mq_offset_index_floor(const uint8_t *buf, size_t buf_len, int64_t n, int64_t target)
{
    if (n <= 0)
        return -1;
    if ((uint64_t)n > buf_len / 8)
        return MQ_ERR_RANGE;
    int64_t warm = WARM_BYTES / 8;
    int64_t first_hot = n - 1 - warm > 0 ? n - 1 - warm : 0;
    if ((int64_t)mq_load_be_i32(buf + 8 * first_hot) <= target)
        return upper_bound_offset(buf, first_hot, n, target) - 1;
    return upper_bound_offset(buf, 0, first_hot, target) - 1;
}

int64_t mq_time_index_floor(const uint8_t *buf, size_t buf_len, int64_t n, int64_t target)
{
    if (n <= 0)
        return -1;
    if ((uint64_t)n > buf_len / 12)
        return MQ_ERR_RANGE;
    int64_t warm = WARM_BYTES / 12;
    int64_t first_hot = n - 1 - warm > 0 ? n - 1 - warm : 0;
    if (mq_load_be_i64(buf + 12 * first_hot) <= target)
        return upper_bound_time(buf, first_hot, n, target) - 1;
    return upper_bound_time(buf, 0, first_hot, target) - 1;
}

/* wanted[] is sorted ascending (mqstore.native passes numpy.unique of the tag hashes). */
static int is_wanted(int64_t h, const int64_t *wanted, int64_t n_wanted)
{
    if (n_wanted <= 8) {
        for (int64_t i = 0; i < n_wanted; i++)
            if (wanted[i] == h)
                return 1;
        return 0;
    }
    int64_t lo = 0, hi = n_wanted;
    while (lo < hi) {
        int64_t mid = lo + ((hi - lo) >> 1);
        if (wanted[mid] < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n_wanted && wanted[lo] == h;
}

int64_t mq_cq_tag_scan(const uint8_t *buf, size_t buf_len, int64_t start_unit, int64_t n_units,
                       const int64_t *wanted, int64_t n_wanted, int64_t *out)
{
    if (n_units <= 0)
        return 0;
    uint64_t units_in_buf = buf_len / MQ_CQ_UNIT;
    if (start_unit < 0 || (uint64_t)start_unit > units_in_buf ||
        (uint64_t)n_units > units_in_buf - (uint64_t)start_unit)
        return MQ_ERR_RANGE;
    if (n_wanted <= 0)
        return 0;
    const uint8_t *p = buf + (size_t)start_unit * MQ_CQ_UNIT + 12;
    int64_t k = 0;
    for (int64_t i = 0; i < n_units; i++, p += MQ_CQ_UNIT)
        if (is_wanted(mq_load_be_i64(p), wanted, n_wanted))
            out[k++] = i;
    return k;
}
