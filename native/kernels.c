/* Small hash kernels: Java's String.hashCode (RocketMQ tag hashes, IndexFile key hashes) and
 * Kafka's murmur2 (the default partitioner). Pure functions, thread-safe. */
#include "mqstore_internal.h"

int32_t mq_java_string_hash(const uint8_t *units, size_t n)
{
    uint32_t h = 0;
    for (size_t i = 0; i < n; i++)
        h = 31u * h + ((uint32_t)units[2 * i] | ((uint32_t)units[2 * i + 1] << 8));
    return (int32_t)h;
}

int32_t mq_murmur2(const uint8_t *data, size_t len)
{
    const uint32_t m = 0x5bd1e995u;
    const int r = 24;
    uint32_t h = 0x9747b28cu ^ (uint32_t)len;
    size_t n4 = len / 4;
    for (size_t i = 0; i < n4; i++) {
        const uint8_t *p = data + 4 * i;
        uint32_t k = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
                     ((uint32_t)p[3] << 24);
        k *= m;
        k ^= k >> r;
        k *= m;
        h *= m;
        h ^= k;
    }
    const uint8_t *tail = data + 4 * n4;
    switch (len & 3) {
    case 3:
        h ^= (uint32_t)tail[2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t)tail[1] << 8;
        /* fall through */
    case 1:
        h ^= tail[0];
        h *= m;
        break;
    default:
        break;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return (int32_t)h;
}

int mq_java_string_hashes(const uint8_t *units, size_t n_units, const int64_t *lengths,
                          int64_t n, int64_t *out)
{
    uint64_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        if (lengths[i] < 0 || (uint64_t)lengths[i] > n_units - total)
            return MQ_ERR_ARG;
        total += (uint64_t)lengths[i];
    }
    if (n < 0 || total != n_units)
        return MQ_ERR_ARG;
    size_t at = 0;
    for (int64_t i = 0; i < n; i++) {
        out[i] = mq_java_string_hash(units + 2 * at, (size_t)lengths[i]);
        at += (size_t)lengths[i];
    }
    return 0;
}
