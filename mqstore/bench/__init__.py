"""The workload harness: workloads, runner, metrics, references and reports."""
