"""Kafka's log design: segments of RecordBatch v2 with sparse offset and time indexes."""
