"""RocketMQ's store design: one CommitLog, ConsumeQueues and IndexFiles built by a dispatcher."""
