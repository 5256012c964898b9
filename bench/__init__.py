"""Measuring packages (`rxt-edge bench`, the quantization report), apart from making them (`rxt_edge.export`).

Modules, by job:
- `options`: what a bench run is asked to do (`BenchOptions`, defaults scaled to the request);
- `machine`: the machine probe (CPU, cores, load, memory bandwidth, RSS, bytes read per token);
- `active_weights`: weight bytes one decode step reads (routed experts at their top-k share);
  `floor_ratio`: decode ms/token against that bandwidth floor, per thread count;
- `child`: the torch-free onnxruntime measurements, each in a fresh child process;
- `baseline`: the stateless decoder-only baseline (export with torch, run without);
- `eager`: PyTorch eager references (our torch model, rxlm's cached decode);
- `fixtures`: random-weight preset packages (bench, quantization study, GPU check);
- `prepare`: the packages, baseline and torch model of one run;
- `run`: `run_bench`, the measurements in order; `stats`: medians and ratios; `targets`: the targets judged;
- `report`: text, Markdown, plot and JSON output;
- `quant_report`, `quant_bench`, `demo_quant_table`: the quantization report, study, and demo-model table;
- `gpu_check`: CUDA execution-provider checks for the lent GPU machine.
Layering: this package may import `rxt_edge.export` (torch, lazily) and the runtime; neither imports it.
"""
