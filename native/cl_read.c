/* cl_read.c: the commitlog read path's gather (see the [commitlog read] section of
 * mqstore_native.h; the behaviour is defined by mqstore/_purepy_cl_read.py).
 *
 * One call reads the messages that a run of ConsumeQueue units points at inside one mapped
 * CommitLog file: every length is checked against TOTALSIZE and the file, the CRCs when
 * asked, the message against its unit; then the body and the properties (without the
 * trailing __CRC32# property) are copied into the caller's output buffer and their places
 * written as columns. The first message the walk cannot take stops it with a status naming
 * why, so the caller reads that one message with its per-message reader (which words the
 * error, or reads a V2 / IPv6 message the walk leaves alone).
 *
 * Every read is bounds-checked before it happens; a pure function over caller-owned memory,
 * thread-safe.
 */
#include "mqstore_internal.h"

#define CRC_PROP_LEN 20   /* "__CRC32#\x01" + 10 digits + "\x02" */
#define CRC_DIGITS_AT 11  /* the digits start this far before the end of the message */
#define POS_BODY 84
#define SYSFLAG_IPV6_HOSTS 0x30u
#define BODY_CRC_MASK 0x7FFFFFFFu

static int is_ascii_value(const uint8_t *v, int64_t n)
{
    if (n > 0 && v[0] == 0x03)  /* an escaped value: base64 after \x03 */
        return 0;
    for (int64_t i = 0; i < n; i++)
        if (v[i] & 0x80)
            return 0;
    return 1;
}

/* The TAGS and KEYS values of PROPERTIES bytes p[0:n) (the last of each wins, as in
   decode_properties) and whether any other named property (a user header) is there.
   Pairs are separated by \x02, name and value by the pair's first \x01; a pair without
   \x01 or with an empty name is skipped. */
static void parse_properties(const uint8_t *p, int64_t n, int64_t base, int64_t *tag_pos,
                             int64_t *tag_len, int64_t *key_pos, int64_t *key_len,
                             int64_t *flags)
{
    int64_t i = 0;
    *tag_pos = *tag_len = *key_pos = *key_len = -1;
    *flags = 0;
    const uint8_t *tag = NULL, *key = NULL;
    while (i < n) {
        const uint8_t *seg = p + i;
        const uint8_t *stop = memchr(seg, 0x02, (size_t)(n - i));
        int64_t j = stop ? (int64_t)(stop - p) : n;
        const uint8_t *sep = memchr(seg, 0x01, (size_t)(j - i));
        if (sep != NULL && sep != seg) {
            int64_t name_len = (int64_t)(sep - seg);
            int64_t v = i + name_len + 1;
            if (name_len == 4 && memcmp(seg, "TAGS", 4) == 0) {
                *tag_pos = base + v;
                *tag_len = j - v;
                tag = p + v;
            } else if (name_len == 4 && memcmp(seg, "KEYS", 4) == 0) {
                *key_pos = base + v;
                *key_len = j - v;
                key = p + v;
            } else if (!(name_len == 8 && (memcmp(seg, "UNIQ_KEY", 8) == 0 ||
                                           memcmp(seg, "__CRC32#", 8) == 0))) {
                *flags |= MQ_CLR_HAS_HEADERS;
            }
        }
        i = j + 1;
    }
    if (key != NULL && is_ascii_value(key, *key_len))
        *flags |= MQ_CLR_KEY_PLAIN;
    if (tag != NULL && is_ascii_value(tag, *tag_len))
        *flags |= MQ_CLR_TAG_PLAIN;
}

/* The __CRC32# digits at d[0:10) (least-significant first) as a number, -1 if one is not an
   ASCII digit. */
static int64_t crc_digits_value(const uint8_t *d)
{
    int64_t v = 0;
    for (int i = 9; i >= 0; i--) {
        if (d[i] < '0' || d[i] > '9')
            return -1;
        v = v * 10 + (d[i] - '0');
    }
    return v;
}

