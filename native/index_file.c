/* RocketMQ IndexFile inserts: the hash-slot chain update of IndexFile.putKey for a run of
 * keys, in place in the mapped file. Each entry is written before the slot that points at
 * it (a concurrent reader of the chain never follows a slot to an unwritten entry); the
 * caller writes the header afterwards. One writer at a time (the dispatcher's lock).
 */
#include "mqstore_internal.h"

#define INDEX_HEADER_SIZE 40
#define INDEX_ENTRY_SIZE 20

static void store_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

int64_t mq_index_put_keys(uint8_t *buf, size_t buf_len, int64_t hash_slots,
                          int64_t index_entries, int64_t *state, const int64_t *hashes,
                          const int64_t *phy_offsets, const int64_t *store_timestamps,
                          int64_t n)
{
    if (hash_slots < 1 || index_entries < 0 || n < 0)
        return MQ_ERR_ARG;
    for (int64_t k = 0; k < n; k++) /* hashes are int32 on disk: check before writing */
        if (hashes[k] < INT32_MIN || hashes[k] > INT32_MAX)
            return MQ_ERR_ARG;
    if (buf_len < INDEX_HEADER_SIZE || (uint64_t)hash_slots > (buf_len - INDEX_HEADER_SIZE) / 4)
        return MQ_ERR_RANGE;
    uint64_t entries_pos = INDEX_HEADER_SIZE + (uint64_t)hash_slots * 4;
    if ((uint64_t)index_entries > (buf_len - entries_pos) / INDEX_ENTRY_SIZE)
        return MQ_ERR_RANGE;
    int64_t count = state[0], slots_used = state[1], begin_ts = state[2], begin_phy = state[3];
    if (count < 1)
        count = 1;
    int64_t i = 0;
    for (; i < n && count < index_entries; i++) {
        int64_t slot = hashes[i] % hash_slots;
        if (slot < 0)
            slot += hash_slots;
        uint8_t *slot_p = buf + INDEX_HEADER_SIZE + 4 * slot;
        int64_t prev = mq_load_be_i32(slot_p);
        if (prev <= 0 || prev > count) {
            prev = 0;
            slots_used++;
        }
        int64_t diff = 0;
        if (begin_ts > 0) {
            /* (ts - begin) // 1000 clamped to [0, INT32_MAX]; without overflow */
            int64_t ts = store_timestamps[i];
            if (ts > begin_ts) {
                uint64_t seconds = ((uint64_t)ts - (uint64_t)begin_ts) / 1000;
                diff = seconds > 0x7FFFFFFF ? 0x7FFFFFFF : (int64_t)seconds;
            }
        }
        uint8_t *e = buf + entries_pos + (uint64_t)count * INDEX_ENTRY_SIZE;
        store_be32(e, (uint32_t)hashes[i]);
        store_be32(e + 4, (uint32_t)((uint64_t)phy_offsets[i] >> 32));
        store_be32(e + 8, (uint32_t)phy_offsets[i]);
        store_be32(e + 12, (uint32_t)diff);
        store_be32(e + 16, (uint32_t)prev);
        store_be32(slot_p, (uint32_t)count);
        if (count <= 1) {
            begin_ts = store_timestamps[i];
            begin_phy = phy_offsets[i];
        }
        count++;
    }
    state[0] = count;
    state[1] = slots_used;
    state[2] = begin_ts;
    state[3] = begin_phy;
    return i;
}

int64_t mq_index_truncate_from(uint8_t *buf, size_t buf_len, int64_t hash_slots,
                               int64_t index_entries, int64_t *state, int64_t phy_offset,
                               int64_t *last_phy_offset)
{
    *last_phy_offset = -1;
    if (hash_slots < 1 || index_entries < 0)
        return MQ_ERR_ARG;
    if (buf_len < INDEX_HEADER_SIZE || (uint64_t)hash_slots > (buf_len - INDEX_HEADER_SIZE) / 4)
        return MQ_ERR_RANGE;
    uint64_t entries_pos = INDEX_HEADER_SIZE + (uint64_t)hash_slots * 4;
    if ((uint64_t)index_entries > (buf_len - entries_pos) / INDEX_ENTRY_SIZE)
        return MQ_ERR_RANGE;
    int64_t slots_used = state[1], removed = 0;
    int64_t n = (state[0] < index_entries ? state[0] : index_entries) - 1;
    while (n >= 1) {
        uint8_t *e = buf + entries_pos + (uint64_t)n * INDEX_ENTRY_SIZE;
        int64_t phy = mq_load_be_i64(e + 4);
        if (phy < phy_offset)
            break;
        int64_t slot = mq_load_be_i32(e) % hash_slots;
        if (slot < 0)
            slot += hash_slots;
        int64_t prev = mq_load_be_i32(e + 16);
        int chained = prev > 0 && prev < n;
        store_be32(buf + INDEX_HEADER_SIZE + 4 * slot, chained ? (uint32_t)prev : 0);
        if (!chained)
            slots_used = slots_used > 0 ? slots_used - 1 : 0;
        memset(e, 0, INDEX_ENTRY_SIZE);
        removed++;
        n--;
    }
    if (n >= 1)
        *last_phy_offset = mq_load_be_i64(buf + entries_pos + (uint64_t)n * INDEX_ENTRY_SIZE + 4);
    if (removed) {
        state[0] = n + 1;
        state[1] = slots_used;
    }
    return removed;
}
