/* RocketMQ CommitLog batch encoding (the append_batch write path) and the dispatcher's
 * IndexFile key hashes. See the [commitlog write] section of mqstore_native.h; the
 * reference that defines the behaviour is mqstore/_purepy_cl_write.py.
 *
 * Every read and write is checked against the lengths passed in before it happens.
 * Pure functions over caller-owned memory, thread-safe.
 */
#include "mqstore_internal.h"

#define CL_CRC_RESERVED 20 /* "__CRC32#" \x01 10 digits \x02 */
#define CL_UNIQ_NAME "UNIQ_KEY\x01"
#define CL_UNIQ_NAME_LEN 9
#define CL_UNIQ_HEX 16

static inline void store_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline void store_be64(uint8_t *p, uint64_t v)
{
    store_be32(p, (uint32_t)(v >> 32));
    store_be32(p + 4, (uint32_t)v);
}

static int64_t plain_props_len(size_t uniq_prefix_len)
{
    return CL_UNIQ_NAME_LEN + (int64_t)uniq_prefix_len + CL_UNIQ_HEX + 1;
}

int64_t mq_cl_encoded_size(size_t topic_len, int64_t body_len, int64_t props_len,
                           size_t uniq_prefix_len)
{
    if (topic_len > 255 || body_len < 0)
        return MQ_ERR_ARG;
    int64_t plen = props_len < 0 ? plain_props_len(uniq_prefix_len) : props_len;
    plen += CL_CRC_RESERVED;
    if (plen > 32767)
        return MQ_ERR_ARG;
    return MQ_MSG_FIXED_OVERHEAD + body_len + (int64_t)topic_len + plen;
}

int64_t mq_cl_encode(const uint8_t *topic, size_t topic_len,
                     const uint8_t *bodies, size_t bodies_len, const int64_t *body_offsets,
                     const int64_t *body_lengths,
                     const uint8_t *props, size_t props_blob_len, const int64_t *props_offsets,
                     const int64_t *props_lengths,
                     const uint8_t *uniq_prefix, size_t uniq_prefix_len, int64_t uniq_first,
                     const int64_t *queue_ids, const int64_t *queue_offsets,
                     const int64_t *born_timestamps, int64_t n, int64_t phys_offset,
                     int64_t store_timestamp, uint8_t *out, size_t out_cap)
{
    static const uint8_t hosts[16] = {127, 0, 0, 1, 0, 0, 0, 0, 127, 0, 0, 1, 0, 0, 0x2A, 0x9F};
    static const char hex[] = "0123456789ABCDEF";
    if (n < 0 || topic_len > 255 || uniq_first < 0 || phys_offset < 0 ||
        (props_lengths != NULL && props_offsets == NULL))
        return MQ_ERR_ARG;
    if (uniq_prefix_len > 32767)
        return MQ_ERR_ARG;
    int64_t pos = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t boff = body_offsets[i], blen = body_lengths[i];
        int64_t plen = props_lengths != NULL ? props_lengths[i] : -1;
        int64_t qid = queue_ids[i];
        if (boff < 0 || blen < 0 || (uint64_t)boff > bodies_len ||
            (uint64_t)blen > bodies_len - (uint64_t)boff)
            return MQ_ERR_ARG;
        if (plen >= 0 && (props_offsets[i] < 0 || (uint64_t)props_offsets[i] > props_blob_len ||
                          (uint64_t)plen > props_blob_len - (uint64_t)props_offsets[i]))
            return MQ_ERR_ARG;
        if (qid < INT32_MIN || qid > INT32_MAX)
            return MQ_ERR_ARG;
        int64_t size = mq_cl_encoded_size(topic_len, blen, plen, uniq_prefix_len);
        if (size < 0 || size > INT32_MAX)
            return MQ_ERR_ARG;
        if ((uint64_t)size > out_cap - (uint64_t)pos)
            return MQ_ERR_RANGE;
        uint8_t *m = out + pos;
        const uint8_t *body = bodies + boff;
        int64_t born = born_timestamps != NULL ? born_timestamps[i] : -1;
        store_be32(m, (uint32_t)size);
        store_be32(m + 4, MQ_MESSAGE_MAGIC_V1);
        store_be32(m + 8, mq_crc32(0, body, (size_t)blen) & 0x7FFFFFFFu);
        store_be32(m + 12, (uint32_t)(int32_t)qid);
        store_be32(m + 16, 0);
        store_be64(m + 20, (uint64_t)queue_offsets[i]);
        store_be64(m + 28, (uint64_t)(phys_offset + pos));
        store_be32(m + 36, 0);
        store_be64(m + 40, (uint64_t)(born < 0 ? store_timestamp : born));
        memcpy(m + 48, hosts, 8);
        store_be64(m + 56, (uint64_t)store_timestamp);
        memcpy(m + 64, hosts + 8, 8);
        memset(m + 72, 0, 12);
        store_be32(m + 84, (uint32_t)blen);
        uint8_t *p = m + 88;
        memcpy(p, body, (size_t)blen);
        p += blen;
        *p++ = (uint8_t)topic_len;
        memcpy(p, topic, topic_len);
        p += topic_len;
        int64_t full = (plen < 0 ? plain_props_len(uniq_prefix_len) : plen) + CL_CRC_RESERVED;
        *p++ = (uint8_t)(full >> 8);
        *p++ = (uint8_t)full;
        if (plen < 0) {
            memcpy(p, CL_UNIQ_NAME, CL_UNIQ_NAME_LEN);
            p += CL_UNIQ_NAME_LEN;
            memcpy(p, uniq_prefix, uniq_prefix_len);
            p += uniq_prefix_len;
            uint64_t u = (uint64_t)uniq_first + (uint64_t)i;
            for (int d = CL_UNIQ_HEX - 1; d >= 0; d--) {
                p[d] = (uint8_t)hex[u & 15];
                u >>= 4;
            }
            p += CL_UNIQ_HEX;
            *p++ = 0x02;
        } else {
            memcpy(p, props + props_offsets[i], (size_t)plen);
            p += plen;
        }
        memcpy(p, "__CRC32#\x01", 9);
        p += 9;
        uint32_t crc = mq_crc32(0, m, (size_t)(p - 9 - m)) & 0x7FFFFFFFu;
        for (int d = 0; d < 10; d++) { /* least-significant digit first, '0'-padded */
            p[d] = (uint8_t)('0' + crc % 10);
            crc /= 10;
        }
        p[10] = 0x02;
        pos += size;
    }
    return pos;
}

