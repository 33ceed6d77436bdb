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
#define CQ_FILLER_SIZE 0x7FFFFFFF

/* ----- CRC-32 (zlib's polynomial) of a message -----
 * A read checks a CRC over every message it returns (about 240 bytes each for 100-byte
 * values); mq_crc32 (native/crc.c) runs it on PCLMULQDQ where the CPU has it. */

/* zlib.crc32(p[0:n)) (mq_crc32 folds 16-byte blocks with PCLMULQDQ where the CPU has it) */
static uint32_t crc32_of(const uint8_t *p, size_t n)
{
    return mq_crc32(0, p, n);
}

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
    if (key != NULL)
        *flags |= is_ascii_value(key, *key_len) ? MQ_CLR_HAS_KEY | MQ_CLR_KEY_PLAIN
                                                : MQ_CLR_HAS_KEY | MQ_CLR_KEY_OTHER;
    if (tag != NULL)
        *flags |= is_ascii_value(tag, *tag_len) ? MQ_CLR_HAS_TAG | MQ_CLR_TAG_PLAIN
                                                : MQ_CLR_HAS_TAG;
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

/* What one gather call works with and has taken so far. */
typedef struct {
    const uint8_t *buf;
    int64_t limit, file_from, queue_id, crc_required_from, taken, max_bytes;
    int check_crcs;
    uint8_t *out;
    int64_t out_cap, o, taken_bytes, flags_or;
    int64_t *rows, rows_cap, k;
} gather_ctx;

/* Check the message a unit (phys, size, queue offset qoff) points at and take it into row
   g->k: MQ_CLR_OK when taken, else the reason it was not. */
static int take_message(gather_ctx *g, int64_t phys, int64_t size_want, int64_t qoff)
{
    const uint8_t *buf = g->buf;
    int64_t limit = g->limit;
    int64_t pos = phys - g->file_from;
    if (pos < 0 || pos > limit - MQ_MSG_FIXED_OVERHEAD)
        return MQ_CLR_CORRUPT;
    const uint8_t *m = buf + pos;
    int64_t size = mq_load_be_i32(m);
    uint32_t magic = mq_load_be32(m + 4);
    uint32_t sys_flag = (uint32_t)mq_load_be_i32(m + 36);
    if (magic != MQ_MESSAGE_MAGIC_V1 || (sys_flag & SYSFLAG_IPV6_HOSTS) ||
        size < MQ_MSG_FIXED_OVERHEAD || size > limit - pos)
        return MQ_CLR_FOREIGN;
    int64_t end = pos + size;
    int64_t p = pos + POS_BODY;
    int64_t body_len = mq_load_be_i32(buf + p);
    if (body_len < 0 || p + 4 + body_len + 3 > end)
        return MQ_CLR_CORRUPT;
    int64_t body = p + 4;
    p = body + body_len;
    p += 1 + buf[p];
    if (p + 2 > end)
        return MQ_CLR_CORRUPT;
    int64_t props_len = mq_load_be_i16(buf + p);
    p += 2;
    if (props_len < 0 || p + props_len != end)
        return MQ_CLR_CORRUPT;
    int has_crc = props_len >= CRC_PROP_LEN &&
                  memcmp(buf + end - CRC_PROP_LEN, "__CRC32#\x01", 9) == 0 &&
                  buf[end - 1] == 0x02;
    if (g->check_crcs) {
        if (has_crc) {
            int64_t stored = crc_digits_value(buf + end - CRC_DIGITS_AT);
            uint32_t actual = crc32_of(m, (size_t)(size - CRC_PROP_LEN)) & BODY_CRC_MASK;
            if (stored != (int64_t)actual)
                return MQ_CLR_CORRUPT;
        } else if (phys >= g->crc_required_from ||
                   (crc32_of(buf + body, (size_t)body_len) & BODY_CRC_MASK) !=
                       mq_load_be32(m + 8)) {
            return MQ_CLR_CORRUPT;
        }
    }
    if (size != size_want || mq_load_be_i64(m + 20) != qoff ||
        (int64_t)mq_load_be_i32(m + 12) != g->queue_id)
        return MQ_CLR_MISMATCH;
    if (g->taken + g->k > 0 && body_len > g->max_bytes - g->taken_bytes)
        return MQ_CLR_LIMIT;
    int64_t raw_len = has_crc ? props_len - CRC_PROP_LEN : props_len;
    int64_t o = g->o;
    if (body_len + raw_len > g->out_cap - o)
        return MQ_CLR_FULL;
    int64_t k = g->k, cap = g->rows_cap, *rows = g->rows;
    memcpy(g->out + o, buf + body, (size_t)body_len);
    rows[k] = qoff;
    rows[cap + k] = o;
    rows[2 * cap + k] = body_len;
    rows[3 * cap + k] = mq_load_be_i64(m + 40);
    o += body_len;
    int64_t flags;
    parse_properties(buf + p, raw_len, o, rows + 6 * cap + k, rows + 7 * cap + k,
                     rows + 8 * cap + k, rows + 9 * cap + k, &flags);
    if (flags != 0) {  /* a key, tag or header to decode later: keep the properties */
        memcpy(g->out + o, buf + p, (size_t)raw_len);
        rows[4 * cap + k] = o;
        rows[5 * cap + k] = raw_len;
        o += raw_len;
    } else {  /* only UNIQ_KEY (and the record CRC): nothing a Record holds */
        rows[4 * cap + k] = -1;
        rows[5 * cap + k] = -1;
    }
    rows[10 * cap + k] = flags;
    g->flags_or |= flags;
    g->o = o;
    g->taken_bytes += body_len;
    g->k = k + 1;
    return MQ_CLR_OK;
}

