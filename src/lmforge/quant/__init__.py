"""Low-bit weights for the one model: RTN, GPTQ, AWQ and HQQ grids, packed QuantLinear layers, exporters."""

DEFAULT_CALIBRATION = "mixed"  # calibration text of GPTQ and AWQ (see quant.calibration)
DEFAULT_WINDOWS, DEFAULT_WINDOW_LEN = 32, 512  # calibration windows and tokens per window (32 x 512 measured
# as good as 128 x 512 out of domain, at a quarter of the time: BENCHMARKS.md, quantization calibration)
DEFAULT_AWQ_SEARCH_SEQS = 16  # sequences AWQ's scale search is judged on (4: about 2.6x faster, perplexity not
# separated over 3 seeds but higher on average with 3x the spread: BENCHMARKS.md, quantization calibration)