int64_t mq_index_key_hashes(const uint8_t *buf, size_t buf_len, const int64_t *positions,
                            const int64_t *lengths, const int64_t *prefix_hashes, int64_t n,
                            int64_t *out)
{
    if (n < 0)
        return MQ_ERR_ARG;
    for (int64_t i = 0; i < n; i++) {
        int64_t pos = positions[i], len = lengths[i];
        if (pos < 0 || len < 0 || (uint64_t)pos > buf_len ||
            (uint64_t)len > buf_len - (uint64_t)pos)
            return MQ_ERR_RANGE;
    }
    for (int64_t i = 0; i < n; i++)
        if (prefix_hashes[i] < INT32_MIN || prefix_hashes[i] > INT32_MAX)
            return MQ_ERR_ARG;
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *k = buf + positions[i];
        uint32_t h = (uint32_t)(int32_t)prefix_hashes[i];
        int64_t j = 0, len = lengths[i];
        for (; j < len; j++) {
            if (k[j] >= 0x80 || k[j] == ' ')
                break;
            h = 31u * h + k[j];
        }
        if (j < len) {
            out[i] = -1;
            continue;
        }
        int32_t s = (int32_t)h;
        out[i] = s == INT32_MIN ? 0 : (s < 0 ? -(int64_t)s : s);
    }
    return 0;
}

int64_t mq_cl_encode_one(const uint8_t *topic, size_t topic_len, const uint8_t *body,
                         size_t body_len, const uint8_t *uniq_prefix, size_t uniq_prefix_len,
                         int64_t uniq_number, int64_t queue_id, int64_t queue_offset,
                         int64_t phys_offset, int64_t store_timestamp, uint8_t *out,
                         size_t out_cap)
{
    const int64_t cols[4] = {0, (int64_t)body_len, queue_id, queue_offset};
    if (body_len > INT32_MAX)
        return MQ_ERR_ARG;
    return mq_cl_encode(topic, topic_len, body, body_len, cols, cols + 1, NULL, 0, NULL, NULL,
                        uniq_prefix, uniq_prefix_len, uniq_number, cols + 2, cols + 3, NULL, 1,
                        phys_offset, store_timestamp, out, out_cap);
}
