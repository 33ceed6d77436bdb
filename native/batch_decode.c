/* Whole-read decoding of Kafka RecordBatches (magic 2): the segments engine's read path.
 *
 * One call walks the batches of a byte range read from a .log (Kafka's FileLogInputStream),
 * checks each batch (size >= 61, magic 2, lastOffsetDelta >= 0, an int64 last offset, the
 * CRC-32C when asked, the offset chain) and decodes every record of every uncompressed batch
 * into rows, through mq_decode_records (records.c, the one record decoder). Control batches
 * yield nothing; a compressed batch stops the walk (MQ_BATCHES_COMPRESSED) so that the caller
 * decompresses it and calls again after it. Header names and the mqstore.tag value must be
 * strict UTF-8 (Python's "utf-8" codec rules). The behaviour is that of
 * mqstore._purepy_batches.decode_batches. Pure function over caller-owned memory,
 * thread-safe.
 */
#include "mqstore_internal.h"

#define MQ_ATTR_CODEC 0x07
#define MQ_ATTR_LOG_APPEND_TIME 0x08
#define MQ_ATTR_CONTROL 0x20

static const uint8_t TAG_NAME[] = "mqstore.tag";
#define TAG_NAME_LEN 11

/* Strict UTF-8 as CPython decodes it: no overlongs, no surrogates, nothing past U+10FFFF. */
static int valid_utf8(const uint8_t *s, int64_t n)
{
    int64_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int64_t need;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0)
                lo = 0xA0;
            else if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0)
                lo = 0x90;
            else if (c == 0xF4)
                hi = 0x8F;
        } else {
            return 0;
        }
        if (need > n - i - 1)
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (int64_t j = 2; j <= need; j++)
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
        i += need + 1;
    }
    return 1;
}

static void finish(int64_t *state, int64_t expect, int64_t n, int64_t h, int64_t pos,
                   int64_t value_bytes)
{
    state[0] = expect;
    state[1] = n;
    state[2] = h;
    state[3] = pos;
    state[4] = value_bytes;
}

