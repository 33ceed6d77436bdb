/* Shared by the .c files of the native helper (not part of the cdef). */
#ifndef MQSTORE_INTERNAL_H
#define MQSTORE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "mqstore_native.h"

/* Big-endian loads from any alignment (memcpy compiles to one load plus a byte swap). */
static inline uint32_t mq_load_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline uint64_t mq_load_be64(const uint8_t *p)
{
    return ((uint64_t)mq_load_be32(p) << 32) | mq_load_be32(p + 4);
}

static inline int32_t mq_load_be_i32(const uint8_t *p)
{
    return (int32_t)mq_load_be32(p);
}

static inline int64_t mq_load_be_i64(const uint8_t *p)
{
    return (int64_t)mq_load_be64(p);
}

static inline int16_t mq_load_be_i16(const uint8_t *p)
{
    return (int16_t)(uint16_t)(((unsigned)p[0] << 8) | p[1]);
}

/* Little-endian 64-bit load from any alignment, for the CRC slicing loops. */
static inline uint64_t mq_load_le64(const uint8_t *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
#else
    return (uint64_t)p[0] | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16) |
           ((uint64_t)p[3] << 24) | ((uint64_t)p[4] << 32) | ((uint64_t)p[5] << 40) |
           ((uint64_t)p[6] << 48) | ((uint64_t)p[7] << 56);
#endif
}

/* Kafka's RecordBatch header (magic 2) and RocketMQ's message layout (V1). */
#define MQ_BATCH_OVERHEAD 61
#define MQ_BATCH_CRC_START 21
#define MQ_MSG_FIXED_OVERHEAD 91
#define MQ_MESSAGE_MAGIC_V1 0xDAA320A7u
#define MQ_BLANK_MAGIC 0xCBD43194u
#define MQ_CQ_UNIT 20

void mq_crc_init(int force_software);

#endif
