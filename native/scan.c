/* Log scans: Kafka record batches (find a batch by offset, validate a run of batches) and
 * RocketMQ CommitLog messages (validate a run, collect the ConsumeQueue units to dispatch).
 *
 * Every read is bounds-checked against [pos, end) and end <= buf_len before it happens, so a
 * corrupt or hostile file yields a status code, never a read past the buffer. Positions and
 * sizes are int64, so no declared length (at most 2^31 + 11) can overflow them.
 * Pure functions over caller-owned memory, thread-safe.
 */
#include "mqstore_internal.h"

static int window_ok(size_t buf_len, int64_t pos, int64_t end)
{
    return pos >= 0 && (end <= 0 || (uint64_t)end <= buf_len);
}

/* base + delta; *overflow is +1 / -1 when the exact sum is above / below the int64 range. */
static int64_t add_offset(int64_t base, int32_t delta, int *overflow)
{
    int64_t sum;
    *overflow = __builtin_add_overflow(base, (int64_t)delta, &sum) ? (delta > 0 ? 1 : -1) : 0;
    return sum;
}

int64_t mq_find_batch(const uint8_t *buf, size_t buf_len, int64_t pos, int64_t end,
                      int64_t target)
{
    if (!window_ok(buf_len, pos, end))
        return MQ_ERR_RANGE;
    if (end < pos)
        end = pos;
    while (end - pos >= MQ_BATCH_OVERHEAD) {
        const uint8_t *b = buf + pos;
        int64_t base = mq_load_be_i64(b);
        int32_t length = mq_load_be_i32(b + 8);
        int64_t size = (int64_t)length + 12;
        if (length < MQ_BATCH_OVERHEAD - 12 || size > end - pos)
            return -1;
        int overflow;
        int64_t last = add_offset(base, mq_load_be_i32(b + 23), &overflow);
        if (overflow > 0 || (overflow == 0 && last >= target))
            return pos;
        pos += size;
    }
    return -1;
}

int mq_scan_batches(const uint8_t *buf, size_t buf_len, int64_t pos, int64_t end, int64_t cap,
                    int64_t *positions, int64_t *sizes, int64_t *base_offsets,
                    int64_t *last_offsets, int64_t *max_timestamps,
                    int64_t *count, int64_t *next_pos)
{
    *count = 0;
    *next_pos = pos;
    if (!window_ok(buf_len, pos, end))
        return MQ_ERR_RANGE;
    if (cap < 0)
        return MQ_ERR_ARG;
    if (end < pos)
        end = pos;
    int status = MQ_SCAN_OK;
    int64_t k = 0;
    while (pos < end) {
        if (k == cap) {
            status = MQ_SCAN_FULL;
            break;
        }
        if (end - pos < MQ_BATCH_OVERHEAD) {
            status = MQ_SCAN_TORN;
            break;
        }
        const uint8_t *b = buf + pos;
        int64_t size = (int64_t)mq_load_be_i32(b + 8) + 12;
        if (size < MQ_BATCH_OVERHEAD || b[16] != 2) {
            status = MQ_SCAN_CORRUPT;
            break;
        }
        if (size > end - pos) {
            status = MQ_SCAN_TORN;
            break;
        }
        uint32_t crc = mq_load_be32(b + 17);
        if (mq_crc32c(0, b + MQ_BATCH_CRC_START, (size_t)(size - MQ_BATCH_CRC_START)) != crc) {
            status = MQ_SCAN_CORRUPT;
            break;
        }
        int64_t base = mq_load_be_i64(b);
        int overflow;
        int64_t last = add_offset(base, mq_load_be_i32(b + 23), &overflow);
        if (overflow) {
            status = MQ_SCAN_CORRUPT;
            break;
        }
        positions[k] = pos;
        sizes[k] = size;
        base_offsets[k] = base;
        last_offsets[k] = last;
        max_timestamps[k] = mq_load_be_i64(b + 35);
        k++;
        pos += size;
    }
    *count = k;
    *next_pos = pos;
    return status;
}

/* Checks one V1 message at buf[pos:pos+size) (size >= 91 and within the window). */
static int commitlog_message_ok(const uint8_t *m, int64_t size)
{
    int64_t p = 84; /* BODY length, relative to the message start */
    int32_t body_len = mq_load_be_i32(m + p);
    if (body_len < 0 || p + 4 + (int64_t)body_len + 1 > size)
        return 0;
    const uint8_t *body = m + p + 4;
    p += 4 + (int64_t)body_len;
    p += 1 + (int64_t)m[p]; /* TOPIC length byte */
    if (p + 2 > size)
        return 0;
    int16_t props_len = mq_load_be_i16(m + p);
    if (props_len < 0 || p + 2 + props_len != size)
        return 0;
    uint32_t body_crc = mq_load_be32(m + 8);
    return (mq_crc32(0, body, (size_t)body_len) & 0x7FFFFFFFu) == body_crc;
}

int mq_scan_commitlog(const uint8_t *buf, size_t buf_len, int64_t pos, int64_t end, int64_t cap,
                      int64_t *positions, int64_t *sizes, int64_t *queue_ids,
                      int64_t *queue_offsets, int64_t *store_timestamps,
                      int64_t *count, int64_t *next_pos)
{
    *count = 0;
    *next_pos = pos;
    if (!window_ok(buf_len, pos, end))
        return MQ_ERR_RANGE;
    if (cap < 0)
        return MQ_ERR_ARG;
    if (end < pos)
        end = pos;
    int status = MQ_SCAN_OK;
    int64_t k = 0;
    while (pos < end) {
        if (k == cap) {
            status = MQ_SCAN_FULL;
            break;
        }
        const uint8_t *m = buf + pos;
        if (end - pos < 8) {
            status = MQ_SCAN_ZERO;
            for (int64_t i = 0; i < end - pos; i++)
                if (m[i]) {
                    status = MQ_SCAN_TORN;
                    break;
                }
            break;
        }
        int64_t size = mq_load_be_i32(m);
        uint32_t magic = mq_load_be32(m + 4);
        if (size == 0 && magic == 0) {
            status = MQ_SCAN_ZERO;
            break;
        }
        if (magic == MQ_BLANK_MAGIC) {
            status = MQ_SCAN_BLANK;
            break;
        }
        if (magic != MQ_MESSAGE_MAGIC_V1 || size < MQ_MSG_FIXED_OVERHEAD) {
            status = MQ_SCAN_CORRUPT;
            break;
        }
        if (size > end - pos) {
            status = MQ_SCAN_TORN;
            break;
        }
        if (!commitlog_message_ok(m, size)) {
            status = MQ_SCAN_CORRUPT;
            break;
        }
        positions[k] = pos;
        sizes[k] = size;
        queue_ids[k] = mq_load_be_i32(m + 12);
        queue_offsets[k] = mq_load_be_i64(m + 20);
        store_timestamps[k] = mq_load_be_i64(m + 56);
        k++;
        pos += size;
    }
    *count = k;
    *next_pos = pos;
    return status;
}