int mq_cl_gather(const uint8_t *buf, size_t buf_len, int64_t limit, const int64_t *positions,
                 const int64_t *sizes, const int64_t *queue_offsets, int64_t n,
                 int64_t queue_id, int check_crcs, int64_t crc_required_pos, int64_t taken,
                 int64_t taken_bytes, int64_t max_bytes, uint8_t *out, size_t out_cap,
                 int64_t out_pos, int64_t *rows, int64_t rows_cap, int64_t *done,
                 int64_t *out_end)
{
    *done = 0;
    *out_end = out_pos;
    if (limit < 0 || (uint64_t)limit > buf_len || out_pos < 0 || (uint64_t)out_pos > out_cap)
        return MQ_ERR_RANGE;
    if (n < 0 || n > rows_cap)
        return MQ_ERR_ARG;
    int64_t *c_body_pos = rows, *c_body_len = rows + rows_cap, *c_born = rows + 2 * rows_cap;
    int64_t *c_props_pos = rows + 3 * rows_cap, *c_props_len = rows + 4 * rows_cap;
    int64_t *c_tag_pos = rows + 5 * rows_cap, *c_tag_len = rows + 6 * rows_cap;
    int64_t *c_key_pos = rows + 7 * rows_cap, *c_key_len = rows + 8 * rows_cap;
    int64_t *c_flags = rows + 9 * rows_cap;
    int64_t o = out_pos;
    int status = MQ_CLR_OK;
    int64_t k = 0;
    for (; k < n; k++) {
        int64_t pos = positions[k];
        if (pos < 0 || pos > limit - MQ_MSG_FIXED_OVERHEAD) {
            status = MQ_CLR_CORRUPT;
            break;
        }
        const uint8_t *m = buf + pos;
        int64_t size = mq_load_be_i32(m);
        uint32_t magic = mq_load_be32(m + 4);
        uint32_t sys_flag = (uint32_t)mq_load_be_i32(m + 36);
        if (magic != MQ_MESSAGE_MAGIC_V1 || (sys_flag & SYSFLAG_IPV6_HOSTS) ||
            size < MQ_MSG_FIXED_OVERHEAD || size > limit - pos) {
            status = MQ_CLR_FOREIGN;
            break;
        }
        int64_t end = pos + size;
        int64_t p = pos + POS_BODY;
        int64_t body_len = mq_load_be_i32(buf + p);
        if (body_len < 0 || p + 4 + body_len + 3 > end) {
            status = MQ_CLR_CORRUPT;
            break;
        }
        int64_t body = p + 4;
        p = body + body_len;
        p += 1 + buf[p];
        if (p + 2 > end) {
            status = MQ_CLR_CORRUPT;
            break;
        }
        int64_t props_len = mq_load_be_i16(buf + p);
        p += 2;
        if (props_len < 0 || p + props_len != end) {
            status = MQ_CLR_CORRUPT;
            break;
        }
        int has_crc = props_len >= CRC_PROP_LEN &&
                      memcmp(buf + end - CRC_PROP_LEN, "__CRC32#\x01", 9) == 0 &&
                      buf[end - 1] == 0x02;
        if (check_crcs) {
            if (has_crc) {
                int64_t stored = crc_digits_value(buf + end - CRC_DIGITS_AT);
                uint32_t actual = mq_crc32(0, m, (size_t)(size - CRC_PROP_LEN)) & BODY_CRC_MASK;
                if (stored != (int64_t)actual) {
                    status = MQ_CLR_CORRUPT;
                    break;
                }
            } else {
                uint32_t want = mq_load_be32(m + 8);
                if (pos >= crc_required_pos ||
                    (mq_crc32(0, buf + body, (size_t)body_len) & BODY_CRC_MASK) != want) {
                    status = MQ_CLR_CORRUPT;
                    break;
                }
            }
        }
        if (size != sizes[k] || mq_load_be_i64(m + 20) != queue_offsets[k] ||
            (int64_t)mq_load_be_i32(m + 12) != queue_id) {
            status = MQ_CLR_MISMATCH;
            break;
        }
        if ((taken + k > 0) && body_len > max_bytes - taken_bytes) {
            status = MQ_CLR_LIMIT;
            break;
        }
        int64_t raw_len = has_crc ? props_len - CRC_PROP_LEN : props_len;
        if ((uint64_t)(o + body_len + raw_len) > out_cap) {
            status = MQ_CLR_FULL;
            break;
        }
        memcpy(out + o, buf + body, (size_t)body_len);
        c_body_pos[k] = o;
        c_body_len[k] = body_len;
        o += body_len;
        memcpy(out + o, buf + p, (size_t)raw_len);
        c_props_pos[k] = o;
        c_props_len[k] = raw_len;
        parse_properties(out + o, raw_len, o, c_tag_pos + k, c_tag_len + k, c_key_pos + k,
                         c_key_len + k, c_flags + k);
        o += raw_len;
        c_born[k] = mq_load_be_i64(m + 40);
        taken_bytes += body_len;
    }
    *done = k;
    *out_end = o;
    return status;
}