int mq_decode_batches(const uint8_t *buf, size_t buf_len, int64_t pos, int64_t end,
                      int64_t min_offset, int64_t end_offset, int check_crcs,
                      int64_t max_records, int64_t max_bytes,
                      int64_t records_cap, int64_t *records,
                      int64_t headers_cap, int64_t *headers, int64_t *state)
{
    int64_t expect = state[0];
    int64_t n = 0, h = 0, value_bytes = 0;
    int status = MQ_BATCHES_END;
    finish(state, expect, 0, 0, pos, 0);
    if (pos < 0 || end < 0 || (uint64_t)end > buf_len)
        return MQ_ERR_RANGE;
    if (records_cap < 0 || headers_cap < 0)
        return MQ_ERR_ARG;
    while (pos < end) {
        if (end - pos < MQ_BATCH_OVERHEAD) {
            status = MQ_BATCHES_TORN;
            break;
        }
        const uint8_t *b = buf + pos;
        int64_t base = mq_load_be_i64(b);
        int64_t size = (int64_t)mq_load_be_i32(b + 8) + 12;
        int64_t lod = mq_load_be_i32(b + 23);
        /* the offset after the batch must fit in int64 too (base + lod + 1) */
        if (size < MQ_BATCH_OVERHEAD || b[16] != 2 || lod < 0 || base > INT64_MAX - 1 - lod) {
            status = MQ_BATCHES_BAD_HEADER;
            break;
        }
        if (size > end - pos) {
            status = MQ_BATCHES_TORN;
            break;
        }
        if (base >= end_offset) { /* past what the caller may return */
            status = MQ_BATCHES_LIMIT;
            break;
        }
        if (check_crcs &&
            mq_crc32c(0, b + MQ_BATCH_CRC_START, (size_t)(size - MQ_BATCH_CRC_START)) !=
                mq_load_be32(b + 17)) {
            status = MQ_BATCHES_BAD_CRC;
            break;
        }
        if (expect >= 0 && base != expect) {
            status = MQ_BATCHES_BAD_CHAIN;
            break;
        }
        int attributes = mq_load_be_i16(b + 21);
        if (attributes & MQ_ATTR_CONTROL) {
            expect = base + lod + 1;
            pos += size;
            continue;
        }
        if (attributes & MQ_ATTR_CODEC) {
            expect = base + lod + 1;
            status = MQ_BATCHES_COMPRESSED; /* the caller decodes it; pos stays on it */
            break;
        }
        int64_t count = mq_load_be_i32(b + 57);
        /* a record takes at least 7 bytes: no more rows than that can come out */
        int64_t most = (size - MQ_BATCH_OVERHEAD) / 7 + 1;
        if ((count < most ? count : most) > records_cap - n) {
            status = MQ_SCAN_FULL;
            break;
        }
        int64_t nr = 0, nh = 0, next = 0;
        int64_t *rows = records + 9 * n;
        int got = mq_decode_records(buf, buf_len, pos + MQ_BATCH_OVERHEAD, pos + size, count,
                                    records_cap - n, rows, headers_cap - h,
                                    headers + 4 * h, &nr, &nh, &next);
        if (got == MQ_SCAN_FULL) {
            status = MQ_SCAN_FULL;
            break;
        }
        if (got != MQ_SCAN_OK) {
            status = got < 0 ? got : MQ_BATCHES_BAD_RECORDS;
            break;
        }
        int log_append_time = (attributes & MQ_ATTR_LOG_APPEND_TIME) != 0;
        int64_t base_ts = mq_load_be_i64(b + 27), max_ts = mq_load_be_i64(b + 35);
        int bad = 0;
        int64_t kept = 0, batch_bytes = 0;
        for (int64_t k = 0; k < nr && !bad; k++) {
            int64_t *row = rows + 9 * k;
            int64_t offset = (int64_t)((uint64_t)base + (uint64_t)row[0]);
            int64_t ts = log_append_time ? max_ts : (int64_t)((uint64_t)base_ts + (uint64_t)row[1]);
            int64_t first = row[6] + h, hn = row[7], tag_row = -1;
            for (int64_t j = first; j < first + hn; j++) {
                const int64_t *hr = headers + 4 * j;
                if (!valid_utf8(buf + hr[0], hr[1])) {
                    bad = 1;
                    break;
                }
                if (hr[1] == TAG_NAME_LEN && memcmp(buf + hr[0], TAG_NAME, TAG_NAME_LEN) == 0) {
                    if (hr[3] > 0 && !valid_utf8(buf + hr[2], hr[3])) {
                        bad = 1;
                        break;
                    }
                    tag_row = j; /* a repeated tag header: the last one wins */
                }
            }
            if (offset < min_offset)
                continue;
            int64_t *out = rows + 9 * kept++;
            out[2] = row[2];
            out[3] = row[3];
            out[4] = row[4];
            out[5] = row[5];
            out[0] = offset;
            out[1] = ts;
            out[6] = first;
            out[7] = hn;
            out[8] = tag_row;
            if (row[5] > 0)
                batch_bytes += row[5];
        }
        if (bad) {
            status = MQ_BATCHES_BAD_RECORDS;
            break;
        }
        n += kept;
        h += nh;
        value_bytes += batch_bytes;
        expect = base + lod + 1;
        pos += size;
        if (n >= max_records || value_bytes > max_bytes) {
            status = MQ_BATCHES_LIMIT;
            break;
        }
    }
    finish(state, expect, n, h, pos, value_bytes);
    return status;
}

int64_t mq_batch_span(const uint8_t *buf, size_t buf_len, int64_t pos, int64_t end,
                      int64_t end_offset, int64_t *out)
{
    int64_t n = 0;
    out[0] = pos;
    out[1] = -1;
    if (pos < 0 || end < 0 || (uint64_t)end > buf_len)
        return MQ_ERR_RANGE;
    while (end - pos >= MQ_BATCH_OVERHEAD) {
        const uint8_t *b = buf + pos;
        int64_t base = mq_load_be_i64(b);
        int64_t size = (int64_t)mq_load_be_i32(b + 8) + 12;
        int64_t lod = mq_load_be_i32(b + 23);
        if (size < MQ_BATCH_OVERHEAD || b[16] != 2 || lod < 0 || base > INT64_MAX - 1 - lod ||
            size > end - pos || base >= end_offset)
            break;
        pos += size;
        n++;
        out[0] = pos;
        out[1] = base + lod + 1;
    }
    return n;
}
