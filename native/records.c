/* Kafka record decoding: the varint fields of the records of one batch (DefaultRecord).
 *
 * Only positions and lengths come out; Python slices the bytes it needs. Every varint and
 * every length is checked against the record's own end (its length prefix) before use, so
 * malformed or hostile records give MQ_SCAN_CORRUPT, never a read outside [pos, end). The
 * rules (varint widths, lengths, counts, trailing bytes) are _purepy.decode_records's.
 * Pure function over caller-owned memory, thread-safe.
 */
#include "mqstore_internal.h"

/* Zig-zag LEB128 within [*pos, end): an int32 varint (max_bytes 5, at most 32 bits) or a
   varlong (max_bytes 10, at most 64 bits); 0 when it does not fit, is longer, or carries
   bits past the width (as _purepy._varint). */
static int read_varint_n(const uint8_t *buf, int64_t *pos, int64_t end, int max_bytes,
                         int64_t *out)
{
    uint64_t z = 0;
    int shift = 0;
    /* the last byte may carry 32 - 28 = 4 bits (int32) or 64 - 63 = 1 bit (int64) */
    const uint8_t last_max = max_bytes == 5 ? 0x0F : 0x01;
    for (int i = 0; i < max_bytes; i++) {
        if (*pos >= end)
            return 0;
        uint8_t b = buf[(*pos)++];
        if (i == max_bytes - 1 && b > last_max)
            return 0;
        z |= (uint64_t)(b & 0x7F) << shift;
        if (b < 0x80) {
            if (max_bytes == 5) { /* zig-zag of the 32-bit value */
                uint32_t z32 = (uint32_t)z;
                *out = (int64_t)(int32_t)((z32 >> 1) ^ (0u - (z32 & 1u)));
            } else {
                *out = (int64_t)(z >> 1) ^ -(int64_t)(z & 1);
            }
            return 1;
        }
        shift += 7;
    }
    return 0;
}

static int read_varint(const uint8_t *buf, int64_t *pos, int64_t end, int64_t *out)
{
    return read_varint_n(buf, pos, end, 5, out);
}

/* A length-prefixed field: length >= min_len (-1 allows null), then that many bytes. */
static int read_field(const uint8_t *buf, int64_t *pos, int64_t end, int64_t min_len,
                      int64_t *field_pos, int64_t *field_len)
{
    int64_t len;
    if (!read_varint(buf, pos, end, &len) || len < min_len)
        return 0;
    *field_pos = *pos;
    *field_len = len;
    if (len > 0) {
        if (len > end - *pos)
            return 0;
        *pos += len;
    }
    return 1;
}

int mq_decode_records(const uint8_t *buf, size_t buf_len, int64_t pos, int64_t end,
                      int64_t count, int64_t records_cap, int64_t *records,
                      int64_t headers_cap, int64_t *headers,
                      int64_t *n_records, int64_t *n_headers, int64_t *next_pos)
{
    *n_records = 0;
    *n_headers = 0;
    *next_pos = pos;
    if (pos < 0 || (end > 0 && (uint64_t)end > buf_len))
        return MQ_ERR_RANGE;
    if (records_cap < 0 || headers_cap < 0)
        return MQ_ERR_ARG;
    if (end < pos)
        end = pos;
    if (count < 0)
        return MQ_SCAN_CORRUPT;
    int64_t k = 0, h = 0;
    for (; k < count; k++) {
        int64_t p = pos, length, rec_end;
        if (!read_varint(buf, &p, end, &length) || length < 0 || length > end - p)
            break;
        rec_end = p + length;
        if (p >= rec_end) /* attributes */
            break;
        p++;
        int64_t ts_delta, offset_delta, kp, kl, vp, vl, nh;
        if (!read_varint_n(buf, &p, rec_end, 10, &ts_delta) ||
            !read_varint(buf, &p, rec_end, &offset_delta) ||
            !read_field(buf, &p, rec_end, -1, &kp, &kl) ||
            !read_field(buf, &p, rec_end, -1, &vp, &vl) ||
            !read_varint(buf, &p, rec_end, &nh) || nh < 0)
            break;
        int64_t first_header = h, i;
        for (i = 0; i < nh; i++) {
            int64_t hkp, hkl, hvp, hvl;
            if (!read_field(buf, &p, rec_end, 0, &hkp, &hkl) ||
                !read_field(buf, &p, rec_end, -1, &hvp, &hvl))
                break;
            if (h == headers_cap) {
                *n_records = k;
                *n_headers = h;
                *next_pos = pos;
                return MQ_SCAN_FULL;
            }
            int64_t *row = headers + 4 * h++;
            row[0] = hkp;
            row[1] = hkl;
            row[2] = hvp;
            row[3] = hvl;
        }
        if (i < nh || p != rec_end) {
            h = first_header; /* drop the headers of the record that failed */
            break;
        }
        if (k == records_cap)
            return MQ_ERR_ARG; /* cannot happen: the caller sizes it from the bytes */
        int64_t *row = records + 9 * k;
        row[0] = offset_delta;
        row[1] = ts_delta;
        row[2] = kp;
        row[3] = kl;
        row[4] = vp;
        row[5] = vl;
        row[6] = first_header;
        row[7] = nh;
        row[8] = rec_end;
        pos = rec_end;
    }
    *n_records = k;
    *n_headers = h;
    *next_pos = pos;
    if (k < count || (count > 0 && pos != end)) /* a bad record, or trailing bytes */
        return MQ_SCAN_CORRUPT;
    return MQ_SCAN_OK;
}

