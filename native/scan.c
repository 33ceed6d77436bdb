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

/* Where the variable parts of one message are (offsets relative to its start). */
typedef struct {
    int64_t store_ts, body, body_len, topic, topic_len, props, props_len;
} msg_layout;

#define MQ_MESSAGE_MAGIC_V2 0xDAA320ABu /* RocketMQ 5: 2-byte topic length */

/* The layout of one V1 / V2 message m[0:size) (size >= 91, within the window), IPv4 or IPv6
   hosts by SYSFLAG (0x10 born host, 0x20 store host: 20 bytes instead of 8), as
   engines/commitlog/message.py layout: body, topic and properties must end exactly at
   size. 0 when a length does not fit. */
static int commitlog_layout(const uint8_t *m, int64_t size, int v2, msg_layout *out)
{
    int32_t sys_flag = mq_load_be_i32(m + 36);
    int64_t born_len = (sys_flag & 0x10) ? 20 : 8, store_len = (sys_flag & 0x20) ? 20 : 8;
    int64_t topic_len_size = v2 ? 2 : 1;
    out->store_ts = 48 + born_len;
    int64_t p = out->store_ts + 8 + store_len + 12; /* BODY length */
    if (p + 4 > size)
        return 0;
    int32_t body_len = mq_load_be_i32(m + p);
    if (body_len < 0 || p + 4 + (int64_t)body_len + topic_len_size > size)
        return 0;
    out->body = p + 4;
    out->body_len = body_len;
    p += 4 + (int64_t)body_len;
    int64_t topic_len = v2 ? (int64_t)mq_load_be_i16(m + p) : (int64_t)m[p];
    out->topic = p + topic_len_size;
    out->topic_len = topic_len;
    p = out->topic + topic_len;
    if (topic_len < 0 || p + 2 > size)
        return 0;
    int16_t props_len = mq_load_be_i16(m + p);
    if (props_len < 0 || p + 2 + props_len != size)
        return 0;
    out->props = p + 2;
    out->props_len = props_len;
    return 1;
}

/* The CRC check of one message (message.py crc_problem): the __CRC32# record CRC when its
   trailing property is there (CRC-32 of everything before it, 10 digits least significant
   first; the body CRC is then not recomputed, as RocketMQ's forceVerifyPropCRC), else the
   body CRC. */
static int crcs_ok(const uint8_t *m, int64_t size, const msg_layout *layout)
{
    const int64_t reserved = 20; /* "__CRC32#" \x01 10 digits \x02 */
    if (layout->props_len >= reserved && m[size - 1] == 0x02 &&
        memcmp(m + size - reserved, "__CRC32#\x01", 9) == 0) {
        uint64_t stored = 0;
        for (int d = 9; d >= 0; d--) {
            uint8_t c = m[size - 11 + d];
            if (c < '0' || c > '9')
                return 0;
            stored = stored * 10 + (uint64_t)(c - '0');
        }
        return stored == (mq_crc32(0, m, (size_t)(size - reserved)) & 0x7FFFFFFFu);
    }
    return (mq_crc32(0, m + layout->body, (size_t)layout->body_len) & 0x7FFFFFFFu) ==
           mq_load_be32(m + 8);
}

/* The walk shared by the two CommitLog scans: statuses as in _purepy._walk_commitlog.
   Calls emit for each sound message; stops with MQ_SCAN_FULL when k reaches cap. */
typedef void (*emit_fn)(void *ctx, int64_t k, const uint8_t *m, int64_t pos, int64_t size,
                        const msg_layout *layout);

