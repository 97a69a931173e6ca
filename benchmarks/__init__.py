"""Benchmarks of jaxrnn: throughput, GEMM roofline, memory, sampling. See benchmarks/README.md."""