/* Zig-zag LEB128 of v into out (at most 10 bytes); returns the bytes written. */
static int write_varint(uint8_t *out, int64_t v)
{
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    int n = 0;
    while (z >= 0x80) {
        out[n++] = (uint8_t)((z & 0x7F) | 0x80);
        z >>= 7;
    }
    out[n++] = (uint8_t)z;
    return n;
}

static int varint_size(int64_t v)
{
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    int n = 1;
    while (z >= 0x80) {
        z >>= 7;
        n++;
    }
    return n;
}

int64_t mq_encode_value_records(const uint8_t *blob, size_t blob_len, const int64_t *lengths,
                                int64_t n, uint8_t *out, size_t out_cap)
{
    uint64_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        if (lengths[i] < 0 || (uint64_t)lengths[i] > blob_len - total)
            return MQ_ERR_ARG;
        total += (uint64_t)lengths[i];
    }
    if (n < 0 || total != blob_len)
        return MQ_ERR_ARG;
    size_t w = 0, r = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t len = lengths[i];
        /* attributes, timestampDelta 0, offsetDelta, key length -1, value length, value,
           header count 0 */
        int64_t body = 1 + 1 + varint_size(i) + 1 + varint_size(len) + len + 1;
        if ((uint64_t)(varint_size(body) + body) > out_cap - w)
            return MQ_ERR_RANGE;
        w += (size_t)write_varint(out + w, body);
        out[w++] = 0;    /* attributes */
        out[w++] = 0;    /* timestampDelta 0 */
        w += (size_t)write_varint(out + w, i);
        out[w++] = 0x01; /* key length -1: null key */
        w += (size_t)write_varint(out + w, len);
        memcpy(out + w, blob + r, (size_t)len);
        w += (size_t)len;
        r += (size_t)len;
        out[w++] = 0;    /* no headers */
    }
    return (int64_t)w;
}

int64_t mq_encode_records(const uint8_t *values, size_t values_len,
                          const int64_t *value_lengths, const uint8_t *keys, size_t keys_len,
                          const int64_t *key_lengths, const int64_t *timestamp_deltas,
                          const uint8_t *extras, size_t extras_len,
                          const int64_t *extra_lengths, int64_t n, uint8_t *out,
                          size_t out_cap)
{
    uint64_t vt = 0, kt = 0, et = 0;
    if (n < 0)
        return MQ_ERR_ARG;
    for (int64_t i = 0; i < n; i++) {
        if (value_lengths[i] < 0 || key_lengths[i] < -1 || extra_lengths[i] < 0)
            return MQ_ERR_ARG;
        vt += (uint64_t)value_lengths[i];
        if (key_lengths[i] > 0)
            kt += (uint64_t)key_lengths[i];
        et += (uint64_t)extra_lengths[i];
        if (vt > values_len || kt > keys_len || et > extras_len)
            return MQ_ERR_ARG;
    }
    if (vt != values_len || kt != keys_len || et != extras_len)
        return MQ_ERR_ARG;
    size_t w = 0, vr = 0, kr = 0, er = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t vl = value_lengths[i], kl = key_lengths[i], el = extra_lengths[i];
        int64_t td = timestamp_deltas[i];
        /* attributes, timestampDelta, offsetDelta, key, value, headers (count 0 if none) */
        int64_t body = 1 + varint_size(td) + varint_size(i) + varint_size(kl) +
                       (kl > 0 ? kl : 0) + varint_size(vl) + vl + (el ? el : 1);
        if ((uint64_t)(varint_size(body) + body) > out_cap - w)
            return MQ_ERR_RANGE;
        w += (size_t)write_varint(out + w, body);
        out[w++] = 0;
        w += (size_t)write_varint(out + w, td);
        w += (size_t)write_varint(out + w, i);
        w += (size_t)write_varint(out + w, kl);
        if (kl > 0) {
            memcpy(out + w, keys + kr, (size_t)kl);
            w += (size_t)kl;
            kr += (size_t)kl;
        }
        w += (size_t)write_varint(out + w, vl);
        memcpy(out + w, values + vr, (size_t)vl);
        w += (size_t)vl;
        vr += (size_t)vl;
        if (el) {
            memcpy(out + w, extras + er, (size_t)el);
            w += (size_t)el;
            er += (size_t)el;
        } else {
            out[w++] = 0; /* no headers */
        }
    }
    return (int64_t)w;
}