int mq_cl_gather(const uint8_t *units, size_t units_len, int64_t first_unit, int64_t n_units,
                 const int64_t *select, int64_t n_select, int64_t first_queue_offset,
                 const uint8_t *buf, size_t buf_len, int64_t limit, int64_t file_from,
                 int64_t queue_id, int check_crcs, int64_t crc_required_from, int64_t taken,
                 int64_t max_bytes, uint8_t *out, size_t out_cap, int64_t *rows,
                 int64_t rows_cap, int64_t *state)
{
    int64_t i = state[0];
    state[3] = state[4] = 0;
    state[5] = state[6] = state[7] = -1;
    if (first_unit < 0 || n_units < 0 || (uint64_t)n_units > units_len / MQ_CQ_UNIT ||
        (uint64_t)first_unit > units_len / MQ_CQ_UNIT - (uint64_t)n_units ||
        limit < 0 || (uint64_t)limit > buf_len || state[1] < 0 ||
        (uint64_t)state[1] > out_cap)
        return MQ_ERR_RANGE;
    int64_t n_iter = select != NULL ? n_select : n_units;
    if (rows_cap < 0 || n_iter < 0 || i < 0 || i > n_iter)
        return MQ_ERR_ARG;
    if (select != NULL)
        for (int64_t j = i; j < n_iter; j++)
            if (select[j] < 0 || select[j] >= n_units)
                return MQ_ERR_ARG;
    gather_ctx g = {buf, limit, file_from, queue_id, crc_required_from, taken, max_bytes,
                    check_crcs, out, (int64_t)out_cap, state[1], state[2], 0,
                    rows, rows_cap, 0};
    int status = MQ_CLR_OK;
    for (; i < n_iter; i++) {
        int64_t rel = select != NULL ? select[i] : i;
        const uint8_t *u = units + (first_unit + rel) * MQ_CQ_UNIT;
        int64_t phys = mq_load_be_i64(u);
        int64_t size = mq_load_be_i32(u + 8);
        if (size == CQ_FILLER_SIZE)
            continue;
        if (g.k == rows_cap)
            break;
        state[5] = phys;
        state[6] = size;
        state[7] = first_queue_offset + rel;
        if (phys < file_from || phys - file_from >= limit) {
            status = MQ_CLR_OTHER_FILE;
            break;
        }
        status = take_message(&g, phys, size, first_queue_offset + rel);
        if (status != MQ_CLR_OK)
            break;
    }
    state[0] = i;
    state[1] = g.o;
    state[2] = g.taken_bytes;
    state[3] = g.k;
    state[4] = g.flags_or;
    return status;
}

/* ----- transfer_to: the slices of the mapped file to send ----- */
int mq_cl_transfer_plan(const uint8_t *units, size_t units_len, int64_t first_unit,
                        int64_t n_units, int64_t file_from, int64_t limit, int64_t max_bytes,
                        int64_t *slices, int64_t cap, int64_t *state)
{
    int64_t i = state[0], total = state[1], have = state[2], j = 0;
    state[3] = 0;
    state[4] = state[5] = -1;
    if (first_unit < 0 || n_units < 0 || (uint64_t)n_units > units_len / MQ_CQ_UNIT ||
        (uint64_t)first_unit > units_len / MQ_CQ_UNIT - (uint64_t)n_units || limit < 0)
        return MQ_ERR_RANGE;
    if (cap < 0 || i < 0 || i > n_units)
        return MQ_ERR_ARG;
    int status = MQ_CLR_OK;
    for (; i < n_units; i++) {
        const uint8_t *u = units + (first_unit + i) * MQ_CQ_UNIT;
        int64_t phys = mq_load_be_i64(u);
        int64_t size = mq_load_be_i32(u + 8);
        if (size == CQ_FILLER_SIZE)
            continue;
        state[4] = phys;
        state[5] = size;
        if (have && total + size > max_bytes) {
            status = MQ_CLR_LIMIT;
            break;
        }
        if (phys < file_from || phys - file_from >= limit) {
            status = MQ_CLR_OTHER_FILE;
            break;
        }
        int64_t start = phys - file_from;
        int64_t end = size < 0 ? start : (size > limit - start ? limit : start + size);
        if (j > 0 && slices[2 * j - 1] == start) {
            slices[2 * j - 1] = end;
        } else {
            if (j == cap) {
                status = MQ_CLR_FULL;
                break;
            }
            slices[2 * j] = start;
            slices[2 * j + 1] = end;
            j++;
        }
        total += size;
        have = 1;
    }
    state[0] = i;
    state[1] = total;
    state[2] = have;
    state[3] = j;
    return status;
}