static int walk_commitlog(const uint8_t *buf, int64_t pos, int64_t end, int64_t cap,
                          int check_crc, emit_fn emit, void *ctx,
                          int64_t *count, int64_t *next_pos)
{
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
        if ((magic != MQ_MESSAGE_MAGIC_V1 && magic != MQ_MESSAGE_MAGIC_V2) ||
            size < MQ_MSG_FIXED_OVERHEAD) {
            status = MQ_SCAN_CORRUPT;
            break;
        }
        if (size > end - pos) {
            status = MQ_SCAN_TORN;
            break;
        }
        msg_layout layout;
        if (!commitlog_layout(m, size, magic == MQ_MESSAGE_MAGIC_V2, &layout) ||
            (check_crc && !crcs_ok(m, size, &layout))) {
            status = MQ_SCAN_CORRUPT;
            break;
        }
        emit(ctx, k, m, pos, size, &layout);
        k++;
        pos += size;
    }
    *count = k;
    *next_pos = pos;
    return status;
}

typedef struct {
    int64_t *positions, *sizes, *queue_ids, *queue_offsets, *store_timestamps;
} record_columns;

static void emit_record(void *ctx, int64_t k, const uint8_t *m, int64_t pos, int64_t size,
                        const msg_layout *layout)
{
    record_columns *c = ctx;
    c->positions[k] = pos;
    c->sizes[k] = size;
    c->queue_ids[k] = mq_load_be_i32(m + 12);
    c->queue_offsets[k] = mq_load_be_i64(m + 20);
    c->store_timestamps[k] = mq_load_be_i64(m + layout->store_ts);
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
    record_columns c = {positions, sizes, queue_ids, queue_offsets, store_timestamps};
    return walk_commitlog(buf, pos, end, cap, 1, emit_record, &c, count, next_pos);
}

/* (start, length) of a property value in PROPERTIES bytes p[0:n), as _purepy._property_span:
   the pair starts at 0 or right after \x02; the value runs to the next \x02 or the end. */
static void property_span(const uint8_t *p, int64_t n, const char *name, int64_t name_len,
                          int64_t base, int64_t *start, int64_t *length)
{
    int64_t i = -1;
    if (n >= name_len && memcmp(p, name, (size_t)name_len) == 0) {
        i = name_len;
    } else {
        for (int64_t j = 0; j + 1 + name_len <= n; j++) {
            if (p[j] == 0x02 && memcmp(p + j + 1, name, (size_t)name_len) == 0) {
                i = j + 1 + name_len;
                break;
            }
        }
    }
    if (i < 0) {
        *start = -1;
        *length = -1;
        return;
    }
    int64_t e = i;
    while (e < n && p[e] != 0x02)
        e++;
    *start = base + i;
    *length = e - i;
}

static void emit_dispatch(void *ctx, int64_t k, const uint8_t *m, int64_t pos, int64_t size,
                          const msg_layout *layout)
{
    int64_t *row = (int64_t *)ctx + MQ_DISPATCH_COLUMNS * k;
    const uint8_t *props = m + layout->props;
    int64_t props_pos = pos + layout->props;
    row[0] = pos;
    row[1] = size;
    row[2] = mq_load_be_i32(m + 12);
    row[3] = mq_load_be_i64(m + 20);
    row[4] = mq_load_be_i64(m + 28);
    row[5] = mq_load_be_i64(m + layout->store_ts);
    row[6] = pos + layout->topic;
    row[7] = layout->topic_len;
    property_span(props, layout->props_len, "TAGS\x01", 5, props_pos, row + 8, row + 9);
    property_span(props, layout->props_len, "KEYS\x01", 5, props_pos, row + 10, row + 11);
    property_span(props, layout->props_len, "UNIQ_KEY\x01", 9, props_pos, row + 12, row + 13);
}

int mq_dispatch_fields(const uint8_t *buf, size_t buf_len, int64_t pos, int64_t end,
                       int64_t cap, int64_t *rows, int64_t *count, int64_t *next_pos)
{
    *count = 0;
    *next_pos = pos;
    if (!window_ok(buf_len, pos, end))
        return MQ_ERR_RANGE;
    if (cap < 0)
        return MQ_ERR_ARG;
    if (end < pos)
        end = pos;
    return walk_commitlog(buf, pos, end, cap, 0, emit_dispatch, rows, count, next_pos);
}
